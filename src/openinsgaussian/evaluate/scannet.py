"""ScanNet v2 protocol: open-vocabulary 3D semantic segmentation of the Gaussians (METHOD §7.1).

Gaussian i is GT point i (the scene mesh vertices initialise the Gaussians and never move), so
metrics compare label arrays index by index; there is no nearest-neighbour search.

Per scene and class list (19 / 15 / 10 classes): GT NYU40 ids are remapped to ``1..C`` in list
order (others -> 0 = ignored), Gaussians with opacity < 0.1 are ignored, predictions are set to
0 where the GT is ignored, and mIoU / mAcc average over the classes present in that scene's GT.
The dataset figure is the unweighted mean over scenes (:func:`mean_over_scenes`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.classes import (  # noqa: F401 (the class lists are part of this protocol's API)
    CLASS_LISTS,
    NYU40_NAMES,
    SCANNET10,
    SCANNET15,
    SCANNET19,
    ClassList,
    canonical_class_name,
)
from ..errors import ConfigError, DataError

PROTOCOL = "scannet-v2-text-query-3d-semseg"


def _as_long(x: Tensor | np.ndarray, what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.dim() != 1:
        raise DataError(None, f"{what} must be a 1-d array, got shape {tuple(t.shape)}")
    if t.is_floating_point() and not bool(torch.all(t == t.round())):
        raise DataError(None, f"{what} must hold integer labels")
    return t.to(torch.long).cpu()


def remap_labels(nyu40: Tensor | np.ndarray, class_ids: Sequence[int]) -> Tensor:
    """``[P]`` NYU40 ids -> ``[P]`` int64 in ``0..C``: the position + 1 of the id in ``class_ids``, else 0."""
    lab = _as_long(nyu40, "NYU40 labels")
    size = max([41, int(lab.max()) + 1 if lab.numel() else 0, max(class_ids, default=0) + 1])
    table = torch.zeros(size, dtype=torch.long)
    for c, i in enumerate(class_ids, start=1):
        table[i] = c
    return table[lab.clamp(min=0)] * (lab >= 0)


def scannet_metrics(pred: Tensor | np.ndarray, gt: Tensor | np.ndarray, num_classes: int) -> dict:
    """Per-scene metrics of METHOD §7.1 for labels in ``0..C`` (0 = ignored in GT / no class in pred).

    ``pred := 0 where gt == 0``; for ``c = 1..C``: ``IoU_c = |gt=c ∧ pred=c| / |gt=c ∨ pred=c|``,
    ``Acc_c = |gt=c ∧ pred=c| / |gt=c|``; mIoU and mAcc average over classes present in the GT;
    overall accuracy = correct / labelled points.

    Returns:
        ``{"miou", "macc", "overall_acc", "present": [c, ...], "per_class": {c: {"iou", "acc",
        "gt_points", "pred_points"}}}`` with plain Python numbers (None where undefined, e.g. no
        labelled point).
    """
    p, g = _as_long(pred, "predictions"), _as_long(gt, "ground truth")
    if p.shape != g.shape:
        raise DataError(
            None,
            f"predictions ({p.numel()}) and ground truth ({g.numel()}) differ in length",
            "Gaussian i must correspond to GT point i",
        )
    for t, what in ((p, "predictions"), (g, "ground truth")):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > num_classes):
            raise DataError(
                None, f"{what} must lie in 0..{num_classes}, found {int(t.min())}..{int(t.max())}"
            )
    p = torch.where(g == 0, torch.zeros_like(p), p)
    k = num_classes + 1
    conf = torch.bincount(g * k + p, minlength=k * k).reshape(k, k)  # [gt, pred]
    tp = conf.diagonal()
    gt_n, pred_n = conf.sum(1), conf.sum(0)
    union = gt_n + pred_n - tp
    present = [c for c in range(1, k) if int(gt_n[c]) > 0]
    per_class = {
        c: {
            "iou": float(tp[c]) / float(union[c]),
            "acc": float(tp[c]) / float(gt_n[c]),
            "gt_points": int(gt_n[c]),
            "pred_points": int(pred_n[c]),
        }
        for c in present
    }
    labelled = int(gt_n[1:].sum())
    return {
        "miou": float(np.mean([v["iou"] for v in per_class.values()])) if present else None,
        "macc": float(np.mean([v["acc"] for v in per_class.values()])) if present else None,
        "overall_acc": float(tp[1:].sum()) / labelled if labelled else None,
        "present": present,
        "per_class": per_class,
    }


Predictor = Callable[[list[str]], Tensor | np.ndarray]


def evaluate_scannet(
    predict: Predictor | Mapping[str, Tensor | np.ndarray],
    gt_nyu40: Tensor | np.ndarray,
    opacities: Tensor | np.ndarray,
    lists: Sequence[str] = ("scannet19", "scannet15", "scannet10"),
    opacity_thresh: float = 0.1,
    opacity_is_logit: bool = False,
    meta: Mapping[str, object] | None = None,
) -> dict:
    """The full ScanNet protocol of one scene for several class lists; JSON-ready result.

    Args:
        predict: either a function ``class_names -> [P] labels in 0..C`` (typically
            ``lambda names: label_gaussians(encode_text(names), ...)``: each list is queried with
            its own text features, as the protocol does), or a mapping list name -> labels.
        gt_nyu40: ``[P]`` NYU40 id per GT point / Gaussian.
        opacities: ``[P]`` Gaussian opacities (activated, or logits with ``opacity_is_logit``).
        lists: class lists to evaluate (keys of :data:`CLASS_LISTS`).
        opacity_thresh: Gaussians below it are ignored.
        meta: extra provenance copied into the result (seed, config hash, language source...).

    Returns:
        ``{"protocol", "points", "ignored_low_opacity", "opacity_threshold", "lists": {name:
        {"classes", "nyu40_ids", "miou", "macc", "overall_acc", "per_class": {class name: {...}}}},
        **meta}``.
    """
    gt = _as_long(gt_nyu40, "GT NYU40 labels")
    op = (
        torch.as_tensor(np.asarray(opacities) if not isinstance(opacities, Tensor) else opacities)
        .detach()
        .cpu()
    )
    op = op.reshape(-1).to(torch.float64)
    if op.numel() != gt.numel():
        raise DataError(
            None,
            f"{op.numel()} opacities for {gt.numel()} GT points",
            "Gaussian i must correspond to GT point i",
        )
    if opacity_is_logit:
        op = torch.sigmoid(op)
    ignored = op < opacity_thresh  # [P]
    out: dict = {
        "protocol": PROTOCOL,
        "points": int(gt.numel()),
        "ignored_low_opacity": int(ignored.sum()),
        "opacity_threshold": opacity_thresh,
        "lists": {},
    }
    for name in lists:
        if name not in CLASS_LISTS:
            raise ConfigError(
                f"unknown ScanNet class list {name!r}; choose from {sorted(CLASS_LISTS)}"
            )
        cl = CLASS_LISTS[name]
        if isinstance(predict, Mapping):
            if name not in predict:
                raise ConfigError(f"no predictions given for class list {name!r}")
            pred = predict[name]
        else:
            pred = predict(cl.names)
        pred_t = _as_long(pred, f"predictions for {name}")
        g = remap_labels(gt, cl.ids).masked_fill(ignored, 0)
        m = scannet_metrics(pred_t, g, cl.num_classes)
        out["lists"][name] = {
            "classes": cl.names,
            "nyu40_ids": list(cl.ids),
            "miou": m["miou"],
            "macc": m["macc"],
            "overall_acc": m["overall_acc"],
            "per_class": {cl.names[c - 1]: v for c, v in m["per_class"].items()},
        }
    if meta:
        out.update(dict(meta))
    return out


def mean_over_scenes(results: Sequence[Mapping]) -> dict:
    """Dataset figures: unweighted mean of per-scene mIoU / mAcc per class list (METHOD §7.1)."""
    if not results:
        raise DataError(None, "no scene results to average")
    out: dict = {"protocol": PROTOCOL, "scenes": len(results), "lists": {}}
    names = [n for n in results[0]["lists"]]
    for n in names:
        mi = [
            r["lists"][n]["miou"] for r in results if r["lists"].get(n, {}).get("miou") is not None
        ]
        ma = [
            r["lists"][n]["macc"] for r in results if r["lists"].get(n, {}).get("macc") is not None
        ]
        out["lists"][n] = {
            "miou": float(np.mean(mi)) if mi else None,
            "macc": float(np.mean(ma)) if ma else None,
            "scenes_counted": len(mi),
        }
    return out
