"""Perception front end: per-image masks, per-mask language features and their on-disk cache.

Modules: ``masks`` (SAM / classical / ground-truth mask generators), ``mask_nms`` (LangSplat's
mask de-duplication), ``clip_model`` (open_clip wrapper with dense ConvNeXt features),
``features`` (local, context and fused mask features), ``cache`` (the LangSplat ``_s.npy`` /
``_f.npy`` layout), ``preprocess`` (the resumable per-scene driver), ``tvcompat`` (torchvision
ops fallback), ``oracle`` (ground-truth language features for synthetic scenes).

Heavy dependencies (open_clip, segment-anything) are imported only when a model is built.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

LEVELS: tuple[str, ...] = ("default", "s", "m", "l")  # LangSplat level order in the cache

_EXPORTS = {
    "MaskSet": "masks",
    "MaskGenerator": "masks",
    "SamMaskGenerator": "masks",
    "ClassicalMaskGenerator": "masks",
    "GroundTruthMaskGenerator": "masks",
    "make_mask_generator": "masks",
    "mask_nms": "mask_nms",
    "mask_nms_loop": "mask_nms",
    "ClipModel": "clip_model",
    "ClipLanguage": "features",
    "LanguageSource": "features",
    "local_features": "features",
    "context_features": "features",
    "fuse": "features",
    "write_entry": "cache",
    "read_level": "cache",
    "entry_exists": "cache",
    "PreprocessConfig": "preprocess",
    "run_preprocess": "preprocess",
    "ensure_torchvision_ops": "tvcompat",
}

__all__ = ["LEVELS", "resolve_device", *_EXPORTS]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from ..errors import ConfigError

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r} ({e}); use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; "
                          "use --device cpu")
    return dev


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
