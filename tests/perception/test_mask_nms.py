"""LangSplat mask NMS: vectorised == pairwise loop, and hand-checked cases of each rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.perception.perception_fixtures import random_masks as _random_masks

from openinsgaussian.perception.mask_nms import mask_nms, mask_nms_loop, pairwise_intersections


def random_masks(m: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return _random_masks(m, h, w, seed, ties=True)  # ties exercise the index-order rule


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_equals_loop(seed):
    masks, scores = random_masks(40, 24, 32, seed)
    for thr in ((0.8, 0.7, 0.5), (0.5, 0.8, 0.3)):
        ref = mask_nms_loop(masks, scores, *thr).tolist()
        assert mask_nms(masks, scores, *thr, method="matmul").tolist() == ref
        assert mask_nms(masks, scores, *thr, method="signature").tolist() == ref


def test_intersections_both_methods_exact():
    masks, _ = random_masks(30, 20, 30, 7)
    t = torch.from_numpy(masks)
    ref = torch.tensor([[float((a & b).sum()) for b in masks] for a in masks])
    assert torch.equal(pairwise_intersections(t, "matmul", chunk_pixels=37), ref)
    assert torch.equal(pairwise_intersections(t, "signature"), ref)


def _rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_duplicate_is_suppressed_by_iou():
    a = _rect(10, 10, 0, 10, 0, 10)  # 100 px
    b = _rect(10, 10, 0, 9, 0, 10)  # 90 px inside a: IoU 0.9 > 0.8
    c = _rect(10, 10, 0, 5, 0, 10)  # 50 px: IoU with a 0.5; c inside a, a half covered -> not "inner"
    keep = mask_nms(np.stack([b, a, c]), np.array([0.9, 0.95, 0.8]))
    assert keep.tolist() == [1, 2]  # a (best) and c; b duplicates a


def test_small_part_inside_better_mask_is_suppressed():
    big = _rect(20, 20, 0, 20, 0, 20)  # 400 px
    part = _rect(20, 20, 0, 5, 0, 8)  # 40 px fully inside: ri = 0.1 < 0.5, rj = 1 >= 0.85 -> inner 0.9 > 0.5
    keep = mask_nms(np.stack([big, part]), np.array([0.9, 0.8]))
    assert keep.tolist() == [0]
    # the better mask inside a worse, bigger one is the one dropped (lower-triangle rule)
    keep = mask_nms(np.stack([big, part]), np.array([0.8, 0.9]))
    assert keep.tolist() == [0]


def test_score_threshold_and_top3_fallback():
    masks = np.stack([_rect(30, 30, 0, 5, 6 * k, 6 * k + 5) for k in range(5)])  # disjoint
    assert mask_nms(masks, np.array([0.9, 0.6, 0.8, 0.5, 0.75])).tolist() == [0, 2, 4]
    # nothing above 0.7: the three best survive
    assert mask_nms(masks, np.array([0.1, 0.6, 0.3, 0.5, 0.2])).tolist() == [1, 3, 2]
    assert mask_nms_loop(masks, np.array([0.1, 0.6, 0.3, 0.5, 0.2])).tolist() == [1, 3, 2]


def test_empty_inputs_and_empty_masks():
    assert mask_nms(np.zeros((0, 4, 4), bool), np.zeros(0)).numel() == 0
    masks = np.stack([_rect(4, 4, 0, 2, 0, 2), np.zeros((4, 4), bool)])
    assert mask_nms(masks, np.array([0.9, 0.99])).tolist() == [0]
    assert mask_nms_loop(masks, np.array([0.9, 0.99])).tolist() == [0]


def test_shape_errors():
    with pytest.raises(ValueError):
        mask_nms(np.zeros((2, 4, 4), bool), np.zeros(3))


# ---- the constants of the rule (LangSplat's values) ----------------------------------------------
def test_containment_ratio_085_is_inclusive():
    """A worse 100 px mask with exactly 85 px inside a better 1600 px one (ri = 0.053 < 0.5) is
    dropped (``rj >= 0.85``); with 84 px inside it survives."""
    big = np.zeros((40, 41), bool)
    big[:, 1:] = True  # columns 1..40
    m85 = np.zeros((40, 41), bool)
    m85[:15, 0] = True  # 15 px outside big
    m85[:17, 1:6] = True  # 85 px inside
    m84 = np.zeros((40, 41), bool)
    m84[:16, 0] = True  # 16 px outside
    m84[:12, 1:8] = True  # 84 px inside
    assert m85.sum() == m84.sum() == 100
    assert mask_nms(np.stack([big, m85]), np.array([0.9, 0.8])).tolist() == [0]
    assert mask_nms(np.stack([big, m84]), np.array([0.9, 0.8])).tolist() == [0, 1]


def test_score_threshold_is_strict():
    masks = np.stack([_rect(30, 30, 0, 5, 6 * k, 6 * k + 5) for k in range(4)])  # disjoint
    # 0.7 exactly fails "score > 0.7"; the others pass
    assert mask_nms(masks, np.array([0.9, 0.7, 0.8, 0.71])).tolist() == [0, 2, 3]


def test_lower_containment_criterion_includes_the_first_superdiagonal():
    """``tril(inner, diagonal=1)``: a worse mask inside the mask ranked just above it also fails
    ``keep_inner_l`` (with ``diagonal=0`` only better masks inside worse ones would count)."""
    from openinsgaussian.perception.mask_nms import containment_keep

    big = _rect(20, 20, 0, 20, 0, 20)  # rank 0, 400 px
    part = _rect(20, 20, 0, 5, 0, 8)  # rank 1, 40 px inside big: inner[0, 1] = 0.9
    other = _rect(20, 20, 10, 20, 10, 20)  # rank 2, 100 px: inside big too, but 2 ranks below
    masks = torch.from_numpy(np.stack([big, part, other]))
    inter = pairwise_intersections(masks)
    area = inter.diagonal()
    keep_u, keep_l = containment_keep(inter, area, 0.5)
    assert keep_u.tolist() == [True, False, False]  # every mask inside a better one
    assert keep_l.tolist() == [True, False, True]  # only the super-diagonal pair (0, 1)
