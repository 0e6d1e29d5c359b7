"""Object geometry: oriented box of a rotated box's points, axis-aligned box, outlier removal."""

from __future__ import annotations

import numpy as np
import pytest

from openinsgaussian.errors import DataError
from openinsgaussian.query.geometry import aabb, inlier_mask, oriented_box


def _rot(yaw: float, pitch: float) -> np.ndarray:
    cz, sz, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ rx


def _box_points(extent, rot, center, n=9):
    g = np.linspace(-0.5, 0.5, n)
    local = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) * extent  # [n^3, 3]
    return local @ rot.T + center


def test_oriented_box_recovers_a_rotated_box():
    rot, center, extent = _rot(0.5, 0.3), np.array([1.0, -2.0, 0.5]), np.array([4.0, 2.0, 1.0])
    box = oriented_box(_box_points(extent, rot, center))
    np.testing.assert_allclose(box.center, center, atol=1e-9)
    np.testing.assert_allclose(box.extent, extent, atol=1e-9)
    # rows are the box's axes (columns of rot), up to sign, largest spread first
    np.testing.assert_allclose(np.abs(box.axes @ rot), np.eye(3), atol=1e-9)
    assert np.linalg.det(box.axes) == pytest.approx(1.0)
    for a in box.axes[:2]:  # the sign rule (the third axis follows from handedness)
        assert a[np.argmax(np.abs(a))] > 0
    corners = box.corners()
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(np.sort(np.linalg.norm(corners - center, axis=1)),
                               np.full(8, np.linalg.norm(extent) / 2), atol=1e-9)


def test_single_point_and_axis_aligned_box():
    box = oriented_box(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(box.center, [1, 2, 3]) and np.testing.assert_allclose(box.extent, 0)
    lo, hi = aabb(np.array([[0.0, 1, 2], [3, -1, 5]]))
    np.testing.assert_array_equal(lo, [0, -1, 2]) and np.testing.assert_array_equal(hi, [3, 1, 5])
    with pytest.raises(DataError, match="points"):
        aabb(np.zeros((0, 3)))


def test_far_outliers_are_left_out_and_tiny_sets_are_kept():
    pts = _box_points(np.array([1.0, 1.0, 1.0]), np.eye(3), np.zeros(3), n=6)  # 216 points
    far = np.array([[30.0, 0, 0], [0, -40.0, 0], [0, 0, 50.0]])
    keep = inlier_mask(np.concatenate([pts, far]))
    assert not keep[-3:].any() and keep[:-3].mean() > 0.8
    assert inlier_mask(np.array([[0.0, 0, 0], [1, 1, 1]])).all()  # nothing kept -> all of them
