"""3D Gaussians: the parameter model, its initialisation, densification and PLY files."""

from .densify import DensifyConfig, DensifyStrategy
from .gaussians import SH_C0, GaussianModel, num_sh_bases, rgb_to_sh0, sh0_to_rgb
from .ply import PlyWriteResult, load_gaussians_ply, save_gaussians_ply

__all__ = [
    "SH_C0",
    "DensifyConfig",
    "DensifyStrategy",
    "GaussianModel",
    "PlyWriteResult",
    "load_gaussians_ply",
    "num_sh_bases",
    "rgb_to_sh0",
    "save_gaussians_ply",
    "sh0_to_rgb",
]
