"""ScanNet v2 protocol: open-vocabulary 3D semantic segmentation of the Gaussians (METHOD §7.1).

Gaussian i is GT point i (the scene mesh vertices initialise the Gaussians and never move), so
metrics compare label arrays index by index; there is no nearest-neighbour search.

Per scene and class list (19 / 15 / 10 classes): GT NYU40 ids are remapped to ``1..C`` in list
order (others -> 0 = ignored), Gaussians with opacity < 0.1 are ignored, predictions are set to
0 where the GT is ignored, and mIoU / mAcc average over the classes present in that scene's GT.
The dataset figure is the unweighted mean over scenes (:func:`mean_over_scenes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError

PROTOCOL = "scannet-v2-text-query-3d-semseg"

#: NYU40 class names by id (0 = unlabelled). Spaced spellings, which read better as text queries;
#: :func:`canonical_class_name` equates them with the run-together keys some tools use
#: ("showercurtain", "otherfurniture").
NYU40_NAMES: dict[int, str] = {
    1: "wall",
    2: "floor",
    3: "cabinet",
    4: "bed",
    5: "chair",
    6: "sofa",
    7: "table",
    8: "door",
    9: "window",
    10: "bookshelf",
    11: "picture",
    12: "counter",
    13: "blinds",
    14: "desk",
    15: "shelves",
    16: "curtain",
    17: "dresser",
    18: "pillow",
    19: "mirror",
    20: "floor mat",
    21: "clothes",
    22: "ceiling",
    23: "books",
    24: "refrigerator",
    25: "television",
    26: "paper",
    27: "towel",
    28: "shower curtain",
    29: "box",
    30: "whiteboard",
    31: "person",
    32: "night stand",
    33: "toilet",
    34: "sink",
    35: "lamp",
    36: "bathtub",
    37: "bag",
    38: "other structure",
    39: "other furniture",
    40: "other prop",
}

_ALIASES = {"refridgerator": "refrigerator", "tv": "television"}


def canonical_class_name(name: str) -> str:
    """Lower-case alphanumerics only, so "Shower curtain", "shower_curtain" and "showercurtain"
    name one class (plus NYU40's historical misspelling "refridgerator")."""
    key = re.sub(r"[^0-9a-z]+", "", name.lower())
    return _ALIASES.get(key, key)


@dataclass(frozen=True)
class ClassList:
    """One evaluation vocabulary: NYU40 ids in list order (class index c = position + 1)."""

    name: str
    ids: tuple[int, ...]

    @property
    def names(self) -> list[str]:
        return [NYU40_NAMES[i] for i in self.ids]

    @property
    def num_classes(self) -> int:
        return len(self.ids)


SCANNET19 = ClassList(
    "scannet19", (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36)
)
SCANNET15 = ClassList("scannet15", tuple(i for i in SCANNET19.ids if i not in (11, 24, 28, 36)))
SCANNET10 = ClassList("scannet10", (1, 2, 4, 5, 6, 7, 8, 9, 10, 33))
CLASS_LISTS: dict[str, ClassList] = {c.name: c for c in (SCANNET19, SCANNET15, SCANNET10)}


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
