"""A synthetic room rewritten in the LeRF-OVS layout (METHOD §10.2), for the LeRF protocol offline.

The LeRF-OVS scenes are COLMAP projects with LangSplat's polygon annotations. This module turns a
room from :func:`~openinsgaussian.data.synthetic.generate_room` (ScanNet layout) into the same
layout, so that the COLMAP reader, the ``lerf`` preset, ``openins eval --protocol lerf`` and
``openins benchmark lerf`` can run end to end without downloads::

    <out>/<scene>/images/frame_00001.png            the room's colour images, renamed
    <out>/<scene>/sparse/0/{cameras,images,points3D}.bin   PINHOLE cameras, poses, point cloud
    <out>/<scene>/{instance-filt,label-filt,depth}/frame_00001.png   the room's 2D GT maps
    <out>/<scene>/instances.json                    instance id -> class
    <out>/label/<scene>/frame_XXXXX.json            annotations of a few evenly spaced frames
    <out>/<scene>/lerf_layout.json                  stamp, written last

Frames are all views of the room (train and test) sorted by name and numbered from 1, as LeRF's
``frame_00001``; the COLMAP reader then holds out every 8th by name. Each annotation lists every
visible object (walls and floor excluded) whose visible area reaches ``min_area_fraction`` of the
image, as a polygon: the convex hull of the object's visible pixels (pixel (x, y) at integer
coordinates, as ``cv2.fillPoly`` rasterises), so the rasterised polygon contains every visible pixel
(plus concavities and the outline's rounding band), like a coarse hand annotation. Instances of one
class become several objects of one category, OR-ed by the reader.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..io import atomic_open, write_json
from .colmap import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    ColmapPoints,
    rotmat_to_qvec,
    write_colmap_model,
)
from .scannet import GT_MAP_FOLDERS, read_scannet
from .scene import Frame

LAYOUT_VERSION = 1  # bump when the output for a given room changes
STAMP = "lerf_layout.json"
SKIP_CLASSES: tuple[str, ...] = ("wall", "floor")


@dataclass(frozen=True)
class LerfLayoutConfig:
    """How a synthetic room is written in the LeRF-OVS layout."""

    label_frames: int = 4
    """Number of annotated frames, evenly spaced over the sorted frames (the first included)."""
    min_area_fraction: float = 0.002
    """Objects whose visible area is below this fraction of the image are not annotated."""
    skip_classes: tuple[str, ...] = SKIP_CLASSES
    """Classes that are never annotated (LeRF-OVS annotates objects, not walls and floors)."""
    binary: bool = True
    """COLMAP model as .bin (True) or .txt."""

    def __post_init__(self) -> None:
        if self.label_frames < 1:
            raise ConfigError(f"label_frames must be at least 1, got {self.label_frames}")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ConfigError(
                f"min_area_fraction must be in [0, 1), got {self.min_area_fraction}"
            )


def convex_hull(points: np.ndarray) -> np.ndarray:
    """``[K, 2]`` counter-clockwise (in image axes: clockwise on screen) hull of ``[P, 2]`` points.

    Andrew's monotone chain; collinear points on the hull are dropped. Fewer than three distinct
    points are returned as they are (a point or a segment).
    """
    pts = np.unique(np.asarray(points, dtype=np.int64), axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> int:
        return int((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    def chain(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2 and cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = chain(pts), chain(pts[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.int64)


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon ``[K, 2]`` (shoelace formula; 0 for fewer than 3 vertices)."""
    p = np.asarray(poly, dtype=np.float64)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """``[K, 2]`` integer polygon (x, y) around the pixels of a ``[H, W]`` bool mask: their hull.

    Only the first and last pixel of every row can be hull vertices, so the hull is taken over
    those (at most 2H points).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 2), np.int64)
    sub = mask[rows]  # [R, W]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    ends = np.concatenate([np.stack([first, rows], 1), np.stack([last, rows], 1)])  # [2R, 2]
    return convex_hull(ends)


def _label_indices(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices in ``[0, n)`` starting at 0 (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max(k, 1))})


def annotate_frame(
    frame: Frame, new_name: str, image_name: str, classes: dict[int, tuple[str, int]],
    cfg: LerfLayoutConfig,
) -> dict:
    """The LangSplat-style annotation dict of one frame from its instance map."""
    inst = frame.load_instances()
    if inst is None:
        raise DataError(frame.image_path, f"frame {frame.name!r} has no instance map",
                        "the LeRF layout is written from a synthetic room (instance-filt/ maps)")
    h, w = inst.shape
    min_area = cfg.min_area_fraction * h * w
    objects = []
    ids, counts = np.unique(inst, return_counts=True)
    for iid, count in zip(ids.tolist(), counts.tolist()):
        cls = classes.get(int(iid), (None, 0))[0]
        if iid <= 0 or cls is None or cls in cfg.skip_classes or count < min_area:
            continue
        poly = mask_polygon(inst == iid)  # [K, 2]
        if len(poly) < 3:
            continue  # a line of pixels: no area to annotate
        x1, y1 = poly.min(axis=0).tolist()
        x2, y2 = poly.max(axis=0).tolist()
        objects.append({
            "category": cls,
            "group": int(iid),
            "segmentation": [[float(x), float(y)] for x, y in poly.tolist()],
            "area": polygon_area(poly),
            "layer": 1.0,
            "bbox": [float(x1), float(y1), float(x2), float(y2)],
            "iscrowd": 0,
            "note": "",
        })
    return {
        "info": {"name": image_name, "width": int(w), "height": int(h), "depth": 3,
                 "note": f"synthetic room frame {frame.name}"},
        "objects": objects,
    }


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, atomic_open(dst) as fo:
        shutil.copyfileobj(fi, fo)


def _colmap_model(frames: list[Frame], names: list[str], points: np.ndarray | None,
                  colors: np.ndarray | None) -> ColmapModel:
    cameras: dict[int, ColmapCamera] = {}
    cam_ids: dict[tuple, int] = {}
    images: dict[int, ColmapImage] = {}
    for i, (f, name) in enumerate(zip(frames, names), 1):
        c = f.camera
        key = (c.width, c.height, c.fx, c.fy, c.cx, c.cy)
        if key not in cam_ids:
            cam_ids[key] = len(cam_ids) + 1
            cameras[cam_ids[key]] = ColmapCamera(cam_ids[key], "PINHOLE", c.width, c.height,
                                                 (c.fx, c.fy, c.cx, c.cy))
        w2c = c.world_to_cam.double().numpy()  # [4, 4] OpenCV axes
        images[i] = ColmapImage(i, rotmat_to_qvec(w2c[:3, :3]), w2c[:3, 3].copy(), cam_ids[key],
                                name)
    if points is None:
        points = np.zeros((0, 3))
    p = len(points)
    rgb = np.full((p, 3), 128, np.uint8) if colors is None else np.asarray(colors)
    if rgb.dtype != np.uint8:  # float colours in [0, 1]
        rgb = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    pts = ColmapPoints(xyz=np.asarray(points, np.float64), rgb=rgb, error=np.zeros(p),
                       ids=np.arange(1, p + 1, dtype=np.int64),
                       track_lengths=np.zeros(p, np.int64))
    return ColmapModel(cameras=cameras, images=images, points3d=pts)


def _written(dest: Path, labels: Path, stamp: dict) -> list[Path]:
    """Every file a complete output holds, from its stamp."""
    files = [dest / "sparse" / "0" / f"{n}.{'bin' if stamp['settings']['binary'] else 'txt'}"
             for n in ("cameras", "images", "points3D")]
    files += [dest / "images" / n for n in stamp.get("images", [])]
    files += [labels / f"{n}.json" for n in stamp.get("label_frames", [])]
    return files


def write_lerf_layout(room: str | Path, out: str | Path, scene: str | None = None,
                      cfg: LerfLayoutConfig | None = None, progress: bool = True,
                      overwrite: bool = False) -> Path:
    """Write the synthetic room ``room`` as the LeRF-OVS scene ``out/<scene>``; returns that folder.

    ``scene`` defaults to the room's folder name. Idempotent: an existing output whose stamp
    matches (same room generation stamp, same settings) and whose files are all there is kept
    as it is, unless ``overwrite``.
    """
    cfg = cfg or LerfLayoutConfig()
    room, out = Path(room), Path(out)
    stamp_file = room / "synth.json"
    if not stamp_file.is_file():
        raise DataError(room, "not a synthetic room (no synth.json)",
                        "generate one with `openins synth`; only synthetic rooms have the instance "
                        "maps the annotations are drawn from")
    name = scene or room.name
    dest, labels = out / name, out / "label" / name
    stamp = {"version": LAYOUT_VERSION, "room": str(room.resolve()),
             "room_stamp": json.loads(stamp_file.read_text()),
             "settings": {"label_frames": cfg.label_frames,
                          "min_area_fraction": cfg.min_area_fraction,
                          "skip_classes": list(cfg.skip_classes), "binary": cfg.binary}}
    try:
        old = json.loads((dest / STAMP).read_text())
        complete = all(p.is_file() for p in _written(dest, labels, old))
        if not overwrite and complete and {k: old.get(k) for k in stamp} == stamp:
            return dest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    (dest / STAMP).unlink(missing_ok=True)  # the stamp is written last: no stamp = incomplete

    src = read_scannet(room)
    frames = sorted(src.train_frames + src.test_frames, key=lambda f: f.name)
    if not frames:
        raise DataError(room, "the room has no frames")
    names = [f"frame_{i:05d}" for i in range(1, len(frames) + 1)]
    image_names = [n + f.image_path.suffix for n, f in zip(names, frames)]
    for f, n, img in tqdm(list(zip(frames, names, image_names)), desc="LeRF layout",
                          unit="frame", disable=not progress, leave=False):
        _copy(f.image_path, dest / "images" / img)
        for attr, folder in GT_MAP_FOLDERS.items():
            p = getattr(f, attr)
            if p is not None:
                _copy(p, dest / folder / f"{n}.png")
    write_colmap_model(_colmap_model(frames, image_names, src.points, src.colors),
                       dest / "sparse" / "0", binary=cfg.binary)
    if (room / "instances.json").is_file():
        _copy(room / "instances.json", dest / "instances.json")
    annotated = _label_indices(len(frames), cfg.label_frames)
    if labels.is_dir():
        for old_label in labels.glob("frame_*.json"):
            old_label.unlink()
    for i in annotated:
        ann = annotate_frame(frames[i], names[i], image_names[i], src.instance_classes, cfg)
        write_json(labels / f"{names[i]}.json", ann)
    stamp["frames"] = {n: f.name for n, f in zip(names, frames)}
    stamp["images"] = image_names
    stamp["label_frames"] = [names[i] for i in annotated]
    write_json(dest / STAMP, stamp)
    return dest


__all__ = [
    "LAYOUT_VERSION",
    "LerfLayoutConfig",
    "annotate_frame",
    "convex_hull",
    "mask_polygon",
    "polygon_area",
    "write_lerf_layout",
]
