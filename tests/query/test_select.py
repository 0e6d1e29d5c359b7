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
    expect = np.zeros(153, dtype=bool)
    expect[idx[score < score.mean() + score.std(ddof=1)]] = True
    assert keep.numpy().tolist() == expect.tolist()
    assert keep.sum() > 120  # most inliers survive

    # fewer than min_count after the scale filter -> nothing
    assert not filter_selection(means, scales, mask, min_count=200).any()
