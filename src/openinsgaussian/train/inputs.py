"""Per-view mask and language inputs of the instance stages (1-3), at the training resolution.

Stages 1-3 need, for every training view, the masks of one SAM level and one language feature per
mask. They come from the per-image perception cache (``language_features/<name>_s.npy`` and
``_f.npy``, METHOD §2.3-2.5) read with :func:`openinsgaussian.perception.cache.read_level`.
The cache is written at the preprocessing resolution; the masks are resized here to each
training camera's size with nearest-neighbour sampling (pixel centres), so mask ids stay intact.

A view's masks at one level never overlap (they are decoded from one id map), so they are kept as
one ``[H, W]`` id map per view (0 = no mask, j = mask j) instead of ``m`` boolean planes: a few
hundred views of a real scene then fit in memory.

When the cache is missing, :func:`ensure_cache` runs the preprocessing driver with the configured
mask and language sources (ground-truth masks and the oracle on synthetic scenes). The ``direct``
source skips the cache and computes ground-truth masks and oracle features in memory, e.g. for
experiments with corrupted oracle features that should not overwrite a scene's cache.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.scene import Frame, Scene
from ..errors import ConfigError, DataError, RunError


@dataclass
class InputsConfig:
    """Where the per-view masks and mask language features come from."""

    level: int = 0
    """Mask level of the cache: 0 default, 1 small, 2 medium, 3 large (ScanNet 0, LeRF 3)."""
    cache: Path | None = None
    """Cache folder (None: <scene>/language_features)."""
    source: Literal["cache", "direct"] = "cache"
    """"cache": read (and if missing, build) the preprocessing cache; "direct": ground-truth masks
    and oracle features computed in memory (synthetic scenes; nothing written)."""
    masks: Literal["ground_truth", "classical", "sam"] = "ground_truth"
    """Mask source used when the cache has to be built."""
    language: Literal["oracle", "clip"] = "oracle"
    """Language source used to build the cache (the direct source supports the oracle only)."""
    clip_mode: Literal["local", "context", "fused"] = "fused"
    """CLIP feature kind when building a CLIP cache (fused = OpenInsGaussian)."""
    clip_alpha: float = 0.2
    """Context weight of the fused CLIP feature."""
    oracle_dim: int = 640
    """Oracle feature dimension (640 = the ConvNeXt CLIP width)."""
    oracle_noise: float = 0.0
    """Oracle: per-component noise std (cache and direct sources)."""
    oracle_confuse_fraction: float = 0.0
    """Oracle: fraction of masks given another class's vector (cache and direct sources)."""
    oracle_view_corrupt_fraction: float = 0.0
    """Oracle, direct source only: fraction of views whose masks all get wrong classes."""
    preprocess_device: str = "auto"
    """Device of SAM / CLIP when building the cache."""
    paint_order: Literal["sam", "area"] = "area"
    """Painting order of overlapping masks in the cache ("area": largest first, ours; "sam":
    LangSplat's, used by the reproduction presets); a cache written with the other order is
    refused."""
    mask_resize: Literal["stride", "centre"] = "stride"
    """How cached id maps are brought to the training size: "stride" = every s-th pixel from the
    first when the size ratio is an integer s (the public code's ``sam_mask[:, ::s, ::s]``), else
    nearest at pixel centres; "centre" = always nearest at pixel centres."""


@dataclass
class ViewInputs:
    """Masks and their language features for one training view."""

    name: str
    mask_ids: Tensor  # [H, W] int16/int32 on the CPU: 0 = no mask, j = mask j (1..m)
    lang: Tensor  # [m, D] float32 on the CPU, row j-1 = mask j

    @property
    def num_masks(self) -> int:
        return int(self.lang.shape[0])

    def ids(self, device: torch.device | str = "cpu") -> Tensor:
        """``[H, W]`` int64 id map on ``device``."""
        return self.mask_ids.to(device=device, dtype=torch.long)

    def masks(self, device: torch.device | str = "cpu") -> Tensor:
        """``[m, H, W]`` bool masks (a mask lost by the resize is an all-False plane)."""
        ids = self.ids(device)
        j = torch.arange(1, self.num_masks + 1, device=ids.device).view(-1, 1, 1)
        return ids.unsqueeze(0) == j


@dataclass
class TrainingInputs:
    """Training frames (cameras at the training resolution) with their per-view inputs."""

    frames: list[Frame]
    views: list[ViewInputs]  # views[i] belongs to frames[i]
    language_source: str  # "oracle", "clip:<model>:<weights>..." (provenance of the features)
    language_detail: dict[str, Any]  # settings of the language source (noise, mode, alpha, ...)
    level: int
    cache_dir: Path | None

    @property
    def dim(self) -> int:
        return int(self.views[0].lang.shape[1]) if self.views else 0

    def __len__(self) -> int:
        return len(self.frames)


def resize_ids_nearest(
    ids: np.ndarray, width: int, height: int, rule: Literal["stride", "centre"] = "centre"
) -> np.ndarray:
    """``[H0, W0]`` integer id map -> ``[height, width]``.

    ``centre``: nearest sampling at pixel centres. ``stride``: when both sizes shrink by the same
    integer factor s (rounding up, as ``ids[::s, ::s]`` does), every s-th row and column from the
    first, as the public code subsamples its SAM maps; otherwise as ``centre``.
    """
    h0, w0 = ids.shape
    if (h0, w0) == (height, width):
        return ids
    if rule == "stride":
        s = int(round(w0 / width)) if width else 0
        if s >= 1 and -(-h0 // s) == height and -(-w0 // s) == width:
            return ids[::s, ::s]
    rows = np.minimum(((np.arange(height) + 0.5) * h0 / height).astype(np.int64), h0 - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w0 / width).astype(np.int64), w0 - 1)
    return ids[rows][:, cols]


def _compact_ids(ids: np.ndarray) -> Tensor:
    dtype = np.int16 if ids.size == 0 or int(ids.max()) < np.iinfo(np.int16).max else np.int32
    return torch.from_numpy(np.ascontiguousarray(ids.astype(dtype)))


def masks_to_id_map(masks: np.ndarray) -> np.ndarray:
    """``[m, H, W]`` bool, non-overlapping -> ``[H, W]`` int64 (0 = none, j = mask j)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] == 0:
        return np.zeros(masks.shape[1:], dtype=np.int64)
    j = np.arange(1, masks.shape[0] + 1, dtype=np.int64)[:, None, None]
    return (masks * j).max(0)


# ---- the cache ----------------------------------------------------------------------------------
def default_cache_dir(scene: Scene, cfg: InputsConfig) -> Path:
    return Path(cfg.cache) if cfg.cache is not None else Path(scene.root) / "language_features"


def cache_complete(cache_dir: Path, frames: list[Frame]) -> bool:
    """True when every frame has both cache files."""
    from ..perception.cache import entry_exists

    return cache_dir.is_dir() and all(entry_exists(cache_dir, f.name) for f in frames)


def preprocess_config(scene: Scene, cfg: InputsConfig, seed: int = 0, progress: bool = True) -> Any:
    """The :class:`~openinsgaussian.perception.preprocess.PreprocessConfig` building the cache."""
    from ..perception.preprocess import PreprocessConfig

    return PreprocessConfig(
        data=Path(scene.root),
        output=default_cache_dir(scene, cfg),
        masks=cfg.masks,
        language=cfg.language,
        mode=cfg.clip_mode,
        alpha=cfg.clip_alpha,
        oracle_dim=cfg.oracle_dim,
        oracle_noise=cfg.oracle_noise,
        oracle_confuse_fraction=cfg.oracle_confuse_fraction,
        seed=seed,
        device=cfg.preprocess_device,
        paint_order=cfg.paint_order,
        progress=progress,
    )


def ensure_cache(scene: Scene, cfg: InputsConfig, seed: int = 0, progress: bool = True) -> Path:
    """The cache folder of ``scene``, built with the configured sources when entries are missing."""
    from ..perception.preprocess import check_cache_images, run_preprocess

    cache_dir = default_cache_dir(scene, cfg)
    if cache_complete(cache_dir, scene.train_frames):
        check_cache_images(cache_dir, scene)
        return cache_dir

    return run_preprocess(preprocess_config(scene, cfg, seed, progress), scene=scene)


def read_cache_meta(cache_dir: Path) -> dict[str, Any]:
    """``preprocess.json`` of a cache ({} when the cache was made elsewhere)."""
    p = Path(cache_dir) / "preprocess.json"
    if not p.is_file():
        return {}
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DataError(p, f"unreadable ({e})", "delete it or rebuild the cache") from None
    return meta if isinstance(meta, dict) else {}


def cache_paint_order(meta: dict[str, Any]) -> str | None:
    """Painting order of a cache from its ``preprocess.json`` (caches of this package that predate
    the setting were painted by area); None for a cache made elsewhere (no metadata)."""
    if not meta:
        return None
    sig = meta.get("signature") if isinstance(meta.get("signature"), dict) else {}
    return str(sig.get("paint_order", "area"))


def check_paint_order(cache_dir: Path, meta: dict[str, Any], wanted: str) -> None:
    """Refuse a cache painted in another order than the config asks (it changes every stage)."""
    have = cache_paint_order(meta)
    if have is None:
        if wanted != "sam":
            warnings.warn(
                f"{cache_dir}: a cache without {'preprocess.json'} (LangSplat layout) is painted "
                f"in SAM order, but inputs.paint_order is {wanted!r}",
                stacklevel=3,
            )
        return
    if have != wanted:
        raise ConfigError(
            f"{cache_dir}: the mask cache was painted in {have!r} order but the config asks for "
            f"{wanted!r}; rebuild it (`openins preprocess ... --overwrite --paint-order {wanted}`) "
            f"or set inputs.paint_order={have}"
        )


def load_cached_inputs(
    frames: list[Frame],
    cache_dir: Path,
    level: int,
    progress: bool = True,
    paint_order: str | None = None,
    mask_resize: Literal["stride", "centre"] = "centre",
) -> TrainingInputs:
    """Read level ``level`` of every frame's cache entry, resized to the frame's camera.

    ``paint_order``: the painting order the caller expects (checked against the cache's
    metadata; None: not checked).
    """
    from ..perception.cache import read_level

    cache_dir = Path(cache_dir)
    if paint_order is not None:
        check_paint_order(cache_dir, read_cache_meta(cache_dir), paint_order)
    views: list[ViewInputs] = []
    dims: set[int] = set()
    for f in tqdm(
        frames, desc=f"masks (level {level})", unit="view", disable=not progress, leave=False
    ):
        masks, feats = read_level(cache_dir, f.name, level)  # [m,H0,W0] bool, [m,D]
        ids = resize_ids_nearest(
            masks_to_id_map(masks), f.camera.width, f.camera.height, mask_resize
        )
        views.append(
            ViewInputs(f.name, _compact_ids(ids), torch.from_numpy(np.ascontiguousarray(feats)))
        )
        if len(feats):
            dims.add(int(feats.shape[1]))
    if len(dims) > 1:
        raise DataError(
            cache_dir,
            f"language features of different dimensions {sorted(dims)} in one cache",
            "rebuild the cache with one language source (--overwrite)",
        )
    meta = read_cache_meta(cache_dir)
    sig = meta.get("signature", {}) if isinstance(meta.get("signature"), dict) else {}
    source = meta.get("language_source") or (sig.get("language") or {}).get("source") or "unknown"
    if dims and all(v.lang.shape[0] == 0 for v in views):
        raise DataError(
            cache_dir, f"no masks at level {level} in any view", "choose another --level"
        )
    dim = dims.pop() if dims else 0
    for v in views:  # views without masks: keep a [0, D] table
        if v.lang.shape[0] == 0:
            v.lang = torch.zeros(0, dim)
    return TrainingInputs(
        frames=frames,
        views=views,
        language_source=str(source),
        language_detail=dict(sig.get("language") or {}),
        level=level,
        cache_dir=cache_dir,
    )


def direct_inputs(
    scene: Scene, frames: list[Frame], cfg: InputsConfig, seed: int = 0, progress: bool = True
) -> TrainingInputs:
    """Ground-truth instance masks and oracle language features computed in memory.

    Masks are computed at each frame's (training) resolution from its instance map; features by
    :class:`~openinsgaussian.perception.oracle.OracleLanguage` with the configured corruption.
    """
    from ..perception.masks import GroundTruthMaskGenerator
    from ..perception.oracle import OracleLanguage

    if cfg.language != "oracle":
        raise DataError(
            scene.root,
            "the direct input source only supports the oracle language source",
            "use source='cache' for CLIP features",
        )
    oracle = OracleLanguage(
        scene,
        dim=cfg.oracle_dim,
        noise=cfg.oracle_noise,
        confuse_fraction=cfg.oracle_confuse_fraction,
        view_corrupt_fraction=cfg.oracle_view_corrupt_fraction,
        seed=seed,
    )
    gen = GroundTruthMaskGenerator()
    views = []
    for f in tqdm(
        frames, desc="masks (ground truth)", unit="view", disable=not progress, leave=False
    ):
        image = f.load_rgb()
        masks = gen(image, f).as_list()[cfg.level]  # [m,H,W] at the frame's resolution
        feats = oracle(image, masks, f).numpy()  # [m,D]
        views.append(
            ViewInputs(f.name, _compact_ids(masks_to_id_map(masks)), torch.from_numpy(feats))
        )
    detail = {
        "source": "oracle",
        "dim": cfg.oracle_dim,
        "noise": cfg.oracle_noise,
        "confuse_fraction": cfg.oracle_confuse_fraction,
        "view_corrupt_fraction": cfg.oracle_view_corrupt_fraction,
        "seed": seed,
        "description": oracle.description,
    }
    return TrainingInputs(
        frames=frames,
        views=views,
        language_source=oracle.name,
        language_detail=detail,
        level=cfg.level,
        cache_dir=None,
    )


def relabel_inputs(inputs: TrainingInputs, language: Any, progress: bool = True) -> TrainingInputs:
    """The same views and masks with new per-mask features from ``language(image, masks, frame)``.

    ``language`` is any language source with ``name`` (e.g. an
    :class:`~openinsgaussian.perception.oracle.OracleLanguage` with view corruption). Keeping the
    masks keeps the mask numbering that stage-2 pseudo labels refer to, so stage 3 can be re-run
    with other features on a trained run.
    """
    views = []
    for f, v in tqdm(
        list(zip(inputs.frames, inputs.views, strict=False)),
        desc="language features",
        unit="view",
        disable=not progress,
        leave=False,
    ):
        masks = v.masks().numpy()  # [m,H,W] at the frame's resolution
        feats = language(f.load_rgb(), masks, f)
        feats = torch.as_tensor(
            np.asarray(feats.detach().cpu() if hasattr(feats, "detach") else feats),
            dtype=torch.float32,
        )
        if feats.shape[0] != v.num_masks:
            raise DataError(
                f.image_path,
                f"language source returned {feats.shape[0]} features for {v.num_masks} masks",
            )
        views.append(ViewInputs(v.name, v.mask_ids, feats))
    detail = {
        "source": str(language.name),
        "description": str(getattr(language, "description", language.name)),
    }
    return TrainingInputs(
        frames=inputs.frames,
        views=views,
        language_source=str(language.name),
        language_detail=detail,
        level=inputs.level,
        cache_dir=None,
    )


def load_training_inputs(
    scene: Scene,
    frames: list[Frame],
    cfg: InputsConfig,
    seed: int = 0,
    progress: bool = True,
    build: bool = True,
) -> TrainingInputs:
    """The inputs of ``frames`` (already at the training resolution) from the configured source.

    With ``build`` the cache is created when entries are missing; otherwise a missing cache is a
    :class:`RunError` that says how to create it.
    """
    if not frames:
        raise RunError(f"{scene.root}: no training frames")
    if cfg.source == "direct":
        return direct_inputs(scene, frames, cfg, seed, progress)
    if cfg.source != "cache":
        raise DataError(None, f"unknown input source {cfg.source!r}; choose cache or direct")
    cache_dir = default_cache_dir(scene, cfg)
    if not cache_complete(cache_dir, frames):
        if not build:
            raise RunError(
                f"{cache_dir}: the mask / language cache is missing or incomplete; "
                f"run `openins preprocess {scene.root}` first"
            )
        cache_dir = ensure_cache(scene, cfg, seed, progress)
    return load_cached_inputs(
        frames, cache_dir, cfg.level, progress, cfg.paint_order, cfg.mask_resize
    )
