"""Viewer geometry: covariances from quaternions and scales, ray picking, subsampling, up axis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openinsgaussian.errors import ConfigError
from openinsgaussian.viewer import (
    pick_along_ray,
    splat_covariances,
    subsample_indices,
    up_direction,
)


def test_covariances_from_quats_and_scales_match_hand_computed_cases():
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    quats = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],  # identity
            [2 * c, 0.0, 0.0, 2 * s],  # 90 deg about z, not unit length: x -> y, y -> -x
            [c, s, 0.0, 0.0],  # 90 deg about x: y -> z, z -> -y
            [math.cos(math.pi / 8), 0.0, 0.0, math.sin(math.pi / 8)],  # 45 deg about z
        ]
    )
    scales = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 1.0]])
    cov = splat_covariances(quats, scales)
    assert cov.shape == (4, 3, 3) and cov.dtype == np.float32
    np.testing.assert_allclose(cov[0], np.diag([0.01, 0.04, 0.09]), atol=1e-6)
    np.testing.assert_allclose(cov[1], np.diag([4.0, 1.0, 9.0]), atol=1e-5)
    np.testing.assert_allclose(cov[2], np.diag([1.0, 9.0, 4.0]), atol=1e-5)
    # R diag(1, 4, 1) R^T with R the 45 deg turn: xx = yy = (1 + 4) / 2, xy = (1 - 4) / 2
    want = np.array([[2.5, -1.5, 0.0], [-1.5, 2.5, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(cov[3], want, atol=1e-5)
    # chunking does not change anything
    np.testing.assert_array_equal(splat_covariances(quats, scales, chunk=3), cov)
    with pytest.raises(ConfigError, match="quats"):
        splat_covariances(quats[:, :3], scales)


def test_pick_along_ray_takes_the_nearest_hit_within_the_tolerance():
    means = np.array(
        [
            [0.0, 0.0, 5.0],  # 0 on the ray, far
            [0.0, 0.0, 2.0],  # 1 on the ray, near
            [0.5, 0.0, 1.0],  # 2 off the ray
            [0.0, 0.0, -1.0],  # 3 behind the origin
        ]
    )
    down_z = (0.0, 0.0, 10.0)  # need not be unit length
    assert pick_along_ray((0, 0, 0), down_z, means) == 1
    assert pick_along_ray((0, 0, 0), down_z, means, eligible=np.array([1, 0, 1, 1], bool)) == 0
    assert pick_along_ray((0, 0, 0), (0, 0, -1), means[:3]) is None  # everything behind
    assert pick_along_ray((0, 0, 0), (0, 0, -1), means) == 3
    # the tolerance is an angle: 0.015 off the ray misses at depth 1 and hits at depth 2
    assert pick_along_ray((0, 0, 0), (0, 0, 1), np.array([[0.015, 0, 1.0]]), 0.01) is None
    assert pick_along_ray((0, 0, 0), (0, 0, 1), np.array([[0.015, 0, 2.0]]), 0.01) == 0
    # a large Gaussian is hit away from its centre
    wide = np.array([[0.3, 0.0, 4.0]])
    assert pick_along_ray((0, 0, 0), (0, 0, 1), wide, 0.01) is None
    assert pick_along_ray((0, 0, 0), (0, 0, 1), wide, 0.01, radii=np.array([0.35])) == 0
    assert pick_along_ray((0, 0, 0), (0, 0, 0), means) is None


def test_subsample_is_deterministic_and_up_axis_follows_the_cameras():
    np.testing.assert_array_equal(subsample_indices(10, 20), np.arange(10))
    a, b = subsample_indices(1000, 100, seed=0), subsample_indices(1000, 100, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and (np.diff(a) > 0).all() and a.max() < 1000
    assert not np.array_equal(a, subsample_indices(1000, 100, seed=1))
    with pytest.raises(ConfigError, match="max_gaussians"):
        subsample_indices(10, 0)
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns x, y (down) = -z, z
    np.testing.assert_allclose(up_direction(c2w[None]), [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(up_direction(np.zeros((0, 4, 4))), [0.0, 0.0, 1.0])


# ---- a live viewer of a tiny trained run --------------------------------------------------------
