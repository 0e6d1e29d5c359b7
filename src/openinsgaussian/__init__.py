"""openinsgaussian: open-vocabulary 3D instance segmentation with Gaussian Splatting.

Posed photos -> 3D Gaussians grouped into instances, each carrying a language feature, so that a
text query returns the matching points, masks and renders (OpenInsGaussian on the OpenGaussian
pipeline).
"""

import os as _os

# With OpenMP's default wait policy, two CPU training processes on one 2-core machine ran each
# step 14-27x slower than with sleeping waiters, which cost 7-13% on an idle machine
# (benchmarks/bench_threads.py). Set before torch loads OpenMP; an explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
