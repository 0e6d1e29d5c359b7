"""openinsgaussian: open-vocabulary 3D instance segmentation with Gaussian Splatting.

Posed photos -> 3D Gaussians grouped into instances, each carrying a language feature, so that a
text query returns the matching points, masks and renders (OpenInsGaussian on the OpenGaussian
pipeline).
"""

__version__ = "0.1.0"
