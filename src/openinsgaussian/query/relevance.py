"""Text -> leaf relevance and per-Gaussian class labels (METHOD §6).

Relevance is plain cosine similarity between normalised text and leaf features (no canonical-
phrase softmax). Per-Gaussian labels take the best class of the Gaussian's leaf.

Two behaviours for leaves that were matched in too few views (``occu_count < min_views``) and
for never-assigned Gaussians (the sentinel leaf id ``L = k1·k2``):

* default (fixed): both are labelled 0 ("unlabelled", ignored by the metrics' argmax);
* ``compat=True``: the public evaluation script's behaviour. It zeroes those leaves' features,
  so every class scores cosine 0 and argmax picks the *first* class (index 1, e.g. "wall"), and
  it clamps leaf ids to ``L - 1``, so sentinel Gaussians inherit the last leaf's class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError


def leaf_relevance(text_feats: Tensor, leaf_feats: Tensor) -> Tensor:
    """Cosine similarity ``[C, L]`` between ``text_feats [C, D]`` and ``leaf_feats [L, D]``.

    Zero leaf (or text) vectors score 0 against everything.
    """
    if text_feats.dim() != 2 or leaf_feats.dim() != 2 or text_feats.shape[1] != leaf_feats.shape[1]:
        raise DataError(
            None,
            f"text features [C,D] and leaf features [L,D] must share D; got "
            f"{tuple(text_feats.shape)} and {tuple(leaf_feats.shape)}",
            "text and image features must come from the same CLIP model",
        )
    t = F.normalize(text_feats.to(torch.float32), dim=1)
    f = F.normalize(leaf_feats.to(torch.float32).to(t.device), dim=1)
    return t @ f.t()


#: LERF's canonical phrases: the generic texts a relevant region must beat (METHOD §6 notes that
#: the method's own relevance is plain cosine; this is reported beside it for interactive use).
CANONICAL_PHRASES: tuple[str, ...] = ("object", "things", "stuff", "texture")
RELEVANCY_TEMPERATURE = 10.0


def canonical_relevancy(
    text_feats: Tensor,
    leaf_feats: Tensor,
    canon_feats: Tensor,
    temperature: float = RELEVANCY_TEMPERATURE,
) -> Tensor:
    """``[Q, L]`` LERF relevancy: min over canonical phrases c of softmax(T [cos_q, cos_c])[q].

    The two-way softmax of the pair is ``sigmoid(T (cos_q - cos_c))`` and its minimum over c is
    at the canonical phrase closest to the leaf, so the value is
    ``sigmoid(T (cos_q - max_c cos_c))``: above 0.5 when the leaf is closer to the query than to
    every generic phrase. ``canon_feats`` is ``[C, D]`` (C >= 1), e.g. the encoded
    :data:`CANONICAL_PHRASES`.
    """
    if canon_feats.dim() != 2 or canon_feats.shape[0] == 0:
        raise DataError(
            None, f"canonical features must be [C>=1, D], got {tuple(canon_feats.shape)}"
        )
    s_q = leaf_relevance(text_feats, leaf_feats)  # [Q, L]
    s_c = leaf_relevance(canon_feats, leaf_feats).max(dim=0).values  # [L]
    return torch.sigmoid(temperature * (s_q - s_c.to(s_q.device)))


def leaf_classes(
    text_feats: Tensor,
    leaf_feats: Tensor,
    occu_count: Tensor,
    min_views: int = 2,
    compat: bool = False,
) -> Tensor:
    """``[L]`` class index per leaf in ``1..C`` (0 = unlabelled; never 0 with ``compat``)."""
    if occu_count.shape != leaf_feats.shape[:1]:
        raise DataError(
            None, f"occu_count must be [L] = [{leaf_feats.shape[0]}], got {tuple(occu_count.shape)}"
        )
    few = occu_count.to(leaf_feats.device) < min_views  # [L]
    feats = leaf_feats.masked_fill(few.unsqueeze(1), 0.0) if compat else leaf_feats
    cls = leaf_relevance(text_feats, feats).argmax(dim=0) + 1  # [L]; all-zero columns -> 1
    if not compat:
        cls = cls.masked_fill(few.to(cls.device), 0)
    return cls


def label_gaussians(
    text_feats: Tensor,
    leaf_feats: Tensor,
    occu_count: Tensor,
    leaf_ind: Tensor,
    min_views: int = 2,
    compat: bool = False,
) -> Tensor:
    """Class of every Gaussian from its leaf: ``[N]`` int64 in ``0..C`` (0 = unlabelled).

    Args:
        text_feats: ``[C, D]`` class text embeddings, in class-list order.
        leaf_feats: ``[L, D]`` leaf language features.
        occu_count: ``[L]`` matched views per leaf.
        leaf_ind: ``[N]`` leaf id per Gaussian; ``L`` (or anything outside ``[0, L)``) = none.
        min_views: leaves with fewer matched views are unlabelled (ScanNet 2, LeRF 5).
        compat: reproduce the public code's quirks (see the module docstring).
    """
    L = leaf_feats.shape[0]
    cls = leaf_classes(text_feats, leaf_feats, occu_count, min_views, compat)  # [L]
    ind = leaf_ind.to(cls.device).to(torch.long)
    if compat:
        if bool((ind < 0).any()):
            raise DataError(None, "leaf_ind holds negative ids", "leaf ids must lie in 0..k1*k2")
        return cls[ind.clamp(max=L - 1)]
    ok = (ind >= 0) & (ind < L)
    return torch.where(ok, cls[ind.clamp(0, L - 1)], torch.zeros_like(ind))
