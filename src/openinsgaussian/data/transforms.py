"""Blender / nerfstudio / instant-ngp ``transforms*.json`` scenes, and the json parsing they share
with the ScanNet reader.

Each frame's ``transform_matrix`` is camera-to-world in OpenGL axes (x right, y up, z backward); it
is converted to our OpenCV world-to-camera once, here. Intrinsics come from ``camera_angle_x`` (NeRF
Blender) or ``fl_x, fl_y, cx, cy, w, h`` (nerfstudio / instant-ngp / OpenGaussian ScanNet), at the
top level with optional per-frame overrides.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .camera import Camera, Distortion
from .images import IMAGE_SUFFIXES, find_image, image_size
from .ply import read_points
from .scene import Frame, Scene

_FOCAL_KEYS = ("fl_x", "camera_angle_x")


@dataclass
class PosedImage:
    """One usable frame of a transforms file, before it is named and split."""

    rel: str  # image path relative to the scene root, without extension, "/"-separated
    image_path: Path
    camera: Camera


# ---- small shared helpers -----------------------------------------------------------------------
def load_json(path: Path) -> dict[str, Any]:
    """Parse a json file into a dict; DataError naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read file ({e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a JSON object at the top level, got {type(obj).__name__}")
    return obj


def attach_language_features(frame: Frame, root: Path) -> None:
    """Set ``masks_path``/``features_path`` when ``root/language_features/<name>_{s,f}.npy`` exist."""
    base = root / "language_features"
    s, f = base / f"{frame.name}_s.npy", base / f"{frame.name}_f.npy"
    frame.masks_path = s if s.is_file() else None
    frame.features_path = f if f.is_file() else None


def report_missing(problems: list[str], folder: Path, names: list[str], listed_in: Path) -> None:
    """One warning (and one ``problems`` entry) for all images listed but not found on disk."""
    msg = f"{len(names)} image(s) listed in {listed_in} not found under {folder}, skipped: {_shorten(names)}"
    problems.append(msg)
    warnings.warn(msg, stacklevel=3)


def _shorten(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


# ---- per-frame parsing --------------------------------------------------------------------------
def frame_c2w(frame: dict[str, Any], json_path: Path, index: int) -> np.ndarray:
    """``[4,4]`` float64 camera-to-world (OpenGL axes) of ``frames[index]``; may hold NaN/Inf."""
    if "transform_matrix" not in frame:
        raise DataError(json_path, f"frame {index} has no transform_matrix")
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(json_path, f"frame {index}: transform_matrix is not a numeric 4x4 matrix") from None
    if m.shape != (4, 4):
        raise DataError(json_path, f"frame {index}: transform_matrix has shape {list(m.shape)}, expected [4, 4]")
    return m


def _number(value: Any, key: str, json_path: Path, index: int) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(json_path, f"frame {index}: {key} = {value!r} is not a number") from None
    if not math.isfinite(x):
        raise DataError(json_path, f"frame {index}: {key} = {value!r} is not finite")
    return x


def frame_camera(meta: dict[str, Any], frame: dict[str, Any], c2w_gl: np.ndarray, image_path: Path,
                 json_path: Path, index: int, name: str) -> tuple[Camera, list[str]]:
    """The camera of one frame at the image file's pixel size, plus notes for ``scene.problems``.

    Per-frame keys override top-level ones. The focal length comes from the most specific level that
    gives one (``fl_x`` before ``camera_angle_x``); ``fl_y`` defaults to ``fl_x`` and ``cx, cy`` to the
    image centre. ``w, h`` default to the image file's size; when the file's size differs from the
    json's, the intrinsics are rescaled to the file.
    """
    notes: list[str] = []

    def get(key: str, default: Any = None) -> Any:
        return frame[key] if key in frame else meta.get(key, default)

    def num(key: str, default: Any = None) -> float | None:
        v = get(key, default)
        return None if v is None else _number(v, key, json_path, index)

    file_w, file_h = image_size(image_path)
    w, h = num("w"), num("h")
    if w is None or h is None:
        w, h = float(file_w), float(file_h)
    if w <= 0 or h <= 0:
        raise DataError(json_path, f"frame {index}: image size {w}x{h} must be positive")

    level = frame if any(k in frame for k in _FOCAL_KEYS) else meta
    if "fl_x" in level:
        fx = _number(level["fl_x"], "fl_x", json_path, index)
        fy = _number(level.get("fl_y", fx), "fl_y", json_path, index)
    elif "camera_angle_x" in level:
        ax = _number(level["camera_angle_x"], "camera_angle_x", json_path, index)
        fx = 0.5 * w / math.tan(0.5 * ax)
        fy = 0.5 * h / math.tan(0.5 * _number(level["camera_angle_y"], "camera_angle_y", json_path, index)) \
            if "camera_angle_y" in level else fx
    else:
        raise DataError(json_path, f"frame {index}: no focal length (need camera_angle_x or fl_x)")
    if fx <= 0 or fy <= 0:
        raise DataError(json_path, f"frame {index}: focal length must be positive, got fx={fx}, fy={fy}")
    cx, cy = num("cx", w / 2.0), num("cy", h / 2.0)

    cam = Camera.from_opengl_c2w(c2w_gl, fx, fy, cx, cy, round(w), round(h), name=name)
    cam = replace(cam, distortion=_distortion(get, json_path, index, notes))
    if (file_w, file_h) != (cam.width, cam.height):
        if abs(file_w / file_h - w / h) > 0.01 * w / h:
            notes.append(f"{json_path}: images of size {file_w}x{file_h} have another aspect ratio than the "
                         f"json's {cam.width}x{cam.height}; intrinsics were scaled per axis")
        cam = cam.resized(file_w, file_h)
    return cam, notes


def _distortion(get, json_path: Path, index: int, notes: list[str]) -> Distortion | None:
    model = get("camera_model")
    k = {key: _number(get(key, 0.0), key, json_path, index) for key in ("k1", "k2", "k3", "k4", "p1", "p2")}
    if model == "OPENCV_FISHEYE":
        return Distortion("fisheye", (k["k1"], k["k2"], k["k3"], k["k4"]))
    if model not in (None, "OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise DataError(json_path, f"frame {index}: unsupported camera_model {model!r}",
                        "supported: OPENCV, OPENCV_FISHEYE, PINHOLE")
    if k["k4"] != 0.0:
        notes.append(f"{json_path}: k4 is ignored for the {model or 'OPENCV'} model (radial terms k1..k3 are used)")
    dist = Distortion("opencv", (k["k1"], k["k2"], k["p1"], k["p2"], k["k3"], 0.0, 0.0, 0.0))
    return None if dist.is_identity() else dist


def _relative_name(file_path: str) -> str:
    rel = Path(os.path.normpath(file_path.replace("\\", "/"))).as_posix()
    if Path(rel).suffix in IMAGE_SUFFIXES:
        rel = rel[: -len(Path(rel).suffix)]
    return rel


def parse_transforms_file(json_path: Path, *, downscale: float, problems: list[str],
                          meta: dict[str, Any] | None = None) -> list[PosedImage]:
    """Every usable frame of one transforms file, in file order.

    Frames whose image is missing or whose pose is not finite are skipped, each kind reported once
    (warning + ``problems``). ``file_path`` is relative to the json's folder, with or without
    extension.
    """
    meta = load_json(json_path) if meta is None else meta
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DataError(json_path, "no 'frames' list",
                        "a transforms file holds {'frames': [...]} with one entry per image")
    if downscale <= 0:
        raise DataError(json_path, f"downscale must be positive, got {downscale}")
    base = json_path.parent
    out: list[PosedImage] = []
    missing: list[str] = []
    bad_pose: list[str] = []
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise DataError(json_path, f"frame {index} has no file_path string")
        rel = _relative_name(frame["file_path"])
        c2w = frame_c2w(frame, json_path, index)
        if not np.isfinite(c2w).all():
            bad_pose.append(rel)
            continue
        image_path = find_image(base / frame["file_path"])
        if image_path is None:
            missing.append(frame["file_path"])
            continue
        cam, notes = frame_camera(meta, frame, c2w, image_path, json_path, index, rel)
        problems.extend(n for n in notes if n not in problems)
        if downscale != 1.0:
            cam = cam.scaled(downscale)
        out.append(PosedImage(rel, image_path, cam))
    if bad_pose:
        msg = (f"{len(bad_pose)} frame(s) in {json_path} have a non-finite transform_matrix, dropped: "
               f"{_shorten(bad_pose)}")
        problems.append(msg)
        warnings.warn(msg, stacklevel=2)
    if missing:
        report_missing(problems, base, missing, json_path)
    return out


def make_frames(train: list[PosedImage], test: list[PosedImage], *, eval_split: bool,
                background: tuple[float, float, float]) -> tuple[list[Frame], list[Frame]]:
    """Name and split the frames.

    Without ``eval_split`` the test frames join the training set (frames whose image is already in
    it are not added twice) and the test set is empty. A frame is named by its file stem when no two
    images share a stem (``000020``, ``frame_00041``), else by its relative path (``train/r_0``).
    """
    if not eval_split:
        seen = {p.image_path for p in train}
        train = train + [p for p in test if p.image_path not in seen]
        test = []
    images_by_stem: dict[str, set[Path]] = {}
    for p in train + test:
        images_by_stem.setdefault(Path(p.rel).name, set()).add(p.image_path)
    unique = all(len(paths) == 1 for paths in images_by_stem.values())

    def frame(p: PosedImage) -> Frame:
        name = Path(p.rel).name if unique else p.rel
        return Frame(name=name, camera=replace(p.camera, name=name), image_path=p.image_path,
                     background=tuple(float(c) for c in background))

    return [frame(p) for p in train], [frame(p) for p in test]


def read_split(files: tuple[Path, Path | None], *, downscale: float, eval_split: bool, holdout_every: int,
               problems: list[str]) -> tuple[list[PosedImage], list[PosedImage], dict[str, Any]]:
    """``(train, test, train json contents)`` from the files found by :func:`find_transforms_files`.

    A single ``transforms.json`` is sorted by ``file_path`` and every ``holdout_every``-th frame
    (index 0, 8, 16, ...) is held out when ``eval_split``.
    """
    train_json, test_json = files
    if holdout_every < 1:
        raise DataError(train_json, f"holdout_every must be at least 1, got {holdout_every}")
    meta = load_json(train_json)
    train = parse_transforms_file(train_json, downscale=downscale, problems=problems, meta=meta)
    if test_json is not None:
        test = parse_transforms_file(test_json, downscale=downscale, problems=problems)
    elif train_json.name == "transforms.json":
        ordered = sorted(train, key=lambda p: p.rel)
        held = [eval_split and i % holdout_every == 0 for i in range(len(ordered))]
        train = [p for p, h in zip(ordered, held) if not h]
        test = [p for p, h in zip(ordered, held) if h]
    else:
        test = []
    return train, test, meta


# ---- scene reader -------------------------------------------------------------------------------
def find_transforms_files(root: Path) -> tuple[Path, Path | None] | None:
    """``(train json, test json | None)`` of a split scene, ``(transforms.json, None)``, or None."""
    train = root / "transforms_train.json"
    if train.is_file():
        for name in ("transforms_test.json", "transforms_val.json"):
            if (root / name).is_file():
                return train, root / name
        return train, None
    single = root / "transforms.json"
    if single.is_file():
        return single, None
    return None


def read_transforms(root: str | Path, *, downscale: float = 1.0,
                    background: tuple[float, float, float] = (1.0, 1.0, 1.0), eval_split: bool = True,
                    holdout_every: int = 8) -> Scene:
    """A :class:`Scene` from a Blender / nerfstudio / instant-ngp folder.

    ``transforms_train.json`` + ``transforms_test.json`` (``transforms_val.json`` when there is no
    test file) give the split; a single ``transforms.json`` is sorted by ``file_path`` and every
    ``holdout_every``-th frame (index 0, 8, 16, ...) is the test set when ``eval_split``. A nerfstudio
    ``ply_file_path`` gives the initial points.
    """
    root = Path(root)
    found = find_transforms_files(root)
    if found is None:
        raise DataError(root, "no transforms file found (looked for transforms_train.json and transforms.json)")
    problems: list[str] = []
    train, test, meta = read_split(found, downscale=downscale, eval_split=eval_split,
                                   holdout_every=holdout_every, problems=problems)
    train_frames, test_frames = make_frames(train, test, eval_split=eval_split, background=background)
    for f in train_frames + test_frames:
        attach_language_features(f, root)

    points = colors = None
    if isinstance(meta.get("ply_file_path"), str):
        points, colors, _ = read_points(root / meta["ply_file_path"])
    return Scene(root=root, source="blender", train_frames=train_frames, test_frames=test_frames,
                 points=points, colors=colors, problems=problems)
