"""Mask-level non-maximum suppression with LangSplat's de-duplication rule (METHOD §2.2).

SAM returns many overlapping masks per granularity level. LangSplat keeps a mask unless a better
one (higher score = stability x predicted IoU) duplicates or contains it. The rule, for masks
sorted by descending score (rank 0 = best) with areas ``a`` and pairwise intersections ``I``:

* ``iou[i, j] = I_ij / (a_i + a_j - I_ij)``; mask ``j`` is dropped when some better mask ``i < j``
  has ``iou[i, j] > iou_thr``. Suppression is *not* greedy: a mask that is itself dropped still
  suppresses worse ones (a matrix NMS).
* containment, with ``ri = I_ij / a_i`` and ``rj = I_ij / a_j`` for ``i < j``:
  - ``ri < 0.5`` and ``rj >= 0.85`` (the worse mask ``j`` lies inside the better ``i``):
    ``inner[i, j] = 1 - ri * rj``;
  - ``ri >= 0.85`` and ``rj < 0.5`` (the better mask ``i`` lies inside the worse ``j``):
    ``inner[j, i] = 1 - ri * rj``.
  ``keep_inner_u[j]`` = max over rows ``r < j`` of ``inner[r, j]`` <= ``1 - inner_thr``;
  ``keep_inner_l[c]`` = max over rows ``r >= c - 1`` of ``inner[r, c]`` <= ``1 - inner_thr``
  (LangSplat takes ``tril(inner, diagonal=1)``, which also includes the first super-diagonal;
  this matters only for the fallback below, and is reproduced).
* ``keep_conf = score > score_thr``.
* fallback, applied to each of ``keep_conf``, ``keep_inner_u``, ``keep_inner_l`` separately: if
  that criterion keeps nothing, it keeps the top ``min(3, m)`` masks by score instead.
* result: ``keep_iou & keep_conf & keep_inner_u & keep_inner_l``; kept original indices are
  returned in descending score order.

Deviations from the public code, both for robustness: ties in score are ordered by original index
(stable sort), and empty masks (area 0, for which the public code divides by zero) are never kept
and take no part in the rule.

:func:`mask_nms` computes all pairwise intersections as one matrix product of the flattened masks
(accumulated over pixel chunks, exact in float32 up to 2^24 pixels per mask); :func:`mask_nms_loop`
is the plain pairwise loop with the same rule, kept as the reference for tests and benchmarks.
"""

from __future__ import annotations

import numpy as np
import torch

_CONTAIN_HI = 0.85  # "mostly inside" ratio of the public rule
_CONTAIN_LO = 0.5  # "less than half covered" ratio of the public rule


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def _check(masks: torch.Tensor, scores: torch.Tensor) -> None:
    if masks.ndim != 3:
        raise ValueError(f"masks must be [m,H,W], got shape {tuple(masks.shape)}")
    if scores.ndim != 1 or scores.shape[0] != masks.shape[0]:
        raise ValueError(f"scores must be [m] with m={masks.shape[0]}, "
                         f"got shape {tuple(scores.shape)}")


def _order(scores: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """Indices of non-empty masks by descending score, ties by original index."""
    idx = torch.argsort(scores.to(torch.float64), descending=True, stable=True)
    return idx[area[idx] > 0]


def pairwise_intersections(masks: torch.Tensor, method: str = "auto",
                           chunk_pixels: int = 1 << 16) -> torch.Tensor:
    """``I [m,m]`` float32 with ``I[i,j]`` = pixels in both mask i and mask j (exact integers).

    ``method``:
    * "matmul": ``F_c @ F_c.T`` with ``F_c [m, chunk]`` float32 per pixel chunk (0/1 values, so
      sums are exact below 2^24), peak memory ``m * chunk`` floats. Default on GPUs.
    * "signature": pixels with the same membership pattern (which masks cover them) contribute
      identically, so group the pixels by pattern and run the product on the ``u`` distinct
      patterns weighted by their pixel counts: ``I = U^T diag(c) U``, ``U [u,m]``. Usually
      ``u`` is far below the pixel count, which makes this the faster choice on CPUs.
    * "auto": "matmul" on CUDA, "signature" otherwise.
    """
    if method == "auto":
        method = "matmul" if masks.is_cuda else "signature"
    m = masks.shape[0]
    flat = masks.reshape(m, -1)  # [m, P] bool
    if method == "signature" and m > 0:
        return _signature_intersections(flat.cpu().numpy()).to(masks.device)
    if method not in ("matmul", "signature"):
        raise ValueError(f"unknown method {method!r}: expected auto, matmul or signature")
    out = torch.zeros(m, m, dtype=torch.float32, device=masks.device)
    for start in range(0, flat.shape[1], chunk_pixels):
        f = flat[:, start : start + chunk_pixels].to(torch.float32)  # [m, chunk]
        out.addmm_(f, f.T)
    return out


_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for key mixing


def _signature_intersections(flat: np.ndarray) -> torch.Tensor:
    """Pairwise intersections of ``flat [m,P]`` bool masks via distinct per-pixel patterns."""
    m = flat.shape[0]
    packed = np.packbits(flat, axis=0)  # [ceil(m/8), P] uint8, one membership pattern per column
    nbytes = -(-packed.shape[0] // 8) * 8
    rows = np.zeros((flat.shape[1], nbytes), dtype=np.uint8)  # [P, 8k] patterns, zero padded
    rows[:, : packed.shape[0]] = packed.T
    words = rows.view(np.uint64)  # [P, k]
    key = np.zeros(words.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for w in range(words.shape[1]):  # order-dependent mix of the words into one 64-bit key
            key = (key ^ words[:, w]) * _HASH_MULT
            key ^= key >> np.uint64(29)
    _, first, inv, counts = np.unique(key, return_index=True, return_inverse=True,
                                      return_counts=True)
    patterns = words[first]  # [u, k]
    if not np.array_equal(patterns[inv.reshape(-1)], words):  # a hash collision: use exact grouping
        patterns, inv, counts = np.unique(words, axis=0, return_inverse=True, return_counts=True)
    u8 = np.ascontiguousarray(patterns).view(np.uint8)[:, : packed.shape[0]]
    member = np.unpackbits(u8, axis=1, count=m).astype(np.float32)  # [u, m]
    member_t = torch.from_numpy(member)
    weighted = member_t * torch.from_numpy(counts.astype(np.float32))[:, None]  # [u, m]
    return weighted.T @ member_t  # [m, m]


def containment_keep(inter: torch.Tensor, area: torch.Tensor,
                     inner_thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LangSplat's two containment criteria on score-sorted masks: ``(keep_inner_u, keep_inner_l)``.

    ``inter [n,n]`` pairwise intersections and ``area [n]`` in descending score order. A worse mask
    ``j`` mostly (>= 0.85) inside a better ``i`` that it covers less than half of gives
    ``inner[i, j] = 1 - ri*rj``; a better ``i`` mostly inside a worse ``j`` gives ``inner[j, i]``.
    ``keep_inner_u`` takes column maxima over ``triu(inner, diagonal=1)``, ``keep_inner_l`` over
    ``tril(inner, diagonal=1)`` (LangSplat's choice, so the first super-diagonal, the mask ranked
    just above, counts in both); a column is kept when its maximum is <= ``1 - inner_thr``.
    """
    n = inter.shape[0]
    inter = inter.to(torch.float64)
    area = area.to(torch.float64)
    ri = inter / area[:, None]  # [n,n] fraction of row mask covered
    rj = inter / area[None, :]  # [n,n] fraction of column mask covered
    upper = torch.ones(n, n, dtype=torch.bool, device=inter.device).triu(1)  # i < j
    inner_val = 1.0 - ri * rj  # [n,n]
    inner = torch.zeros_like(inter)
    case_u = upper & (ri < _CONTAIN_LO) & (rj >= _CONTAIN_HI)  # worse j inside better i -> [i,j]
    inner[case_u] = inner_val[case_u]
    case_l = upper & (ri >= _CONTAIN_HI) & (rj < _CONTAIN_LO)  # better i inside worse j -> [j,i]
    inner.T[case_l] = inner_val[case_l]
    zero = torch.zeros(1, dtype=inter.dtype, device=inter.device)
    inner_u = torch.triu(inner, diagonal=1).max(dim=0).values if n else zero[:0]
    inner_l = torch.tril(inner, diagonal=1).max(dim=0).values if n else zero[:0]
    return inner_u <= 1.0 - inner_thr, inner_l <= 1.0 - inner_thr


def _decide(inter: torch.Tensor, area: torch.Tensor, scores: torch.Tensor, iou_thr: float,
            score_thr: float, inner_thr: float) -> torch.Tensor:
    """The rule on sorted masks: ``inter [n,n]``, ``area [n]``, ``scores [n]`` -> keep ``[n]``."""
    n = inter.shape[0]
    inter64 = inter.to(torch.float64)
    area64 = area.to(torch.float64)
    union = area64[:, None] + area64[None, :] - inter64  # [n,n]
    iou = torch.triu(inter64 / union, diagonal=1)  # [n,n], only better (row) vs worse (col)
    iou_max = iou.max(dim=0).values if n else iou.new_zeros(0)
    keep = iou_max <= iou_thr
    keep_conf = scores > score_thr
    keep_u, keep_l = containment_keep(inter, area, inner_thr)
    top = torch.arange(min(3, n), device=inter.device)  # sorted order: ranks 0..2 are the top 3
    for crit in (keep_conf, keep_u, keep_l):
        if n and not bool(crit.any()):
            crit[top] = True
    return keep & keep_conf & keep_u & keep_l


@torch.no_grad()
def mask_nms(masks, scores, iou_thr: float = 0.8, score_thr: float = 0.7, inner_thr: float = 0.5,
             method: str = "auto", chunk_pixels: int = 1 << 16) -> torch.Tensor:
    """Kept indices (int64, descending score) of ``masks [m,H,W]`` bool with ``scores [m]``.

    Vectorised LangSplat rule (see the module docstring). Accepts numpy arrays or tensors on any
    device; ``method`` picks how intersections are counted (:func:`pairwise_intersections`).
    """
    masks = _as_tensor(masks).bool()
    scores = _as_tensor(scores).to(device=masks.device)
    _check(masks, scores)
    if masks.shape[0] == 0:
        return torch.empty(0, dtype=torch.long)
    inter_all = pairwise_intersections(masks, method, chunk_pixels)  # [m,m]
    area = inter_all.diagonal().to(torch.int64)  # [m] pixels per mask
    order = _order(scores, area)
    if order.numel() == 0:
        return order.cpu()
    inter = inter_all[order][:, order]  # [n,n] in descending score order
    sorted_scores = scores[order].to(torch.float64)
    keep = _decide(inter, area[order], sorted_scores, iou_thr, score_thr, inner_thr)
    return order[keep].cpu()


@torch.no_grad()
def mask_nms_loop(masks, scores, iou_thr: float = 0.8, score_thr: float = 0.7,
                  inner_thr: float = 0.5) -> torch.Tensor:
    """Reference implementation of :func:`mask_nms`: one pair of masks at a time, plain Python."""
    masks = _as_tensor(masks).bool().cpu()
    scores = _as_tensor(scores).cpu().to(torch.float64)
    _check(masks, scores)
    area = masks.reshape(masks.shape[0], -1).sum(1)
    order = _order(scores, area).tolist()
    n = len(order)
    if n == 0:
        return torch.empty(0, dtype=torch.long)
    ms = [masks[k] for k in order]
    a = [float(area[k]) for k in order]
    s = [float(scores[k]) for k in order]
    iou_max = [0.0] * n
    inner = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            inter = float(torch.logical_and(ms[i], ms[j]).sum())
            union = float(torch.logical_or(ms[i], ms[j]).sum())
            iou_max[j] = max(iou_max[j], inter / union)
            ri, rj = inter / a[i], inter / a[j]
            if ri < _CONTAIN_LO and rj >= _CONTAIN_HI:
                inner[i][j] = 1.0 - ri * rj
            if ri >= _CONTAIN_HI and rj < _CONTAIN_LO:
                inner[j][i] = 1.0 - ri * rj
    keep_iou = [iou_max[j] <= iou_thr for j in range(n)]
    keep_conf = [s[j] > score_thr for j in range(n)]
    # column maxima: upper part rows r < c; "lower" part rows r >= c - 1 (tril with diagonal=1)
    limit = 1.0 - inner_thr
    keep_u = [max([inner[r][c] for r in range(c)], default=0.0) <= limit for c in range(n)]
    keep_l = [max([inner[r][c] for r in range(max(c - 1, 0), n)], default=0.0) <= limit
              for c in range(n)]
    for crit in (keep_conf, keep_u, keep_l):
        if not any(crit):
            for t in range(min(3, n)):
                crit[t] = True
    kept = [order[j] for j in range(n) if keep_iou[j] and keep_conf[j] and keep_u[j] and keep_l[j]]
    return torch.tensor(kept, dtype=torch.long)
