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
