import math

import pytest
import torch

from openinsgaussian.errors import OpenInsError
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


def test_canonical_relevancy_hand_computed():
    from openinsgaussian.query.relevance import canonical_relevancy

    leaves = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # [L=2, D=2]
    text = torch.tensor([[1.0, 0.0]])  # cos 1 with leaf 0, 0 with leaf 1
    canon = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # cos with leaf 0: 0, 1/sqrt2; leaf 1: 1, 1/sqrt2
    rel = canonical_relevancy(text, leaves, canon)  # [1, 2]
    # leaf 0: the closest generic phrase has cos 1/sqrt2 -> sigmoid(10 (1 - 0.7071))
    expected = [1 / (1 + math.exp(-10 * (1 - math.sqrt(0.5)))), 1 / (1 + math.exp(-10 * (0 - 1)))]
    assert rel[0].tolist() == pytest.approx(expected, abs=1e-6)
    # equals LERF's form: min over phrases of the two-way softmax with temperature 10
    s_q = torch.tensor([1.0, 0.0])
    s_c = torch.tensor([[0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]])  # [C, L]
    pair = torch.softmax(10 * torch.stack([s_q.expand(2, 2), s_c], dim=-1), dim=-1)[..., 0]
    assert rel[0].tolist() == pytest.approx(pair.min(dim=0).values.tolist(), abs=1e-6)
    with pytest.raises(OpenInsError):
        canonical_relevancy(text, leaves, torch.zeros(0, 2))
