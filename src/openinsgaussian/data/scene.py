"""``Frame`` (one posed image plus optional per-view GT) and ``Scene`` (what a reader found)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .camera import Camera


@dataclass
class Frame:
    """One posed image.

    ``camera`` already describes the image at its working resolution (after any downscale), and
    :meth:`load_rgb` returns the image at exactly ``camera.width x camera.height``.
    """

    name: str  # stable id, e.g. "frame_00041" or "000020" (file stem)
    camera: Camera
    image_path: Path
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # RGBA images are composited on this
    depth_path: Path | None = None  # uint16 PNG, millimetres
    instance_path: Path | None = None  # uint16 PNG, instance id (0 = none)
    label_path: Path | None = None  # uint16 PNG, NYU40 class id (0 = none), or raw ids + label_lut
    label_lut: np.ndarray | None = None  # [K] int64 raw label id -> NYU40 id (ScanNet's label-filt)
    masks_path: Path | None = None  # language_features/<name>_s.npy
    features_path: Path | None = None  # language_features/<name>_f.npy

    def load_rgb(self) -> np.ndarray:
        """``[H,W,3]`` uint8 at the camera's resolution, RGBA composited on ``background``."""
        from .images import load_rgb

        return load_rgb(self.image_path, (self.camera.width, self.camera.height), self.background)

    def load_rgba_alpha(self) -> np.ndarray | None:
        """``[H,W]`` float alpha in [0,1] at the camera's resolution, or None for opaque images."""
        from .images import load_alpha

        return load_alpha(self.image_path, (self.camera.width, self.camera.height))

    def load_depth(self) -> np.ndarray | None:
        """``[H,W]`` float32 metres (0 = unknown), or None when the frame has no depth map."""
        from .images import load_uint16

        if self.depth_path is None:
            return None
        return load_uint16(self.depth_path, (self.camera.width, self.camera.height)).astype(np.float32) / 1000.0

    def load_instances(self) -> np.ndarray | None:
        """``[H,W]`` int64 instance ids (0 = none), or None."""
        from .images import load_uint16

        if self.instance_path is None:
            return None
        return load_uint16(self.instance_path, (self.camera.width, self.camera.height)).astype(np.int64)

    def load_labels(self) -> np.ndarray | None:
        """``[H,W]`` int64 NYU40 ids (0 = none), or None."""
        from .images import load_uint16

        if self.label_path is None:
            return None
        raw = load_uint16(self.label_path, (self.camera.width, self.camera.height)).astype(np.int64)
        if self.label_lut is None:
            return raw
        lut = self.label_lut
        return np.where(raw < len(lut), lut[np.minimum(raw, len(lut) - 1)], 0)  # unknown id -> 0


@dataclass
class Scene:
    """Cameras split into train/test, an initial point cloud and optional GT."""

    root: Path
    source: str  # reader that produced it: "blender", "scannet", "colmap", "synthetic"
    train_frames: list[Frame]
    test_frames: list[Frame]
    points: np.ndarray | None = None  # [P,3] float32 world
    colors: np.ndarray | None = None  # [P,3] uint8
    point_labels: np.ndarray | None = None  # [P] int64 NYU40 ids, same order as points
    point_instances: np.ndarray | None = None  # [P] int64 instance ids (synthetic scenes)
    instance_classes: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (class, NYU40)
    problems: list[str] = field(default_factory=list)  # warnings met while reading
    images_undistorted: bool | None = None  # None: no lens distortion; True: undistorted on load
    undistorted_dir: Path | None = None  # where the undistorted images are cached

    def __post_init__(self) -> None:
        if not self.train_frames:
            raise DataError(self.root, "no usable training frames", "check that the images exist and poses are finite")
        distorted = sorted({f.camera.distortion.model for f in self.frames
                            if f.camera.distortion is not None and not f.camera.distortion.is_identity()})
        if distorted:
            msg = (f"cameras carry lens distortion ({', '.join(distorted)}) but rendering uses the ideal "
                   "pinhole; load with undistortion on (what openins train / preprocess do unless "
                   "undistort=false) or undistort the images first (e.g. colmap image_undistorter)")
            if msg not in self.problems:
                self.problems.append(msg)
                warnings.warn(f"{self.root}: {msg}", stacklevel=2)
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 3)
            n = len(self.points)
            for name in ("colors", "point_labels", "point_instances"):
                arr = getattr(self, name)
                if arr is not None and len(arr) != n:
                    raise DataError(self.root, f"{name} has {len(arr)} entries but the point cloud has {n} points")

    @property
    def frames(self) -> list[Frame]:
        return self.train_frames + self.test_frames

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned ``(min [3], max [3])`` of the points, or of the camera centres without points."""
        if self.points is not None and len(self.points):
            pts = self.points
        else:
            pts = np.stack([f.camera.center.numpy() for f in self.frames])
        return pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)

    def camera_extent(self) -> float:
        """3DGS scene radius: 1.1 x the largest camera distance from the mean camera centre."""
        centers = np.stack([f.camera.center.numpy() for f in self.train_frames])
        d = np.linalg.norm(centers - centers.mean(0), axis=1)
        return float(1.1 * max(d.max(), 1e-6))

    def summary(self) -> dict:
        """Plain-data description for ``openins info`` and logs."""
        f0 = self.train_frames[0].camera
        sizes = sorted({(f.camera.width, f.camera.height) for f in self.frames})
        lo, hi = self.bounds
        out: dict = {
            "root": str(self.root),
            "source": self.source,
            "train_frames": len(self.train_frames),
            "test_frames": len(self.test_frames),
            "resolution": [list(s) for s in sizes],
            "focal": [round(f0.fx, 3), round(f0.fy, 3)],
            "points": 0 if self.points is None else int(len(self.points)),
            "point_labels": self.point_labels is not None,
            "bounds_min": [round(float(x), 4) for x in lo],
            "bounds_max": [round(float(x), 4) for x in hi],
            "camera_extent": round(self.camera_extent(), 4),
            "distortion": sorted({f.camera.distortion.model for f in self.frames if f.camera.distortion is not None}),
            "distortion_coefficients": _distortion_groups(self.frames),
            "images_undistorted": self.images_undistorted,
            "problems": list(self.problems),
        }
        if self.point_labels is not None:
            ids, counts = np.unique(self.point_labels, return_counts=True)
            out["label_counts"] = {int(i): int(c) for i, c in zip(ids, counts)}
        if self.instance_classes:
            out["instances"] = len(self.instance_classes)
        return out


def _distortion_groups(frames: list[Frame]) -> list[dict]:
    """Distinct ``{model, coeffs, frames}`` of the frames' lens distortion (non-identity)."""
    groups: dict[tuple[str, tuple[float, ...]], int] = {}
    for f in frames:
        d = f.camera.distortion
        if d is not None and not d.is_identity():
            key = (d.model, tuple(float(c) for c in d.coeffs))
            groups[key] = groups.get(key, 0) + 1
    return [{"model": m, "coeffs": list(c), "frames": n} for (m, c), n in sorted(groups.items())]
