import math

import torch

from openinsgaussian.query.relevance import label_gaussians, leaf_classes, leaf_relevance

TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # class 1 ("wall"), class 2


def test_leaf_relevance_is_cosine_by_hand():
    leaf = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    r = math.sqrt(0.5)
    torch.testing.assert_close(
        leaf_relevance(TEXT, leaf), torch.tensor([[1.0, r, 0.0], [0.0, r, 0.0]])
    )


def test_label_gaussians_default_vs_compat():
    leaf = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9]])
    occu = torch.tensor([5, 1, 3])  # leaf 1 seen in too few views
    leaf_ind = torch.tensor([0, 1, 2, 3, 2])  # 3 = sentinel (L)
    # default: the weak leaf and the sentinel are unlabelled
    assert label_gaussians(TEXT, leaf, occu, leaf_ind, min_views=2).tolist() == [2, 0, 2, 0, 2]
    # compat: the weak leaf becomes a zero vector -> first class; the sentinel clamps to leaf 2
    assert label_gaussians(TEXT, leaf, occu, leaf_ind, min_views=2, compat=True).tolist() == [
        2,
        1,
        2,
        2,
        2,
    ]
    # with enough views leaf 1 is class 1 in both modes
    assert leaf_classes(TEXT, leaf, torch.tensor([5, 5, 5])).tolist() == [2, 1, 2]
