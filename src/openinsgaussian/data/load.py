"""One entry point for every scene folder: detect its format and call the matching reader."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from ..errors import DataError
from .colmap import find_sparse_dir, read_colmap
from .scannet import read_scannet
from .scene import Scene
from .transforms import find_transforms_files, read_transforms

SceneFormat = Literal["colmap", "scannet", "transforms"]
FORMATS: tuple[str, ...] = ("auto", "colmap", "scannet", "transforms")
# Background RGBA images are composited on: Blender scenes are rendered on white, the others black.
DEFAULT_BACKGROUND: dict[str, tuple[float, float, float]] = {
    "colmap": (0.0, 0.0, 0.0), "scannet": (0.0, 0.0, 0.0), "transforms": (1.0, 1.0, 1.0),
}
_LOOKED_FOR = ("transforms_train.json or transforms.json with points3d.ply (ScanNet)",
               "sparse/0/cameras.bin|txt or sparse/cameras.bin|txt (COLMAP)",
               "transforms_train.json or transforms.json (Blender / nerfstudio)")


def _scene_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.name.startswith("transforms") and p.suffix == ".json":
        return p.parent  # a transforms file given instead of its folder
    if not p.exists():
        raise DataError(p, "scene folder not found")
    if not p.is_dir():
        raise DataError(p, "expected a scene folder, got a file")
    return p


def detect_format(path: str | Path) -> SceneFormat:
    """``"scannet"`` (transforms json + ``points3d.ply``), ``"colmap"`` (a sparse model) or ``"transforms"``."""
    root = _scene_dir(path)
    has_transforms = find_transforms_files(root) is not None
    if has_transforms and (root / "points3d.ply").is_file():
        return "scannet"
    if find_sparse_dir(root) is not None:
        return "colmap"
    if has_transforms:
        return "transforms"
    raise DataError(root, "not a scene folder; looked for: " + "; ".join(_LOOKED_FOR))


def load_scene(path: str | Path, *, format: str = "auto", downscale: float = 1.0,
               background: tuple[float, float, float] | None = None, eval_split: bool = True,
               undistort: bool = False, progress: bool = True) -> Scene:
    """Read any supported scene folder into a :class:`Scene`.

    ``background`` defaults to black for ScanNet and COLMAP and white for Blender scenes.
    ``eval_split`` holds out the test views (COLMAP: every 8th image by name; others: the test json).
    ``undistort``: frames whose camera has lens distortion get pinhole cameras and images
    undistorted with OpenCV, cached once in ``<scene>/undistorted/``
    (:func:`~openinsgaussian.data.undistort.undistort_scene`; training does this by default);
    False keeps the distorted images and warns that rendering uses the ideal pinhole.
    """
    if format not in FORMATS:
        raise DataError(path, f"unknown scene format {format!r}", f"choose one of {', '.join(FORMATS)}")
    root = _scene_dir(path)
    fmt = detect_format(root) if format == "auto" else format
    bg = DEFAULT_BACKGROUND[fmt] if background is None else tuple(float(c) for c in background)
    reader = {"scannet": read_scannet, "colmap": read_colmap}.get(fmt, read_transforms)
    if not undistort:
        scene = reader(root, downscale=downscale, background=bg, eval_split=eval_split)
        if any(f.camera.distortion is not None and not f.camera.distortion.is_identity()
               for f in scene.frames):
            scene.images_undistorted = False
        return scene
    from .undistort import DISTORTION_PROBLEM, undistort_scene

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{DISTORTION_PROBLEM}")  # undistorted next
        scene = reader(root, downscale=downscale, background=bg, eval_split=eval_split)
    return undistort_scene(scene, progress=progress)
