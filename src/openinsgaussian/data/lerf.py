"""LeRF-OVS evaluation annotations (LangSplat's labelme-like JSON) and their ground-truth masks.

Each evaluated frame has ``label/<scene>/frame_XXXXX.json`` with ``info.{width,height,name}`` and
``objects[].{category, segmentation = [[x, y], ...], bbox = [x1, y1, x2, y2], area}`` in pixels
(METHOD §7.2, §10.2). The GT mask of a category is the union of its polygons, rasterised the way
LangSplat's GT generation did (``cv2.fillPoly`` on ``np.int32(polygon)``). :func:`rasterize_polygon`
reimplements that rasteriser with vectorised numpy scanlines, so the package needs no OpenCV.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import DataError

#: The four LeRF-OVS scenes re-annotated by LangSplat.
LERF_SCENES: tuple[str, ...] = ("figurines", "ramen", "teatime", "waldo_kitchen")

#: Evaluated frames per scene (METHOD §7.2).
LERF_EVAL_FRAMES: dict[str, tuple[str, ...]] = {
    "waldo_kitchen": tuple(f"frame_{i:05d}" for i in (53, 66, 89, 140, 154)),
    "ramen": tuple(f"frame_{i:05d}" for i in (6, 24, 60, 65, 81, 119, 128)),
    "figurines": tuple(f"frame_{i:05d}" for i in (41, 105, 152, 195)),
    "teatime": tuple(f"frame_{i:05d}" for i in (2, 25, 43, 107, 129, 140)),
}

#: Text queries per scene, verbatim (spelling and case included) as the evaluation code hard-codes
#: them; they equal the GT category names (METHOD §7.2).
# fmt: off
LERF_QUERIES: dict[str, tuple[str, ...]] = {
    "figurines": (
        "jake", "pirate hat", "pikachu", "rubber duck with hat", "porcelain hand", "red apple",
        "tesla door handle", "waldo", "bag", "toy cat statue", "miffy", "green apple", "pumpkin",
        "rubics cube", "old camera", "rubber duck with buoy", "red toy chair", "pink ice cream",
        "spatula", "green toy chair", "toy elephant",
    ),
    "teatime": (
        "sheep", "yellow pouf", "stuffed bear", "coffee mug", "tea in a glass", "apple", "coffee",
        "hooves", "bear nose", "dall-e brand", "plate", "paper napkin", "three cookies",
        "bag of cookies",
    ),
    "ramen": (
        "nori", "sake cup", "kamaboko", "corn", "spoon", "egg", "onion segments", "plate",
        "napkin", "bowl", "glass of water", "hand", "chopsticks", "wavy noodles",
    ),
    "waldo_kitchen": (
        "Stainless steel pots", "dark cup", "refrigerator", "frog cup", "pot", "spatula", "plate",
        "spoon", "toaster", "ottolenghi", "plastic ladle", "sink", "ketchup", "cabinet", "red cup",
        "pour-over vessel", "knife", "yellow desk",
    ),
}
# fmt: on

RasterMode = Literal["centers", "cv2"]
RASTER_MODES: tuple[str, ...] = ("centers", "cv2")

# Largest accepted |coordinate| in pixels: keeps the 16.16 fixed-point arithmetic of the "cv2"
# mode exact in int64 and the np.int32 truncation well defined.
_MAX_COORD = float(1 << 20)
_XY_SHIFT = 16  # OpenCV's fixed-point shift for polygon edges
_XY_ONE = 1 << _XY_SHIFT


@dataclass
class LerfObject:
    """One annotated polygon."""

    category: str  # GT category = text query, e.g. "rubber duck with hat"
    polygon: np.ndarray  # [K, 2] float64 (x, y) pixel coordinates, K >= 3
    bbox: tuple[float, float, float, float]  # (x1, y1, x2, y2) as written in the file
    area: float | None = None  # polygon area from the file; None when the file has none


@dataclass
class LerfAnnotation:
    """All annotated objects of one frame."""

    frame: str  # image stem, e.g. "frame_00041"
    width: int  # annotated image width in pixels
    height: int  # annotated image height in pixels
    objects: list[LerfObject] = field(default_factory=list)
    path: Path | None = None  # JSON file it was read from

    @property
    def categories(self) -> list[str]:
        """Distinct categories in order of first appearance."""
        return list(dict.fromkeys(o.category for o in self.objects))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _number(value: Any, path: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise DataError(path, f"{what} must be a finite number, got {value!r}")
    return float(value)


def _size(info: Mapping, key: str, path: Path) -> int:
    if key not in info:
        raise DataError(path, f"'info' has no '{key}'", "LeRF-OVS labels store info.width/height")
    v = _number(info[key], path, f"info.{key}")
    if v != int(v) or v <= 0:
        raise DataError(path, f"info.{key} must be a positive integer, got {info[key]!r}")
    return int(v)


def _parse_object(obj: Any, i: int, path: Path) -> LerfObject:
    where = f"objects[{i}]"
    if not isinstance(obj, Mapping):
        raise DataError(path, f"{where} must be a JSON object, got {type(obj).__name__}")
    for key in ("category", "segmentation", "bbox"):
        if key not in obj:
            raise DataError(path, f"{where} has no '{key}'")
    category = obj["category"]
    if not isinstance(category, str) or not category.strip():
        raise DataError(path, f"{where}.category must be a non-empty string, got {category!r}")
    try:
        poly = np.asarray(obj["segmentation"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            path, f"{where}.segmentation ({category!r}) is not a list of [x, y] points"
        ) from None
    if poly.ndim != 2 or poly.shape[1] != 2:
        raise DataError(
            path,
            f"{where}.segmentation ({category!r}) has shape {poly.shape}, expected [K, 2]",
            "one polygon written as [[x, y], ...]",
        )
    if len(poly) < 3:
        raise DataError(
            path, f"{where}.segmentation ({category!r}) is degenerate: {len(poly)} point(s), need 3"
        )
    if not np.isfinite(poly).all():
        raise DataError(path, f"{where}.segmentation ({category!r}) has non-finite coordinates")
    bbox_raw = obj["bbox"]
    if not isinstance(bbox_raw, (list, tuple)) or len(bbox_raw) != 4:
        raise DataError(path, f"{where}.bbox ({category!r}) must be [x1, y1, x2, y2]")
    bbox = tuple(_number(v, path, f"{where}.bbox") for v in bbox_raw)
    area = obj.get("area")
    area_f = None if area is None else _number(area, path, f"{where}.area")
    crowd = obj.get("iscrowd")  # 0/1 or false/true (False == 0 and True == 1 in Python)
    if crowd is not None and crowd not in (0, 1):
        raise DataError(path, f"{where}.iscrowd must be 0, 1, false or true, got {crowd!r}")
    return LerfObject(category=category, polygon=poly, bbox=bbox, area=area_f)  # type: ignore[arg-type]


def read_annotation(path: str | Path) -> LerfAnnotation:
    """Read one ``frame_XXXXX.json``; tolerant of CRLF/BOM, ``iscrowd`` as bool, missing ``area``.

    The frame name is the file stem; ``info.name``, when present, must name the same frame.
    Raises :class:`DataError` naming the file for unreadable or malformed JSON, a
    missing key, or a polygon with fewer than 3 points.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "annotation file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read annotation file ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(data, Mapping):
        raise DataError(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    for key in ("info", "objects"):
        if key not in data:
            raise DataError(path, f"no '{key}' key", "expected LangSplat's LeRF-OVS label format")
    info, objects = data["info"], data["objects"]
    if not isinstance(info, Mapping):
        raise DataError(path, "'info' must be a JSON object")
    if not isinstance(objects, list):
        raise DataError(path, "'objects' must be a list")
    width, height = _size(info, "width", path), _size(info, "height", path)
    frame = path.stem
    if info.get("name") is not None:
        named = Path(str(info["name"])).stem
        if named != frame:
            raise DataError(
                path,
                f"info.name {info['name']!r} does not match the file name",
                f"rename the file to {named}.json or fix info.name",
            )
    parsed = [_parse_object(o, i, path) for i, o in enumerate(objects)]
    return LerfAnnotation(frame=frame, width=width, height=height, objects=parsed, path=path)


def _label_candidates(label_dir: Path, scene: str) -> list[Path]:
    return [label_dir / scene, label_dir / "label" / scene, label_dir]


def find_label_folder(label_dir: str | Path, scene: str) -> Path | None:
    """The folder holding ``scene``'s ``frame_*.json``: ``label_dir/<scene>`` (LangSplat's
    ``label/``), ``label_dir/label/<scene>`` (the dataset root) or ``label_dir`` itself; or None."""
    for cand in _label_candidates(Path(label_dir), scene):
        if cand.is_dir() and any(cand.glob("frame_*.json")):
            return cand
    return None


def _label_folder(label_dir: Path, scene: str) -> Path:
    found = find_label_folder(label_dir, scene)
    if found is None:
        raise DataError(
            label_dir,
            f"no frame_*.json annotations for scene {scene!r}",
            "looked in " + ", ".join(str(c) for c in _label_candidates(label_dir, scene)),
        )
    return found


def labels_digest(folder: str | Path) -> str:
    """Short SHA-256 of the names and bytes of a label folder's ``frame_*.json`` files: metrics
    record it, so results scored against other annotations are never reused."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).glob("frame_*.json")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def read_lerf_labels(label_dir: str | Path, scene: str) -> dict[str, LerfAnnotation]:
    """All ``frame_*.json`` annotations of ``scene``, keyed by frame name in sorted order.

    ``label_dir`` may be the ``label/`` folder (reads ``label/<scene>/``), the dataset root holding
    ``label/<scene>/``, or a folder holding the JSON files directly.
    """
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise DataError(label_dir, "label folder not found")
    folder = _label_folder(label_dir, scene)
    out: dict[str, LerfAnnotation] = {}
    for p in sorted(folder.glob("frame_*.json")):
        ann = read_annotation(p)
        out[ann.frame] = ann
    return out


# ---------------------------------------------------------------------------------------------
# Frame names
# ---------------------------------------------------------------------------------------------

_TRAILING_DIGITS = re.compile(r"(\d+)$")


def frame_index(name: str | Path) -> int:
    """Frame number of a frame or image name (``"images/frame_00041.jpg"`` -> 41).

    It is the trailing digits of the file stem. (LangSplat's own evaluation indexes its rendered
    feature maps with ``frame_index - 1``, i.e. 0-based positions among the sorted images.)
    """
    m = _TRAILING_DIGITS.search(Path(str(name)).stem)
    if m is None:
        raise DataError(
            None,
            f"frame name {str(name)!r} has no trailing frame number",
            "expected names like frame_00041",
        )
    return int(m.group(1))


def _frame_of(item: str | LerfAnnotation) -> str:
    return item.frame if isinstance(item, LerfAnnotation) else str(item)


def match_frames(
    annotations: Mapping[str, Any] | Iterable[str | LerfAnnotation],
    image_names: Iterable[str | Path],
) -> dict[str, str]:
    """Map annotated frames to images by stem: ``frame_00041`` <-> ``images/frame_00041.jpg``.

    ``annotations`` is a mapping keyed by frame (e.g. :func:`read_lerf_labels`' result), or frame
    names / :class:`LerfAnnotation` objects. Returns ``{frame: image name as given}``; raises
    :class:`DataError` listing every unmatched or ambiguous frame.
    """
    frames = (
        list(annotations.keys())
        if isinstance(annotations, Mapping)
        else [_frame_of(a) for a in annotations]
    )
    by_stem: dict[str, list[str]] = {}
    names = [str(n) for n in image_names]
    for n in names:
        by_stem.setdefault(Path(n).stem, []).append(n)
    out: dict[str, str] = {}
    missing: list[str] = []
    ambiguous: list[str] = []
    for f in frames:
        hits = by_stem.get(f, [])
        if not hits:
            missing.append(f)
        elif len(hits) > 1:
            ambiguous.append(f"{f} ({', '.join(hits)})")
        else:
            out[f] = hits[0]
    if missing or ambiguous:
        parts = []
        if missing:
            parts.append(f"{len(missing)} annotated frame(s) have no image: {', '.join(missing)}")
        if ambiguous:
            parts.append(f"several images share a frame's stem: {'; '.join(ambiguous)}")
        sample = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        raise DataError(None, "; ".join(parts), f"{len(names)} images, e.g. {sample or 'none'}")
    return out


# ---------------------------------------------------------------------------------------------
# Rasterisation
# ---------------------------------------------------------------------------------------------


def _check_polygon(polygon: Any, width: int, height: int) -> np.ndarray:
    try:
        p = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(None, "polygon is not an array of [x, y] points") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise DataError(None, f"polygon has shape {p.shape}, expected [K, 2]")
    if len(p) < 3:
        raise DataError(None, f"degenerate polygon: {len(p)} point(s), need at least 3")
    if not np.isfinite(p).all() or np.abs(p).max() > _MAX_COORD:
        raise DataError(None, f"polygon coordinates must be finite and within ±{_MAX_COORD:.0f} px")
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise DataError(None, f"image size must be positive integers, got {width}x{height}")
    return p


def _fill_spans(
    rows: np.ndarray, xl: np.ndarray, xr: np.ndarray, width: int, height: int
) -> np.ndarray:
    """``[H, W]`` bool with pixels ``xl..xr`` (inclusive, already clipped) set on each row."""
    mask = np.zeros((height, width), dtype=bool)
    if len(rows) == 0:
        return mask
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    diff = np.zeros((r1 - r0, width + 1), dtype=np.int32)  # [h, W+1] span starts minus ends
    np.add.at(diff, (rows - r0, xl), 1)
    np.add.at(diff, (rows - r0, xr + 1), -1)
    mask[r0:r1] = np.cumsum(diff[:, :width], axis=1) > 0
    return mask


def _sorted_pairs(rows: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort crossings by (row, x) and pair them even-odd: ``(row, left x, right x)`` per span."""
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    if len(rows) % 2 or np.any(rows[0::2] != rows[1::2]):  # a closed polygon crosses a row evenly
        raise AssertionError("odd number of edge crossings on a scanline")
    return rows[0::2], xs[0::2], xs[1::2]


def _centers_mask(p: np.ndarray, width: int, height: int) -> np.ndarray:
    x0, y0 = np.roll(p[:, 0], 1), np.roll(p[:, 1], 1)  # [K] edge k runs vertex k-1 -> vertex k
    x1, y1 = p[:, 0], p[:, 1]
    keep = y0 != y1  # horizontal edges never cross a row centre line
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    # Row r is crossed when lo <= r + 0.5 < hi (half-open, so a shared vertex counts once).
    first = np.maximum(np.ceil(lo - 0.5), 0).astype(np.int64)
    stop = np.minimum(np.ceil(hi - 0.5), height).astype(np.int64)
    n = np.maximum(stop - first, 0)
    if n.sum() == 0:
        return np.zeros((height, width), dtype=bool)
    e = np.repeat(np.arange(len(n)), n)  # [C] edge of each crossing
    rows = first[e] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))  # [C]
    yc = rows + 0.5
    xs = x0[e] + (yc - y0[e]) * (x1[e] - x0[e]) / (y1[e] - y0[e])  # [C] crossing abscissae
    r, a, b = _sorted_pairs(rows, xs)
    # Pixel x is inside the span [a, b) when a <= x + 0.5 < b.
    xl = np.maximum(np.ceil(a - 0.5), 0).astype(np.int64)
    xr = np.minimum(np.ceil(b - 0.5) - 1, width - 1).astype(np.int64)
    ok = xl <= xr
    return _fill_spans(r[ok], xl[ok], xr[ok], width, height)


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero (C semantics); ``b != 0``."""
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def _clip_segments(
    x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cohen-Sutherland-style clipping of integer segments to ``[0,W-1] x [0,H-1]``.

    Same arithmetic and order as OpenCV's ``clipLine`` (endpoint 1 first, y before x, double
    precision truncated toward zero), so clipped endpoints are bit-identical. Returns the
    (possibly partly) clipped endpoints and whether the segment is visible.
    """
    x1, y1, x2, y2 = (np.array(v, dtype=np.int64) for v in (x1, y1, x2, y2))
    right, bottom = width - 1, height - 1

    def code(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    def step(num_a: np.ndarray, num_b: np.ndarray, den: np.ndarray, m: np.ndarray) -> np.ndarray:
        d = np.where(m, den, 1).astype(np.float64)
        return np.trunc(num_a.astype(np.float64) * num_b / d).astype(np.int64)

    c1, c2 = code(x1, y1), code(x2, y2)
    active = ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = active & ((c1 & 12) != 0)
    a = np.where(c1 < 8, 0, bottom)
    x1 = np.where(m, x1 + step(a - y1, x2 - x1, y2 - y1, m), x1)
    y1 = np.where(m, a, y1)
    c1 = np.where(m, (x1 < 0) + (x1 > right) * 2, c1)
    m = active & ((c2 & 12) != 0)
    a = np.where(c2 < 8, 0, bottom)
    x2 = np.where(m, x2 + step(a - y2, x2 - x1, y2 - y1, m), x2)
    y2 = np.where(m, a, y2)
    c2 = np.where(m, (x2 < 0) + (x2 > right) * 2, c2)
    active &= ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = active & (c1 != 0)
    a = np.where(c1 == 1, 0, right)
    y1 = np.where(m, y1 + step(a - x1, y2 - y1, x2 - x1, m), y1)
    x1 = np.where(m, a, x1)
    c1 = np.where(m, 0, c1)
    m = active & (c2 != 0)
    a = np.where(c2 == 1, 0, right)
    y2 = np.where(m, y2 + step(a - x2, y2 - y1, x2 - x1, m), y2)
    x2 = np.where(m, a, x2)
    c2 = np.where(m, 0, c2)
    return x1, y1, x2, y2, (c1 | c2) == 0


def _outside(x: np.ndarray, y: np.ndarray, width: int, height: int) -> np.ndarray:
    return (x < 0) | (x >= width) | (y < 0) | (y >= height)


def _lines8(
    x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(x [N], y [N])`` of 8-connected Bresenham segments, clipped to the image.

    Each segment is walked from its left endpoint along its major axis; the minor coordinate
    after ``k`` steps is ``ceil((2 k minor - major) / (2 major))`` (ties round toward the start).
    """
    out = _outside(x1, y1, width, height) | _outside(x2, y2, width, height)
    cx1, cy1, cx2, cy2, vis = _clip_segments(x1, y1, x2, y2, width, height)
    keep = ~out | vis
    x1, y1, x2, y2 = (
        np.where(out, c, o)[keep] for c, o in ((cx1, x1), (cy1, y1), (cx2, x2), (cy2, y2))
    )
    swap = x2 < x1  # walk left to right
    sx, sy = np.where(swap, x2, x1), np.where(swap, y2, y1)
    ddx, ddy = np.abs(x2 - x1), np.where(swap, y1 - y2, y2 - y1)
    sgn_y, ady = np.where(ddy < 0, -1, 1), np.abs(ddy)
    vert = ady > ddx
    major, minor = np.where(vert, ady, ddx), np.where(vert, ddx, ady)
    n = major + 1
    seg = np.repeat(np.arange(len(n)), n)  # [N]
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # [N] step along the major axis
    maj, mnr = major[seg], minor[seg]
    m = -((maj - 2 * k * mnr) // np.maximum(2 * maj, 1))  # ceil((2 k minor - major) / (2 major))
    m = np.where(maj > 0, m, 0)
    v = vert[seg]
    px = sx[seg] + np.where(v, m, k)
    py = sy[seg] + sgn_y[seg] * np.where(v, k, m)
    inside = ~_outside(px, py, width, height)
    return px[inside], py[inside]


def _cv2_mask(p: np.ndarray, width: int, height: int) -> np.ndarray:
    v = np.trunc(p).astype(np.int64)  # np.int32(polygon): truncation toward zero
    x0, y0 = np.roll(v[:, 0], 1), np.roll(v[:, 1], 1)  # [K] edge k runs vertex k-1 -> vertex k
    x1, y1 = v[:, 0], v[:, 1]
    mask = np.zeros((height, width), dtype=bool)
    # 1. Outline: every edge as an 8-connected line.
    lx, ly = _lines8(x0, y0, x1, y1, width, height)
    mask[ly, lx] = True
    # 2. Interior scanlines from the non-horizontal edges in 16.16 fixed point.
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    if len(x0) < 2:
        return mask
    out = _outside(x0, y0, width, height) | _outside(x1, y1, width, height)
    tx0, ty0, tx1, ty1, _ = _clip_segments(x0, y0, x1, y1, width, height)
    tx0, ty0 = np.where(out, tx0, x0), np.where(out, ty0, y0)
    tx1, ty1 = np.where(out, tx1, x1), np.where(out, ty1, y1)
    # A clipped edge is re-derived from its clipped (integer) endpoints, extrapolated to its
    # original end rows; an unclipped one is the segment itself.
    moved = out & (ty0 != ty1)
    cy0, cy1 = np.where(moved, ty0, y0), np.where(moved, ty1, y1)
    cx0, cx1 = tx0 << _XY_SHIFT, tx1 << _XY_SHIFT
    dx = _trunc_div(cx1 - cx0, cy1 - cy0)  # [E] x step per row, 16.16
    down = y0 < y1
    ey0, ey1 = np.where(down, y0, y1), np.where(down, y1, y0)
    ex = np.where(down, cx0 + (y0 - cy0) * dx, cx1 + (y1 - cy1) * dx)  # [E] x at row ey0
    # Edge e is active on rows ey0 <= y < ey1.
    first = np.maximum(ey0, 0)
    n = np.maximum(np.minimum(ey1, height) - first, 0)
    if n.sum() == 0:
        return mask
    e = np.repeat(np.arange(len(n)), n)
    rows = first[e] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))  # [C]
    xs = ex[e] + (rows - ey0[e]) * dx[e]  # [C] 16.16 crossing abscissae
    r, a, b = _sorted_pairs(rows, xs)
    xl = (a + (_XY_ONE - 1)) >> _XY_SHIFT  # ceil
    xr = b >> _XY_SHIFT  # floor
    ok = (xl < width) & (xr >= 0)
    xl, xr, r = np.maximum(xl[ok], 0), np.minimum(xr[ok], width - 1), r[ok]
    ok = xl <= xr
    return mask | _fill_spans(r[ok], xl[ok], xr[ok], width, height)


def rasterize_polygon(
    polygon: np.ndarray, width: int, height: int, *, mode: RasterMode = "cv2"
) -> np.ndarray:
    """Rasterise one polygon ``[K, 2]`` (x, y in pixels, K >= 3) to an ``[H, W]`` bool mask.

    Parts outside the image are clipped. Two modes:

    ``mode="cv2"`` reproduces ``cv2.fillPoly(mask, [np.int32(polygon)], 1)`` (LINE_8, shift 0),
    the call that produced LangSplat's GT masks. Pixel ``(x, y)`` stands for the lattice point
    ``(x, y)``:

    - vertices are truncated toward zero to integers;
    - outline: every edge is drawn as an 8-connected Bresenham line between its integer
      endpoints, walked from its left endpoint (and clipped to the image first), so boundary
      pixels are always included;
    - interior: on row ``y``, every non-horizontal edge with ``y0 <= y < y1`` is intersected in
      16.16 fixed point, ``x(y) = x0 + (y - y0) * trunc((x1 - x0) * 2^16 / (y1 - y0))``; the
      crossings are sorted and paired even-odd, and a pair ``(a, b)`` fills pixels
      ``ceil(a) .. floor(b)``. An edge with an endpoint outside the image is re-derived from its
      clipped integer endpoints (OpenCV's ``clipLine`` arithmetic) and extrapolated to its rows.

    This is bit-identical to OpenCV 4.11+ (checked against 4.14 and 5.0 on random polygons and on
    every bundled annotation) and to OpenCV <= 4.7 for polygons inside the image (4.7 did not
    re-derive clipped edges). OpenCV 4.8-4.10 rounded the span ends (``floor(a + 0.5) ..
    floor(b + 0.5)``) instead: on the bundled figurines/teatime annotations that changes 1176 of
    2.04 M GT pixels. Because of the outline, the mask area exceeds the polygon area by about half
    the perimeter (measured 0.39-0.57 x perimeter on the bundled annotations).

    ``mode="centers"``: pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)`` and is inside when its
    centre ``(x + 0.5, y + 0.5)`` is inside the untruncated polygon by the even-odd rule. Centres
    exactly on an edge follow the top-left rule: a row's span ``[a, b)`` holds the centres with
    ``a <= x + 0.5 < b``, and an edge crosses the rows with ``min(y0, y1) <= y + 0.5 <
    max(y0, y1)``. Polygons that tile the plane share no pixel, and the mask area estimates the
    polygon area without bias (within 0.05 x perimeter on the bundled annotations).
    """
    if mode not in RASTER_MODES:
        raise DataError(
            None, f"unknown rasterisation mode {mode!r}", f"choose one of {RASTER_MODES}"
        )
    p = _check_polygon(polygon, width, height)
    width, height = int(width), int(height)
    if mode == "centers":
        return _centers_mask(p, width, height)
    return _cv2_mask(p, width, height)


def category_masks(annotation: LerfAnnotation, mode: RasterMode = "cv2") -> dict[str, np.ndarray]:
    """GT mask per category ``{category: [H, W] bool}``: the union of its objects' polygons."""
    out: dict[str, np.ndarray] = {}
    for obj in annotation.objects:
        try:
            m = rasterize_polygon(obj.polygon, annotation.width, annotation.height, mode=mode)
        except DataError as e:
            raise DataError(annotation.path, f"{obj.category!r}: {e.problem}", e.hint) from None
        if obj.category in out:
            out[obj.category] |= m
        else:
            out[obj.category] = m
    return out
