import math

import torch

from openinsgaussian.instances.aggregation import (
    StreamingAttention,
    aggregate_attention,
    aggregate_attention_sparse,
    aggregate_mean,
    attention_compat_vectorised,
    attention_weights,
)


def test_mean_divides_by_matched_count_plus_eps():
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])  # [1, 3, 2]
    matched = torch.tensor([[True, True, False]])
    torch.testing.assert_close(
        aggregate_mean(feats, matched), torch.tensor([[1.0, 1.0]]) / (2 + 1e-4)
    )


def test_attention_weights_are_softmax_of_cosines_by_hand():
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # mean direction (1, 1)
    matched = torch.ones(1, 3, dtype=torch.bool)
    s = [1 / math.sqrt(2), 1 / math.sqrt(2), 1.0]
    z = sum(math.exp(v) for v in s)
    w = torch.tensor([[math.exp(v) / z for v in s]])
    torch.testing.assert_close(attention_weights(feats, matched), w)
    expect = (w[0, 0] + w[0, 2], w[0, 1] + w[0, 2])
    torch.testing.assert_close(aggregate_attention(feats, matched), torch.tensor([expect]))


def test_attention_reduces_to_mean_when_views_agree():
    v = torch.tensor([0.3, -0.2, 0.9])
    feats = v.repeat(1, 4, 1)  # [1, 4, 3]
    matched = torch.ones(1, 4, dtype=torch.bool)
    torch.testing.assert_close(attention_weights(feats, matched), torch.full((1, 4), 0.25))
    torch.testing.assert_close(aggregate_attention(feats, matched), v[None])
    torch.testing.assert_close(
        aggregate_attention(feats, matched), aggregate_mean(feats, matched), rtol=1e-4, atol=0
    )


def test_attention_ignores_unmatched_and_zero_views():
    good = torch.tensor([[[1.0, 0.0], [0.8, 0.6]]])
    matched = torch.ones(1, 2, dtype=torch.bool)
    ref = aggregate_attention(good, matched)
    # an unmatched view with a large feature and a matched all-zero view change nothing
    feats = torch.cat([good, torch.tensor([[[-5.0, 7.0], [0.0, 0.0]]])], dim=1)
    m = torch.tensor([[True, True, False, True]])
    w = attention_weights(feats, m)
    assert w[0, 2] == 0 and w[0, 3] == 0
    # the reference mean counts matched views (the zero one included), but cosine ignores scale
    torch.testing.assert_close(aggregate_attention(feats, m), ref)


def test_leaf_without_valid_views_keeps_zero_mean():
    feats = torch.zeros(2, 3, 4)
    feats[1, 0] = 1.0
    matched = torch.tensor([[False, False, False], [True, False, False]])
    out = aggregate_attention(feats, matched)
    assert torch.equal(out[0], torch.zeros(4)) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1], torch.ones(4))


def test_compat_vectorised_variant_keeps_invalid_views_in_softmax():
    feats = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    matched = torch.tensor([[True, False]])
    # cos 1 for the valid view, similarity 0 for the invalid one: w = e / (e + 1)
    e = math.e
    torch.testing.assert_close(
        attention_compat_vectorised(feats, matched), torch.tensor([[e / (e + 1), 0.0]])
    )
    torch.testing.assert_close(aggregate_attention(feats, matched), torch.tensor([[1.0, 0.0]]))


def test_sparse_and_streaming_forms_equal_dense():
    g = torch.Generator().manual_seed(0)
    L, V, D = 5, 7, 8
    feats = torch.randn(L, V, D, generator=g)
    matched = torch.rand(L, V, generator=g) > 0.4
    matched[2] = False  # a leaf never matched
    feats = feats * matched.unsqueeze(-1)
    dense = aggregate_attention(feats, matched)
    mean = aggregate_mean(feats, matched)

    leaf, view = matched.nonzero(as_tuple=True)
    torch.testing.assert_close(aggregate_attention_sparse(feats[leaf, view], leaf, mean), dense)

    stream = StreamingAttention(mean)
    for v in range(V):
        stream.add(feats[:, v], matched[:, v])
    torch.testing.assert_close(stream.result(), dense)
    assert torch.equal(dense[2], torch.zeros(D))
