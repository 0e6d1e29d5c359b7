"""Interactive web viewer (viser, extra ``viewer``): splats coloured by instance, text queries,
click to select. viser is imported only when a viewer starts."""

from .app import Viewer, ViewerConfig, build_viewer, serve
from .colors import highlight, id_palette, instance_colors
from .data import QuerySelection, TextSelector, ViewerRun, load_viewer_run
from .geometry import pick_along_ray, splat_covariances, subsample_indices, up_direction

__all__ = [
    "QuerySelection",
    "TextSelector",
    "Viewer",
    "ViewerConfig",
    "ViewerRun",
    "build_viewer",
    "highlight",
    "id_palette",
    "instance_colors",
    "load_viewer_run",
    "pick_along_ray",
    "serve",
    "splat_covariances",
    "subsample_indices",
    "up_direction",
]
