import pytest
import torch

from openinsgaussian.errors import DataError
from openinsgaussian.instances.aggregation import aggregate_attention
from openinsgaussian.instances.association import (
    AssociationAccumulator,
    ViewMatch,
    associate_view,
    association_score,
    expand_matches,
    gather_view_features,
    leaf_means_from_maps,
    pick_matches,
)
from openinsgaussian.instances.pseudo import ids_to_masks


def _row(*v):
    return torch.tensor([[bool(x) for x in v]])


def test_association_score_by_hand():
    leaf = _row(1, 1, 1, 0, 0, 0)[None]  # [1, 1, 6], 3 px
    masks = torch.stack([_row(0, 0, 0, 0, 0, 0), _row(0, 1, 1, 1, 0, 0), _row(0, 0, 0, 0, 1, 1)])
    leaf_means = torch.full((1, 6), 0.1)
    mask_means = torch.stack([torch.zeros(6), torch.full((6,), 0.15), torch.full((6,), 0.1)])
    s = association_score(leaf, masks, leaf_means, mask_means)
    # IoU with mask 1 = 2 / (3 + 3 - 2) = 0.5; L1 = 6 x 0.05 = 0.3 -> 0.5 x 0.7; mask 2 IoU 0
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.35, 0.0]]), atol=1e-6, rtol=0)
    m = pick_matches(s)
    assert m.match_idx.tolist() == [1] and m.matched.tolist() == [True]
    assert m.match_score.item() == pytest.approx(0.35, abs=1e-6)
    # below the 0.2 threshold -> unmatched, index and score zeroed
    far = association_score(leaf, masks, torch.full((1, 6), 0.0), mask_means)  # L1 0.9 -> 0.05
    m = pick_matches(far)
    assert m.match_idx.tolist() == [0] and m.match_score.tolist() == [0.0] and not m.matched.any()


def test_acceptance_threshold_is_a_strict_02():
    from openinsgaussian.instances.association import SCORE_THRESH
    from openinsgaussian.train.stage3 import Stage3Config

    assert SCORE_THRESH == Stage3Config().score_thresh == 0.2
    scores = torch.tensor([[0.0, 0.2, 0.1], [0.0, 0.05, 0.2001]])
    m = pick_matches(scores)  # the default threshold
    assert m.matched.tolist() == [False, True] and m.match_idx.tolist() == [0, 2]


def _crafted_view():
    """H=4, W=6 view with leaves 0 (6 px), 3 (6 px), 7 (7 px) of L=10 and pseudo masks 1..3."""
    leaf_map = torch.tensor(
        [
            [0, 0, 0, -1, 3, 3],
            [0, 0, 0, -1, 3, 3],
            [-1, 7, 7, 7, 3, 3],
            [7, 7, 7, 7, -1, -1],
        ]
    )
    mask_ids = torch.tensor(
        [
            [1, 1, 1, 1, 0, 2],
            [1, 1, 0, 0, 2, 2],
            [0, 3, 3, 3, 2, 2],
            [3, 3, 3, 3, 0, 0],
        ]
    )
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[0.1] * 6, [0.5] * 6, [0.9] * 6])  # per-leaf feature level
    feat = torch.zeros(6, 4, 6)
    for k, leaf in enumerate((0, 3, 7)):
        feat[:, leaf_map == leaf] = base[k].unsqueeze(1) + 0.01 * torch.rand(
            6, int((leaf_map == leaf).sum()), generator=g
        )
    mask_feats = torch.tensor([[0.0] * 6, [0.12] * 6, [0.3] * 6, [0.9] * 6])  # [m+1, 6]
    return leaf_map, mask_ids, feat, mask_feats


def test_one_pass_equals_per_leaf_reference_on_crafted_view():
    leaf_map, mask_ids, feat, mask_feats = _crafted_view()
    L = 10
    one_pass = associate_view(leaf_map, mask_ids, mask_feats, L, feat_map=feat, min_pixels=1)
    stack = torch.cat([torch.zeros(1, 4, 6, dtype=torch.bool), ids_to_masks(mask_ids, 3)])
    one_pass_stack = associate_view(leaf_map, stack, mask_feats, L, feat_map=feat, min_pixels=1)

    # reference: each visible leaf "rendered alone" = its own pixels of the full map
    visible = torch.tensor([0, 3, 7])
    sil = torch.stack([leaf_map == l for l in visible])  # [3, H, W]
    renders = feat.unsqueeze(0) * sil.unsqueeze(1)  # [3, 6, H, W]
    means = leaf_means_from_maps(renders, sil)
    scores = association_score(sil, stack, means, mask_feats)
    ref = expand_matches(pick_matches(scores), visible, L)

    for got in (one_pass, one_pass_stack):
        assert torch.equal(got.match_idx, ref.match_idx)
        assert torch.equal(got.matched, ref.matched)
        torch.testing.assert_close(got.match_score, ref.match_score)
    # the case is not trivial: leaf 0 -> mask 1, leaf 7 -> mask 3, leaf 3 unmatched (feature too far)
    assert one_pass.match_idx[[0, 3, 7]].tolist() == [1, 0, 3]
    assert one_pass.matched.sum() == 2
    # leaf 0: 6 px, mask 1: 6 px, overlap 5 -> IoU 5/7; L1 ~ 6 x 0.02
    l1 = (means[0] - mask_feats[1]).abs().sum()
    assert one_pass.match_score[0].item() == pytest.approx(5 / 7 * (1 - l1.item()), rel=1e-5)


def test_min_pixels_and_precomputed_means():
    leaf_map, mask_ids, feat, mask_feats = _crafted_view()
    # leaf 0 covers 6 px, leaf 7 covers 7 px
    few = associate_view(leaf_map, mask_ids, mask_feats, 10, feat_map=feat, min_pixels=7)
    assert few.match_idx[0] == 0 and few.match_idx[7] == 3
    means = torch.zeros(10, 6)
    means[0] = mask_feats[1]
    means[7] = mask_feats[3]
    m = associate_view(leaf_map, mask_ids, mask_feats, 10, leaf_means=means, min_pixels=1)
    assert m.match_idx[[0, 7]].tolist() == [1, 3]
    with pytest.raises(DataError):
        associate_view(leaf_map, mask_ids, mask_feats, 10)
    with pytest.raises(DataError):
        associate_view(
            leaf_map, mask_ids, mask_feats[:2], 10, feat_map=feat
        )  # ids up to 3, 2 features


def test_gather_view_features():
    lang = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # rows of masks 1 and 2
    out = gather_view_features(torch.tensor([2, 0, 1]), torch.tensor([True, False, True]), lang)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(DataError):
        gather_view_features(torch.tensor([3]), torch.tensor([True]), lang)


def test_accumulator_mean_scores_table_and_stored_views():
    lang1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    lang2 = torch.tensor([[0.6, 0.8]])
    v1 = ViewMatch(
        torch.tensor([1, 2, 0]), torch.tensor([0.5, 0.3, 0.0]), torch.tensor([True, True, False])
    )
    v2 = ViewMatch(
        torch.tensor([1, 0, 0]), torch.tensor([0.9, 0.0, 0.0]), torch.tensor([True, False, False])
    )
    acc = AssociationAccumulator(3, 2, store_views=True)
    acc.add(v1, lang1)
    acc.add(v2, lang2)
    assert acc.occu_count.tolist() == [2, 1, 0]
    torch.testing.assert_close(acc.leaf_score(), torch.tensor([0.7, 0.3, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(acc.mean_features()[0], torch.tensor([1.6, 0.8]) / (2 + 1e-4))
    assert torch.equal(acc.mean_features()[2], torch.zeros(2))
    table = acc.match_table()
    assert (
        table.shape == (3, 2, 3)
        and table[0, :, 0].tolist() == [1, 1]
        and table[1, :, 2].tolist() == [1, 0]
    )
    feats, ok = acc.view_features()
    assert ok.tolist() == [[True, True], [True, False], [False, False]]
    torch.testing.assert_close(feats[0, 1], lang2[0])
    torch.testing.assert_close(acc.attention_features(), aggregate_attention(feats, ok))
    assert acc.view_match(1).match_idx.tolist() == [1, 0, 0]
    with pytest.raises(DataError):
        AssociationAccumulator(3, 2).view_features()


def test_sentinel_ids_ignored_and_overlapping_masks_in_stack_path():
    leaf_map, mask_ids, feat, mask_feats = _crafted_view()
    base = associate_view(leaf_map, mask_ids, mask_feats, 10, feat_map=feat, min_pixels=1)
    with_sentinel = leaf_map.clone()
    with_sentinel[leaf_map == -1] = 10  # never-assigned Gaussians on top: not a leaf
    again = associate_view(with_sentinel, mask_ids, mask_feats, 10, feat_map=feat, min_pixels=1)
    assert torch.equal(base.match_idx, again.match_idx)
    torch.testing.assert_close(base.match_score, again.match_score)

    # overlapping masks: mask 4 = mask 1 plus the rest of leaf 0 -> leaf 0 prefers it (IoU 1)
    stack = torch.cat(
        [torch.zeros(1, 4, 6, dtype=torch.bool), ids_to_masks(mask_ids, 3), (leaf_map == 0)[None]]
    )
    feats4 = torch.cat([mask_feats, mask_feats[1:2]])
    got = associate_view(leaf_map, stack, feats4, 10, feat_map=feat, min_pixels=1)
    visible = torch.tensor([0, 3, 7])
    sil = torch.stack([leaf_map == l for l in visible])
    means = leaf_means_from_maps(feat.unsqueeze(0) * sil.unsqueeze(1), sil)
    ref = expand_matches(pick_matches(association_score(sil, stack, means, feats4)), visible, 10)
    assert got.match_idx[0] == 4
    assert torch.equal(got.match_idx, ref.match_idx)
    torch.testing.assert_close(got.match_score, ref.match_score)


def test_one_pass_uses_alpha_silhouette_for_an_isolated_rendered_leaf():
    """A lone Gaussian whose mask is exactly its alpha > 0.8 region must match (score 1)."""
    import numpy as np

    from openinsgaussian.data.camera import Camera
    from openinsgaussian.instances.association import associate_view, association_score
    from openinsgaussian.render import render

    cam = Camera.from_intrinsics(40.0, 40.0, 16.0, 16.0, 32, 32, np.eye(4))
    feat = torch.tensor([[0.2, 0.4, 0.6, 0.8, 0.1, 0.3]])
    out = render(
        torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.full((1, 3), 0.15), torch.tensor([0.95]), feat, cam,
        backend="reference", return_ids=True,
    )
    alpha = out.alpha[0]  # [H, W]
    sil = alpha > 0.8
    assert 0 < int(sil.sum()) < int((out.top_id >= 0).sum())  # the box reaches far beyond the silhouette
    mask_ids = sil.long()  # mask 1 = the silhouette
    mask_feats = torch.cat([torch.zeros(1, 6), out.image[:, sil].mean(1, keepdim=True).T])  # [2, 6]
    ref = association_score(sil[None], torch.stack([torch.zeros_like(sil), sil]), out.image[:, sil].mean(1)[None],
                            mask_feats)
    assert ref[0, 1] > 0.99
    with_alpha = associate_view(out.top_id, mask_ids, mask_feats, 1, feat_map=out.image, alpha=out.alpha)
    assert bool(with_alpha.matched[0]) and int(with_alpha.match_idx[0]) == 1
    assert float(with_alpha.match_score[0]) == pytest.approx(float(ref[0, 1]), abs=1e-5)
