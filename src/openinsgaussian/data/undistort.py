"""Lens undistortion of a scene's images with OpenCV, once, cached beside the scene.

Readers keep the distortion of the source data (COLMAP ``OPENCV`` / ``FULL_OPENCV`` /
``OPENCV_FISHEYE``, nerfstudio / instant-ngp ``k1 k2 p1 p2`` or ``OPENCV_FISHEYE``); the renderer
is an ideal pinhole. :func:`undistort_scene` turns every distorted frame into a pinhole one:

* new intrinsics: ``cv2.getOptimalNewCameraMatrix`` with ``alpha = 0`` (OpenCV model) or
  ``cv2.fisheye.estimateNewCameraMatrixForUndistortRectify`` with ``balance = 0`` (fisheye), at
  the same image size, so every pixel of the undistorted image sees the scene (no black border);
* the colour image resampled bilinearly (``cv2.initUndistortRectifyMap`` + ``cv2.remap``), the
  optional GT maps (depth, instance and label ids) with nearest-neighbour sampling, so ids stay
  ids and depth stays the depth of a real surface point.

Files go to ``<scene>/undistorted/`` (``color/``, ``depth/``, ``instance/``, ``label/``, PNG,
like nerfstudio's processed images beside the data), each written atomically; the per-frame
record in ``undistorted/undistort.json`` (source file size and time, camera, coefficients, new
intrinsics) is updated after every frame, so an interrupted run resumes where it stopped and a
changed source or camera is redone. Pixel centres: our ``K`` puts the top-left pixel centre at
(0.5, 0.5), OpenCV at (0, 0); the conversion is done here.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io import save_image, write_json
from .camera import Camera, Distortion
from .scene import Frame, Scene

FOLDER = "undistorted"
META = "undistort.json"
VERSION = 1
DISTORTION_PROBLEM = "cameras carry lens distortion"  # start of the Scene problem it resolves


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:  # a core dependency; a broken install should still say what to do
        raise DataError(None, f"undistortion needs OpenCV ({e})",
                        "pip install opencv-python-headless") from None
    return cv2


def is_distorted(camera: Camera) -> bool:
    return camera.distortion is not None and not camera.distortion.is_identity()


def _k_to_cv(K: np.ndarray) -> np.ndarray:
    """Our K (pixel centres at +0.5) -> OpenCV's (pixel centres at integers)."""
    out = np.array(K, dtype=np.float64)
    out[0, 2] -= 0.5
    out[1, 2] -= 0.5
    return out


def _k_from_cv(K: np.ndarray) -> np.ndarray:
    out = np.array(K, dtype=np.float64)
    out[0, 2] += 0.5
    out[1, 2] += 0.5
    return out


def _coeffs(d: Distortion) -> np.ndarray:
    n = 8 if d.model == "opencv" else 4
    return np.asarray((list(d.coeffs) + [0.0] * n)[:n], dtype=np.float64)


def pinhole_camera(camera: Camera) -> Camera:
    """The undistorted pinhole camera of a distorted one (same pose and image size)."""
    cv2 = _cv2()
    d = camera.distortion
    if d is None:
        return camera
    K = _k_to_cv(camera.K.numpy())
    size = (camera.width, camera.height)
    if d.model == "fisheye":
        new = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
            K, _coeffs(d), size, np.eye(3), balance=0.0, new_size=size
        )
    else:
        new, _ = cv2.getOptimalNewCameraMatrix(K, _coeffs(d), size, 0.0, size)
    new = np.asarray(new, dtype=np.float64)
    if not np.isfinite(new).all() or new[0, 0] <= 0 or new[1, 1] <= 0:
        raise DataError(None, f"camera {camera.name!r}: OpenCV found no valid undistorted "
                        f"intrinsics for {d.model} coefficients {d.coeffs}",
                        "check the distortion coefficients of the source data")
    return replace(camera, K=_k_from_cv(new), distortion=None)


def undistortion_maps(camera: Camera, pinhole: Camera) -> tuple[np.ndarray, np.ndarray]:
    """``(map_x, map_y)`` ``[H, W]`` float32: for each pixel of ``pinhole``, where to sample the
    distorted image of ``camera`` (OpenCV pixel coordinates)."""
    cv2 = _cv2()
    d = camera.distortion
    assert d is not None
    K, P = _k_to_cv(camera.K.numpy()), _k_to_cv(pinhole.K.numpy())
    size = (pinhole.width, pinhole.height)
    if d.model == "fisheye":
        return cv2.fisheye.initUndistortRectifyMap(K, _coeffs(d), np.eye(3), P, size,
                                                   cv2.CV_32FC1)
    return cv2.initUndistortRectifyMap(K, _coeffs(d), None, P, size, cv2.CV_32FC1)


def undistort_points(camera: Camera, uv: np.ndarray) -> np.ndarray:
    """Normalised pinhole coordinates ``[N, 2]`` (x/z, y/z) of distorted pixels ``uv [N, 2]``
    (our convention, pixel centres at +0.5): the inverse of the lens, by OpenCV's iteration."""
    cv2 = _cv2()
    d = camera.distortion
    pts = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2) - 0.5
    K = _k_to_cv(camera.K.numpy())
    if d is None or d.is_identity():
        xn = (pts.reshape(-1, 2) - K[:2, 2]) / np.diag(K)[:2]
        return xn
    if d.model == "fisheye":
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
        return cv2.fisheye.undistortPoints(pts, K, _coeffs(d), criteria=crit).reshape(-1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
    return cv2.undistortPoints(pts, K, _coeffs(d), criteria=crit).reshape(-1, 2)


def _record(frame: Frame, pinhole: Camera) -> dict[str, Any]:
    st = Path(frame.image_path).stat()
    d = frame.camera.distortion
    assert d is not None
    return {
        "source": str(frame.image_path),
        "source_bytes": int(st.st_size),
        "source_mtime_ns": int(st.st_mtime_ns),
        "size": [frame.camera.width, frame.camera.height],
        "K": frame.camera.K.numpy().tolist(),
        "distortion": {"model": d.model, "coeffs": [float(c) for c in d.coeffs]},
        "new_K": pinhole.K.numpy().tolist(),
        "maps": sorted(k for k in ("depth", "instance", "label")
                       if getattr(frame, f"{k}_path") is not None),
    }


def _paths(out: Path, name: str) -> dict[str, Path]:
    return {k: out / k / f"{name}.png" for k in ("color", "depth", "instance", "label")}


def _remap_frame(frame: Frame, pinhole: Camera, paths: dict[str, Path]) -> None:
    from .images import load_uint16

    cv2 = _cv2()
    mx, my = undistortion_maps(frame.camera, pinhole)
    rgb = frame.load_rgb()  # [H, W, 3] uint8 at the camera size
    out = cv2.remap(rgb, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    save_image(paths["color"], np.ascontiguousarray(out))
    size = (frame.camera.width, frame.camera.height)
    for kind in ("depth", "instance", "label"):
        src = getattr(frame, f"{kind}_path")
        if src is None:
            continue
        arr = np.ascontiguousarray(load_uint16(src, size).astype(np.uint16))  # raw ids / mm
        mapped = cv2.remap(arr, mx, my, interpolation=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        save_image(paths[kind], np.ascontiguousarray(mapped.astype(np.uint16)))


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: every frame is redone (files are rewritten atomically)
    return meta if isinstance(meta, dict) and meta.get("version") == VERSION else {}


def undistort_scene(scene: Scene, out: Path | None = None, progress: bool = True) -> Scene:
    """``scene`` with every distorted frame replaced by its undistorted pinhole frame.

    Undistorted files are cached in ``out`` (default ``<scene>/undistorted``); frames whose
    cache entry matches are reused. A scene without distortion is returned unchanged.
    """
    frames = scene.frames
    todo = [f for f in frames if is_distorted(f.camera)]
    if not todo:
        return scene
    from tqdm.auto import tqdm

    out = Path(out) if out is not None else Path(scene.root) / FOLDER
    meta_path = out / META
    meta = _read_meta(meta_path)
    records: dict[str, Any] = dict(meta.get("frames") or {})
    done: dict[str, Frame] = {}
    bar = tqdm(todo, desc=f"undistort {Path(scene.root).name}", unit="img", disable=not progress)
    for frame in bar:
        if frame.name in done:
            continue
        pinhole = pinhole_camera(frame.camera)
        rec = _record(frame, pinhole)
        paths = _paths(out, frame.name)
        wanted = ["color", *rec["maps"]]
        if records.get(frame.name) != rec or not all(paths[k].is_file() for k in wanted):
            _remap_frame(frame, pinhole, paths)
            records[frame.name] = rec
            write_json(meta_path, {"version": VERSION, "scene": str(scene.root),
                                   "frames": records})
        done[frame.name] = replace(
            frame,
            camera=pinhole,
            image_path=paths["color"],
            depth_path=paths["depth"] if frame.depth_path is not None else None,
            instance_path=paths["instance"] if frame.instance_path is not None else None,
            label_path=paths["label"] if frame.label_path is not None else None,
            masks_path=None,  # a cache made on the distorted images does not describe these
            features_path=None,
        )

    def convert(fs: list[Frame]) -> list[Frame]:
        return [done.get(f.name, f) if is_distorted(f.camera) else f for f in fs]

    problems = [p for p in scene.problems if not p.startswith(DISTORTION_PROBLEM)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the problems were reported when the scene was read
        return replace(scene, train_frames=convert(scene.train_frames),
                       test_frames=convert(scene.test_frames), problems=problems,
                       images_undistorted=True, undistorted_dir=out)


__all__ = [
    "FOLDER",
    "META",
    "is_distorted",
    "pinhole_camera",
    "undistort_points",
    "undistort_scene",
    "undistortion_maps",
]
