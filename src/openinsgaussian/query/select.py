"""Text -> selected leaves -> selected Gaussians, with the LeRF evaluation filters (METHOD §6).

Leaf choice: the most relevant leaf plus those of the next ``top_k - 1`` that belong to the same
object, judged by two tests: the candidate is in the same coarse cluster as the best leaf, and the
two fine-codebook centres are closer than ``center_dist`` (L2 in the 6-d render space).

The public code wrote the first test as ``(cand - best) < k2`` on signed ids, which every lower
id passes; ``compat=True`` reproduces it (and keeps leaves with too few views as zero vectors
that may still be picked), the default uses ``cand // k2 == best // k2``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from ..errors import ConfigError, DataError
from .relevance import leaf_relevance


def select_leaves(
    text_feat: Tensor,
    leaf_feats: Tensor,
    occu_count: Tensor,
    leaf_centers: Tensor,
    k2: int,
    min_views: int = 5,
    top_k: int = 10,
    center_dist: float = 0.9,
    compat: bool = False,
) -> Tensor:
    """Leaves answering one text query.

    Args:
        text_feat: ``[D]`` query embedding.
        leaf_feats: ``[L, D]`` leaf language features.
        occu_count: ``[L]`` matched views per leaf; leaves below ``min_views`` are never
            selected (compat: they only get zero features).
        leaf_centers: ``[L(+1), 6]`` fine-codebook centres (the sentinel row may be included).
        k2: leaves per coarse cluster (leaf id // k2 = coarse id).
        top_k: how many top-ranked leaves are considered.
        center_dist: maximum L2 distance between the best and a merged leaf's centre.

    Returns:
        ``[S]`` int64 leaf ids, the best first then the merged ones in rank order; empty when no
        leaf is eligible.
    """
    if text_feat.dim() != 1:
        raise DataError(None, f"text_feat must be [D], got shape {tuple(text_feat.shape)}")
    L = leaf_feats.shape[0]
    if occu_count.shape != (L,) or leaf_centers.dim() != 2 or leaf_centers.shape[0] < L:
        raise DataError(
            None,
            f"occu_count must be [{L}] and leaf_centers [>= {L}, 6]; got "
            f"{tuple(occu_count.shape)} and {tuple(leaf_centers.shape)}",
        )
    few = occu_count.to(leaf_feats.device) < min_views
    feats = leaf_feats.masked_fill(few.unsqueeze(1), 0.0)
    rel = leaf_relevance(text_feat.unsqueeze(0), feats)[0]  # [L]
    if not compat:
        rel = rel.masked_fill(few.to(rel.device), float("-inf"))
        if not bool(torch.isfinite(rel).any()):
            return torch.zeros(0, dtype=torch.long, device=rel.device)
    k = min(top_k, L)
    top = torch.topk(rel, k).indices  # [k] best first
    if not compat:
        top = top[torch.isfinite(rel[top])]
    best, cand = top[0], top[1:]
    centers = leaf_centers[:L].to(torch.float32).to(top.device)
    close = (centers[cand] - centers[best]).norm(dim=1) < center_dist
    same = (cand - best) < k2 if compat else (cand // k2) == (best // k2)
    return torch.cat([best.view(1), cand[close & same]])


def gaussian_mask_for_leaves(leaf_ind: Tensor, selected: Tensor) -> Tensor:
    """``[N]`` bool: Gaussians whose leaf id is in ``selected [S]``."""
    return torch.isin(leaf_ind, selected.to(leaf_ind.device))


OutlierRule = Literal["all_distances", "per_point"]


def filter_selection(
    means: Tensor,
    scales: Tensor,
    mask: Tensor,
    max_scale: float = 0.1,
    min_count: int = 100,
    outlier_std: float = 1.0,
    visible: Tensor | None = None,
    outlier_rule: OutlierRule = "all_distances",
    min_after: int = 10,
) -> Tensor:
    """The LeRF evaluation's clean-up of a selected Gaussian set (METHOD §6 step 4, §7.2).

    1. Keep the selected Gaussians that are ``visible`` in the view being rendered (``[N]`` bool,
       screen radius > 0; None: all) and whose three (activated) scales are all below
       ``max_scale``.
    2. If fewer than ``min_count`` remain, return an all-False mask (the query renders nothing).
    3. Statistical outlier removal with ``K = floor(sqrt(n))`` nearest neighbours (the point
       itself included, as a self-query KNN returns it) on *squared* distances ``d [n, K]``: keep
       points whose mean ``d`` lies below a threshold. ``outlier_rule="all_distances"`` (the
       public code): threshold = mean + ``outlier_std`` x std of all ``n·K`` entries of ``d``;
       ``"per_point"``: mean + ``outlier_std`` x std of the ``n`` per-point means (standard
       statistical outlier removal). Stds are unbiased.
    4. If fewer than ``min_after`` points are left, return an all-False mask (the code renders
       nothing below 10).

    Args:
        means: ``[N, 3]`` centres; scales: ``[N, 3]`` activated scales; mask: ``[N]`` bool selection.

    Returns:
        ``[N]`` bool, a subset of ``mask``.
    """
    if (
        means.shape != scales.shape
        or means.dim() != 2
        or means.shape[1] != 3
        or mask.shape != means.shape[:1]
        or (visible is not None and visible.shape != mask.shape)
    ):
        raise DataError(
            None,
            f"filter_selection needs means [N,3], scales [N,3], mask [N] (and visible [N]); got "
            f"{tuple(means.shape)}, {tuple(scales.shape)}, {tuple(mask.shape)}",
        )
    if outlier_rule not in ("all_distances", "per_point"):
        raise ConfigError(
            f"outlier_rule must be 'all_distances' or 'per_point', got {outlier_rule!r}"
        )
    keep = mask.to(torch.bool) & (scales < max_scale).all(dim=1)
    if visible is not None:
        keep &= visible.to(device=keep.device, dtype=torch.bool)
    idx = keep.nonzero().flatten()
    n = idx.numel()
    out = torch.zeros_like(keep)
    if n < min_count or n == 0:
        return out
    pts = means[idx].detach().to(torch.float64).cpu().numpy()
    k = max(1, int(np.floor(np.sqrt(n))))
    dist, _ = cKDTree(pts).query(pts, k=k)
    d2 = np.asarray(dist).reshape(n, k) ** 2  # [n, K] squared KNN distances, self first
    score = d2.mean(axis=1)  # [n]
    ref = d2.reshape(-1) if outlier_rule == "all_distances" else score
    std = ref.std(ddof=1) if ref.size > 1 else 0.0
    inlier = torch.from_numpy(score < ref.mean() + outlier_std * std).to(keep.device)
    if int(inlier.sum()) < min_after:
        return out
    out[idx[inlier]] = True
    return out
