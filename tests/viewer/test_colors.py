"""Viewer colour tables: stable distinct instance colours, dimming and hiding."""

from __future__ import annotations

import numpy as np
import pytest

from openinsgaussian.errors import ConfigError
from openinsgaussian.viewer import highlight, id_palette, instance_colors
from openinsgaussian.viewer.colors import GREY


def test_instance_colours_are_stable_distinct_and_grey_for_unassigned():
    big = id_palette(640)  # the largest published codebook: 64 x 10 leaves
    np.testing.assert_array_equal(id_palette(10), big[:10])  # colour of an id depends on it only
    assert big.min() >= 0.0 and big.max() <= 1.0
    assert len(np.unique(np.round(big * 255).astype(int), axis=0)) == 640
    i, j = np.triu_indices(640, 1)
    near = np.abs(i - j) <= 10  # e.g. the leaves of one coarse cluster
    assert np.linalg.norm(big[i[near]] - big[j[near]], axis=1).min() > 0.25
    assert np.linalg.norm(big - GREY, axis=1).min() > 0.25
    ids = np.array([3, 0, 32, -1, 3, 31])
    cols = instance_colors(ids, 32)  # 32 = k1 * k2: the never-assigned sentinel
    np.testing.assert_array_equal(cols[[2, 3]], np.stack([GREY, GREY]))
    np.testing.assert_array_equal(cols[0], cols[4])
    np.testing.assert_array_equal(cols[[0, 1, 5]], id_palette(32)[[3, 0, 31]])


def test_highlight_dims_or_hides_the_unselected():
    rgb = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.9]], dtype=np.float32)
    op = np.array([0.8, 0.5, 1.0], dtype=np.float32)
    mask = np.array([True, False, False])
    r, o = highlight(rgb, op, None)
    np.testing.assert_array_equal(r, rgb)
    np.testing.assert_array_equal(o, op)
    r, o = highlight(rgb, op, mask, "dim", dim=0.5, dim_opacity=0.2)
    np.testing.assert_array_equal(r[0], rgb[0])
    assert o[0] == pytest.approx(0.8)
    np.testing.assert_allclose(r[1], [1 / 6] * 3, atol=1e-6)  # grey at half the mean
    np.testing.assert_allclose(o[1:], [0.1, 0.2], atol=1e-6)
    r, o = highlight(rgb, op, mask, "hide")
    np.testing.assert_array_equal(o, op * np.array([1, 0, 0], dtype=np.float32))
    np.testing.assert_array_equal(r, rgb)
    with pytest.raises(ConfigError, match="2 entries"):
        highlight(rgb, op, mask[:2])
