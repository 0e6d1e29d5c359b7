"""Pseudo-feature labels for the codebook stages (METHOD §4.2 "Pseudo labels", "Adaptive k2").

A pseudo label is the mean stage-1 feature of a SAM mask, painted back over the mask. Masks whose
features disagree inside (high variance: likely a wrong segment) are dropped, except the very
large ones, which are usually background and naturally vary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import DataError
from .losses import mask_means


@dataclass
class PseudoLabels:
    """Pseudo labels of one view. Mask numbering: 0 = dummy ("no mask"), j = input mask j-1."""

    pseudo_map: Tensor  # [6, H, W] each pixel's (kept) mask mean, 0 elsewhere
    mask_feats: Tensor  # [m, 6] mask means, zero rows for discarded masks
    valid: Tensor  # [m] bool, mask kept
    pseudo_masks: Tensor  # [m+1, H, W] bool, row 0 all False, discarded masks all False
    mask_ids: Tensor  # [H, W] int64 in 0..m, 0 = no kept mask (id-map form of pseudo_masks)
    variance: Tensor  # [m] per-mask variance (mean over channels)

    @property
    def feats_with_dummy(self) -> Tensor:
        """``[m+1, 6]`` pseudo features with the zero dummy row first (association input)."""
        return torch.cat(
            [self.mask_feats.new_zeros(1, self.mask_feats.shape[1]), self.mask_feats], 0
        )


def masks_to_ids(masks: Tensor) -> Tensor:
    """``[m, H, W]`` bool -> ``[H, W]`` int64 id map in ``0..m`` (0 = none).

    Where masks overlap the later mask wins, as when masks are painted in order (LangSplat).
    Painting one mask at a time keeps memory at one ``[H, W]`` map (an ``[m, H, W]`` int64
    intermediate would take about 2 GB for 200 masks at 1296x968).
    """
    ids = torch.zeros(masks.shape[1:], dtype=torch.long, device=masks.device)  # [H, W]
    for j in range(masks.shape[0]):
        ids.masked_fill_(masks[j], j + 1)
    return ids


def ids_to_masks(ids: Tensor, num_masks: int) -> Tensor:
    """``[H, W]`` id map (0 = none, 1..m) -> ``[m, H, W]`` bool (no dummy row)."""
    j = torch.arange(1, num_masks + 1, device=ids.device).view(num_masks, 1, 1)
    return ids.unsqueeze(0) == j


def pseudo_features(
    feat_map: Tensor, masks: Tensor, var_thresh: float = 0.006, keep_large_frac: float = 0.8
) -> PseudoLabels:
    """Build the pseudo-feature map of one view from its rendered continuous features.

    1. Per mask: mean feature and per-channel (population) variance over the mask's pixels,
       averaged over the channels.
    2. Drop masks with variance > ``var_thresh``, except masks with more than
       ``keep_large_frac`` x the pixels of the largest mask (kept: likely background).
    3. Paint each pixel with its mask's kept mean (0 for discarded or uncovered pixels).

    Args:
        feat_map: ``[6, H, W]`` rendered un-quantised features (render space).
        masks: ``[m, H, W]`` bool SAM masks of the chosen level (non-overlapping in practice;
            where they overlap, the later mask paints the pixel).

    Returns:
        :class:`PseudoLabels`. Empty masks are marked invalid (they cover nothing anyway).
    """
    if feat_map.dim() != 3 or masks.dim() != 3 or masks.shape[1:] != feat_map.shape[1:]:
        raise DataError(
            None,
            f"pseudo_features needs feat_map [C,H,W] and masks [m,H,W] of the same size, "
            f"got {tuple(feat_map.shape)} and {tuple(masks.shape)}",
        )
    feat_map = feat_map.detach()
    m, c = masks.shape[0], feat_map.shape[0]
    masks = masks.to(torch.bool)
    means = mask_means(feat_map, masks)  # [m, C]
    counts = masks.flatten(1).sum(1).to(feat_map.dtype)  # [m] pixels per mask
    variance = _centred_variance(feat_map, masks, means, counts)  # [m]
    large = counts > keep_large_frac * (counts.max() if m else counts.new_zeros(()))
    valid = ((variance <= var_thresh) | large) & (counts > 0)  # [m]
    mask_feats = means * valid.unsqueeze(1).to(means.dtype)  # [m, C]
    dummy = masks.new_zeros(1, *masks.shape[1:])
    pseudo_masks = torch.cat([dummy, masks & valid.view(m, 1, 1)], 0)  # [m+1, H, W]
    ids = masks_to_ids(masks)  # [H, W] 0..m
    table = torch.cat([feat_map.new_zeros(1, c), mask_feats], 0)  # [m+1, C]
    kept_ids = torch.where(torch.cat([valid.new_zeros(1), valid])[ids], ids, torch.zeros_like(ids))
    pseudo_map = table[kept_ids].permute(2, 0, 1).contiguous()  # [C, H, W]
    return PseudoLabels(
        pseudo_map=pseudo_map,
        mask_feats=mask_feats,
        valid=valid,
        pseudo_masks=pseudo_masks,
        mask_ids=kept_ids,
        variance=variance,
    )


def _centred_variance(feat_map: Tensor, masks: Tensor, means: Tensor, counts: Tensor) -> Tensor:
    """``[m]`` mean over channels of ``Σ_{p in mask} (x_p - mu)² / max(1, |mask|)``."""
    m, c = masks.shape[0], feat_map.shape[0]
    idx_m, idx_p = masks.flatten(1).nonzero(as_tuple=True)  # [P], [P]
    d = feat_map.flatten(1).t()[idx_p] - means[idx_m]  # [P, C]
    sums = torch.zeros(m, c, dtype=feat_map.dtype, device=feat_map.device).index_add_(
        0, idx_m, d.pow(2)
    )
    return (sums / counts.clamp(min=1).unsqueeze(1)).mean(1)


def count_cluster_objects(
    pseudo_masks: Tensor,
    pseudo_map: Tensor,
    cluster_feat: Tensor,
    cluster_alpha: Tensor,
    sil_thresh: float = 0.9,
    coverage_thresh: float = 0.2,
    l1_thresh: float = 0.9,
    l2_thresh: float = 0.5,
    max_objects: int = 10,
) -> int:
    """How many objects one coarse cluster shows in one view (the adaptive-k2 count, METHOD §4.2).

    1. Cluster silhouette S = ``cluster_alpha > sil_thresh``; coverage of pseudo mask j =
       ``|B_j ∩ S| / |B_j|``; keep masks with coverage > ``coverage_thresh``.
    2. For each kept mask: mean pseudo feature over B_j, and mean rendered cluster feature over
       ``B_j ∩ S``.
    3. Count masks with L1 < ``l1_thresh`` and L2 < ``l2_thresh`` between those two means, at
       most ``max_objects``.

    The caller renders the cluster alone (all scales < 0.5, skipped under 100 Gaussians or when
    its alpha never exceeds 0.8), takes the maximum of this count over views, and feeds the
    per-cluster maxima to :func:`openinsgaussian.instances.codebook.adaptive_k2`.

    Args:
        pseudo_masks: ``[m(+1), H, W]`` bool (the dummy row, being empty, is never counted).
        pseudo_map: ``[6, H, W]`` pseudo-feature map.
        cluster_feat: ``[6, H, W]`` rendered features of the cluster alone.
        cluster_alpha: ``[H, W]`` its alpha (a bool silhouette also works).
    """
    if (
        pseudo_masks.dim() != 3
        or pseudo_masks.shape[1:] != pseudo_map.shape[1:]
        or cluster_feat.shape != pseudo_map.shape
    ):
        raise DataError(
            None,
            "count_cluster_objects needs masks [m,H,W], pseudo_map and cluster_feat [6,H,W] of one size",
        )
    if pseudo_masks.shape[0] == 0:
        return 0
    sil = cluster_alpha.to(torch.float32) > sil_thresh  # [H, W]
    masks = pseudo_masks.to(torch.bool)
    area = masks.flatten(1).sum(1).to(torch.float32)  # [m]
    inter = (masks & sil).flatten(1).sum(1).to(torch.float32)  # [m]
    coverage = inter / (area + 1e-6)
    keep = coverage > coverage_thresh
    if not bool(keep.any()):
        return 0
    kept = masks[keep]  # [k, H, W]
    p_mean = mask_means(pseudo_map, kept)  # [k, 6]
    c_mean = mask_means(cluster_feat, kept, sil)  # [k, 6]
    diff = p_mean - c_mean
    ok = (diff.abs().sum(1) < l1_thresh) & (diff.norm(dim=1) < l2_thresh)
    return min(int(ok.sum()), max_objects)
