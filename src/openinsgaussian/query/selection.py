"""One text query -> the selected leaves and Gaussians, and the object they make (METHOD §6).

:func:`select_for_text` is the one selection of ``openins query``, the viewer and
:meth:`openinsgaussian.Run.query`: :func:`~openinsgaussian.query.select.select_leaves` on the
run's leaves, their Gaussians, the optional scale / outlier filter of the run's query config, and
the *found* test for absent objects:

* no leaf seen in ``min_views_select`` views: not found;
* the oracle text side: a phrase outside the scene's class vocabulary is not found;
* a CLIP-like text side: not found when the best leaf's canonical-phrase relevancy (LERF) is not
  above ``min_relevancy`` (default 0.5, :data:`~openinsgaussian.run.query_config.
  DEFAULT_MIN_RELEVANCY`; 0 always takes the best leaf);
* the filter leaves nothing: not found.

The evaluation protocols do not use the found test: they always take the best leaf, as the
published code does.

:class:`Selection` is the typed answer handed to users: Gaussian ids, leaves, scores, and the
object's geometry (:mod:`.geometry`), its mask in a camera and a PLY of its Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..run.query_config import QueryConfig
from .geometry import OrientedBox, aabb, inlier_mask, oriented_box


@dataclass
class TextSelection:
    """The low-level answer to one text query (tensors; see :class:`Selection` for users)."""

    leaves: Tensor  # [S] int64 selected leaf ids, the best first (empty: nothing selected)
    mask: Tensor  # [N] bool selected Gaussians
    best_leaf: int | None  # the best-scoring eligible leaf (reported even when not found)
    score: float | None  # cosine of the best leaf (the method's relevance)
    relevancy: float | None  # canonical-phrase relevancy of the best leaf (None: not computed)
    found: bool  # something matches; False selects nothing
    reason: str | None = None  # why not found
    min_relevancy: float | None = None  # threshold of the relevancy test (None: not applied)

    @property
    def rejected(self) -> bool:
        """A best leaf exists but the found test turned it down."""
        return self.best_leaf is not None and not self.found


def select_for_text(
    text_feat: Tensor,
    inst: Any,
    means: Tensor,
    scales: Tensor,
    cfg: QueryConfig,
    canon_feats: Tensor | None = None,
    *,
    in_vocabulary: bool | None = None,
    min_relevancy: float | None = None,
) -> TextSelection:
    """Selection for one ``[D]`` text feature on a run's leaves (see the module docstring).

    Args:
        text_feat: ``[D]`` query feature.
        inst: the run's :class:`~openinsgaussian.run.instances.Instances`.
        means, scales: ``[N, 3]`` Gaussian centres and activated scales (for the filter).
        cfg: selection settings (the run's ``query`` config section).
        canon_feats: ``[C, D]`` canonical-phrase features; with them the best leaf's relevancy
            is reported and, unless ``in_vocabulary`` decides, tested against ``min_relevancy``.
        in_vocabulary: the oracle's vocabulary test of the phrase (None: no such test).
        min_relevancy: threshold of the relevancy test (None: ``cfg.min_relevancy``).
    """
    from .relevance import canonical_relevancy, leaf_relevance
    from .select import filter_selection, gaussian_mask_for_leaves, select_leaves

    threshold = cfg.min_relevancy if min_relevancy is None else float(min_relevancy)
    if not 0.0 <= threshold < 1.0:
        raise ConfigError(f"query min_relevancy must be in [0, 1), got {threshold}")

    leaf_feat = torch.from_numpy(inst.leaf_feat)  # [L, D]
    leaves = select_leaves(
        text_feat,
        leaf_feat,
        torch.from_numpy(inst.occu_count),
        torch.from_numpy(inst.leaf_centers),
        inst.k2,
        min_views=cfg.min_views_select,
        top_k=cfg.top_k,
        center_dist=cfg.center_dist,
        compat=cfg.compat,
    )
    leaf_ind = torch.from_numpy(inst.leaf_ind)  # [N]
    best = int(leaves[0]) if leaves.numel() else None
    score = relevancy = None
    reason: str | None = None
    if best is None:
        reason = f"no leaf was matched in >= {cfg.min_views_select} views"
    else:
        t = text_feat.float().reshape(1, -1)  # [1, D]
        score = float(leaf_relevance(t, leaf_feat[best : best + 1])[0, 0])
        if canon_feats is not None:
            rel = canonical_relevancy(t, leaf_feat[best : best + 1], canon_feats.float())
            relevancy = float(rel[0, 0])
        if in_vocabulary is False:
            reason = "not a class of this scene (oracle vocabulary)"
        elif in_vocabulary is None and relevancy is not None and threshold > 0:
            if relevancy <= threshold:
                reason = f"relevancy {relevancy:.3f} is not above {threshold:g}"
    if reason is not None:
        leaves = leaves[:0]
    mask = gaussian_mask_for_leaves(leaf_ind, leaves)  # [N]
    if cfg.filter and reason is None:
        mask = filter_selection(
            means,
            scales,
            mask,
            cfg.max_scale,
            cfg.min_count,
            outlier_rule=cfg.outlier_rule,
            min_after=cfg.min_after_filter,
        )
        if not bool(mask.any()):
            reason = f"fewer than {cfg.min_count} Gaussians pass the selection filter"
    applied = threshold if in_vocabulary is None and canon_feats is not None else None
    return TextSelection(leaves, mask, best, score, relevancy, reason is None, reason, applied)


# ---- the user-facing answer ---------------------------------------------------------------------
def resolve_camera(view: Any, cameras: list[Any]) -> Any:
    """A :class:`~openinsgaussian.data.camera.Camera` from a camera, an index into ``cameras``
    or a camera (frame) name."""
    from ..data.camera import Camera

    if isinstance(view, Camera):
        return view
    if isinstance(view, bool):
        raise ConfigError(f"not a camera or view: {view!r}")
    if isinstance(view, int | np.integer):
        if not -len(cameras) <= int(view) < len(cameras):
            raise ConfigError(f"view {int(view)} out of range: the run has {len(cameras)} cameras")
        return cameras[int(view)]
    if isinstance(view, str):
        for c in cameras:
            if c.name == view:
                return c
        names = [c.name for c in cameras]
        raise ConfigError(
            f"no camera named {view!r}; the run's cameras are {', '.join(names[:6])}"
            + (" ..." if len(names) > 6 else "")
        )
    raise ConfigError(
        f"expected a Camera, a view index or a view name, got {type(view).__name__}"
    )


@dataclass
class SelectionContext:
    """What a :class:`Selection` needs of its run to render and export (not part of its data)."""

    model: Any  # GaussianModel
    cameras: list[Any]  # the run's cameras (train + test)
    leaf_ind: np.ndarray  # [N] int64
    backend: str = "auto"

    @cached_property
    def means(self) -> np.ndarray:
        """``[N, 3]`` float64 Gaussian centres."""
        return self.model.means.detach().cpu().numpy().astype(np.float64)


class ObjectGeometry:
    """Geometry of a group of Gaussians (a :class:`Selection` or an instance), from the centres
    that pass the outlier removal; the class using it has ``gaussian_ids`` and ``context``."""

    gaussian_ids: np.ndarray
    context: SelectionContext | None

    @property
    def n_gaussians(self) -> int:
        return int(self.gaussian_ids.shape[0])

    def _ctx(self) -> SelectionContext:
        if self.context is None:
            raise ConfigError("this object is not attached to a run (no Gaussians to use)")
        return self.context

    @cached_property
    def inliers(self) -> np.ndarray:
        """``[S']`` int64 ids of the Gaussians whose centres pass the outlier removal
        (:func:`~openinsgaussian.query.geometry.inlier_mask`); the geometry uses these."""
        if self.n_gaussians == 0:
            return self.gaussian_ids
        return self.gaussian_ids[inlier_mask(self._ctx().means[self.gaussian_ids])]

    def _inlier_means(self) -> np.ndarray | None:
        return None if self.n_gaussians == 0 else self._ctx().means[self.inliers]

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Axis-aligned box ``(min [3], max [3])`` of the centres after outlier removal; None
        when there are no Gaussians."""
        p = self._inlier_means()
        return None if p is None else aabb(p)

    @cached_property
    def obb(self) -> OrientedBox | None:
        """Oriented box (``center [3]``, ``axes [3, 3]``, ``extent [3]``) from the principal axes
        of the centres after outlier removal; None when there are no Gaussians."""
        p = self._inlier_means()
        return None if p is None else oriented_box(p)

    @cached_property
    def centroid(self) -> np.ndarray | None:
        """``[3]`` mean of the centres after outlier removal; None when there are none."""
        p = self._inlier_means()
        return None if p is None else p.mean(axis=0)

    def geometry_json(self) -> dict[str, Any]:
        """``bounds``, ``obb`` and ``centroid`` as plain data."""
        b = self.bounds
        return {
            "bounds": None if b is None else [b[0].tolist(), b[1].tolist()],
            "obb": None if self.obb is None else self.obb.to_json(),
            "centroid": None if self.centroid is None else self.centroid.tolist(),
        }


@dataclass
class Selection(ObjectGeometry):
    """The Gaussians answering one text query, with the object's geometry.

    ``found`` is False when nothing matches (the module docstring lists the rules); the best
    leaf and its scores are still reported then, and the selection is empty.
    """

    text: str
    """The query text."""
    found: bool
    """Something in the scene matches the text."""
    gaussian_ids: np.ndarray
    """``[S]`` int64 indices into the run's Gaussians (after the run's selection filter)."""
    leaves: np.ndarray
    """``[K]`` int64 selected leaf ids, the best first."""
    best_leaf: int | None
    """The best-scoring eligible leaf (even when not found)."""
    score: float | None
    """Cosine between the text and the best leaf's language feature."""
    relevancy: float | None
    """LERF canonical-phrase relevancy of the best leaf (None: not computed)."""
    reason: str | None = None
    """Why nothing was found (None when found)."""
    min_relevancy: float | None = None
    """Threshold of the relevancy test that decided ``found`` (None: not applied, e.g. the
    oracle's vocabulary test)."""
    text_side: dict[str, Any] = field(default_factory=dict)
    """How the text was embedded (source, prompt template, text-features file)."""
    context: SelectionContext | None = field(default=None, repr=False, compare=False)

    def mask(self, camera_or_view: Any, threshold: float = 0.5) -> np.ndarray:
        """``[H, W]`` bool: pixels where the selected Gaussians, rendered alone in the camera
        (a :class:`~openinsgaussian.data.camera.Camera`, a view index or name of the run), reach
        an alpha above ``threshold`` (what the LeRF protocol does with 0.7)."""
        ctx = self._ctx()
        cam = resolve_camera(camera_or_view, ctx.cameras)
        if self.n_gaussians == 0:
            return np.zeros((cam.height, cam.width), dtype=bool)
        sub = ctx.model.subset(torch.from_numpy(self.gaussian_ids))
        with torch.no_grad():
            alpha = sub.render(cam, backend=ctx.backend).alpha[0]  # [H, W]
        return (alpha > threshold).cpu().numpy()

    def export_ply(self, path: str | Path) -> Path:
        """Write only the selected Gaussians to ``path`` (Inria / gsplat PLY layout plus our
        ``ins_feat_*`` and ``leaf_id`` columns), atomically; returns the path."""
        from ..splats.ply import save_gaussians_ply

        ctx = self._ctx()
        ids = torch.from_numpy(self.gaussian_ids)
        save_gaussians_ply(
            Path(path), ctx.model.subset(ids), leaf_id=ctx.leaf_ind[self.gaussian_ids]
        )
        return Path(path)

    def to_json(self, ids: bool = True) -> dict[str, Any]:
        """The fields above as plain data (``ids=False`` leaves out the Gaussian ids)."""
        out: dict[str, Any] = {
            "text": self.text,
            "found": self.found,
            "reason": self.reason,
            "n_gaussians": self.n_gaussians,
            "best_leaf": self.best_leaf,
            "score": self.score,
            "relevancy": self.relevancy,
            "min_relevancy": self.min_relevancy,
            "leaves": [int(x) for x in self.leaves],
        }
        if self.context is not None:
            out.update(self.geometry_json())
        if ids:
            out["gaussian_ids"] = [int(x) for x in self.gaussian_ids]
        return {**out, **self.text_side}


def make_selection(
    text: str, ts: TextSelection, text_side: dict[str, Any], context: SelectionContext | None
) -> Selection:
    """The :class:`Selection` of a :class:`TextSelection`."""
    ids = ts.mask.nonzero().flatten().cpu().numpy().astype(np.int64)
    if context is not None and context.leaf_ind.shape[0] != ts.mask.shape[0]:
        raise DataError(None, "selection mask and the run's Gaussians differ in length")
    return Selection(
        text=text,
        found=ts.found,
        gaussian_ids=ids,
        leaves=ts.leaves.cpu().numpy().astype(np.int64),
        best_leaf=ts.best_leaf,
        score=ts.score,
        relevancy=ts.relevancy,
        reason=ts.reason,
        min_relevancy=ts.min_relevancy,
        text_side=dict(text_side),
        context=context,
    )


__all__ = [
    "ObjectGeometry",
    "Selection",
    "SelectionContext",
    "TextSelection",
    "make_selection",
    "resolve_camera",
    "select_for_text",
]
