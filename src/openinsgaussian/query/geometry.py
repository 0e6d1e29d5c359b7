"""Object geometry from Gaussian centres: outlier-free subset, axis-aligned and oriented boxes.

What a planner needs of a selected object or an instance: its centroid, its axis-aligned box
``(min [3], max [3])`` and an oriented box from the principal axes of the centres. All three are
computed on the *inliers* of the centres: the statistical outlier removal of the LeRF evaluation
(:func:`~openinsgaussian.query.select.filter_selection` without its scale and size tests), so a
few stray Gaussians far from the object do not inflate the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError


@dataclass(frozen=True)
class OrientedBox:
    """A box with centre ``center [3]``, unit axes ``axes [3, 3]`` (rows, right-handed, largest
    spread first) and full side lengths ``extent [3]`` along those axes."""

    center: np.ndarray  # [3]
    axes: np.ndarray  # [3, 3] rows
    extent: np.ndarray  # [3]

    def corners(self) -> np.ndarray:
        """``[8, 3]`` corner points."""
        signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        return self.center + (signs * self.extent) @ self.axes  # [8, 3]

    def to_json(self) -> dict:
        return {
            "center": self.center.tolist(),
            "axes": self.axes.tolist(),
            "extent": self.extent.tolist(),
        }


def _points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
        raise DataError(None, f"expected points [N>=1, 3], got shape {tuple(p.shape)}")
    return p


def inlier_mask(points: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the centres kept by the LeRF statistical outlier removal; all of them when
    it would keep none (fewer than 4 points, or every point equally spread)."""
    from .select import filter_selection

    p = _points(points)
    t = torch.from_numpy(p)
    keep = filter_selection(
        t, torch.zeros_like(t), torch.ones(len(p), dtype=torch.bool), max_scale=float("inf"),
        min_count=1,
    ).numpy()
    return keep if keep.any() else np.ones(len(p), dtype=bool)


def aabb(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned ``(min [3], max [3])`` of ``points [N, 3]``."""
    p = _points(points)
    return p.min(axis=0), p.max(axis=0)


def oriented_box(points: np.ndarray) -> OrientedBox:
    """Oriented box of ``points [N, 3]`` from the principal axes of their covariance.

    Axes are the covariance eigenvectors sorted by decreasing eigenvalue, each signed so that
    its largest component is positive, the third flipped if needed to make them right-handed;
    the extent and centre come from the points' projections on the axes (min to max).
    """
    p = _points(points)
    mean = p.mean(axis=0)
    q = p - mean  # [N, 3]
    cov = q.T @ q / len(p)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues, columns
    axes = vecs[:, ::-1].T.copy()  # [3, 3] rows, largest first
    for i in range(3):
        if axes[i, np.argmax(np.abs(axes[i]))] < 0:
            axes[i] = -axes[i]
    if np.linalg.det(axes) < 0:
        axes[2] = -axes[2]
    proj = q @ axes.T  # [N, 3]
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    return OrientedBox(center=mean + 0.5 * (lo + hi) @ axes, axes=axes, extent=hi - lo)


__all__ = ["OrientedBox", "aabb", "inlier_mask", "oriented_box"]
