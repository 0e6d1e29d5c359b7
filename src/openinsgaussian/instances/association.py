"""3D leaf <-> 2D mask association and per-leaf language accumulation (METHOD §5.1).

Score of leaf l against pseudo mask j of a view: ``S_lj = IoU(π_l, B_j) · (1 - ||μ_l - P_j||_1)``
where π_l is the leaf's silhouette, μ_l its mean rendered feature inside π_l, and P_j the mask's
pseudo feature. The best mask is accepted when ``S > 0.2``; otherwise the leaf is unmatched in
that view (mask index 0).

Two ways to get π_l and μ_l:

* **one pass** (:func:`associate_view`, our default): one render of the view with per-pixel
  top-contributor leaf ids; π_l = pixels whose id is l where the rendered alpha > 0.8 (the
  public code's silhouette threshold), μ_l = mean of the full rendered continuous feature map
  over them. One scatter over (leaf, mask) pixel pairs gives every IoU.
  Cost per view: one render and ``O(H·W)`` work, instead of one render per leaf.
* **per leaf** (:func:`association_score`): the public code's path, every leaf rendered alone
  with π_l = alpha > 0.8 (leaves with fewer than 10 visible Gaussians skipped). Kept as the
  reference the one-pass result is compared with.

The two agree when a leaf is the only content of its pixels (no other leaf, and no unassigned
Gaussian, in front of or blended with it); otherwise the one-pass silhouettes are the visible
parts (occluded parts of a leaf are not counted, and alpha is that of the whole render), which is
what a mask in the image can actually cover.

Mask numbering everywhere: index 0 is the dummy "no mask", ``j = 1..m`` are the view's masks, and
row ``j - 1`` of the view's language table belongs to mask j.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import DataError
from .aggregation import MEAN_EPS, aggregate_attention_sparse

#: acceptance threshold of the association score (METHOD §5.1).
SCORE_THRESH = 0.2
#: denominator guard of IoU and leaf means (public code value).
EPS = 1e-6


class ViewMatch(NamedTuple):
    """Association of every leaf in one view."""

    match_idx: Tensor  # [L] int64, 0 = unmatched, j = pseudo mask j
    match_score: Tensor  # [L] float, 0 when unmatched
    matched: Tensor  # [L] bool


def association_score(
    leaf_silhouettes: Tensor, masks: Tensor, leaf_means: Tensor, mask_means: Tensor
) -> Tensor:
    """Joint IoU / feature score of every (leaf, mask) pair from explicit silhouettes.

    Args:
        leaf_silhouettes: ``[L, H, W]`` bool leaf silhouettes (alpha > 0.8 of each leaf alone).
        masks: ``[m, H, W]`` bool masks (include the empty dummy row 0 to keep the numbering).
        leaf_means: ``[L, 6]`` mean leaf feature inside its silhouette.
        mask_means: ``[m, 6]`` pseudo feature of each mask.

    Returns:
        ``[L, m]`` scores ``IoU · (1 - L1)`` with ``IoU = |π∩B| / (|π∪B| + 1e-6)``.
    """
    if (
        leaf_silhouettes.dim() != 3
        or masks.dim() != 3
        or leaf_silhouettes.shape[1:] != masks.shape[1:]
    ):
        raise DataError(
            None,
            f"association_score needs [L,H,W] and [m,H,W] of one size, got "
            f"{tuple(leaf_silhouettes.shape)} and {tuple(masks.shape)}",
        )
    if leaf_means.shape[0] != leaf_silhouettes.shape[0] or mask_means.shape[0] != masks.shape[0]:
        raise DataError(None, "association_score: one mean per silhouette and per mask expected")
    a = leaf_silhouettes.flatten(1).to(torch.float32)  # [L, HW]
    b = masks.flatten(1).to(torch.float32)  # [m, HW]
    inter = a @ b.t()  # [L, m]
    union = a.sum(1, keepdim=True) + b.sum(1).unsqueeze(0) - inter
    iou = inter / (union + EPS)
    dist = (
        (leaf_means.unsqueeze(1).to(torch.float32) - mask_means.unsqueeze(0).to(torch.float32))
        .abs()
        .sum(-1)
    )
    return iou * (1.0 - dist)


def leaf_means_from_maps(leaf_feats: Tensor, leaf_silhouettes: Tensor) -> Tensor:
    """``[L, C, H, W]`` per-leaf renders + ``[L, H, W]`` silhouettes -> ``[L, C]`` means inside them."""
    w = leaf_silhouettes.to(leaf_feats.dtype).unsqueeze(1)  # [L, 1, H, W]
    return (leaf_feats * w).sum((2, 3)) / (w.sum((2, 3)) + EPS)


def pick_matches(
    scores: Tensor, thresh: float = SCORE_THRESH, eligible: Tensor | None = None
) -> ViewMatch:
    """Best mask per leaf from ``scores [L, m+1]``; accepted when the score exceeds ``thresh``.

    Ties go to the lowest mask index. ``eligible [L]`` bool marks leaves that may match at all.
    """
    if scores.shape[1] == 0:
        scores = scores.new_zeros(scores.shape[0], 1)
    score, idx = scores.max(dim=1)  # first maximum on ties
    matched = score > thresh
    if eligible is not None:
        matched = matched & eligible.to(torch.bool)
    return ViewMatch(
        match_idx=torch.where(matched, idx, torch.zeros_like(idx)),
        match_score=torch.where(matched, score, torch.zeros_like(score)),
        matched=matched,
    )


def expand_matches(match: ViewMatch, leaf_ids: Tensor, num_leaves: int) -> ViewMatch:
    """Scatter a match of a leaf subset (``leaf_ids [L']``) into all ``num_leaves`` (others unmatched)."""
    dev = match.match_idx.device
    idx = torch.zeros(num_leaves, dtype=torch.long, device=dev)
    score = torch.zeros(num_leaves, dtype=match.match_score.dtype, device=dev)
    ok = torch.zeros(num_leaves, dtype=torch.bool, device=dev)
    idx[leaf_ids] = match.match_idx
    score[leaf_ids] = match.match_score
    ok[leaf_ids] = match.matched
    return ViewMatch(idx, score, ok)


def leaf_pixel_stats(
    leaf_map: Tensor, num_leaves: int, feat_map: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Pixel count and mean feature of every leaf in a top-contributor id map.

    Args:
        leaf_map: ``[H, W]`` int64 leaf id per pixel; ids outside ``[0, num_leaves)`` (-1 = none,
            the never-assigned sentinel) are ignored.
        feat_map: ``[C, H, W]`` rendered continuous features, or None.

    Returns:
        ``(counts [L] int64, means [L, C] or None)``; the mean is ``sum / (count + 1e-6)``.
    """
    ids = leaf_map.reshape(-1)
    ok = (ids >= 0) & (ids < num_leaves)
    ids = ids[ok]
    counts = torch.bincount(ids, minlength=num_leaves)
    if feat_map is None:
        return counts, None
    if feat_map.dim() != 3 or feat_map.shape[1:] != leaf_map.shape:
        raise DataError(
            None,
            f"feat_map must be [C,H,W] with H,W = {tuple(leaf_map.shape)}, got {tuple(feat_map.shape)}",
        )
    c = feat_map.shape[0]
    pix = feat_map.flatten(1)[:, ok].t()  # [P, C]
    sums = torch.zeros(num_leaves, c, dtype=feat_map.dtype, device=feat_map.device).index_add_(
        0, ids, pix
    )
    return counts, sums / (counts.to(feat_map.dtype).unsqueeze(1) + EPS)


def _intersections(
    ids: Tensor, ok: Tensor, masks: Tensor, num_leaves: int, chunk: int = 1 << 16
) -> tuple[Tensor, Tensor]:
    """``(inter [L, m+1], mask_area [m+1])`` from the leaf id map and the masks (id map or stack)."""
    if masks.dim() == 2:  # id map, 0 = none, 1..m
        mask_flat = masks.reshape(-1).to(torch.long).clamp(min=0)
        k = int(mask_flat.max()) + 1 if mask_flat.numel() else 1
        return _intersections_idmap(ids, ok, mask_flat, num_leaves, k)
    k = masks.shape[0]
    flat = masks.flatten(1).to(torch.bool)  # [m+1, HW]
    leaf = ids[ok]
    cols = ok.nonzero().flatten()
    inter = torch.zeros(num_leaves, k, dtype=torch.float32, device=flat.device)
    for s in range(0, cols.numel(), chunk):  # bounded [chunk, m+1] temporaries
        c = cols[s : s + chunk]
        inter.index_add_(0, leaf[s : s + chunk], flat[:, c].t().to(torch.float32))
    area = flat.sum(1).to(torch.float32)
    inter[:, 0] = 0.0  # row 0 is the dummy "no mask": never a match
    area[0] = 0.0
    return inter, area


def _intersections_idmap(
    ids: Tensor, ok: Tensor, mask_flat: Tensor, num_leaves: int, k: int
) -> tuple[Tensor, Tensor]:
    pair = ids[ok] * k + mask_flat[ok]  # one scatter over (leaf, mask) pixel pairs
    inter = torch.bincount(pair, minlength=num_leaves * k).reshape(num_leaves, k).to(torch.float32)
    area = torch.bincount(mask_flat, minlength=k).to(torch.float32)
    inter[:, 0] = 0.0  # mask 0 is "no mask": never a match
    area[0] = 0.0
    return inter, area


def associate_view(
    leaf_map: Tensor,
    masks: Tensor,
    mask_feats: Tensor,
    num_leaves: int,
    feat_map: Tensor | None = None,
    leaf_means: Tensor | None = None,
    min_pixels: int = 10,
    score_thresh: float = SCORE_THRESH,
    alpha: Tensor | None = None,
    alpha_thresh: float = 0.8,
) -> ViewMatch:
    """One-pass association of every leaf with the pseudo masks of one view.

    Args:
        leaf_map: ``[H, W]`` int64 top-contributor leaf id per pixel (-1 = none).
        masks: either the ``[H, W]`` int64 pseudo-mask id map (0 = none or discarded, j = mask j;
            :attr:`PseudoLabels.mask_ids`), which is the fast path and assumes non-overlapping
            masks, or the ``[m+1, H, W]`` bool stack with the empty dummy row 0
            (:attr:`PseudoLabels.pseudo_masks`), which also handles overlapping masks.
        mask_feats: ``[m+1, 6]`` pseudo features, dummy row 0 (:attr:`PseudoLabels.feats_with_dummy`).
        num_leaves: L = k1·k2.
        feat_map: ``[6, H, W]`` rendered continuous features (gives μ_l), or
        leaf_means: ``[L, 6]`` precomputed μ_l (e.g. from a renderer). One of the two is required.
        min_pixels: leaves covering fewer pixels are not matched in this view. This replaces the
            code's "at least 10 visible Gaussians", which applies to per-leaf renders.
        score_thresh: acceptance threshold on S.
        alpha: ``[H, W]`` or ``[1, H, W]`` rendered alpha; pixels with alpha <= ``alpha_thresh``
            belong to no leaf (the silhouette rule π = alpha > 0.8 of METHOD §5.1). Without it,
            every pixel with a top contributor counts, down to blending weights near 1/255.
        alpha_thresh: silhouette threshold on ``alpha``.

    Returns:
        :class:`ViewMatch` over all L leaves.
    """
    if leaf_map.dim() != 2:
        raise DataError(None, f"leaf_map must be [H,W], got shape {tuple(leaf_map.shape)}")
    if alpha is not None:
        alpha = alpha.reshape(leaf_map.shape)
        leaf_map = torch.where(alpha > alpha_thresh, leaf_map, torch.full_like(leaf_map, -1))
    if masks.shape[-2:] != leaf_map.shape or masks.dim() not in (2, 3):
        raise DataError(
            None,
            f"masks must be an [H,W] id map or [m+1,H,W] stack matching {tuple(leaf_map.shape)}, "
            f"got {tuple(masks.shape)}",
        )
    k = mask_feats.shape[0]
    if masks.dim() == 3 and masks.shape[0] != k:
        raise DataError(
            None, f"{masks.shape[0]} masks but {k} mask features (both include the dummy row 0)"
        )
    counts, means = leaf_pixel_stats(leaf_map, num_leaves, feat_map)
    if leaf_means is not None:
        if leaf_means.shape != (num_leaves, mask_feats.shape[1]):
            raise DataError(
                None,
                f"leaf_means must be [{num_leaves},{mask_feats.shape[1]}], got {tuple(leaf_means.shape)}",
            )
        means = leaf_means
    if means is None:
        raise DataError(None, "associate_view needs feat_map or leaf_means")
    ids = leaf_map.reshape(-1).to(torch.long)
    ok = (ids >= 0) & (ids < num_leaves)
    inter, area = _intersections(ids, ok, masks, num_leaves)
    if inter.shape[1] > k:
        raise DataError(
            None,
            f"mask id map holds ids up to {inter.shape[1] - 1} but only {k} mask features were given",
        )
    if inter.shape[1] < k:  # masks with the highest ids absent from the map
        pad = k - inter.shape[1]
        inter = torch.cat([inter, inter.new_zeros(num_leaves, pad)], 1)
        area = torch.cat([area, area.new_zeros(pad)])
    union = counts.to(torch.float32).unsqueeze(1) + area.unsqueeze(0) - inter  # [L, m+1]
    iou = inter / (union + EPS)
    dist = (
        (means.unsqueeze(1).to(torch.float32) - mask_feats.unsqueeze(0).to(torch.float32))
        .abs()
        .sum(-1)
    )
    scores = iou * (1.0 - dist)  # [L, m+1]
    return pick_matches(scores, score_thresh, eligible=(counts >= max(1, min_pixels)))


def gather_view_features(match_idx: Tensor, matched: Tensor, mask_lang: Tensor) -> Tensor:
    """Per-leaf language feature of one view: row ``j-1`` of ``mask_lang [m, D]`` for a leaf matched
    to mask j, zeros for unmatched leaves. Returns ``[L, D]``."""
    m = mask_lang.shape[0]
    ok = matched.to(torch.bool)
    if bool(ok.any()) and (int(match_idx[ok].max()) > m or int(match_idx[ok].min()) < 1):
        raise DataError(
            None,
            f"match indices must lie in 1..{m} for the {m} language features of this view",
            "the language table and the pseudo masks come from different mask sets",
        )
    table = torch.cat([mask_lang.new_zeros(1, mask_lang.shape[1]), mask_lang], 0)  # [m+1, D]
    rows = torch.where(ok, match_idx, torch.zeros_like(match_idx))
    return table[rows]


class AssociationAccumulator:
    """Sums per-leaf language features over views and keeps what aggregation needs.

    Always kept (small): feature sums ``[L, D]``, matched-view counts ``[L]``, score sums ``[L]``
    and the per-view match indices and scores (``V x L`` numbers). With ``store_views=True`` the
    features of the *matched* (leaf, view) pairs are kept too (memory = matches x D), which
    allows attention in one pass; without it, attention takes a second pass over the views
    (:meth:`view_match` + :func:`gather_view_features` + ``StreamingAttention``).
    """

    def __init__(
        self,
        num_leaves: int,
        dim: int,
        store_views: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.num_leaves, self.dim, self.store_views = num_leaves, dim, store_views
        self.feat_sum = torch.zeros(num_leaves, dim, dtype=dtype, device=device)  # [L, D]
        self.occu_count = torch.zeros(num_leaves, dtype=torch.long, device=device)  # [L]
        self.score_sum = torch.zeros(num_leaves, dtype=torch.float32, device=device)  # [L]
        self._idx: list[Tensor] = []  # V x [L] int64
        self._score: list[Tensor] = []  # V x [L]
        self._rows: list[tuple[int, Tensor, Tensor]] = []  # (view, leaf ids [k], feats [k, D])

    @property
    def num_views(self) -> int:
        return len(self._idx)

    def add(self, match: ViewMatch, mask_lang: Tensor) -> int:
        """Add one view's association and its ``[m, D]`` mask language table; returns the view index."""
        if match.match_idx.shape != (self.num_leaves,):
            raise DataError(
                None,
                f"view match covers {match.match_idx.shape[0]} leaves, expected {self.num_leaves}",
            )
        if mask_lang.dim() != 2 or mask_lang.shape[1] != self.dim:
            raise DataError(
                None, f"mask language table must be [m,{self.dim}], got {tuple(mask_lang.shape)}"
            )
        dev = self.feat_sum.device
        feats = gather_view_features(match.match_idx, match.matched, mask_lang).to(
            dev, self.feat_sum.dtype
        )
        ok = match.matched.to(dev, torch.bool)
        self.feat_sum += feats
        self.occu_count += ok.to(torch.long)
        self.score_sum += match.match_score.to(dev, torch.float32) * ok
        v = self.num_views
        self._idx.append(
            torch.where(ok, match.match_idx.to(dev), torch.zeros_like(self.occu_count))
        )
        self._score.append(match.match_score.to(dev, torch.float32) * ok)
        if self.store_views:
            leaves = ok.nonzero().flatten()
            self._rows.append((v, leaves, feats[leaves].clone()))
        return v

    def view_match(self, view: int) -> ViewMatch:
        """The stored match of view ``view`` (for a second, streaming pass)."""
        idx = self._idx[view]
        return ViewMatch(idx, self._score[view], idx > 0)

    def mean_features(self) -> Tensor:
        """``[L, D]`` OpenGaussian mean ``Σ F / (count + 1e-4)``."""
        return self.feat_sum / (self.occu_count.to(self.feat_sum.dtype).unsqueeze(1) + MEAN_EPS)

    def leaf_score(self) -> Tensor:
        """``[L]`` mean association score over matched views (0 for never-matched leaves)."""
        return self.score_sum / (self.occu_count.to(torch.float32) + EPS)

    def match_table(self) -> Tensor:
        """``[L, V, 3]`` (mask index, score, matched) per leaf and view, as ``match_info``."""
        if not self._idx:
            return torch.zeros(self.num_leaves, 0, 3, device=self.feat_sum.device)
        idx = torch.stack(self._idx, 1).to(torch.float32)  # [L, V]
        score = torch.stack(self._score, 1)
        return torch.stack([idx, score, (idx > 0).to(torch.float32)], -1)

    def _require_views(self) -> None:
        if not self.store_views:
            raise DataError(
                None,
                "per-view features were not stored",
                "create the accumulator with store_views=True "
                "or aggregate with a second pass and StreamingAttention",
            )

    def view_features(self) -> tuple[Tensor, Tensor]:
        """Dense ``(view_feats [L, V, D], matched [L, V])``; needs ``store_views=True``."""
        self._require_views()
        v = self.num_views
        out = torch.zeros(
            self.num_leaves, v, self.dim, dtype=self.feat_sum.dtype, device=self.feat_sum.device
        )
        ok = torch.zeros(self.num_leaves, v, dtype=torch.bool, device=self.feat_sum.device)
        for view, leaves, feats in self._rows:
            out[leaves, view] = feats
            ok[leaves, view] = True
        return out, ok

    def attention_features(self) -> Tensor:
        """``[L, D]`` attention aggregation from the stored matched rows; needs ``store_views=True``."""
        self._require_views()
        if not self._rows:
            return self.mean_features()
        leaves = torch.cat([r[1] for r in self._rows])
        feats = torch.cat([r[2] for r in self._rows])
        return aggregate_attention_sparse(feats, leaves, self.mean_features())
