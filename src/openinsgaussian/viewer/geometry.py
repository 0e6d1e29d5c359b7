"""Geometry of the viewer: splat covariances, the browser-side subsample, ray picking, up axis.

Pure numpy / torch, no viser, so that every piece is testable without a browser.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..render.projection import covariance_3d


def splat_covariances(
    quats: np.ndarray | torch.Tensor, scales: np.ndarray | torch.Tensor, chunk: int = 1 << 18
) -> np.ndarray:
    """``[N, 3, 3]`` float32 world covariances ``R diag(s)^2 R^T`` for the browser splats.

    Args:
        quats: ``[N, 4]`` rotations (w, x, y, z), normalised here (the renderer's convention).
        scales: ``[N, 3]`` activated scales (standard deviations, not logs).
        chunk: rows per step (bounds the float32 temporaries for millions of Gaussians).

    The math is the rasteriser's own :func:`openinsgaussian.render.projection.covariance_3d`, so
    the browser shows the same ellipsoids as the renders.
    """
    q = torch.as_tensor(np.asarray(quats) if not isinstance(quats, torch.Tensor) else quats)
    s = torch.as_tensor(np.asarray(scales) if not isinstance(scales, torch.Tensor) else scales)
    q, s = q.detach().cpu().to(torch.float32), s.detach().cpu().to(torch.float32)
    if q.dim() != 2 or q.shape[1] != 4 or s.shape != (q.shape[0], 3):
        raise ConfigError(
            f"need quats [N,4] and scales [N,3]; got {tuple(q.shape)} and {tuple(s.shape)}"
        )
    out = np.empty((q.shape[0], 3, 3), dtype=np.float32)
    for a in range(0, q.shape[0], chunk):
        out[a : a + chunk] = covariance_3d(q[a : a + chunk], s[a : a + chunk]).numpy()
    return out


def subsample_indices(n: int, max_count: int, seed: int = 0) -> np.ndarray:
    """Sorted ``[M]`` int64 indices of the Gaussians sent to the browser, ``M = min(n, max_count)``.

    All of them when they fit; otherwise a uniform sample without replacement drawn from a
    generator seeded with ``seed``, so the same run always shows the same subset.
    """
    if max_count <= 0:
        raise ConfigError(f"max_gaussians must be positive, got {max_count}")
    if n <= max_count:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_count, replace=False)).astype(np.int64)


def pick_along_ray(
    origin: np.ndarray | tuple[float, float, float],
    direction: np.ndarray | tuple[float, float, float],
    means: np.ndarray,
    tolerance: float = 0.01,
    eligible: np.ndarray | None = None,
    radii: np.ndarray | None = None,
) -> int | None:
    """Index of the Gaussian a click ray hits first, or None.

    A centre at depth ``t`` along the ray (``t > 0``) is hit when its distance to the ray is at
    most ``tolerance * t + radius``: ``tolerance`` is an angle in radians (about a few pixels, so
    the tolerance grows with distance as a pixel's footprint does) and ``radius`` (``radii [M]``,
    e.g. the largest scale) lets a big Gaussian be hit away from its centre. Of the hits the one
    nearest to the origin wins: the front surface under the cursor.

    Args:
        origin, direction: the ray in world coordinates (direction need not be unit length).
        means: ``[M, 3]`` centres. eligible: ``[M]`` bool, those that may be picked (e.g. visible
            and opaque enough); None: all.
    """
    o = np.asarray(origin, dtype=np.float64).reshape(3)
    d = np.asarray(direction, dtype=np.float64).reshape(3)
    norm = float(np.linalg.norm(d))
    if not np.isfinite(norm) or norm < 1e-12 or not np.isfinite(o).all():
        return None
    d = d / norm
    rel = np.asarray(means, dtype=np.float64) - o  # [M, 3]
    t = rel @ d  # [M] depth along the ray
    perp = np.linalg.norm(rel - t[:, None] * d, axis=1)  # [M] distance to the ray
    limit = tolerance * t
    if radii is not None:
        limit = limit + np.asarray(radii, dtype=np.float64).reshape(-1)
    hit = (t > 0) & (perp <= limit)
    if eligible is not None:
        hit &= np.asarray(eligible, dtype=bool).reshape(-1)
    if not hit.any():
        return None
    idx = np.flatnonzero(hit)
    return int(idx[np.argmin(t[idx])])


def up_direction(cam_to_world: np.ndarray) -> np.ndarray:
    """World up ``[3]`` (unit) from camera poses ``[F, 4, 4]`` (OpenCV axes: y points down in the
    image): minus the mean camera y axis. ``+z`` when the cameras disagree too much to tell."""
    c2w = np.asarray(cam_to_world, dtype=np.float64).reshape(-1, 4, 4)
    if len(c2w) == 0:
        return np.array([0.0, 0.0, 1.0])
    up = -c2w[:, :3, 1].mean(axis=0)
    n = float(np.linalg.norm(up))
    if not np.isfinite(n) or n < 0.3:
        return np.array([0.0, 0.0, 1.0])
    return up / n


__all__ = ["pick_along_ray", "splat_covariances", "subsample_indices", "up_direction"]
