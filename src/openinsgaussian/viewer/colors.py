"""Colour tables of the viewer: one stable colour per instance id, and selection highlighting.

Pure numpy, no viser: the same id always gets the same colour (whatever the number of ids), so a
leaf keeps its colour across runs of the viewer and between the leaf and the coarse view.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import ConfigError

GREY = np.array([0.5, 0.5, 0.5], dtype=np.float32)
"""Colour of Gaussians without an instance (the sentinel leaf id, or ids outside the table)."""

_GOLDEN = 0.6180339887498949  # hue step: consecutive ids land far apart on the colour wheel
# (saturation, brightness) levels cycled per id; chosen so that any two ids less than 11 apart
# differ by >= 0.25 in RGB (hue steps of 5 and 8 ids are the short ones on the wheel)
_SATURATION = np.array([0.90, 0.65, 0.80], dtype=np.float64)
_VALUE = np.array([0.95, 0.75, 0.55], dtype=np.float64)

Others = Literal["dim", "hide"]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all inputs ``[n]`` in [0, 1]; returns ``[n, 3]``."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        axis=0,
    )  # [6, n, 3]
    return table[i, np.arange(len(h))]


def id_palette(n: int) -> np.ndarray:
    """``[n, 3]`` float32 colours in [0, 1] for ids ``0..n-1``.

    Colour ``i`` depends on ``i`` only: the hue advances by the golden ratio per id, while the
    saturation and brightness cycle over three levels, so neighbouring ids (e.g. the leaves of
    one coarse cluster) differ in hue and brightness. Saturation stays at 0.65 or more, keeping
    every colour clear of the grey of unassigned Gaussians.
    """
    if n < 0:
        raise ConfigError(f"palette size must be >= 0, got {n}")
    i = np.arange(n, dtype=np.int64)
    h = (0.05 + i * _GOLDEN) % 1.0
    s = _SATURATION[i % len(_SATURATION)]
    v = _VALUE[i % len(_VALUE)]
    return _hsv_to_rgb(h, s, v).astype(np.float32).reshape(n, 3)


def instance_colors(ids: np.ndarray, num_ids: int) -> np.ndarray:
    """``[N, 3]`` float32 colour per Gaussian from its id ``ids [N]``; ids outside
    ``[0, num_ids)`` (e.g. the never-assigned leaf ``k1 * k2``) are :data:`GREY`."""
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    palette = id_palette(num_ids)
    ok = (ids >= 0) & (ids < num_ids)
    out = np.broadcast_to(GREY, (len(ids), 3)).copy()
    out[ok] = palette[ids[ok]]
    return out


def highlight(
    rgb: np.ndarray,
    opacity: np.ndarray,
    mask: np.ndarray | None,
    others: Others = "dim",
    dim: float = 0.35,
    dim_opacity: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Colours and opacities with a selection shown: ``mask [M]`` keeps its colours; the others
    turn grey at ``dim`` of their brightness and ``dim_opacity`` of their opacity (``dim``, as the
    overlays of ``openins query``) or vanish (``hide``, opacity 0). ``mask`` None: unchanged.

    Args:
        rgb: ``[M, 3]`` colours in [0, 1]. opacity: ``[M]`` in [0, 1].

    Returns:
        ``(rgb [M, 3], opacity [M])`` float32 copies.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    opacity = np.asarray(opacity, dtype=np.float32).reshape(-1)
    if rgb.ndim != 2 or rgb.shape[1] != 3 or len(opacity) != len(rgb):
        raise ConfigError(f"need rgb [M,3] and opacity [M]; got {rgb.shape} and {opacity.shape}")
    out_rgb, out_op = rgb.copy(), opacity.copy()
    if mask is None:
        return out_rgb, out_op
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    if len(mask) != len(rgb):
        raise ConfigError(f"selection mask has {len(mask)} entries for {len(rgb)} Gaussians")
    rest = ~mask
    if others == "hide":
        out_op[rest] = 0.0
    elif others == "dim":
        grey = rgb[rest].mean(axis=1, keepdims=True) * dim  # [R, 1]
        out_rgb[rest] = np.repeat(grey, 3, axis=1)
        out_op[rest] = opacity[rest] * dim_opacity
    else:
        raise ConfigError(f"unknown mode {others!r} for unselected Gaussians; use dim or hide")
    return out_rgb, out_op


__all__ = ["GREY", "Others", "highlight", "id_palette", "instance_colors"]
