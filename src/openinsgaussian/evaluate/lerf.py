"""LeRF-OVS protocol metrics on 2D masks: IoU per (frame, query), mIoU and mAcc@k (METHOD §7.2).

For every evaluated frame and every GT category of that frame (the categories are the text
queries), the predicted mask (rendered selected Gaussians, alpha > 0.7) is compared with the GT
mask. A missing prediction scores IoU 0. Scene mIoU is the mean IoU over all (frame, query) pairs
and mAcc@k the fraction of pairs with IoU strictly greater than k; the dataset figure is the
unweighted mean over scenes (:func:`mean_over_lerf_scenes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io import save_image

PROTOCOL = "lerf-ovs-3d-selection-2d-iou"
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.25, 0.5)

# Overlay colours (RGB): true positive, false positive, false negative.
TP_COLOR = (0, 200, 0)
FP_COLOR = (230, 0, 0)
FN_COLOR = (0, 90, 255)


def _as_mask(x: Any, what: str) -> np.ndarray:
    """``[H, W]`` bool from a numpy array or torch tensor (a leading singleton axis is dropped)."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise DataError(None, f"{what} must be a 2D [H, W] mask, got shape {a.shape}")
    return a if a.dtype == bool else a != 0


def _where(frame: str | None, query: str | None) -> str:
    parts = [f"frame {frame!r}" if frame else "", f"query {query!r}" if query else ""]
    return ", ".join(p for p in parts if p)


def mask_iou(
    pred: Any | None, gt: Any, *, frame: str | None = None, query: str | None = None
) -> float:
    """``|pred AND gt| / |pred OR gt|`` of two ``[H, W]`` masks (non-zero = inside).

    ``pred=None`` (no prediction for this query) scores 0.0, as the protocol prescribes, even
    against an empty GT. Two empty masks (empty union) also score 0.0, the protocol value (the
    public ``calculate_iou`` returns 0 when both masks are empty). Shapes must match exactly (no resizing); ``frame``/``query`` only name the pair in
    error messages.
    """
    g = _as_mask(gt, f"GT mask ({_where(frame, query) or 'unnamed'})")
    if pred is None:
        return 0.0
    p = _as_mask(pred, f"predicted mask ({_where(frame, query) or 'unnamed'})")
    if p.shape != g.shape:
        raise DataError(
            None,
            f"{_where(frame, query) or 'mask pair'}: prediction is {p.shape[1]}x{p.shape[0]} but "
            f"the GT is {g.shape[1]}x{g.shape[0]} (W x H)",
            "render at the annotated image size; masks are never resized",
        )
    union = int(np.count_nonzero(p | g))
    if union == 0:
        return 0.0
    return int(np.count_nonzero(p & g)) / union


def evaluate_lerf_frame(
    pred_masks: Mapping[str, Any | None], gt_masks: Mapping[str, Any], *, frame: str | None = None
) -> dict[str, float]:
    """IoU per GT category of one frame: ``{query: IoU}``.

    The GT categories define the pairs: a query absent from ``pred_masks`` (or mapped to None)
    scores 0, and predictions for queries without GT in this frame are ignored.
    """
    return {q: mask_iou(pred_masks.get(q), g, frame=frame, query=q) for q, g in gt_masks.items()}


def _summary(ious: np.ndarray, thresholds: Sequence[float]) -> dict:
    out: dict = {"pairs": len(ious), "iou": float(ious.mean())}
    for t in thresholds:
        out[f"macc@{t:g}"] = float((ious > t).mean())
    return out


def lerf_metrics(
    ious: Mapping[tuple[str, str], float], thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict:
    """Scene metrics from ``{(frame, query): IoU}``.

    ``miou`` = mean IoU over all pairs; ``macc@k`` = fraction of pairs with ``IoU > k`` (strictly:
    an IoU of exactly 0.25 does not count for mAcc@0.25); ``hits@k`` = number of such pairs.

    Returns:
        ``{"protocol", "pairs", "frames", "queries", "thresholds", "miou", "macc@<k>",
        "hits@<k>", "per_query": {query: {"pairs", "iou", "macc@<k>"}}, "per_frame": {frame:
        {...}}, "per_pair": [{"frame", "query", "iou"}, ...]}``; per-query and per-frame ``iou``
        are means over that query's / frame's pairs.
    """
    if not ious:
        raise DataError(None, "no (frame, query) pairs to score", "check the GT annotations")
    ths = [float(t) for t in thresholds]
    keys = list(ious.keys())
    vals = np.array([float(ious[k]) for k in keys], dtype=np.float64)  # [N]
    bad = [k for k, v in zip(keys, vals) if not (0.0 <= v <= 1.0)]
    if bad:
        raise DataError(None, f"IoU outside [0, 1] (or NaN) for {bad[:5]}")
    out: dict = {
        "protocol": PROTOCOL,
        "pairs": len(keys),
        "frames": len({f for f, _ in keys}),
        "queries": len({q for _, q in keys}),
        "thresholds": ths,
        "miou": float(vals.mean()),
    }
    for t in ths:
        out[f"macc@{t:g}"] = float((vals > t).mean())
        out[f"hits@{t:g}"] = int((vals > t).sum())
    for name, pos in (("per_query", 1), ("per_frame", 0)):
        groups: dict[str, list[float]] = {}
        for k, v in zip(keys, vals):
            groups.setdefault(k[pos], []).append(float(v))
        out[name] = {g: _summary(np.array(v), ths) for g, v in groups.items()}
    out["per_pair"] = [{"frame": f, "query": q, "iou": float(v)} for (f, q), v in zip(keys, vals)]
    return out


def lerf_scene_ious(
    predictions: Mapping[str, Mapping[str, Any | None]],
    gt_masks: Mapping[str, Mapping[str, Any]],
) -> dict[tuple[str, str], float]:
    """``{(frame, query): IoU}`` over every GT frame (a frame without predictions scores 0).

    ``predictions`` and ``gt_masks`` are ``{frame: {query: [H, W] mask}}`` (GT e.g. from
    :func:`openinsgaussian.data.lerf.category_masks`). Predicted frames without GT are ignored.
    """
    out: dict[tuple[str, str], float] = {}
    for frame, gts in gt_masks.items():
        for q, iou in evaluate_lerf_frame(predictions.get(frame, {}), gts, frame=frame).items():
            out[(frame, q)] = iou
    return out


def mean_over_lerf_scenes(results: Mapping[str, Mapping]) -> dict:
    """Dataset figures: unweighted mean over scenes of mIoU and each mAcc@k (METHOD §7.2 step 5)."""
    if not results:
        raise DataError(None, "no scene results to average")
    first = next(iter(results.values()))
    keys = ["miou"] + [f"macc@{t:g}" for t in first.get("thresholds", DEFAULT_THRESHOLDS)]
    out: dict = {"protocol": PROTOCOL, "scenes": list(results.keys())}
    for k in keys:
        vals = [float(r[k]) for r in results.values() if k in r]
        out[k] = float(np.mean(vals)) if len(vals) == len(results) else None
    out["per_scene"] = {s: {k: r.get(k) for k in keys} for s, r in results.items()}
    return out


def overlay(image: np.ndarray, pred: Any | None, gt: Any, alpha: float = 0.5) -> np.ndarray:
    """``[H, W, 3]`` uint8: TP pixels blended toward green, FP red, FN blue; the rest unchanged."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise DataError(None, f"overlay image must be [H, W, 3] uint8, got {img.shape} {img.dtype}")
    g = _as_mask(gt, "GT mask")
    p = np.zeros_like(g) if pred is None else _as_mask(pred, "predicted mask")
    if p.shape != g.shape or g.shape != img.shape[:2]:
        raise DataError(
            None, f"overlay sizes differ: image {img.shape[:2]}, prediction {p.shape}, GT {g.shape}"
        )
    out = img.astype(np.float32)
    for sel, color in ((p & g, TP_COLOR), (p & ~g, FP_COLOR), (~p & g, FN_COLOR)):
        out[sel] = (1.0 - alpha) * out[sel] + alpha * np.asarray(color, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_overlay(
    image: np.ndarray, pred: Any | None, gt: Any, path: str | Path, alpha: float = 0.5
) -> Path:
    """Write :func:`overlay` as an image (PNG recommended), atomically; returns ``path``."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise DataError(path, "overlay must be written as .png or .jpg")
    save_image(path, overlay(image, pred, gt, alpha=alpha))
    return path
