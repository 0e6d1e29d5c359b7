"""open_clip wrapper: text and image embeddings, plus the ConvNeXt dense map and its projection.

The dense path (METHOD §3.3) splits open_clip's ConvNeXt image tower into its two halves:

* ``visual.trunk.forward_features``: stem, four stages, ``norm_pre`` (identity for ConvNeXt),
  giving ``[C, H/32, W/32]`` (C = 1024 for ConvNeXt-Base);
* the rest, :meth:`ClipModel.project`: ``visual.trunk.head`` (global pool, which is the identity
  on a ``1x1`` input, then LayerNorm2d, flatten and the reset classifier = identity) followed by
  ``visual.head`` (dropout and the linear projection to the embedding, 1024 -> 640).

Pooling the dense map over the whole image and projecting it therefore reproduces
``encode_image`` exactly; pooling over a mask gives FC-CLIP's mask-pooled CLIP feature.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ModelLoadError
from ..run.query_config import DEFAULT_PROMPT_TEMPLATE
from . import resolve_device
from .tvcompat import import_open_clip

DEFAULT_MODEL = "convnext_base_w"  # 640-d, OpenInsGaussian
DEFAULT_PRETRAINED = "laion2b_s13b_b82k_augreg"
VIT_MODEL = "ViT-B-16"  # 512-d, LangSplat / OpenGaussian
VIT_PRETRAINED = "laion2b_s34b_b88k"
RANDOM = "random"  # ``pretrained`` value for randomly initialised weights (tests, benchmarks)

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Quick reachability probe, so an offline machine fails in seconds instead of retrying."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(cfg: dict) -> Path | None:
    """A local copy of an open_clip pretrained tag's weights (HF cache or open_clip's URL cache)."""
    hub = cfg.get("hf_hub") or ""
    if hub:
        if hub.endswith("/"):  # "org/model/": repository only, default file names
            repo, fname = hub.rstrip("/"), ""
        else:
            repo, fname = os.path.split(hub)
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        names = [fname] if fname else []
        names += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            try:
                hit = try_to_load_from_cache(repo, name)
            except Exception:  # noqa: BLE001 (a malformed cache is the same as no cache)
                hit = None
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    url = cfg.get("url") or ""
    if url:
        p = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if p.is_file():
            return p
    return None


class ClipModel:
    """An open_clip model in eval mode with the calls the feature extractors need.

    Weights come from ``checkpoint`` (a state dict or open_clip checkpoint file; also the
    ``OIG_CLIP_CHECKPOINT`` environment variable), else from open_clip's pretrained tag
    ``pretrained`` (local cache, else download when online). ``pretrained="random"`` builds
    random weights. All inference is batched, under ``torch.no_grad``, in float32.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str = DEFAULT_PRETRAINED,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 32,
    ) -> None:
        self.model_name = model
        self.pretrained = pretrained
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        oc = import_open_clip()
        model_cfg = oc.get_model_config(model)
        if model_cfg is None:
            raise ConfigError(f"open_clip has no model config {model!r}; "
                              f"e.g. {DEFAULT_MODEL} or {VIT_MODEL}")
        self._dim = int(model_cfg["embed_dim"])
        checkpoint = checkpoint or os.environ.get("OIG_CLIP_CHECKPOINT") or None
        pre_cfg = oc.get_pretrained_cfg(model, pretrained) if pretrained != RANDOM else {}
        mean, std = pre_cfg.get("mean", _OPENAI_MEAN), pre_cfg.get("std", _OPENAI_STD)
        if checkpoint is not None:
            self.model = self._from_file(oc, model, Path(checkpoint).expanduser(),
                                         "--clip-checkpoint / OIG_CLIP_CHECKPOINT")
        elif pretrained == RANDOM:
            self.model = oc.create_model(model, pretrained=None)
        else:
            if not pre_cfg:
                tags = oc.list_pretrained_tags_by_model(model)
                raise ConfigError(f"open_clip has no pretrained tag {pretrained!r} for {model}; "
                                  f"known tags: {tags}")
            cached = _cached_weights(pre_cfg)
            if cached is not None:
                self.model = self._from_file(oc, model, cached, "the open_clip cache")
            elif not _online():
                raise ModelLoadError(
                    f"CLIP weights {model}/{pretrained} are not cached and this machine is "
                    "offline. Either pass --clip-checkpoint PATH (or set OIG_CLIP_CHECKPOINT) to a "
                    "local weights file, or run once with internet access so open_clip caches them."
                )
            else:
                try:
                    self.model = oc.create_model(model, pretrained=pretrained)
                except Exception as e:  # noqa: BLE001 (download and hub errors come in many types)
                    raise ModelLoadError(
                        f"cannot load CLIP {model}/{pretrained} ({type(e).__name__}: {e}); pass "
                        "--clip-checkpoint PATH (or OIG_CLIP_CHECKPOINT) or retry online"
                    ) from None
        self.model = self.model.to(self.device).eval().float()
        self.tokenizer = oc.get_tokenizer(model)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @staticmethod
    def _from_file(oc: Any, model: str, path: Path, origin: str):
        if not path.is_file():
            raise ModelLoadError(f"{path}: CLIP checkpoint given by {origin} does not exist")
        net = oc.create_model(model, pretrained=None)
        try:
            oc.load_checkpoint(net, str(path), strict=True)
        except Exception as e:  # noqa: BLE001 (unpickling and key-mismatch errors)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"{path}: cannot load into open_clip {model} ({first}); "
                                 "check --clip-model") from None
        return net

    # ---- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """``clip:<model>:<pretrained>``, the provenance string written next to every output."""
        return f"clip:{self.model_name}:{self.pretrained}"

    @property
    def dim(self) -> int:
        """Joint embedding dimension D (640 for convnext_base_w, 512 for ViT-B-16)."""
        return self._dim

    @property
    def supports_dense(self) -> bool:
        """True for timm ConvNeXt image towers (the only ones with a dense map + head split)."""
        visual = self.model.visual
        trunk = getattr(visual, "trunk", None)
        return trunk is not None and all(
            hasattr(trunk, a) for a in ("forward_features", "stages", "head"))

    @property
    def dense_channels(self) -> int:
        self._require_dense()
        return int(self.model.visual.trunk.num_features)

    def _require_dense(self) -> None:
        if not self.supports_dense:
            raise ConfigError(
                f"{self.name}: context features need a ConvNeXt CLIP (dense feature map before "
                f"pooling); {self.model_name} has no such map. Use --clip-model {DEFAULT_MODEL} "
                "or --mode local."
            )

    # ---- encoders ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str], template: str = DEFAULT_PROMPT_TEMPLATE) -> torch.Tensor:
        """``[n, D]`` L2-normalised text embeddings of ``template.format(t)``."""
        prompts = [template.format(t) for t in texts]
        out = []
        for i in range(0, len(prompts), 256):
            tokens = self.tokenizer(prompts[i : i + 256]).to(self.device)
            out.append(self.model.encode_text(tokens).float())
        if not out:
            return torch.zeros(0, self.dim, device=self.device)
        return F.normalize(torch.cat(out), dim=-1)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [0,1] -> CLIP mean/std normalised."""
        return (images.to(self.device, torch.float32) - self.mean) / self.std

    @torch.no_grad()
    def encode_crops(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B,3,S,S]`` float in [0,1] -> ``[B, D]`` L2-normalised image embeddings."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected [B,3,S,S] images, got shape {tuple(images.shape)}")
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            batch = self.normalize_pixels(images[i : i + self.batch_size])
            out.append(self.model.encode_image(batch).float())
        if not out:
            return torch.zeros(0, self.dim, device=self.device)
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def encode_image_raw(self, images: torch.Tensor) -> torch.Tensor:
        """``model.encode_image`` of ``[B,3,H,W]`` in [0,1], not normalised (test reference)."""
        return self.model.encode_image(self.normalize_pixels(images)).float()

    @torch.no_grad()
    def dense_features(self, image: torch.Tensor) -> torch.Tensor:
        """``image [3,H,W]`` in [0,1] -> ``[C, ceil(H/32), ceil(W/32)]`` map before pooling.

        The normalised image is zero-padded (i.e. mean colour) at the bottom/right to a multiple
        of 32, so every pixel falls inside a feature cell.
        """
        self._require_dense()
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a [3,H,W] image, got shape {tuple(image.shape)}")
        x = self.normalize_pixels(image[None])  # [1,3,H,W]
        h, w = x.shape[-2:]
        ph, pw = math.ceil(h / 32) * 32 - h, math.ceil(w / 32) * 32 - w
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return self.model.visual.trunk.forward_features(x)[0].float()  # [C, H', W']

    @torch.no_grad()
    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled [M, C]`` dense features -> ``[M, D]`` embeddings (not normalised) through
        ``visual.trunk.head`` (on a 1x1 map) and ``visual.head``."""
        self._require_dense()
        visual = self.model.visual
        x = pooled.to(self.device, torch.float32)[:, :, None, None]  # [M,C,1,1]
        x = visual.trunk.head(x)  # pool (identity on 1x1) -> LayerNorm2d -> flatten -> [M,C]
        return visual.head(x).float()  # [M,D]
