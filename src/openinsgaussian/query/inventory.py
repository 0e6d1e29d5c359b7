"""The scene inventory: one :class:`Instance` per leaf (the method's objects), with labels.

``openins instances RUN`` and :meth:`openinsgaussian.Run.instances` list every leaf that owns
Gaussians and was matched in enough views (default: the run's ``query.min_views_label``, the
ScanNet protocol's 2) with its Gaussians, 3D boxes, view count and, given a vocabulary, its top-k
labels: the cosine between the leaf's language feature and each phrase of the vocabulary,
embedded by the run's text side (:mod:`.text`). Vocabularies: a ScanNet class list
(``scannet19``, ``scannet15``, ``scannet10``), a list of phrases, a text file with one phrase per
line, or a ``text_features.json`` whose features are used as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.classes import CLASS_LISTS
from ..errors import ConfigError, DataError
from .selection import ObjectGeometry, SelectionContext
from .text import TextSide

Vocabulary = str | Path | Sequence[str]


class VocabularyEncoder:
    """Vocabulary -> ``(phrases, [V, D] features)`` through a run's text side, cached."""

    def __init__(self, side: TextSide) -> None:
        self.side = side
        self._cache: dict[Any, tuple[list[str], Tensor]] = {}

    def __call__(self, vocabulary: Vocabulary) -> tuple[list[str], Tensor]:
        key = tuple(vocabulary) if isinstance(vocabulary, list | tuple) else str(vocabulary)
        if key not in self._cache:
            self._cache[key] = self._encode(vocabulary)
        return self._cache[key]

    def _encode(self, vocabulary: Vocabulary) -> tuple[list[str], Tensor]:
        if isinstance(vocabulary, str) and vocabulary in CLASS_LISTS:
            names = list(CLASS_LISTS[vocabulary].names)
            return names, self.side.encode(names)
        if isinstance(vocabulary, str | Path):
            path = Path(vocabulary)
            if not path.is_file():
                raise ConfigError(
                    f"vocabulary {str(vocabulary)!r} is neither a class list "
                    f"({', '.join(CLASS_LISTS)}) nor a file"
                )
            if path.suffix.lower() == ".json":
                from .text_features import read_text_features

                names, feats = read_text_features(path)
                if feats.shape[1] != self.side.dim:
                    raise DataError(
                        path,
                        f"its features are {feats.shape[1]}-d but the run's leaf features are "
                        f"{self.side.dim}-d",
                    )
                return names, torch.from_numpy(feats)
            names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            names = [n for n in names if n and not n.startswith("#")]
            if not names:
                raise DataError(path, "no phrases in the vocabulary file (one phrase per line)")
            return names, self.side.encode(names)
        names = [str(v).strip() for v in vocabulary if str(v).strip()]
        if not names:
            raise ConfigError("the vocabulary holds no phrase")
        return names, self.side.encode(names)


@dataclass
class Instance(ObjectGeometry):
    """One object of the scene: a leaf of the codebook and its Gaussians."""

    id: int
    """Leaf id (``leaf_ind`` value of its Gaussians)."""
    coarse_id: int
    """Coarse cluster of the leaf (``id // k2``)."""
    gaussian_ids: np.ndarray
    """``[S]`` int64 indices into the run's Gaussians."""
    n_views: int
    """Views the leaf was matched in (stage-3 association)."""
    score: float
    """Mean association score over the matched views."""
    feature: np.ndarray = field(repr=False)
    """``[D]`` float32 language feature of the leaf."""
    context: SelectionContext | None = field(default=None, repr=False, compare=False)
    vocabularies: VocabularyEncoder | None = field(default=None, repr=False, compare=False)

    def labels(self, vocabulary: Vocabulary = "scannet19", k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` phrases of ``vocabulary`` closest to the leaf's language feature, best first,
        as ``(phrase, cosine)``."""
        if self.vocabularies is None:
            raise ConfigError("this instance is not attached to a run (no text side)")
        names, feats = self.vocabularies(vocabulary)
        from .relevance import leaf_relevance

        sim = leaf_relevance(feats.float(), torch.from_numpy(self.feature).reshape(1, -1))[:, 0]
        top = torch.topk(sim, min(int(k), len(names))).indices
        return [(names[int(i)], float(sim[i])) for i in top]

    def to_json(self, vocabulary: Vocabulary | None = None, k: int = 3,
                ids: bool = False) -> dict[str, Any]:
        """Plain data: id, counts, geometry and (with ``vocabulary``) the top-``k`` labels."""
        out: dict[str, Any] = {
            "id": self.id,
            "coarse_id": self.coarse_id,
            "n_gaussians": self.n_gaussians,
            "n_views": self.n_views,
            "score": self.score,
            **self.geometry_json(),
        }
        if vocabulary is not None:
            out["labels"] = [[t, s] for t, s in self.labels(vocabulary, k)]
        if ids:
            out["gaussian_ids"] = [int(x) for x in self.gaussian_ids]
        return out


def scene_instances(
    inst: Any,
    context: SelectionContext,
    vocabularies: VocabularyEncoder | None,
    min_views: int = 2,
) -> list[Instance]:
    """Every leaf of ``inst`` (:class:`~openinsgaussian.run.instances.Instances`) owning
    Gaussians and matched in at least ``min_views`` views, by leaf id."""
    if min_views < 0:
        raise ConfigError(f"min_views must be >= 0, got {min_views}")
    L = inst.num_leaves
    leaf_ind = np.asarray(inst.leaf_ind)
    order = np.argsort(leaf_ind, kind="stable")
    ids, starts, counts = np.unique(leaf_ind[order], return_index=True, return_counts=True)
    out = []
    for leaf, s, c in zip(ids.tolist(), starts.tolist(), counts.tolist(), strict=True):
        if not 0 <= leaf < L or int(inst.occu_count[leaf]) < min_views:
            continue
        out.append(
            Instance(
                id=int(leaf),
                coarse_id=int(leaf) // int(inst.k2),
                gaussian_ids=np.sort(order[s : s + c]).astype(np.int64),
                n_views=int(inst.occu_count[leaf]),
                score=float(inst.leaf_score[leaf]),
                feature=np.asarray(inst.leaf_feat[leaf], dtype=np.float32),
                context=context,
                vocabularies=vocabularies,
            )
        )
    return out


__all__ = ["Instance", "Vocabulary", "VocabularyEncoder", "scene_instances"]
