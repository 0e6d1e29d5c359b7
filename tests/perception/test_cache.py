"""Cache layout: global ids across levels, painting order, the offset rule when reading back."""

from __future__ import annotations

import numpy as np
import pytest

from openinsgaussian.errors import DataError
from openinsgaussian.perception.cache import entry_counts, entry_exists, entry_paths, read_level, write_entry


def _m(rows, cols, h=4, w=4):
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


A = _m(slice(0, 2), slice(None))  # rows 0-1, area 8
B = _m(0, 0)  # pixel (0,0), area 1, inside A
C = _m(slice(None), 3)  # column 3, area 4
D = np.ones((4, 4), bool)  # everything, area 16
E = _m(slice(2, 4), slice(0, 2))  # bottom-left 2x2, area 4
FA, FB, FC, FD, FE = (np.full(3, v, np.float32) for v in (1, 2, 3, 4, 5))


@pytest.fixture
def entry(tmp_path):
    levels = [np.stack([A, B]), C[None], np.zeros((0, 4, 4), bool), np.stack([E, D])]
    feats = [np.stack([FA, FB]), FC[None], np.zeros((0, 3), np.float32), np.stack([FE, FD])]
    orders = write_entry(tmp_path, "img", levels, feats, paint_order="area")
    return tmp_path, orders


def test_sam_paint_order_keeps_generator_order_and_hidden_masks(tmp_path):
    """LangSplat paints in SAM's order: a later mask covers an earlier one, whose id and feature
    row stay (the reader then returns it as an empty plane, as the public one-hot does)."""
    levels = [np.stack([A, B]), C[None], np.zeros((0, 4, 4), bool), np.stack([E, D])]
    feats = [np.stack([FA, FB]), FC[None], np.zeros((0, 3), np.float32), np.stack([FE, FD])]
    orders = write_entry(tmp_path, "img", levels, feats)  # default: "sam"
    assert [o.tolist() for o in orders] == [[0, 1], [0], [], [0, 1]]
    seg = np.load(entry_paths(tmp_path, "img")[0])
    np.testing.assert_array_equal(seg[3], np.full((4, 4), 4.0))  # D (id 4) painted over E (id 3)
    masks, rows = read_level(tmp_path, "img", 3)
    assert masks.shape == (2, 4, 4) and not masks[0].any() and masks[1].all()
    np.testing.assert_array_equal(rows[:, 0], [5, 4])  # E's row is kept beside its hidden mask
    # the same masks painted by area put the small E on top
    write_entry(tmp_path, "area", levels, feats, paint_order="area")
    seg = np.load(entry_paths(tmp_path, "area")[0])
    assert seg[3, 3, 0] == 4 and seg[3, 0, 0] == 3  # E (now id 4) over D (id 3)
    with pytest.raises(ValueError, match="paint_order"):
        write_entry(tmp_path, "bad", levels, feats, paint_order="score")  # type: ignore[arg-type]


def test_written_ids_and_rows(entry):
    d, orders = entry
    assert [o.tolist() for o in orders] == [[0, 1], [0], [], [1, 0]]  # area-descending per level
    s_path, f_path = entry_paths(d, "img")
    seg, feats = np.load(s_path), np.load(f_path)
    assert seg.dtype == np.float32 and seg.shape == (4, 4, 4)
    assert feats.dtype == np.float32 and feats.shape == (5, 3)
    expected = np.full((4, 4, 4), -1.0, np.float32)
    expected[0, :2] = 0  # A
    expected[0, 0, 0] = 1  # B painted after (smaller) A
    expected[1, :, 3] = 2  # C: offset 2 (two default masks)
    expected[3] = 3  # D: offset 3 (default 2 + s 1 + m 0)
    expected[3, 2:, :2] = 4  # E smaller, painted on top
    np.testing.assert_array_equal(seg, expected)
    np.testing.assert_array_equal(feats[:, 0], [1, 2, 3, 4, 5])
    assert entry_exists(d, "img") and not entry_exists(d, "other")
    assert entry_counts(d, "img") == [2, 1, 0, 2]


def test_read_levels(entry):
    d, _ = entry
    masks, feats = read_level(d, "img", 0)
    np.testing.assert_array_equal(masks, np.stack([A & ~B, B]))
    np.testing.assert_array_equal(feats, np.stack([FA, FB]))
    masks, feats = read_level(d, "img", 1)
    np.testing.assert_array_equal(masks, C[None])
    np.testing.assert_array_equal(feats, FC[None])
    masks, feats = read_level(d, "img", 2)  # empty level
    assert masks.shape == (0, 4, 4) and feats.shape == (0, 3)
    masks, feats = read_level(d, "img", 3)  # after an empty level: offset = largest earlier id
    np.testing.assert_array_equal(masks, np.stack([D & ~E, E]))
    np.testing.assert_array_equal(feats, np.stack([FD, FE]))
    assert masks.dtype == bool and feats.dtype == np.float32


def test_public_offset_rule_on_langsplat_style_map(tmp_path):
    """A LangSplat-style entry (ids painted in score order, a hidden mask in level 0): local id =
    global - max(previous level) - 1, clamp, +1, one-hot without channel 0; rows sliced alike."""
    seg = np.full((2, 2, 3), -1, np.float32)
    seg[0] = [[0, 0, 2], [1, 1, 2]]  # level 0 has ids 0..2
    seg[1] = [[3, 4, 4], [-1, 3, 5]]  # level 1 has ids 3..5
    np.save(tmp_path / "x_s.npy", seg)
    np.save(tmp_path / "x_f.npy", np.arange(6, dtype=np.float32)[:, None].repeat(2, 1))
    masks, feats = read_level(tmp_path, "x", 1)
    np.testing.assert_array_equal(masks, [seg[1] == 3, seg[1] == 4, seg[1] == 5])
    np.testing.assert_array_equal(feats[:, 0], [3, 4, 5])
    masks, feats = read_level(tmp_path, "x", 0)
    assert masks.shape == (3, 2, 3) and feats[:, 0].tolist() == [0, 1, 2]


def test_fewer_than_four_levels_guard(tmp_path):
    seg = np.full((2, 2, 2), -1, np.float32)
    seg[0, 0] = 0
    seg[1, 1] = 1
    np.save(tmp_path / "y_s.npy", seg)
    np.save(tmp_path / "y_f.npy", np.zeros((2, 4), np.float32))
    masks, feats = read_level(tmp_path, "y", 1)
    assert masks.shape == (1, 2, 2) and feats.shape == (1, 4)
    with pytest.raises(DataError, match="has 2 mask level"):
        read_level(tmp_path, "y", 3)


def test_mismatched_files_and_missing_entry(tmp_path):
    seg = np.zeros((1, 2, 2), np.float32)
    seg[0, 0, 0] = 3
    np.save(tmp_path / "z_s.npy", seg)
    np.save(tmp_path / "z_f.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match="feature rows"):
        read_level(tmp_path, "z", 0)
    with pytest.raises(DataError, match="not found"):
        read_level(tmp_path, "missing", 0)
    (tmp_path / "half_s.npy").write_bytes(b"")
    assert not entry_exists(tmp_path, "half")


def test_empty_masks_are_dropped_and_shapes_checked(tmp_path):
    levels = [np.stack([np.zeros((2, 2), bool), np.ones((2, 2), bool)])]
    orders = write_entry(tmp_path, "e", levels, [np.eye(2, dtype=np.float32)])
    assert orders[0].tolist() == [1]
    masks, feats = read_level(tmp_path, "e", 0)
    assert masks.shape == (1, 2, 2) and feats.tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError):
        write_entry(tmp_path, "bad", [np.ones((2, 2, 2), bool)], [np.zeros((3, 4), np.float32)])
