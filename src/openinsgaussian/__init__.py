"""openinsgaussian: open-vocabulary 3D instance segmentation with Gaussian Splatting.

Posed photos -> 3D Gaussians grouped into instances, each carrying a language feature, so that a
text query returns the matching points, masks and renders (OpenInsGaussian on the OpenGaussian
pipeline).

The library face (:mod:`openinsgaussian.api`)::

    import openinsgaussian as oig
    run = oig.open_run("outputs/demo/run_default_0")
    sel = run.query("chair")           # Selection: gaussian_ids, bounds, obb, mask(view), ...
    run.instances()                    # the scene inventory, labels(vocabulary, k=3)
    oig.train(scene, run=..., preset=...), oig.preprocess(scene, ...), oig.evaluate(run, ...)
"""

import os as _os

# With OpenMP's default wait policy, two CPU training processes on one 2-core machine ran each
# step 14-27x slower than with sleeping waiters, which cost 7-13% on an idle machine
# (benchmarks/bench_threads.py). Set before torch loads OpenMP; an explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# The library face. ``train`` and ``evaluate`` are also the names of subpackages: binding the
# functions after the subpackages are imported (api imports them) makes ``oig.train`` /
# ``oig.evaluate`` the functions, while ``import openinsgaussian.train.pipeline`` and
# ``from openinsgaussian.evaluate import ...`` keep finding the modules in ``sys.modules``.
from . import api as _api  # noqa: E402

EvalResult = _api.EvalResult
Instance = _api.Instance
PreprocessResult = _api.PreprocessResult
QueryReport = _api.QueryReport
Run = _api.Run
Selection = _api.Selection
TrainResult = _api.TrainResult
evaluate = _api.evaluate
open_run = _api.open_run
preprocess = _api.preprocess
train = _api.train

__all__ = [
    "EvalResult", "Instance", "PreprocessResult", "QueryReport", "Run", "Selection",
    "TrainResult", "__version__", "evaluate", "open_run", "preprocess", "train",
]
