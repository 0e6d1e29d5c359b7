"""Per-mask language features: local (crop), context (mask-pooled dense map) and fused (METHOD §3).

* local  (§3.2, LangSplat §2.4): pixels outside the mask set to black, crop to the mask's
  bounding box, centre it on a black square, resize to ``crop_size``, encode with CLIP.
* context (§3.3, FC-CLIP): one dense ConvNeXt forward for the whole image; every mask is resized
  to the feature grid (bilinear, then > 0), its cells are averaged (denominator + 1e-8) and the
  average is projected through the CLIP head.
* fused (§3.4): ``alpha * normalize(context) + (1 - alpha) * normalize(local)``, re-normalised.

:class:`ClipLanguage` packages one of the three as a *language source*: ``__call__(image, masks,
frame) -> [m, D]`` float32 unit rows, ``encode_text``, ``name`` and ``dim`` (the same protocol the
synthetic-scene oracle implements).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.scene import Frame
from ..errors import ConfigError
from .clip_model import ClipModel

Mode = Literal["local", "context", "fused"]


@runtime_checkable
class LanguageSource(Protocol):
    """Anything that turns masks into language features (CLIP here, ground truth in the oracle)."""

    name: str  # provenance, e.g. "clip:convnext_base_w:laion2b_s13b_b82k_augreg:fused:alpha=0.2"
    dim: int  # D

    def __call__(self, image: np.ndarray, masks: np.ndarray, frame: Frame | None = None) -> Any: ...

    def encode_text(self, texts: list[str]) -> Any: ...


def _image_tensor(image: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``[H,W,3]`` uint8 -> ``[3,H,W]`` float32 in [0,1] on ``device``."""
    if not isinstance(image, torch.Tensor):
        arr = np.asarray(image)
        image = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    t = image
    if t.ndim != 3 or t.shape[2] != 3 or t.dtype != torch.uint8:
        raise ValueError(f"expected an [H,W,3] uint8 image, got shape {tuple(t.shape)} "
                         f"dtype {t.dtype}")
    return t.to(device).permute(2, 0, 1).float() / 255.0


def _mask_tensor(masks: np.ndarray | torch.Tensor, hw: tuple[int, int],
                 device: torch.device) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        arr = np.asarray(masks)
        masks = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    m = masks.to(device).bool()
    if m.ndim != 3 or tuple(m.shape[1:]) != tuple(hw):
        raise ValueError(f"masks must be [m,{hw[0]},{hw[1]}] to match the image, "
                         f"got shape {tuple(m.shape)}")
    return m


@torch.no_grad()
def local_crops(image: torch.Tensor, masks: torch.Tensor, crop_size: int = 224) -> torch.Tensor:
    """LangSplat crops: ``image [3,H,W]`` in [0,1], ``masks [m,H,W]`` -> ``[m,3,S,S]`` in [0,1].

    The bounding box is inclusive of the mask's last row/column. The square is the longer box
    side with the crop centred (offset ``(long - short) // 2``); resizing is bilinear with
    anti-aliasing. Empty masks give black crops.
    """
    m = masks.shape[0]
    out = torch.zeros(m, 3, crop_size, crop_size, dtype=image.dtype, device=image.device)
    rows_any = masks.any(dim=2)  # [m,H]
    cols_any = masks.any(dim=1)  # [m,W]
    for k in range(m):
        ys = torch.nonzero(rows_any[k]).flatten()
        xs = torch.nonzero(cols_any[k]).flatten()
        if ys.numel() == 0:
            continue
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        crop = image[:, y0:y1, x0:x1] * masks[k, y0:y1, x0:x1]  # [3,h,w], outside the mask black
        h, w = y1 - y0, x1 - x0
        side = max(h, w)
        square = torch.zeros(3, side, side, dtype=image.dtype, device=image.device)
        oy, ox = (side - h) // 2, (side - w) // 2
        square[:, oy : oy + h, ox : ox + w] = crop
        if side != crop_size:
            square = F.interpolate(square[None], size=(crop_size, crop_size), mode="bilinear",
                                   align_corners=False, antialias=True)[0]
        out[k] = square
    return out.clamp_(0.0, 1.0)


@torch.no_grad()
def local_features(clip: ClipModel, image, masks, crop_size: int = 224) -> torch.Tensor:
    """F_local: ``[m, D]`` L2-normalised CLIP embeddings of the masked, cropped objects."""
    img = _image_tensor(image, clip.device)
    msk = _mask_tensor(masks, img.shape[1:], clip.device)
    if msk.shape[0] == 0:
        return torch.zeros(0, clip.dim, device=clip.device)
    feats = []
    for i in range(0, msk.shape[0], clip.batch_size):  # crops are built per batch to bound memory
        feats.append(clip.encode_crops(local_crops(img, msk[i : i + clip.batch_size], crop_size)))
    return torch.cat(feats)


@torch.no_grad()
def grid_masks(masks: torch.Tensor, grid: tuple[int, int], padded: tuple[int, int],
               chunk: int = 32) -> torch.Tensor:
    """Masks on the dense feature grid: ``masks [m,H,W]`` -> ``[m, h', w']`` float {0,1}.

    Each mask is zero-padded to the padded image size ``padded`` (a multiple of 32, as in
    :meth:`ClipModel.dense_features`), bilinearly resized to ``grid`` and thresholded at > 0
    (FC-CLIP). Bilinear sampling only looks near cell centres, so a small mask can miss every
    cell; such masks fall back to every cell they overlap (area coverage > 0).
    """
    m, h, w = masks.shape
    ph, pw = padded[0] - h, padded[1] - w
    out = torch.zeros(m, *grid, dtype=torch.float32, device=masks.device)
    for i in range(0, m, chunk):
        x = F.pad(masks[i : i + chunk].float()[:, None], (0, pw, 0, ph))  # [c,1,Hp,Wp]
        g = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)[:, 0] > 0  # [c,h',w']
        empty = ~g.flatten(1).any(1)
        if bool(empty.any()):
            cover = F.adaptive_avg_pool2d(x[empty], grid)[:, 0] > 0
            g[empty] = cover
        out[i : i + chunk] = g.float()
    return out


@torch.no_grad()
def context_features(clip: ClipModel, image, masks,
                     dense_resolution: int | None = None) -> torch.Tensor:
    """F_context: ``[m, D]`` L2-normalised mask-pooled dense CLIP features (one forward per image).

    ``dense_resolution``: long side in pixels of the dense forward pass; None keeps the image's
    own resolution. Masks are resized with the image (bilinear, > 0.5) before gridding.
    """
    img = _image_tensor(image, clip.device)
    msk = _mask_tensor(masks, img.shape[1:], clip.device)
    if msk.shape[0] == 0:
        return torch.zeros(0, clip.dim, device=clip.device)
    h, w = img.shape[1:]
    if dense_resolution is not None and max(h, w) != dense_resolution:
        s = dense_resolution / max(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False,
                            antialias=True)[0]
        msk = torch.cat([
            F.interpolate(msk[i : i + 32].float()[:, None], size=size, mode="bilinear",
                          align_corners=False)[:, 0] > 0.5
            for i in range(0, msk.shape[0], 32)
        ])
    dense = clip.dense_features(img.clamp(0, 1))  # [C,h',w']
    hp, wp = dense.shape[1] * 32, dense.shape[2] * 32
    cells = grid_masks(msk, tuple(dense.shape[1:]), (hp, wp))  # [m,h',w']
    flat = cells.flatten(1)  # [m, h'w']
    pooled = flat @ dense.flatten(1).T / (flat.sum(1, keepdim=True) + 1e-8)  # [m, C]
    return F.normalize(clip.project(pooled), dim=-1)


def fuse(local: torch.Tensor, context: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    """F_fuse = ``alpha * normalize(context) + (1 - alpha) * normalize(local)``, re-normalised."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    mixed = alpha * F.normalize(context, dim=-1) + (1.0 - alpha) * F.normalize(local, dim=-1)
    return F.normalize(mixed, dim=-1)


def _unique_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the first copy of each distinct mask ``[u]`` and, per mask, its copy ``[m]``."""
    packed = np.packbits(masks.flatten(1).cpu().numpy(), axis=1)  # [m, P/8]
    seen: dict[bytes, int] = {}
    first, inverse = [], []
    for k, row in enumerate(packed):
        key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        if key not in seen:
            seen[key] = len(first)
            first.append(k)
        inverse.append(seen[key])
    return torch.tensor(first, dtype=torch.long), torch.tensor(inverse, dtype=torch.long)


class ClipLanguage:
    """CLIP language source in one of three modes (METHOD §3): local, context, or fused (alpha).

    Identical masks (common across the SAM levels) are encoded once.
    """

    def __init__(self, clip: ClipModel, mode: Mode = "fused", alpha: float = 0.2,
                 crop_size: int = 224, dense_resolution: int | None = None) -> None:
        if mode not in ("local", "context", "fused"):
            raise ConfigError(f"unknown feature mode {mode!r}; choose local, context or fused")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if mode != "local":
            clip._require_dense()
        self.clip = clip
        self.mode = mode
        self.alpha = float(alpha)
        self.crop_size = int(crop_size)
        self.dense_resolution = dense_resolution

    @property
    def name(self) -> str:
        suffix = f":fused:alpha={self.alpha:g}" if self.mode == "fused" else f":{self.mode}"
        return self.clip.name + suffix

    @property
    def dim(self) -> int:
        return self.clip.dim

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.clip.model_name,
                "pretrained": self.clip.pretrained, "mode": self.mode, "alpha": self.alpha,
                "crop_size": self.crop_size, "dense_resolution": self.dense_resolution,
                "dim": self.dim}

    @torch.no_grad()
    def __call__(self, image: np.ndarray, masks: np.ndarray,
                 frame: Frame | None = None) -> np.ndarray:
        """``[m, D]`` float32 L2-normalised features of ``masks [m,H,W]`` in ``image [H,W,3]``."""
        img_hw = np.asarray(image).shape[:2]
        msk = _mask_tensor(masks, img_hw, torch.device("cpu"))
        if msk.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        first, inverse = _unique_masks(msk)
        uniq = msk[first]
        if self.mode == "local":
            feats = local_features(self.clip, image, uniq, self.crop_size)
        elif self.mode == "context":
            feats = context_features(self.clip, image, uniq, self.dense_resolution)
        else:
            loc = local_features(self.clip, image, uniq, self.crop_size)
            ctx = context_features(self.clip, image, uniq, self.dense_resolution)
            feats = fuse(loc, ctx, self.alpha)
        return feats[inverse.to(feats.device)].cpu().numpy().astype(np.float32)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """``[n, D]`` float32 L2-normalised text embeddings (the default prompt template,
        :data:`~openinsgaussian.run.query_config.DEFAULT_PROMPT_TEMPLATE`)."""
        return self.clip.encode_text(list(texts)).cpu().numpy().astype(np.float32)
