"""Rendering of 3D Gaussians: one ``render`` API over reference, fast-CPU and gsplat backends."""

from .api import BACKENDS, Backend, RenderOutput, render, resolve_backend
from .gsplat_backend import gsplat_available
from .projection import Projection, project_gaussians, quat_to_rotmat
from .reference import composite_reference
from .sh import C0, eval_sh, rgb_to_sh, sh_colors, sh_to_rgb

__all__ = [
    "BACKENDS",
    "C0",
    "Backend",
    "Projection",
    "RenderOutput",
    "composite_reference",
    "eval_sh",
    "gsplat_available",
    "project_gaussians",
    "quat_to_rotmat",
    "render",
    "resolve_backend",
    "rgb_to_sh",
    "sh_colors",
    "sh_to_rgb",
]
