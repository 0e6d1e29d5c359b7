"""Oracle language source: per-mask features from ground-truth class labels (synthetic / ScanNet).

Every class name maps to a fixed random unit vector (seeded by SHA-256 of the canonical name, so
it is identical across runs, machines and Python processes). A mask's feature is the vector of
its majority GT class, and a text query for a class name returns the same vector, so with no
corruption the language side is perfect and every remaining error comes from the 3D pipeline.
Outputs carry the source name ``oracle`` so they are never mistaken for CLIP results.

Corruption knobs, all deterministic per (seed, frame name, mask index):

* ``noise``: Gaussian noise of this std per component, then re-normalisation (every mask);
* ``confuse_fraction``: probability that a mask gets the vector of *another* class present in the
  scene instead of its own (per mask and view);
* ``blend_fraction``: probability that a mask's vector is blended with the mean vector of the
  other classes found in a ring around the mask (context leakage, per mask and view);
* ``view_corrupt_fraction``: probability that a whole *view* is corrupted: every mask of that view
  is confused (e.g. "30% of the views are wrong" = 0.3), independent of the per-mask knobs.

``confuse_fraction`` and ``blend_fraction`` are exclusive draws of one uniform number per mask,
so their sum must not exceed 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.scene import Frame, Scene
from ..errors import ConfigError, DataError
from ..data.classes import NYU40_NAMES, canonical_class_name


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from SHA-256 of the parts (never Python's salted ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _unit_vector(seed: int, dim: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    return F.normalize(v, dim=0).to(torch.float32)


class OracleLanguage:
    """Ground-truth language features for masks, with optional controlled corruption.

    Args:
        scene: the scene (its ``instance_classes`` and ``point_labels`` name the classes present).
        dim: feature dimension (640 = the ConvNeXt CLIP width used by the method).
        noise: std of per-component Gaussian noise added before re-normalisation.
        confuse_fraction: per-mask probability of another scene class's vector.
        blend_fraction: per-mask probability of blending with the surrounding classes.
        view_corrupt_fraction: per-view probability that all of its masks are confused.
        blend_weight: weight of the surrounding classes' mean in a blend.
        ring_width: width in pixels of the ring around a mask that defines its surroundings.
        seed: corruption seed (class vectors do not depend on it).
    """

    name = "oracle"

    def __init__(
        self,
        scene: Scene,
        dim: int = 640,
        noise: float = 0.0,
        confuse_fraction: float = 0.0,
        blend_fraction: float = 0.0,
        seed: int = 0,
        view_corrupt_fraction: float = 0.0,
        blend_weight: float = 0.5,
        ring_width: int = 5,
    ) -> None:
        if dim < 1:
            raise ConfigError(f"oracle feature dimension must be >= 1, got {dim}")
        for key, val in (
            ("confuse_fraction", confuse_fraction),
            ("blend_fraction", blend_fraction),
            ("view_corrupt_fraction", view_corrupt_fraction),
            ("blend_weight", blend_weight),
        ):
            if not 0.0 <= val <= 1.0:
                raise ConfigError(f"oracle {key} must lie in [0, 1], got {val}")
        if confuse_fraction + blend_fraction > 1.0:
            raise ConfigError(
                f"oracle confuse_fraction + blend_fraction must not exceed 1, got "
                f"{confuse_fraction} + {blend_fraction}"
            )
        if noise < 0.0 or ring_width < 1:
            raise ConfigError(
                f"oracle noise must be >= 0 and ring_width >= 1, got {noise} and {ring_width}"
            )
        self.scene = scene
        self.dim = dim
        self.noise, self.confuse_fraction, self.blend_fraction = (
            noise,
            confuse_fraction,
            blend_fraction,
        )
        self.view_corrupt_fraction, self.blend_weight, self.ring_width = (
            view_corrupt_fraction,
            blend_weight,
            ring_width,
        )
        self.seed = seed
        self._cache: dict[str, Tensor] = {}
        self.id_to_name = self._nyu_names(scene)
        self.scene_classes = self._scene_classes(scene)

    # ---- naming ------------------------------------------------------------------------------
    @staticmethod
    def _nyu_names(scene: Scene) -> dict[int, str]:
        """NYU40 id -> class name; a scene's own name wins when all its instances of that id agree."""
        names = dict(NYU40_NAMES)
        seen: dict[int, set[str]] = {}
        for cls, nyu in scene.instance_classes.values():
            seen.setdefault(int(nyu), set()).add(str(cls))
        for nyu, cls in seen.items():
            if len(cls) == 1 and nyu > 0:
                names[nyu] = next(iter(cls))
        return names

    def _scene_classes(self, scene: Scene) -> list[str]:
        """Distinct class names present in the scene (sorted by canonical name), for confusions."""
        found: dict[str, str] = {}
        for cls, nyu in scene.instance_classes.values():
            if int(nyu) > 0:
                found.setdefault(canonical_class_name(str(cls)), str(cls))
        if scene.point_labels is not None:
            for i in np.unique(np.asarray(scene.point_labels)):
                if int(i) > 0:
                    n = self.class_name(int(i))
                    found.setdefault(canonical_class_name(n), n)
        if len(found) < 2:
            found = {canonical_class_name(n): n for n in NYU40_NAMES.values()}
        return [found[k] for k in sorted(found)]

    def scene_vocabulary(self) -> frozenset[str]:
        """Canonical names of the classes present in the scene (its instances and labelled
        points): the only phrases whose objects the scene can hold. Empty when it has no labels."""
        names = {canonical_class_name(str(cls)) for cls, nyu in self.scene.instance_classes.values()
                 if int(nyu) > 0}
        if self.scene.point_labels is not None:
            names |= {canonical_class_name(self.class_name(int(i)))
                      for i in np.unique(np.asarray(self.scene.point_labels)) if int(i) > 0}
        return frozenset(names)

    def class_name(self, nyu40_id: int) -> str:
        """Class name of an NYU40 id (``"nyu40 class <id>"`` for ids outside the table)."""
        return self.id_to_name.get(int(nyu40_id), f"nyu40 class {int(nyu40_id)}")

    @property
    def description(self) -> str:
        """Source name plus the corruption settings, e.g. ``oracle(confuse=0.2,seed=0)``."""
        knobs = [
            ("noise", self.noise),
            ("confuse", self.confuse_fraction),
            ("blend", self.blend_fraction),
            ("view_corrupt", self.view_corrupt_fraction),
        ]
        active = [f"{k}={v:g}" for k, v in knobs if v > 0]
        if not active:
            return self.name
        if self.blend_fraction > 0:
            active += [f"blend_weight={self.blend_weight:g}", f"ring={self.ring_width}"]
        return f"{self.name}({','.join(active + [f'seed={self.seed}'])})"

    # ---- vectors -----------------------------------------------------------------------------
    def class_vector(self, class_name: str) -> Tensor:
        """``[D]`` float32 unit vector of a class, a pure function of its canonical name and D."""
        key = canonical_class_name(class_name)
        if key not in self._cache:
            self._cache[key] = _unit_vector(stable_seed("oracle-class", key, self.dim), self.dim)
        return self._cache[key]

    def unknown_vector(self) -> Tensor:
        """``[D]`` vector of masks without any labelled pixel (background / unknown)."""
        key = "\x00unknown"
        if key not in self._cache:
            self._cache[key] = _unit_vector(stable_seed("oracle-unknown", self.dim), self.dim)
        return self._cache[key]

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """``[n, D]`` text features: the class vector of each name (any name gets its own vector)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self.class_vector(t) for t in texts])

    # ---- masks -------------------------------------------------------------------------------
    def _labels(self, frame: Frame, shape: tuple[int, int]) -> Tensor:
        labels = frame.load_labels()
        if labels is None:
            raise DataError(
                frame.image_path,
                "the oracle language source needs a per-pixel GT label map for this frame",
                "use a synthetic or ScanNet scene with label-filt/ maps, or a CLIP language source",
            )
        if tuple(labels.shape) != tuple(shape):
            raise DataError(
                frame.label_path,
                f"label map is {labels.shape[1]}x{labels.shape[0]} but the masks are "
                f"{shape[1]}x{shape[0]}",
                "masks must be computed at the camera resolution",
            )
        return torch.from_numpy(np.asarray(labels, dtype=np.int64))

    @staticmethod
    def majority_ids(masks: Tensor, labels: Tensor) -> Tensor:
        """``[m]`` majority NYU40 id among each mask's labelled (> 0) pixels; 0 if none (ties: lowest id)."""
        m = masks.shape[0]
        lab = labels.reshape(-1).clamp(min=0)
        k = int(lab.max()) + 1 if lab.numel() else 1
        idx_m, idx_p = masks.flatten(1).nonzero(as_tuple=True)  # every (mask, pixel) pair
        counts = torch.bincount(idx_m * k + lab[idx_p], minlength=m * k).reshape(m, k)  # [m, k]
        counts[:, 0] = 0
        best = counts.argmax(1)
        return torch.where(counts.amax(1) > 0, best, torch.zeros_like(best))

    def mask_classes(self, masks: Tensor | np.ndarray, frame: Frame) -> list[str | None]:
        """Majority GT class name of each mask (None = no labelled pixel)."""
        mk = self._masks(masks)
        ids = self.majority_ids(mk, self._labels(frame, tuple(mk.shape[1:])))
        return [self.class_name(int(i)) if int(i) > 0 else None for i in ids]

    @staticmethod
    def _masks(masks: Tensor | np.ndarray) -> Tensor:
        mk = (
            torch.as_tensor(np.asarray(masks) if not isinstance(masks, Tensor) else masks)
            .cpu()
            .to(torch.bool)
        )
        if mk.dim() != 3:
            raise DataError(None, f"masks must be [m,H,W], got shape {tuple(mk.shape)}")
        return mk

    def is_view_corrupted(self, frame_name: str) -> bool:
        """Whether the whole view ``frame_name`` is corrupted (all masks confused)."""
        if self.view_corrupt_fraction <= 0.0:
            return False
        g = torch.Generator().manual_seed(stable_seed("oracle-view", self.seed, frame_name))
        return float(torch.rand((), generator=g, dtype=torch.float64)) < self.view_corrupt_fraction

    def _confusion(self, own: str | None, g: torch.Generator) -> Tensor:
        own_key = canonical_class_name(own) if own else None
        options = [c for c in self.scene_classes if canonical_class_name(c) != own_key]
        pick = int(torch.randint(len(options), (1,), generator=g))
        return self.class_vector(options[pick])

    def _ring_mean(self, mask: Tensor, labels: Tensor, own: str | None) -> Tensor | None:
        r = self.ring_width
        grown = (
            F.max_pool2d(mask[None, None].to(torch.float32), 2 * r + 1, stride=1, padding=r)[0, 0]
            > 0
        )
        ring_ids = torch.unique(labels[grown & ~mask])
        own_key = canonical_class_name(own) if own else None
        names = {
            canonical_class_name(self.class_name(int(i))): self.class_name(int(i))
            for i in ring_ids
            if int(i) > 0
        }
        names.pop(own_key, None)
        if not names:
            return None
        return torch.stack([self.class_vector(names[k]) for k in sorted(names)]).mean(0)

    def __call__(
        self, image: np.ndarray | Tensor, masks: Tensor | np.ndarray, frame: Frame
    ) -> Tensor:
        """``[m, D]`` float32 L2-normalised features of the masks of ``frame``.

        Args:
            image: ``[H, W, 3]`` uint8 (only its size is checked: the oracle reads labels).
            masks: ``[m, H, W]`` bool.
            frame: the frame the masks belong to (its GT label map is read).
        """
        mk = self._masks(masks)
        m, h, w = mk.shape
        if tuple(np.shape(image)[:2]) != (h, w):
            raise DataError(
                frame.image_path,
                f"image is {np.shape(image)[1]}x{np.shape(image)[0]} but masks are {w}x{h}",
            )
        labels = self._labels(frame, (h, w))  # [H, W]
        ids = self.majority_ids(mk, labels)  # [m]
        view_bad = self.is_view_corrupted(frame.name)
        out = torch.empty(m, self.dim, dtype=torch.float32)
        for i in range(m):
            own = self.class_name(int(ids[i])) if int(ids[i]) > 0 else None
            v = self.class_vector(own) if own else self.unknown_vector()
            g = torch.Generator().manual_seed(stable_seed("oracle-mask", self.seed, frame.name, i))
            u = float(torch.rand((), generator=g, dtype=torch.float64))  # fixed draw order
            if view_bad or u < self.confuse_fraction:
                v = self._confusion(own, g)
            elif u < self.confuse_fraction + self.blend_fraction:
                ring = self._ring_mean(mk[i], labels, own)
                if ring is not None:
                    v = F.normalize((1.0 - self.blend_weight) * v + self.blend_weight * ring, dim=0)
            if self.noise > 0.0:
                v = F.normalize(v + self.noise * torch.randn(self.dim, generator=g), dim=0)
            out[i] = v
        return out
