"""The per-image preprocessing cache in the LangSplat / OpenGaussian layout (METHOD §2.3–2.5).

For image ``<name>``:

* ``<name>_s.npy``: float32 ``[L, H, W]`` (L = 4 levels: default, s, m, l) of *global* mask ids,
  -1 where no mask. Level l's ids are offset by the total mask count of levels 0..l-1.
* ``<name>_f.npy``: float32 ``[N_total, D]``, row ``k`` = language feature of global id ``k``.

Painting order. Within a level, masks are painted one after another and a later mask overwrites
an earlier one; ids (and feature rows) follow the painting order. ``paint_order="sam"`` (LangSplat,
METHOD §2.3) paints in the mask generator's own order, so where masks overlap the later one owns
the pixels and an earlier mask may vanish from the map while keeping its id and feature row.
``paint_order="area"`` sorts each level by area, largest first (stable), so small masks lie on top
and stay visible. Either way the last mask of a level is painted last and is fully visible, so the
largest id present in a level's channel is exactly the level's last id, which the reader's offset
rule relies on. Empty masks are dropped before writing. Both files are written atomically, ``_f``
first, so an entry exists only when both files do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError
from ..io import save_npy

PaintOrder = Literal["sam", "area"]


def entry_paths(directory: str | Path, name: str) -> tuple[Path, Path]:
    """``(<dir>/<name>_s.npy, <dir>/<name>_f.npy)``."""
    d = Path(directory)
    return d / f"{name}_s.npy", d / f"{name}_f.npy"


def entry_exists(directory: str | Path, name: str) -> bool:
    """True when both files of the entry exist (atomic writes make existing files complete)."""
    s, f = entry_paths(directory, name)
    return s.is_file() and f.is_file()


def paint_sequence(masks: np.ndarray, paint_order: PaintOrder) -> np.ndarray:
    """Indices of the non-empty masks of one level ``[m,H,W]`` in painting order."""
    m = len(masks)
    area = np.asarray(masks, dtype=bool).reshape(m, -1).sum(1)
    if paint_order == "sam":
        order = np.arange(m)
    elif paint_order == "area":
        order = np.argsort(-area, kind="stable")
    else:
        raise ValueError(f"paint_order must be 'sam' or 'area', got {paint_order!r}")
    return order[area[order] > 0]


def write_entry(directory: str | Path, name: str, levels: list[np.ndarray],
                features: list[np.ndarray], paint_order: PaintOrder = "sam") -> list[np.ndarray]:
    """Write the entry for image ``name``: ``levels[l]`` ``[m_l,H,W]`` bool masks with
    ``features[l]`` ``[m_l, D]``, painted in ``paint_order``. Returns, per level, the original
    mask indices in stored order (global id = level offset + position in that list)."""
    if len(levels) != len(features) or not levels:
        raise ValueError(f"need one feature array per level: {len(levels)} levels, "
                         f"{len(features)} feature arrays")
    shapes = {np.asarray(m).shape[1:] for m in levels}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"all levels must be [m,H,W] masks of one image size, "
                         f"got {sorted(shapes)}")
    h, w = next(iter(shapes))
    dims = {np.asarray(f).shape[1] for f in features if np.asarray(f).ndim == 2 and len(f)}
    if len(dims) > 1:
        raise ValueError(f"feature dimensions differ between levels: {sorted(dims)}")
    first = np.asarray(features[0])
    dim = dims.pop() if dims else (first.shape[-1] if first.ndim == 2 else 0)

    seg = np.full((len(levels), h, w), -1.0, dtype=np.float32)  # [L,H,W]
    rows: list[np.ndarray] = []
    orders: list[np.ndarray] = []
    offset = 0
    for lvl, (masks, feats) in enumerate(zip(levels, features)):
        masks = np.asarray(masks, dtype=bool)
        feats = np.asarray(feats, dtype=np.float32)
        if masks.ndim != 3:
            raise ValueError(f"level {lvl}: masks must be [m,H,W], got shape {masks.shape}")
        if len(masks) == 0:
            feats = np.zeros((0, dim), np.float32)
        elif feats.shape != (len(masks), dim):
            raise ValueError(f"level {lvl}: {len(masks)} masks need features "
                             f"[{len(masks)}, {dim}], got {feats.shape}")
        order = paint_sequence(masks, paint_order) if len(masks) else np.zeros(0, np.int64)
        for k, idx in enumerate(order):
            seg[lvl][masks[idx]] = offset + k
        rows.append(feats[order])
        orders.append(order)
        offset += len(order)
    all_rows = np.concatenate(rows, 0) if rows else np.zeros((0, dim), np.float32)
    s_path, f_path = entry_paths(directory, name)
    save_npy(f_path, all_rows.astype(np.float32))
    save_npy(s_path, seg)
    return orders


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "cache file not found", "run `openins preprocess` on the scene first")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot read cache file ({e})",
                        "delete it and run preprocessing again") from None


def read_level(directory: str | Path, name: str, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``[m,H,W]`` bool and features ``[m,D]`` float32 of one level of an entry.

    The public OpenGaussian rule (METHOD §2.5), with ``prev`` = the largest id in channels before
    ``level`` (-1 if none): local id = global id - prev - 1; negatives -> -1; +1 so 0 = no mask;
    one-hot with ``max + 1`` classes; drop class 0. Feature rows ``f[prev + 1 : max(level) + 1]``.
    The public code takes ``prev`` from channel ``level - 1`` only; the two agree whenever that
    channel holds a mask, and taking the largest id of *all* earlier channels keeps ids aligned
    when an earlier level is empty (the public rule would then prepend empty masks carrying
    other levels' features).
    """
    s_path, f_path = entry_paths(directory, name)
    seg = _load(s_path)
    feats = _load(f_path)
    if seg.ndim == 2:
        seg = seg[None]
    if seg.ndim != 3:
        raise DataError(s_path, f"expected a [L,H,W] id map, got shape {seg.shape}")
    if feats.ndim != 2:
        raise DataError(f_path, f"expected a [N,D] feature table, got shape {feats.shape}")
    n_levels = seg.shape[0]
    if not 0 <= level < n_levels:
        raise DataError(
            s_path,
            f"has {n_levels} mask level(s) but level {level} was requested",
            "caches written by LangSplat drop empty levels; choose a level below "
            f"{n_levels} (--sam-level) or re-run preprocessing with --overwrite",
        )
    prev = int(seg[:level].max()) if level > 0 else -1
    prev = max(prev, -1)
    ids = seg[level].astype(np.int64)  # [H,W]
    local = ids - prev - 1
    local[local < 0] = -1
    local += 1  # 0 = no mask
    m = int(local.max())  # number of masks of this level
    masks = local[None] == np.arange(1, m + 1, dtype=np.int64)[:, None, None]  # [m,H,W]
    start, stop = prev + 1, prev + 1 + m
    if stop > len(feats):
        raise DataError(f_path,
                        f"has {len(feats)} feature rows but {s_path.name} uses ids up to "
                        f"{stop - 1}",
                        "the two files are from different runs; re-run preprocessing "
                        "with --overwrite")
    return masks, np.asarray(feats[start:stop], dtype=np.float32)


def entry_counts(directory: str | Path, name: str) -> list[int]:
    """Masks per level of an existing entry, from its id map (memory-mapped)."""
    s_path, _ = entry_paths(directory, name)
    seg = np.load(s_path, mmap_mode="r", allow_pickle=False)
    counts, prev = [], -1
    for lvl in range(seg.shape[0]):
        mx = max(int(np.max(seg[lvl])), prev)
        counts.append(mx - prev)
        prev = mx
    return counts
