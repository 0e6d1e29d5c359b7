import numpy as np
import torch
from scipy.spatial.distance import cdist

from openinsgaussian.query.select import filter_selection, gaussian_mask_for_leaves, select_leaves


def _leaves():
    """6 leaves, k2 = 3 (leaves 0-2 in coarse cluster 0, 3-5 in cluster 1); query along x."""
    cos = torch.tensor([-0.5, 0.9, -0.6, 0.7, 1.0, 0.8])  # rank: 4, 1, 5, 3, 0, 2
    feats = torch.stack([cos, torch.sqrt(1 - cos**2), torch.zeros(6)], 1)
    centers = torch.zeros(7, 6)  # fine centres, sentinel row last
    centers[4] = 0.5
    centers[1] = 0.5 + 0.05  # close to the best leaf, other coarse cluster
    centers[5] = 0.5 - 0.05  # close, same cluster
    centers[3] = 2.0  # same cluster, far
    return torch.tensor([1.0, 0.0, 0.0]), feats, torch.full((6,), 10), centers


def test_select_leaves_default_same_coarse_cluster():
    text, feats, occu, centers = _leaves()
    assert select_leaves(text, feats, occu, centers, k2=3).tolist() == [4, 5]


def test_select_leaves_compat_signed_id_test():
    text, feats, occu, centers = _leaves()
    # (cand - best) < k2 lets leaf 1 (1 - 4 = -3) through although it is in another cluster
    assert select_leaves(text, feats, occu, centers, k2=3, compat=True).tolist() == [4, 1, 5]


def test_select_leaves_min_views():
    text, feats, occu, centers = _leaves()
    occu = occu.clone()
    occu[4] = 1  # the most relevant leaf is unreliable
    assert select_leaves(text, feats, occu, centers, k2=3).tolist() == [1]
    # compat keeps it as a zero vector (cosine 0): best becomes 1, leaf 4 (id diff 3) fails (4-1) < 3
    assert select_leaves(text, feats, occu, centers, k2=3, compat=True)[0].item() == 1
    assert select_leaves(text, feats, torch.zeros(6), centers, k2=3).numel() == 0


def test_gaussian_mask_for_leaves():
    leaf_ind = torch.tensor([0, 4, 5, 6, 4])
    assert gaussian_mask_for_leaves(leaf_ind, torch.tensor([4, 5])).tolist() == [
        False,
        True,
        True,
        False,
        True,
    ]


def test_filter_selection_scale_count_and_outliers():
    rng = np.random.default_rng(0)
    inliers = rng.normal(0, 0.01, size=(150, 3))
    outliers = np.array([[1.0, 1.0, 1.0], [-1.0, 0.5, 0.0], [0.0, -2.0, 0.3]])
    means = torch.tensor(np.concatenate([inliers, outliers]), dtype=torch.float32)
    scales = torch.full((153, 3), 0.01)
    scales[:5, 0] = 0.2  # too large -> dropped
    mask = torch.ones(153, dtype=torch.bool)
    mask[10] = False  # not selected stays unselected
    keep = filter_selection(means, scales, mask)
    assert not keep[:5].any() and not keep[10] and not keep[150:].any()

    # reference statistical filter on the scale-filtered selection, brute force
    idx = np.array([i for i in range(153) if i >= 5 and i != 10])
    pts = means.numpy()[idx].astype(np.float64)
    k = int(np.floor(np.sqrt(len(idx))))
    d2 = np.sort(cdist(pts, pts) ** 2, axis=1)[:, :k]  # includes the point itself
    score = d2.mean(1)
    # the public rule: threshold over all n*K squared distances
    expect = np.zeros(153, dtype=bool)
    expect[idx[score < d2.mean() + d2.reshape(-1).std(ddof=1)]] = True
    assert keep.numpy().tolist() == expect.tolist()
    assert keep.sum() > 120  # most inliers survive
    # the per-point rule: threshold over the n per-point means
    per_point = filter_selection(means, scales, mask, outlier_rule="per_point")
    expect_pp = np.zeros(153, dtype=bool)
    expect_pp[idx[score < score.mean() + score.std(ddof=1)]] = True
    assert per_point.numpy().tolist() == expect_pp.tolist()

    # fewer than min_count after the scale filter -> nothing
    assert not filter_selection(means, scales, mask, min_count=200).any()


def test_filter_selection_rules_differ_on_a_hand_computed_set():
    """Four points on a line, K = 2 (self first): squared distances d = [[0,1],[0,1],[0,1],[0,16]].

    Per-point means [0.5, 0.5, 0.5, 8]: mean 2.375, unbiased std 3.75 -> threshold 6.125, the far
    point goes. All n*K entries: mean 2.375, unbiased std sqrt((4*2.375^2 + 3*1.375^2 +
    13.625^2)/7) = 5.5275 -> threshold 7.9025, the far point (8) still goes; with outlier_std 1.2
    the all-distances threshold is 9.008 and keeps it while the per-point one (6.875) does not.
    """
    means = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [6.0, 0, 0]])
    scales = torch.full((4, 3), 0.01)
    mask = torch.ones(4, dtype=torch.bool)
    kw = dict(min_count=1, min_after=1)
    # the middle points' nearest neighbour is at distance 1 either side: d = [0, 1] for 0, 1, 2
    assert filter_selection(means, scales, mask, **kw).tolist() == [True, True, True, False]
    loose_all = filter_selection(means, scales, mask, outlier_std=1.2, **kw)
    loose_pp = filter_selection(means, scales, mask, outlier_std=1.2, outlier_rule="per_point", **kw)
    assert loose_all.tolist() == [True, True, True, True]
    assert loose_pp.tolist() == [True, True, True, False]
    # too few survivors render nothing (the code's "fewer than 10")
    assert not filter_selection(means, scales, mask, min_count=1).any()
    # only Gaussians visible in the view take part (and count towards min_count)
    vis = torch.tensor([True, True, True, False])
    assert filter_selection(means, scales, mask, min_count=4, min_after=1).any()
    assert not filter_selection(means, scales, mask, visible=vis, min_count=4, min_after=1).any()
