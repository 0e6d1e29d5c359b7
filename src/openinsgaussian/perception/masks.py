"""Mask generators: one image in, four granularity levels of binary masks out (METHOD §2.2).

Every generator returns a :class:`MaskSet` with the LangSplat levels ``default, s, m, l``
(everything, sub-part, part, whole). Backends:

* :class:`SamMaskGenerator`: Segment Anything's automatic mask generator, extended to keep all
  three multimask outputs per point prompt as the levels s/m/l (see ``_multilevel_class``), then
  de-duplicated per level with LangSplat's mask NMS (:mod:`.mask_nms`).
* :class:`ClassicalMaskGenerator`: Felzenszwalb superpixels at three scales, for machines without
  SAM weights.
* :class:`GroundTruthMaskGenerator`: one mask per instance id of a synthetic scene's instance map.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from ..data.scene import Frame
from ..errors import ConfigError, DataError, ModelLoadError
from ..io import atomic_open
from . import LEVELS, resolve_device
from .mask_nms import mask_nms
from .tvcompat import import_segment_anything

SAM_URL_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_CHECKPOINT_FILES = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}


@dataclass
class MaskSet:
    """Masks of one image at the four LangSplat levels, in the order of :data:`LEVELS`."""

    levels: dict[str, np.ndarray]  # level name -> [m_l, H, W] bool
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # level name -> [m_l] float32

    def __post_init__(self) -> None:
        missing = [n for n in LEVELS if n not in self.levels]
        if missing:
            raise ValueError(f"MaskSet is missing levels {missing}; expected {list(LEVELS)}")
        sizes = set()
        for name in LEVELS:
            m = np.asarray(self.levels[name])
            if m.ndim != 3:
                raise ValueError(f"level {name!r}: masks must be [m,H,W], got shape {m.shape}")
            self.levels[name] = m.astype(bool, copy=False)
            sizes.add(m.shape[1:])
            s = self.scores.get(name)
            s = np.ones(len(m), np.float32) if s is None else np.asarray(s, np.float32).reshape(-1)
            if len(s) != len(m):
                raise ValueError(f"level {name!r}: {len(m)} masks but {len(s)} scores")
            self.scores[name] = s
        if len(sizes) != 1:
            raise ValueError(f"levels disagree on the image size: {sorted(sizes)}")

    def as_level(self, name: str) -> np.ndarray:
        """``[m, H, W]`` bool masks of level ``name`` (one of default, s, m, l)."""
        if name not in self.levels:
            raise ConfigError(f"unknown mask level {name!r}; choose one of {list(LEVELS)}")
        return self.levels[name]

    def as_list(self) -> list[np.ndarray]:
        """The four levels in cache order (default, s, m, l)."""
        return [self.levels[n] for n in LEVELS]

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the masks."""
        return tuple(self.levels[LEVELS[0]].shape[1:])  # type: ignore[return-value]

    def counts(self) -> dict[str, int]:
        return {n: int(len(self.levels[n])) for n in LEVELS}


@runtime_checkable
class MaskGenerator(Protocol):
    """``__call__(image [H,W,3] uint8, frame=None) -> MaskSet``; ``describe()`` for provenance."""

    name: str

    def __call__(self, image: np.ndarray, frame: Frame | None = None) -> MaskSet: ...

    def describe(self) -> dict[str, Any]: ...


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an [H,W,3] uint8 image, got shape {image.shape} "
                         f"dtype {image.dtype}")
    return np.ascontiguousarray(image)


# ---------------------------------------------------------------------------------------------
# SAM
# ---------------------------------------------------------------------------------------------


def model_cache_dir(kind: str) -> Path:
    """Per-user model cache: ``$OIG_CACHE/<kind>`` or ``~/.cache/openinsgaussian/<kind>``."""
    root = os.environ.get("OIG_CACHE") or Path.home() / ".cache" / "openinsgaussian"
    return Path(root).expanduser() / kind


def download_file(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; the file appears only when complete."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https/file URLs)
        total = int(resp.headers.get("Content-Length") or 0) or None
        with atomic_open(dest, "wb") as f, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {dest.name}"
        ) as bar:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    return dest


def resolve_sam_checkpoint(model_type: str, checkpoint: str | Path | None = None) -> Path:
    """The SAM weights file: ``checkpoint``, else ``$OIG_SAM_CHECKPOINT``, else the per-user cache
    (downloaded there from the official URL when online); offline with none -> ModelLoadError."""
    if model_type not in SAM_CHECKPOINT_FILES:
        raise ConfigError(f"unknown SAM model {model_type!r}; "
                          f"choose one of {sorted(SAM_CHECKPOINT_FILES)}")
    candidates = ((checkpoint, "--sam-checkpoint"),
                  (os.environ.get("OIG_SAM_CHECKPOINT"), "OIG_SAM_CHECKPOINT"))
    for given, origin in candidates:
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ModelLoadError(f"{path}: SAM checkpoint given by {origin} does not exist")
            return path
    fname = SAM_CHECKPOINT_FILES[model_type]
    cached = model_cache_dir("sam") / fname
    if cached.is_file():
        return cached
    url = SAM_URL_BASE + fname
    try:
        return download_file(url, cached)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ModelLoadError(
            f"SAM {model_type} weights are not available: {cached} does not exist and "
            f"downloading {url} failed ({e}). Either pass --sam-checkpoint PATH (or set "
            f"OIG_SAM_CHECKPOINT) to a local copy of {fname}, or run once with internet access "
            f"so it is cached in {cached.parent}."
        ) from None


def load_sam(model_type: str, checkpoint: str | Path | None = None,
             device: str | torch.device = "auto"):
    """Build ``segment_anything``'s model ``model_type`` and load its weights (see
    :func:`resolve_sam_checkpoint`); errors name the file and the fix."""
    sa = import_segment_anything()
    registry = sa.sam_model_registry
    path = resolve_sam_checkpoint(model_type, checkpoint)
    if model_type not in registry:
        raise ConfigError(f"segment_anything has no model {model_type!r}; "
                          f"choose one of {sorted(registry)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any unpickling failure is the file's fault)
        raise ModelLoadError(f"{path}: cannot read SAM checkpoint ({type(e).__name__}: {e}); "
                             "re-download it") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: not a SAM state dict (found {type(state).__name__})")
    sam = registry[model_type]()
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelLoadError(
            f"{path}: does not match SAM {model_type} ({first}); pass the checkpoint of the "
            "chosen --sam-model"
        ) from None
    return sam.to(resolve_device(device)).eval()


_MULTILEVEL_CLASS: type | None = None


def _multilevel_class() -> type:
    """A ``SamAutomaticMaskGenerator`` subclass that keeps SAM's three multimask outputs apart.

    SAM's mask decoder answers each point prompt with three masks; by design (and in LangSplat's
    fork) output 0/1/2 are the sub-part/part/whole interpretations. Stock segment-anything pools
    all three and de-duplicates them together. This subclass

    1. tags every predicted mask with its output index (``_process_batch``), applying the stock
       per-mask filters (predicted IoU, stability, crop-edge) unchanged, since they do not depend
       on other masks;
    2. runs the within-crop box NMS, the cross-crop box NMS and the small-region clean-up once per
       set: "default" = all outputs (the stock result), "s"/"m"/"l" = outputs 0/1/2 only.

    The expensive part (image embedding and mask decoding) runs once for all four sets. Small
    regions are cleaned with scipy instead of OpenCV, with the same rule as
    ``segment_anything.utils.amg.remove_small_regions``.
    """
    global _MULTILEVEL_CLASS
    if _MULTILEVEL_CLASS is not None:
        return _MULTILEVEL_CLASS
    import_segment_anything()
    from segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import (
        MaskData,
        batch_iterator,
        batched_mask_to_box,
        calculate_stability_score,
        generate_crop_boxes,
        is_box_near_crop_edge,
        mask_to_rle_pytorch,
        rle_to_mask,
        uncrop_boxes_xyxy,
        uncrop_masks,
        uncrop_points,
    )
    from torchvision.ops.boxes import batched_nms, box_area

    def subset(data: MaskData, keep: torch.Tensor) -> MaskData:
        out = MaskData(**dict(data.items()))
        out.filter(keep)
        return out

    def box_nms(data: MaskData, scores: torch.Tensor, thr: float) -> None:
        if len(data["rles"]) > 1:
            boxes = torch.as_tensor(data["boxes"]).float()
            classes = torch.zeros(len(boxes), device=boxes.device)
            keep = batched_nms(boxes, scores.to(boxes.device), classes, thr)
            data.filter(keep)

    class MultiLevelSamGenerator(SamAutomaticMaskGenerator):
        def __init__(self, model, min_region_area: int = 0, **kwargs) -> None:
            super().__init__(model, min_mask_region_area=0, **kwargs)
            self.min_region_area = int(min_region_area)

        def _process_batch(self, points, im_size, crop_box, orig_size) -> MaskData:
            orig_h, orig_w = orig_size
            coords = self.predictor.transform.apply_coords(points, im_size)
            in_points = torch.as_tensor(coords, device=self.predictor.device)  # [B,2]
            in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            masks, iou_preds, _ = self.predictor.predict_torch(
                in_points[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True
            )  # [B,3,h,w] logits, [B,3]
            n_out = masks.shape[1]
            data = MaskData(
                masks=masks.flatten(0, 1),
                iou_preds=iou_preds.flatten(0, 1),
                points=torch.as_tensor(points.repeat(n_out, axis=0)),
                # multimask output index (0/1/2) of every flattened mask
                level=torch.arange(n_out, device=masks.device).repeat(masks.shape[0]),
            )
            del masks
            if self.pred_iou_thresh > 0.0:
                data.filter(data["iou_preds"] > self.pred_iou_thresh)
            data["stability_score"] = calculate_stability_score(
                data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset
            )
            if self.stability_score_thresh > 0.0:
                data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > self.predictor.model.mask_threshold
            data["boxes"] = batched_mask_to_box(data["masks"])
            near = is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if bool(near.any()):
                data.filter(~near)
            data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = mask_to_rle_pytorch(data["masks"])
            del data["masks"]
            return data

        def _process_crop_levels(self, image, crop_box, layer_idx,
                                 orig_size) -> dict[str, MaskData]:
            x0, y0, x1, y1 = crop_box
            crop = image[y0:y1, x0:x1, :]
            size = crop.shape[:2]
            self.predictor.set_image(crop)
            points = self.point_grids[layer_idx] * np.array(size)[None, ::-1]
            raw = MaskData()
            for (batch,) in batch_iterator(self.points_per_batch, points):
                raw.cat(self._process_batch(batch, size, crop_box, orig_size))
            self.predictor.reset_image()
            out: dict[str, MaskData] = {}
            for k, name in enumerate(LEVELS):
                if k == 0:
                    sel = torch.ones_like(raw["level"], dtype=torch.bool)
                else:
                    sel = raw["level"] == k - 1
                d = subset(raw, sel)
                box_nms(d, d["iou_preds"], self.box_nms_thresh)
                d["boxes"] = uncrop_boxes_xyxy(d["boxes"], crop_box)
                d["points"] = uncrop_points(d["points"], crop_box)
                box = torch.tensor(crop_box, dtype=torch.float32).reshape(1, 4)
                d["crop_boxes"] = box.repeat(len(d["rles"]), 1)
                out[name] = d
            return out

        def generate_levels(self, image: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
            """``level -> (masks [m,H,W] bool, predicted_iou [m], stability [m])``."""
            orig_size = image.shape[:2]
            crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers,
                                                         self.crop_overlap_ratio)
            sets = {name: MaskData() for name in LEVELS}
            for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
                per_level = self._process_crop_levels(image, crop_box, layer_idx, orig_size)
                for name, d in per_level.items():
                    sets[name].cat(d)
            result = {}
            for name, d in sets.items():
                if len(crop_boxes) > 1:  # prefer masks from smaller crops
                    box_nms(d, 1.0 / box_area(d["crop_boxes"]), self.crop_nms_thresh)
                d.to_numpy()
                if self.min_region_area > 0 and len(d["rles"]):
                    thr = max(self.box_nms_thresh, self.crop_nms_thresh)
                    d = self._clean_small_regions(d, self.min_region_area, thr)
                h, w = orig_size
                if len(d["rles"]):
                    masks = np.stack([rle_to_mask(r) for r in d["rles"]])
                else:
                    masks = np.zeros((0, h, w), bool)
                result[name] = (
                    masks.astype(bool),
                    np.asarray(d["iou_preds"], np.float32).reshape(-1),
                    np.asarray(d["stability_score"], np.float32).reshape(-1),
                )
            return result

        @staticmethod
        def _clean_small_regions(data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
            """Fill small holes and drop small islands, then box-NMS again preferring unchanged
            masks (the stock ``postprocess_small_regions`` rule, with scipy labelling)."""
            new_masks, scores = [], []
            for rle in data["rles"]:
                mask = rle_to_mask(rle)
                mask, changed_h = _remove_small_regions(mask, min_area, "holes")
                mask, changed_i = _remove_small_regions(mask, min_area, "islands")
                new_masks.append(torch.as_tensor(mask)[None])
                scores.append(0.0 if (changed_h or changed_i) else 1.0)
            masks = torch.cat(new_masks, 0)
            boxes = batched_mask_to_box(masks)
            keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)),
                               nms_thresh)
            for i in keep.tolist():
                if scores[i] == 0.0:
                    data["rles"][i] = mask_to_rle_pytorch(masks[i][None])[0]
                    data["boxes"][i] = boxes[i].numpy()
            data.filter(keep)
            return data

    _MULTILEVEL_CLASS = MultiLevelSamGenerator
    return MultiLevelSamGenerator


def _remove_small_regions(mask: np.ndarray, area: int,
                          mode: Literal["holes", "islands"]) -> tuple[np.ndarray, bool]:
    """8-connected regions below ``area`` pixels: holes are filled, islands removed (the largest
    island is kept if all are small). Returns ``(mask, changed)``."""
    from scipy import ndimage

    holes = mode == "holes"
    work = ~mask if holes else mask
    labels, n = ndimage.label(work, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask, False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]  # [n]
    small = sizes < area
    if not small.any():
        return mask, False
    if holes:
        fill = np.concatenate([[False], small])  # label -> fill?
        return mask | fill[labels], True
    keep = ~small
    if not keep.any():
        keep[int(np.argmax(sizes))] = True
    return np.concatenate([[False], keep])[labels], True


class SamMaskGenerator:
    """SAM automatic masks at the levels default/s/m/l, each de-duplicated by LangSplat's mask NMS.

    Defaults are LangSplat's preprocessing settings (METHOD §2.2). ``model`` accepts an already
    built ``segment_anything`` ``Sam`` (then ``model_type``/``checkpoint`` only label it).
    """

    name = "sam"

    def __init__(
        self,
        model_type: Literal["vit_h", "vit_l", "vit_b"] = "vit_h",
        checkpoint: str | Path | None = None,
        device: str | torch.device = "auto",
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.7,
        box_nms_thresh: float = 0.7,
        stability_score_thresh: float = 0.85,
        crop_n_layers: int = 1,
        crop_n_points_downscale_factor: int = 1,
        min_mask_region_area: int = 100,
        points_per_batch: int = 64,
        nms_iou_thr: float = 0.8,
        nms_score_thr: float = 0.7,
        nms_inner_thr: float = 0.5,
        model: Any = None,
    ) -> None:
        self.model_type = model_type
        self.settings = dict(
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            box_nms_thresh=box_nms_thresh,
            stability_score_thresh=stability_score_thresh,
            crop_n_layers=crop_n_layers,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            points_per_batch=points_per_batch,
        )
        self.min_mask_region_area = int(min_mask_region_area)
        self.nms = dict(iou_thr=nms_iou_thr, score_thr=nms_score_thr, inner_thr=nms_inner_thr)
        if model is None:
            model = load_sam(model_type, checkpoint, device)
        self.model = model
        self._generator = _multilevel_class()(model, min_region_area=self.min_mask_region_area,
                                              **self.settings)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_type, **self.settings,
                "min_mask_region_area": self.min_mask_region_area, "mask_nms": dict(self.nms)}

    @torch.no_grad()
    def __call__(self, image: np.ndarray, frame: Frame | None = None) -> MaskSet:
        image = _check_image(image)
        raw = self._generator.generate_levels(image)
        levels, scores = {}, {}
        for name in LEVELS:
            masks, iou, stab = raw[name]
            score = stab * iou  # LangSplat's NMS score
            keep = mask_nms(masks, score, **self.nms).numpy() if len(masks) else np.zeros(0, int)
            levels[name] = masks[keep]
            scores[name] = score[keep]
        return MaskSet(levels, scores)


# ---------------------------------------------------------------------------------------------
# Classical (no learned weights)
# ---------------------------------------------------------------------------------------------


class ClassicalMaskGenerator:
    """Felzenszwalb graph segmentation at three scales as the levels s, m, l (default = m).

    Each level partitions the image. Components smaller than ``min_area_fraction`` of the image
    are merged into neighbours by Felzenszwalb's own ``min_size`` post-processing; any that remain
    are dropped (their pixels carry no mask). All scores are 1.
    """

    name = "classical"

    def __init__(self, scales: tuple[float, float, float] = (64.0, 256.0, 1024.0),
                 sigma: float = 0.8, min_area_fraction: float = 0.002) -> None:
        if len(scales) != 3 or any(s <= 0 for s in scales):
            raise ConfigError(f"classical masks need three positive scales (s, m, l), got {scales}")
        self.scales = tuple(float(s) for s in scales)
        self.sigma = float(sigma)
        self.min_area_fraction = float(min_area_fraction)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scales": list(self.scales), "sigma": self.sigma,
                "min_area_fraction": self.min_area_fraction}

    def __call__(self, image: np.ndarray, frame: Frame | None = None) -> MaskSet:
        from skimage.segmentation import felzenszwalb

        image = _check_image(image)
        h, w = image.shape[:2]
        min_area = max(1, int(round(self.min_area_fraction * h * w)))
        levels: dict[str, np.ndarray] = {}
        for name, scale in zip(("s", "m", "l"), self.scales):
            seg = felzenszwalb(image, scale=scale, sigma=self.sigma, min_size=min_area)  # [H,W] ids
            ids, counts = np.unique(seg, return_counts=True)
            ids = ids[counts >= min_area]
            levels[name] = seg[None] == ids[:, None, None]  # [m,H,W]
        levels["default"] = levels["m"]
        return MaskSet(levels)


# ---------------------------------------------------------------------------------------------
# Ground truth (synthetic scenes)
# ---------------------------------------------------------------------------------------------


class GroundTruthMaskGenerator:
    """One mask per instance id (> 0) of the frame's instance map; all four levels identical."""

    name = "ground_truth"

    def __init__(self, min_area: int = 1) -> None:
        self.min_area = int(min_area)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "min_area": self.min_area}

    def __call__(self, image: np.ndarray, frame: Frame | None = None) -> MaskSet:
        image = _check_image(image)
        if frame is None:
            raise ConfigError("ground-truth masks need the frame (its instance map); "
                              "pass frame=...")
        inst = frame.load_instances()
        if inst is None:
            raise DataError(frame.image_path, f"frame {frame.name!r} has no instance map",
                            "ground-truth masks exist only for synthetic scenes; "
                            "use --masks sam or classical")
        h, w = image.shape[:2]
        if inst.shape != (h, w):  # nearest resampling keeps ids intact
            ih, iw = inst.shape
            rows = np.minimum((np.arange(h) + 0.5) * ih / h, ih - 1).astype(np.int64)
            cols = np.minimum((np.arange(w) + 0.5) * iw / w, iw - 1).astype(np.int64)
            inst = inst[rows][:, cols]
        ids, counts = np.unique(inst, return_counts=True)
        ids = ids[(ids > 0) & (counts >= self.min_area)]
        masks = inst[None] == ids[:, None, None]  # [m,H,W]
        return MaskSet({name: masks for name in LEVELS})


def make_mask_generator(name: Literal["sam", "classical", "ground_truth"],
                        **kwargs: Any) -> MaskGenerator:
    """Build a mask generator by name; ``kwargs`` go to its constructor."""
    makers = {"sam": SamMaskGenerator, "classical": ClassicalMaskGenerator,
              "ground_truth": GroundTruthMaskGenerator}
    if name not in makers:
        raise ConfigError(f"unknown mask source {name!r}; choose one of {sorted(makers)}")
    return makers[name](**kwargs)
