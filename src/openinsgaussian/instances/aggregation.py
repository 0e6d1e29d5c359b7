"""Per-leaf language feature from its per-view features (METHOD §5.2 mean, §5.3 attention).

Three equivalent layouts, chosen by memory:

* dense ``view_feats [L, V, D]`` (:func:`aggregate_mean`, :func:`aggregate_attention`): simplest;
  costs ``L·V·D`` floats (e.g. 320 leaves x 300 views x 640 dims x 4 B = 246 MB);
* sparse rows ``(feats [P, D], leaf [P])`` holding only the matched (leaf, view) pairs
  (:func:`aggregate_attention_sparse`), used by the association accumulator;
* streaming (:class:`StreamingAttention`): a second pass over the views with only ``[L, D]``
  state. Exact because cosine similarities lie in ``[-1, 1]``, so the un-shifted ``exp`` of the
  softmax cannot overflow and the normaliser can be accumulated view by view.

Attention (OIG eqs. 9-12): per leaf, the valid views are the matched ones with a non-zero feature;
the reference is the mean over matched views; ``s_v = cos(F_v, F_mean)``; ``w = softmax(s)`` over
the valid views only, temperature 1; ``F = Σ_v w_v F_v``. A leaf without valid views keeps its
mean (the zero vector when it has no match). The result is not re-normalised, as in the code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError

#: denominator guard of the mean (public code value).
MEAN_EPS = 1e-4


def _check_dense(view_feats: Tensor, matched: Tensor | None) -> Tensor:
    if view_feats.dim() != 3:
        raise DataError(None, f"view_feats must be [L,V,D], got shape {tuple(view_feats.shape)}")
    if matched is None:
        return (view_feats != 0).any(-1)
    if matched.shape != view_feats.shape[:2]:
        raise DataError(
            None,
            f"matched must be [L,V] = {tuple(view_feats.shape[:2])}, got {tuple(matched.shape)}",
        )
    return matched.to(torch.bool)


def aggregate_mean(view_feats: Tensor, matched: Tensor | None = None) -> Tensor:
    """OpenGaussian mean: ``Σ_v F_{l,v} / (count_l + 1e-4)`` over matched views.

    Args:
        view_feats: ``[L, V, D]`` per-view features (zero rows for unmatched views).
        matched: ``[L, V]`` bool; None = "every non-zero row".

    Returns:
        ``[L, D]``.
    """
    m = _check_dense(view_feats, matched)
    w = m.to(view_feats.dtype).unsqueeze(-1)  # [L, V, 1]
    count = m.sum(1, keepdim=True).to(view_feats.dtype)  # [L, 1]
    return (view_feats * w).sum(1) / (count + MEAN_EPS)


def attention_weights(view_feats: Tensor, matched: Tensor | None = None) -> Tensor:
    """``[L, V]`` attention weights: softmax of ``cos(F_v, F_mean)`` over valid views, 0 elsewhere."""
    m = _check_dense(view_feats, matched)
    mean = aggregate_mean(view_feats, m)  # [L, D]
    valid = m & (view_feats != 0).any(-1)  # [L, V]
    sims = F.cosine_similarity(view_feats, mean.unsqueeze(1), dim=-1)  # [L, V]
    logits = sims.masked_fill(~valid, float("-inf"))
    w = torch.softmax(logits, dim=1)
    return torch.where(valid, w, torch.zeros_like(w))  # rows without valid views: all 0, no NaN


def aggregate_attention(view_feats: Tensor, matched: Tensor | None = None) -> Tensor:
    """OpenInsGaussian attention aggregation (dense form), ``[L, V, D] -> [L, D]``.

    Leaves without a valid view return the mean (zero when never matched).
    """
    m = _check_dense(view_feats, matched)
    w = attention_weights(view_feats, m)  # [L, V]
    out = (w.unsqueeze(-1) * view_feats).sum(1)  # [L, D]
    has = (w > 0).any(1, keepdim=True)
    return torch.where(has, out, aggregate_mean(view_feats, m))


def attention_compat_vectorised(view_feats: Tensor, matched: Tensor | None = None) -> Tensor:
    """The code's overwritten vectorised variant: invalid views get similarity 0 but stay in the
    softmax (over all V views). Kept only to quantify the difference; not used by default."""
    m = _check_dense(view_feats, matched)
    mean = aggregate_mean(view_feats, m)
    valid = m & (view_feats != 0).any(-1)
    sims = F.cosine_similarity(view_feats, mean.unsqueeze(1), dim=-1) * valid.to(view_feats.dtype)
    w = torch.softmax(sims, dim=1)  # [L, V]
    return (w.unsqueeze(-1) * view_feats * valid.unsqueeze(-1).to(view_feats.dtype)).sum(1)


def aggregate_attention_sparse(feats: Tensor, leaf: Tensor, mean: Tensor) -> Tensor:
    """Attention aggregation from the matched (leaf, view) rows only.

    Args:
        feats: ``[P, D]`` per-view features of matched pairs.
        leaf: ``[P]`` int64 leaf of each row.
        mean: ``[L, D]`` mean features (:func:`aggregate_mean` equivalent).

    Returns:
        ``[L, D]``; rows of leaves without a valid (non-zero) view equal ``mean``.
    """
    if (
        feats.dim() != 2
        or leaf.shape != feats.shape[:1]
        or mean.dim() != 2
        or mean.shape[1] != feats.shape[1]
    ):
        raise DataError(
            None,
            f"sparse attention needs feats [P,D], leaf [P], mean [L,D]; got "
            f"{tuple(feats.shape)}, {tuple(leaf.shape)}, {tuple(mean.shape)}",
        )
    valid = (feats != 0).any(1)  # [P]
    feats, leaf = feats[valid], leaf[valid]
    sims = F.cosine_similarity(feats, mean[leaf], dim=-1)  # [P] in [-1, 1]
    e = torch.exp(sims)  # bounded in [1/e, e]: the softmax needs no max-shift
    num = torch.zeros_like(mean).index_add_(0, leaf, e.unsqueeze(1) * feats)
    den = torch.zeros(mean.shape[0], dtype=mean.dtype, device=mean.device).index_add_(
        0, leaf, e.to(mean.dtype)
    )
    return torch.where((den > 0).unsqueeze(1), num / den.clamp(min=1e-30).unsqueeze(1), mean)


class StreamingAttention:
    """Attention aggregation as a second pass over the views, with ``[L, D]`` memory.

    ::

        stream = StreamingAttention(mean)           # mean [L, D] from the first pass
        for each view: stream.add(feats [L, D], matched [L])
        leaf_feat = stream.result()                 # [L, D]
    """

    def __init__(self, mean: Tensor) -> None:
        if mean.dim() != 2:
            raise DataError(None, f"mean must be [L,D], got shape {tuple(mean.shape)}")
        self.mean = mean
        self.num = torch.zeros_like(mean)  # [L, D] Σ exp(s_v) F_v
        self.den = torch.zeros(
            mean.shape[0], dtype=mean.dtype, device=mean.device
        )  # [L] Σ exp(s_v)

    def add(self, feats: Tensor, matched: Tensor | None = None) -> None:
        """Add one view: ``feats [L, D]`` (zero rows = unmatched), ``matched [L]`` bool."""
        if feats.shape != self.mean.shape:
            raise DataError(
                None, f"view features must be {tuple(self.mean.shape)}, got {tuple(feats.shape)}"
            )
        valid = (feats != 0).any(1)
        if matched is not None:
            valid = valid & matched.to(torch.bool)
        e = torch.exp(F.cosine_similarity(feats, self.mean, dim=-1)) * valid.to(feats.dtype)  # [L]
        self.num += e.unsqueeze(1) * feats
        self.den += e

    def result(self) -> Tensor:
        """``[L, D]`` fused features; leaves without valid views keep the mean."""
        out = self.num / self.den.clamp(min=1e-30).unsqueeze(1)
        return torch.where((self.den > 0).unsqueeze(1), out, self.mean)
