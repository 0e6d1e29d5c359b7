"""Per-scene preprocessing driver: masks + per-mask language features for every image, cached.

For each frame (train, then test; a name shared by both is done once) it loads the image at the
working resolution (height capped at ``max_height`` as LangSplat does, METHOD §2.1), computes the
four mask levels, computes one language feature per mask (one call per image, all levels
together, so the dense CLIP pass runs once) and writes ``<out>/<name>_s.npy`` / ``_f.npy``
(:mod:`.cache`). The id maps are stored at the working resolution; the trainer resizes them to
its own resolution with nearest-neighbour sampling.

Resumable: frames whose entry exists are skipped. ``<out>/preprocess.json`` records the
configuration signature (mask source and settings, language source, mode, alpha, dimension,
resolution rule, mask painting order); it is written with ``"complete": false`` before the first new entry and
rewritten with per-image mask counts when all frames are done. A cache made with a different
signature is never mixed with new entries (ConfigError; ``--overwrite`` rebuilds it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tyro

from .. import __version__
from ..data.scene import Frame, Scene
from ..errors import ConfigError, DataError, OpenInsError
from ..io import write_json
from . import LEVELS
from .cache import entry_counts, entry_exists, entry_paths, write_entry
from .clip_model import DEFAULT_MODEL, DEFAULT_PRETRAINED

CACHE_LAYOUT = "langsplat-4level-v1"  # bump when the on-disk meaning of the cache changes
META_NAME = "preprocess.json"


@dataclass
class PreprocessConfig:
    """Masks and per-mask language features for every image of a scene (the LangSplat cache)."""

    data: tyro.conf.Positional[Path]
    """Scene folder (ScanNet / COLMAP / Blender / synthetic)."""
    output: Path | None = None
    """Cache folder (default: <scene>/language_features, where the trainer looks for it)."""
    masks: Literal["sam", "classical", "ground_truth"] = "sam"
    """Mask source: SAM (needs weights), Felzenszwalb superpixels, or synthetic instance maps."""
    language: Literal["clip", "oracle"] = "clip"
    """Language source: CLIP features, or ground-truth class vectors (scenes with GT label maps)."""
    mode: Literal["local", "context", "fused"] = "fused"
    """CLIP feature: masked crop (LangSplat), mask-pooled dense map, or their alpha mix."""
    alpha: float = 0.2
    """Context weight of the fused feature: alpha * context + (1 - alpha) * local."""
    clip_model: str = DEFAULT_MODEL
    """open_clip model (convnext_base_w: 640-d; ViT-B-16: 512-d, LangSplat, --mode local only)."""
    clip_pretrained: str = DEFAULT_PRETRAINED
    """open_clip weights tag (laion2b_s13b_b82k_augreg for convnext_base_w,
    laion2b_s34b_b88k for ViT-B-16)."""
    clip_checkpoint: Path | None = None
    """Local CLIP weights file (else $OIG_CLIP_CHECKPOINT, else open_clip's cache or download)."""
    crop_size: int = 224
    """Side of the square crop encoded for the local feature."""
    dense_resolution: int | None = None
    """Long side of the dense CLIP pass for context features (None: the working resolution)."""
    sam_model: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    """SAM backbone."""
    sam_checkpoint: Path | None = None
    """Local SAM weights (else $OIG_SAM_CHECKPOINT, else the user cache / official download)."""
    sam_points_per_side: int = 32
    """SAM point-grid density."""
    sam_crop_n_layers: int = 1
    """SAM crop layers (1 = LangSplat; 0 is faster)."""
    sam_pred_iou_thresh: float = 0.7
    """SAM predicted-IoU filter."""
    sam_stability_score_thresh: float = 0.85
    """SAM stability-score filter."""
    sam_min_mask_region_area: int = 100
    """Holes and islands smaller than this (pixels) are filled / removed."""
    classical_scales: tuple[float, float, float] = (64.0, 256.0, 1024.0)
    """Felzenszwalb scales of the levels s, m, l (classical masks)."""
    classical_min_area_fraction: float = 0.002
    """Smallest classical segment, as a fraction of the image area."""
    oracle_dim: int = 640
    """Feature dimension of the oracle language source."""
    oracle_noise: float = 0.0
    """Oracle: std of Gaussian noise added to each feature before re-normalising."""
    oracle_confuse_fraction: float = 0.0
    """Oracle: fraction of masks given another class's feature."""
    seed: int = 0
    """Seed of the oracle's corruption draws."""
    splits: Literal["train", "all"] = "all"
    """Frames to process: train only, or train and test (evaluation renders need test views too)."""
    format: Literal["auto", "colmap", "scannet", "transforms"] = "auto"
    """Scene format (auto-detected by default)."""
    device: str = "auto"
    """Torch device for SAM and CLIP: auto, cpu, cuda, cuda:1, ..."""
    max_height: int = 1080
    """Taller images are first resized to this height (LangSplat); the cache is at that size."""
    undistort: bool = True
    """Undistort the images of cameras with lens distortion first (OpenCV, cached in
    <scene>/undistorted/), as training does; false keeps the distorted images."""
    paint_order: Literal["sam", "area"] = "area"
    """How overlapping masks of a level are painted into the id map: "area" = largest first, so
    small masks stay on top (ours; the synthetic and capture presets); "sam" = the mask
    generator's order, later masks over earlier ones (LangSplat; the scannet and lerf presets).
    Recorded in the cache signature."""
    overwrite: bool = False
    """Recompute every entry and replace a cache made with another configuration."""
    progress: bool = True
    """Show a progress bar."""


# ---------------------------------------------------------------------------------------------


def mask_settings(cfg: PreprocessConfig) -> dict[str, Any]:
    """Constructor arguments of the configured mask generator (also its cache signature)."""
    if cfg.masks == "sam":
        return dict(model_type=cfg.sam_model, points_per_side=cfg.sam_points_per_side,
                    crop_n_layers=cfg.sam_crop_n_layers, pred_iou_thresh=cfg.sam_pred_iou_thresh,
                    stability_score_thresh=cfg.sam_stability_score_thresh,
                    min_mask_region_area=cfg.sam_min_mask_region_area)
    if cfg.masks == "classical":
        return dict(scales=tuple(float(s) for s in cfg.classical_scales),
                    min_area_fraction=cfg.classical_min_area_fraction)
    if cfg.masks == "ground_truth":
        return {}
    raise ConfigError(f"unknown mask source {cfg.masks!r}; choose sam, classical or ground_truth")


def language_settings(cfg: PreprocessConfig) -> dict[str, Any]:
    """What identifies the configured language source (its cache signature)."""
    if cfg.language == "clip":
        if not 0.0 <= cfg.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {cfg.alpha}")
        return dict(source="clip", model=cfg.clip_model, pretrained=cfg.clip_pretrained,
                    mode=cfg.mode, alpha=float(cfg.alpha) if cfg.mode == "fused" else None,
                    crop_size=cfg.crop_size,
                    dense_resolution=cfg.dense_resolution if cfg.mode != "local" else None)
    if cfg.language == "oracle":
        return dict(source="oracle", dim=cfg.oracle_dim, noise=cfg.oracle_noise,
                    confuse_fraction=cfg.oracle_confuse_fraction, seed=cfg.seed)
    raise ConfigError(f"unknown language source {cfg.language!r}; choose clip or oracle")


def signature(cfg: PreprocessConfig, scene: Scene | None = None) -> dict[str, Any]:
    """Everything that changes the cache's content; equal signatures may share a cache.

    For a scene whose cameras have lens distortion, whether its images were undistorted is part
    of it (``undistorted``), so a cache made on the distorted images is never reused on the
    undistorted ones or the other way round."""
    if cfg.paint_order not in ("sam", "area"):
        raise ConfigError(f"paint_order must be 'sam' or 'area', got {cfg.paint_order!r}")
    sig = {"layout": CACHE_LAYOUT, "levels": list(LEVELS), "max_height": int(cfg.max_height),
           "paint_order": cfg.paint_order,
           "masks": {"source": cfg.masks, **_jsonable(mask_settings(cfg))},
           "language": _jsonable(language_settings(cfg))}
    if scene is not None and scene.images_undistorted is not None:
        sig["undistorted"] = bool(scene.images_undistorted)
    return sig


def check_cache_images(cache_dir: Path, scene: Scene) -> None:
    """Refuse a cache made on distorted images for an undistorted scene, or the other way round
    (:func:`signature`'s ``undistorted`` entry); caches of undistortion-free scenes always pass."""
    import json

    meta_path = Path(cache_dir) / META_NAME
    if scene.images_undistorted is None or not meta_path.is_file():
        return
    try:
        old = json.loads(meta_path.read_text()).get("signature") or {}
    except (OSError, ValueError, AttributeError):
        return
    made = old.get("undistorted")
    if made is not None and bool(made) != bool(scene.images_undistorted):
        state = "undistorted" if made else "distorted"
        raise ConfigError(
            f"{cache_dir}: the cache was made on the {state} images of this scene, but the "
            f"images are now {'undistorted' if scene.images_undistorted else 'distorted'}; "
            "rebuild it (openins preprocess --overwrite) or use the other undistort setting"
        )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def build_mask_generator(cfg: PreprocessConfig):
    from .masks import make_mask_generator

    kwargs = mask_settings(cfg)
    if cfg.masks == "sam":
        kwargs.update(checkpoint=cfg.sam_checkpoint, device=cfg.device)
    return make_mask_generator(cfg.masks, **kwargs)


def build_language(cfg: PreprocessConfig, scene: Scene):
    """The configured language source (CLIP model, or the oracle for scenes with GT labels)."""
    if cfg.language == "oracle":
        try:
            from .oracle import OracleLanguage
        except ImportError as e:
            raise ConfigError(f"the oracle language source is unavailable ({e})") from None
        return OracleLanguage(scene, dim=cfg.oracle_dim, noise=cfg.oracle_noise,
                              confuse_fraction=cfg.oracle_confuse_fraction, seed=cfg.seed)
    from .clip_model import ClipModel
    from .features import ClipLanguage

    language_settings(cfg)  # validates alpha / source
    clip = ClipModel(cfg.clip_model, cfg.clip_pretrained, checkpoint=cfg.clip_checkpoint,
                     device=cfg.device)
    return ClipLanguage(clip, mode=cfg.mode, alpha=cfg.alpha, crop_size=cfg.crop_size,
                        dense_resolution=cfg.dense_resolution)


def working_size(width: int, height: int, max_height: int) -> tuple[int, int]:
    """``(W, H)`` after LangSplat's cap: taller than ``max_height`` -> height ``max_height``,
    width ``int(W / (H / max_height))``."""
    if max_height <= 0:
        raise ConfigError(f"max_height must be positive, got {max_height}")
    if height <= max_height:
        return width, height
    scale = height / max_height
    return max(1, int(width / scale)), max(1, int(height / scale))


def load_working_image(frame: Frame, max_height: int) -> np.ndarray:
    """The frame's RGB ``[H,W,3]`` uint8 at the working resolution (bilinear when resized)."""
    from PIL import Image

    rgb = frame.load_rgb()
    size = working_size(rgb.shape[1], rgb.shape[0], max_height)
    if size != (rgb.shape[1], rgb.shape[0]):
        rgb = np.array(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    return rgb


def _frames(scene: Scene, splits: str) -> list[Frame]:
    frames = list(scene.train_frames) + (list(scene.test_frames) if splits == "all" else [])
    seen: dict[str, Frame] = {}
    for f in frames:
        other = seen.get(f.name)
        if other is None:
            seen[f.name] = f
        elif Path(other.image_path).resolve() != Path(f.image_path).resolve():
            raise DataError(f.image_path, f"two different images share the name {f.name!r} "
                            f"({other.image_path} and {f.image_path}); their cache entries "
                            "would collide")
    return list(seen.values())


def _as_features(x: Any, m: int, frame: Frame, source: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != m:
        raise DataError(frame.image_path,
                        f"language source {source} returned shape {arr.shape} for {m} masks")
    if not np.isfinite(arr).all():
        raise DataError(frame.image_path, f"language source {source} returned non-finite features")
    return arr


def _check_existing(out: Path, sig: dict[str, Any], names: list[str],
                    overwrite: bool) -> dict[str, Any] | None:
    """The previous meta when it may be resumed; raise when the folder holds another cache."""
    meta_path = out / META_NAME
    if overwrite or not out.is_dir():
        return None
    meta = None
    if meta_path.is_file():
        import json

        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(meta_path, f"unreadable ({e})",
                            "delete it or pass --overwrite") from None
    if meta is None:
        if any(entry_paths(out, n)[0].is_file() or entry_paths(out, n)[1].is_file() for n in names):
            raise ConfigError(f"{out}: holds cache files that were not made by this tool (no "
                              f"{META_NAME}); pass --overwrite to replace them or --output to "
                              "write elsewhere")
        return None
    old = meta.get("signature")
    if old != sig:
        diff = sorted(k for k in set(old or {}) | set(sig) if (old or {}).get(k) != sig.get(k))
        raise ConfigError(f"{out}: holds a cache made with a different configuration (differs "
                          f"in: {', '.join(diff) or 'everything'}); pass --overwrite to rebuild it "
                          "or --output to write elsewhere")
    return meta


def run_preprocess(cfg: PreprocessConfig, scene: Scene | None = None, mask_generator: Any = None,
                   language: Any = None) -> Path:
    """Fill the cache for every frame of the scene; returns the cache folder.

    ``scene``, ``mask_generator`` and ``language`` may be passed pre-built (they must match
    ``cfg``, whose signature labels the cache); otherwise they are built from ``cfg``.
    """
    if scene is None:
        from ..data.load import load_scene

        scene = load_scene(cfg.data, format=cfg.format, undistort=cfg.undistort,
                           progress=cfg.progress)
    out = Path(cfg.output) if cfg.output is not None else Path(scene.root) / "language_features"
    sig = signature(cfg, scene)
    frames = _frames(scene, cfg.splits)
    names = [f.name for f in frames]
    previous = _check_existing(out, sig, names, cfg.overwrite)
    todo = [f for f in frames if cfg.overwrite or not entry_exists(out, f.name)]
    prev = previous or {}

    meta: dict[str, Any] = {
        "version": __version__, "complete": False, "signature": sig,
        "scene": str(scene.root), "levels": list(LEVELS),
        "mask_source": prev.get("mask_source"), "language_source": prev.get("language_source"),
        "language_description": prev.get("language_description"), "dim": prev.get("dim"),
        "mode": cfg.mode if cfg.language == "clip" else None,
        "alpha": cfg.alpha if cfg.language == "clip" and cfg.mode == "fused" else None,
        "images": dict(prev.get("images") or {}),
    }
    elapsed = 0.0
    if todo:
        if mask_generator is None:
            mask_generator = build_mask_generator(cfg)
        if language is None:
            language = build_language(cfg, scene)
        meta.update(mask_source=getattr(mask_generator, "name", cfg.masks),
                    language_source=str(language.name), dim=int(language.dim),
                    language_description=str(getattr(language, "description", language.name)))
        if prev.get("language_source") not in (None, meta["language_source"]):
            raise ConfigError(f"{out}: cache was made by {prev['language_source']}, now "
                              f"{meta['language_source']}; pass --overwrite to rebuild it")
        write_json(out / META_NAME, meta)
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        bar = tqdm(todo, desc=f"preprocess {Path(scene.root).name}", unit="img",
                   disable=not cfg.progress)
        for frame in bar:
            meta["images"][frame.name] = _process_frame(frame, out, cfg, mask_generator, language)
        elapsed = time.perf_counter() - t0
    for f in frames:  # counts of entries made earlier (resumed runs)
        if f.name not in meta["images"]:
            meta["images"][f.name] = {"counts": entry_counts(out, f.name)}
    meta["images"] = {n: meta["images"][n] for n in names}
    meta.update(complete=True, processed=len(todo), seconds=round(elapsed, 3),
                images_per_s=round(len(todo) / elapsed, 4) if elapsed > 0 else None)
    write_json(out / META_NAME, meta)
    return out


def _process_frame(frame: Frame, out: Path, cfg: PreprocessConfig, masks_fn: Any,
                   language: Any) -> dict[str, Any]:
    image = load_working_image(frame, cfg.max_height)
    try:
        mask_set = masks_fn(image, frame)
    except OpenInsError:
        raise
    except Exception as e:  # noqa: BLE001 (third-party model errors: name the image)
        raise DataError(frame.image_path,
                        f"mask generation failed ({type(e).__name__}: {e})") from e
    levels = mask_set.as_list()
    counts = [len(m) for m in levels]
    stacked = np.concatenate(levels, 0) if sum(counts) else np.zeros((0, *image.shape[:2]), bool)
    feats = _as_features(language(image, stacked, frame), len(stacked), frame, str(language.name))
    splits = np.split(feats, np.cumsum(counts)[:-1])
    orders = write_entry(out, frame.name, levels, splits, cfg.paint_order)
    return {"counts": [int(len(o)) for o in orders],
            "size": [int(image.shape[1]), int(image.shape[0])]}
