"""Stage 1-2 losses on rendered 6-d instance-feature maps (METHOD §4.0, §4.1, §4.2).

All functions are pure tensor code: no rendering, no I/O. Shapes use ``m`` = number of masks in
the view, ``H x W`` = render size. The feature map is always ``[6, H, W]`` (channels first, as
the renderer returns it) in the ``[0, 1]`` render space produced by :func:`to_render_space`.

Two forms exist for the stage-1 losses because the paper and the public code differ (METHOD
§11.6). ``"code"`` is the default everywhere since the published numbers come from the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError

LossForm = Literal["code", "paper"]

#: default iteration after which the code's contrastive rank weights keep only the hardest pairs.
HARD_SWITCH_ITER = 35_000


def to_render_space(f: Tensor) -> Tensor:
    """Map raw instance features onto the unit 6-sphere, then into ``[0, 1]``.

    ``f [N, 6] -> (f / ||f|| + 1) / 2 [N, 6]``. This is what gets splatted, so mask means, pseudo
    features and codebook distances in rendered space all live in ``[0, 1]^6``.
    """
    return (F.normalize(f, dim=-1) + 1.0) * 0.5  # [N, 6]


def _check_map_and_masks(feat_map: Tensor, masks: Tensor) -> None:
    if feat_map.dim() != 3:
        raise DataError(None, f"feature map must be [C,H,W], got shape {tuple(feat_map.shape)}")
    if masks.dim() != 3 or masks.shape[1:] != feat_map.shape[1:]:
        raise DataError(
            None,
            f"masks must be [m,H,W] matching the feature map {tuple(feat_map.shape[1:])}, "
            f"got {tuple(masks.shape)}",
        )


def mask_means(feat_map: Tensor, masks: Tensor, silhouette: Tensor | None = None) -> Tensor:
    """Mean rendered feature inside each mask, restricted to the silhouette.

    ``M̄_i = Σ(B_i · S · M) / max(1, Σ(B_i · S))`` (the code form, METHOD §4.1).

    Args:
        feat_map: ``[C, H, W]`` rendered features (C = 6).
        masks: ``[m, H, W]`` bool masks B_i (may overlap).
        silhouette: ``[H, W]`` bool S (rendered alpha > 0.7), or None for "every pixel".

    Returns:
        ``[m, C]``; a mask with no pixel inside the silhouette gets a zero row. Differentiable
        w.r.t. ``feat_map``.
    """
    _check_map_and_masks(feat_map, masks)
    sel = masks.to(torch.bool)
    if silhouette is not None:
        sel = sel & silhouette.to(torch.bool).unsqueeze(0)
    # gather only the (mask, pixel) pairs: memory ~ covered pixels, not m x H x W floats
    idx_m, idx_p, counts = _mask_pixel_pairs(sel)
    pix = feat_map.flatten(1).t().index_select(0, idx_p)  # [P, C]
    sums = feat_map.new_zeros(masks.shape[0], feat_map.shape[0]).index_add(0, idx_m, pix)
    return sums / counts.clamp(min=1).unsqueeze(1).to(feat_map.dtype)  # [m, C]


def _mask_pixel_pairs(masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(mask index [P], flat pixel index [P], pixel count per mask [m])`` of every (mask, pixel)."""
    flat = masks.flatten(1)
    idx_m, idx_p = flat.nonzero(as_tuple=True)  # [P], [P]
    counts = flat.sum(1)  # [m]
    return idx_m, idx_p, counts


def intra_mask_loss(
    feat_map: Tensor, masks: Tensor, means: Tensor, form: LossForm = "code"
) -> Tensor:
    """Intra-mask smoothing L_s: pull every pixel of a mask towards the mask mean.

    ``code`` (default): per mask, the mean over its pixels of the *un-squared* L2 distance
    ``||M_hw - M̄_i||_2`` (divided by ``max(1, |B_i|)``), then the mean over the m masks.

    ``paper``: OG eq. 1 uses the *squared* distance ``||M_hw - M̄_i||²``. The paper writes a plain
    sum over masks and pixels, which grows with the image size and the mask count; we apply the
    same normalisation as the code form (per-mask mean over its pixels, then mean over masks) so
    the loss weight λ keeps its meaning and the two forms differ only by the square.

    Pixels are taken over the whole mask, not only inside the silhouette (as the code does);
    ``means`` should come from :func:`mask_means` (keep it attached to the graph to match the
    code, where gradients also flow through the mean).

    Args:
        feat_map: ``[C, H, W]``.
        masks: ``[m, H, W]`` bool.
        means: ``[m, C]``.

    Returns:
        scalar; exactly 0 (still attached to ``feat_map``) when m == 0.
    """
    _check_map_and_masks(feat_map, masks)
    if form not in ("code", "paper"):
        raise ConfigError(f"intra_mask_loss form must be 'code' or 'paper', got {form!r}")
    m, c = masks.shape[0], feat_map.shape[0]
    if means.shape != (m, c):
        raise DataError(None, f"means must be [{m},{c}], got {tuple(means.shape)}")
    if m == 0:
        return feat_map.sum() * 0.0
    idx_m, idx_p, counts = _mask_pixel_pairs(masks)
    pix = feat_map.flatten(1).t().index_select(0, idx_p)  # [P, C] one row per (mask, pixel)
    diff = pix - means.index_select(0, idx_m)  # [P, C]
    # vector_norm's backward is 0 (not NaN) where a pixel equals its mask mean.
    per_pair = (
        diff.pow(2).sum(1) if form == "paper" else torch.linalg.vector_norm(diff, dim=1)
    )  # [P]
    per_mask = torch.zeros(m, dtype=feat_map.dtype, device=feat_map.device).index_add(
        0, idx_m, per_pair
    )
    per_mask = per_mask / counts.clamp(min=1).to(feat_map.dtype)  # [m]
    return per_mask.mean()


def rank_weights(d: Tensor, hard: bool = False) -> Tensor:
    """Hard-negative weights of the code's contrastive loss.

    Within each row of ``d [m, m]`` the entries are ranked ascending (rank 0 = smallest; the zero
    diagonal takes part and therefore gets rank 0), and rank ``r`` maps to ``0.1 + 0.9·r/(m-1)``:
    the closest pairs (largest inverse distance) weigh 1.0. With ``hard=True`` (late training,
    iteration > 35k in the code) every weight below 0.9 becomes 0.1, keeping the hardest ~10%.

    Ties are broken by column index (stable sort) so the result is deterministic. The weights are
    constants: no gradient flows through the ranking.

    Returns:
        ``[m, m]`` float weights in ``[0.1, 1]``. For m < 2 every weight is 0.1.
    """
    m = d.shape[0]
    if d.dim() != 2 or d.shape[1] != m:
        raise DataError(None, f"rank_weights needs a square [m,m] matrix, got {tuple(d.shape)}")
    if m < 2:
        return torch.full_like(d, 0.1, dtype=torch.float32)
    order = torch.argsort(d.detach(), dim=1, stable=True)  # [m, m]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(m, device=d.device).expand(m, m).contiguous())
    w = (ranks.to(torch.float32) / (m - 1)) * (1.0 - 0.1) + 0.1  # [m, m] float32, as the code
    if hard:
        w = torch.where(w < 0.9, torch.full_like(w, 0.1), w)
    return w


def inter_mask_loss(
    means: Tensor,
    form: LossForm = "code",
    iteration: int = 0,
    hard_switch_iter: int = HARD_SWITCH_ITER,
    eps: float = 1e-6,
) -> Tensor:
    """Inter-mask contrastive L_c: push the mean features of different masks apart.

    ``paper`` (OG eq. 2): ``1/(m(m-1)) Σ_{i≠j} 1/(||M̄_i - M̄_j||² + eps)``.

    ``code`` (default): ``d_ij = 1/(||M̄_i - M̄_j||² + 1)`` with ``d_ii = 0``, weighted by
    :func:`rank_weights` (hard mode once ``iteration > hard_switch_iter``):
    ``L = Σ_ij w_ij d_ij / (m(m-1))``.

    Args:
        means: ``[m, C]`` mask means from :func:`mask_means`.
        iteration: the global training iteration (only the code form uses it).
        eps: the paper form's denominator guard (the code form's is fixed at 1).

    Returns:
        scalar; exactly 0 (attached to ``means``) when m < 2.
    """
    if form not in ("code", "paper"):
        raise ConfigError(f"inter_mask_loss form must be 'code' or 'paper', got {form!r}")
    if means.dim() != 2:
        raise DataError(None, f"means must be [m,C], got shape {tuple(means.shape)}")
    m = means.shape[0]
    if m < 2:
        return means.sum() * 0.0
    d2 = (means[:, None, :] - means[None, :, :]).pow(2).sum(-1)  # [m, m]
    off = ~torch.eye(m, dtype=torch.bool, device=means.device)
    if form == "paper":
        d2_off = torch.where(off, d2, torch.ones_like(d2))  # keep 1/0 out of the diagonal
        return ((1.0 / (d2_off + eps)) * off).sum() / (m * (m - 1))
    inv = (1.0 / (d2 + 1.0)) * off  # [m, m], zero diagonal
    w = rank_weights(inv, hard=iteration > hard_switch_iter).to(inv.dtype)
    return (inv * w).sum() / (m * (m - 1))


@dataclass
class InstanceLoss:
    """Stage-1 loss terms of one view (all scalars; ``total`` is what to back-propagate)."""

    total: Tensor  # L_c + λ·L_s
    separation: Tensor  # L_c, inter-mask contrastive
    cohesion: Tensor  # L_s, intra-mask smoothing
    means: Tensor  # [m, 6] mask means used by both terms


def instance_loss(
    feat_map: Tensor,
    masks: Tensor,
    silhouette: Tensor | None,
    iteration: int,
    lambda_s: float = 0.1,
    form_s: LossForm = "code",
    form_c: LossForm = "code",
    hard_switch_iter: int = HARD_SWITCH_ITER,
) -> InstanceLoss:
    """Stage-1 objective ``L = L_c + λ·L_s`` for one rendered view (METHOD §4.1).

    Args:
        feat_map: ``[6, H, W]`` rendered instance features (render space).
        masks: ``[m, H, W]`` bool SAM masks of the chosen level.
        silhouette: ``[H, W]`` bool, rendered alpha > 0.7 (used for the mask means only).
        iteration: global iteration (drives the code's late hard-negative switch).
        lambda_s: λ, 0.1 by default (0.01 for LeRF ramen).
    """
    means = mask_means(feat_map, masks, silhouette)  # [m, 6]
    l_s = intra_mask_loss(feat_map, masks, means, form_s)
    l_c = inter_mask_loss(means, form_c, iteration, hard_switch_iter)
    return InstanceLoss(total=l_c + lambda_s * l_s, separation=l_c, cohesion=l_s, means=means)


def pseudo_feature_loss(
    rendered: Tensor, pseudo: Tensor, silhouette: Tensor, kind: Literal["l1", "mse"] = "l1"
) -> Tensor:
    """Stage-2 pseudo-feature loss L_p (METHOD §4.2).

    Mean of ``|M_q - P|`` (``l1``, coarse stage) or ``(M_q - P)²`` (``mse``, fine stage as in the
    code; the paper writes L1 for both) over the selected pixels and the channels.

    Args:
        rendered: ``[C, H, W]`` map of quantised features.
        pseudo: ``[C, H, W]`` pseudo-feature map P.
        silhouette: ``[H, W]`` bool, pixels to score (rendered alpha > 0.7).

    Returns:
        scalar; 0 (attached to ``rendered``) when no pixel is selected.
    """
    if rendered.shape != pseudo.shape or rendered.dim() != 3:
        raise DataError(
            None,
            f"rendered {tuple(rendered.shape)} and pseudo {tuple(pseudo.shape)} must be equal [C,H,W]",
        )
    if silhouette.shape != rendered.shape[1:]:
        raise DataError(
            None,
            f"silhouette must be [H,W] = {tuple(rendered.shape[1:])}, got {tuple(silhouette.shape)}",
        )
    if kind not in ("l1", "mse"):
        raise ConfigError(f"pseudo_feature_loss kind must be 'l1' or 'mse', got {kind!r}")
    sel = silhouette.to(torch.bool)
    diff = rendered[:, sel] - pseudo[:, sel]  # [C, P]
    if diff.numel() == 0:
        return rendered.sum() * 0.0
    return diff.abs().mean() if kind == "l1" else diff.pow(2).mean()
