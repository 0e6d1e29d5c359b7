import pytest
import torch

from openinsgaussian.instances.pseudo import (
    count_cluster_objects,
    ids_to_masks,
    masks_to_ids,
    pseudo_features,
)


def _map(values_hw: list[list[float]]) -> torch.Tensor:
    """[6, H, W] map with the same value in all 6 channels."""
    return torch.tensor(values_hw).unsqueeze(0).repeat(6, 1, 1)


def _masks_from_ids(ids: list[list[int]], m: int) -> torch.Tensor:
    return ids_to_masks(torch.tensor(ids), m)


def test_pseudo_map_variance_filter_by_hand():
    # row 0: mask 1 (4 px, constant 0.5); row 1: mask 2 (0.2, 0.6 -> var 0.04), mask 3 (0.7, 0.8 -> var 0.0025)
    feat = _map([[0.5, 0.5, 0.5, 0.5], [0.2, 0.6, 0.7, 0.8]])
    masks = _masks_from_ids([[1, 1, 1, 1], [2, 2, 3, 3]], 3)
    out = pseudo_features(feat, masks)
    torch.testing.assert_close(out.variance, torch.tensor([0.0, 0.04, 0.0025]))
    assert out.valid.tolist() == [True, False, True]  # mask 2 too varied and only 2 px (< 0.8 x 4)
    torch.testing.assert_close(out.mask_feats[:, 0], torch.tensor([0.5, 0.0, 0.75]))
    expect = _map([[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.75, 0.75]])
    torch.testing.assert_close(out.pseudo_map, expect)
    assert out.pseudo_masks.shape == (4, 2, 4)
    assert not out.pseudo_masks[0].any() and not out.pseudo_masks[2].any()
    assert torch.equal(out.pseudo_masks[1], masks[0]) and torch.equal(out.pseudo_masks[3], masks[2])
    assert out.mask_ids.tolist() == [[1, 1, 1, 1], [0, 0, 3, 3]]
    torch.testing.assert_close(out.feats_with_dummy[:, 0], torch.tensor([0.0, 0.5, 0.0, 0.75]))


def test_large_varied_mask_is_kept_but_not_at_exactly_the_fraction():
    # mask 1: 5 px alternating 0.2/0.6 (var 0.0384); mask 2: 4 px, also varied; mask 3: 1 px
    feat = _map([[0.2, 0.6, 0.2, 0.6, 0.2], [0.2, 0.6, 0.2, 0.6, 0.9]])
    masks = _masks_from_ids([[1, 1, 1, 1, 1], [2, 2, 2, 2, 3]], 3)
    out = pseudo_features(feat, masks)
    assert out.variance[0] > 0.006 and out.variance[1] > 0.006
    # 5 > 0.8*5 -> kept (largest); 4 is not > 4.0 -> dropped; mask 3 has zero variance
    assert out.valid.tolist() == [True, False, True]
    # a smaller fraction keeps the 4-px mask too
    assert pseudo_features(feat, masks, keep_large_frac=0.7).valid.tolist() == [True, True, True]
    # a looser variance threshold keeps everything
    assert pseudo_features(feat, masks, var_thresh=0.05).valid.all()


def test_no_masks_gives_empty_labels():
    out = pseudo_features(torch.rand(6, 3, 4), torch.zeros(0, 3, 4, dtype=torch.bool))
    assert out.pseudo_masks.shape == (1, 3, 4) and not out.pseudo_masks.any()
    assert torch.equal(out.pseudo_map, torch.zeros(6, 3, 4)) and out.valid.numel() == 0


def test_masks_ids_round_trip():
    ids = torch.tensor([[0, 1, 2], [2, 2, 0]])
    masks = ids_to_masks(ids, 2)
    assert torch.equal(masks_to_ids(masks), ids)


def _count_case():
    # W = 10: mask 1 px 0-3 (pseudo 0.2), mask 2 px 4-7 (pseudo 0.8), mask 3 px 8-9
    ids = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 2, 3, 3]])
    pm = torch.cat([torch.zeros(1, 1, 10, dtype=torch.bool), ids_to_masks(ids, 3)])
    pseudo = _map([[0.2] * 4 + [0.8] * 4 + [0.5] * 2])
    alpha = torch.tensor([[1.0] * 6 + [0.0] * 4])  # cluster covers px 0-5
    return pm, pseudo, alpha


def test_count_cluster_objects_by_hand():
    pm, pseudo, alpha = _count_case()
    # coverage: mask1 4/4, mask2 2/4, mask3 0 -> masks 1, 2 kept
    # cluster feature 0.25: mask1 L1 = 6*0.05 = 0.3, L2 = 0.12 (ok); mask2 L1 = 6*0.55 (rejected)
    assert count_cluster_objects(pm, pseudo, _map([[0.25] * 10]), alpha) == 1
    feat = _map([[0.25] * 4 + [0.75] * 2 + [0.0] * 4])  # mask2 inside S now matches (L1 0.3)
    assert count_cluster_objects(pm, pseudo, feat, alpha) == 2
    assert count_cluster_objects(pm, pseudo, feat, alpha, max_objects=1) == 1
    # coverage threshold: mask2 has coverage 0.5
    assert count_cluster_objects(pm, pseudo, feat, alpha, coverage_thresh=0.5) == 1
    # silhouette threshold: alpha 0.85 is not > 0.9
    assert count_cluster_objects(pm, pseudo, feat, alpha * 0.85) == 0


@pytest.mark.parametrize("l1,l2,expect", [(0.31, 0.5, 2), (0.29, 0.5, 0), (0.9, 0.12, 0)])
def test_count_cluster_objects_distance_thresholds(l1, l2, expect):
    pm, pseudo, alpha = _count_case()
    feat = _map([[0.25] * 4 + [0.75] * 2 + [0.0] * 4])  # both kept masks at L1 0.3, L2 ~0.1225
    assert count_cluster_objects(pm, pseudo, feat, alpha, l1_thresh=l1, l2_thresh=l2) == expect


def test_masks_to_ids_later_mask_wins_and_round_trips():
    import torch

    from openinsgaussian.instances.pseudo import ids_to_masks, masks_to_ids

    masks = torch.zeros(3, 2, 4, dtype=torch.bool)
    masks[0, :, :3] = True
    masks[1, :, 2:] = True  # overlaps mask 0 in column 2: mask 2 (later) wins
    masks[2, 1, 0] = True
    ids = masks_to_ids(masks)
    assert ids.tolist() == [[1, 1, 2, 2], [3, 1, 2, 2]]
    assert masks_to_ids(torch.zeros(0, 2, 4, dtype=torch.bool)).eq(0).all()
    assert torch.equal(masks_to_ids(ids_to_masks(ids, 3)), ids)
