"""Stage 3: 3D-2D association and language binding, training-free (METHOD §5).

For every training view the leaves of the fine codebook are matched to the view's pseudo masks
(rebuilt from the final continuous features, as the code's ``construct_pseudo_ins_feat`` does for
stage 3, or those of the fine-stage construction) by the joint score
``IoU * (1 - L1 feature distance)`` (accepted above 0.2); the language feature of the matched
mask is collected per leaf and view, and the views are fused per leaf by the mean (OpenGaussian)
or by cosine-softmax attention around the mean (OpenInsGaussian, the default).

Two association modes give each leaf's silhouette and mean feature in a view:

* ``one_pass`` (default): ONE render of the view with per-pixel top-contributor ids; the id of a
  pixel's top Gaussian is mapped to that Gaussian's leaf, so the leaf silhouette is the set of
  pixels the leaf dominates where the render's alpha exceeds 0.8 (as the per-leaf silhouette),
  and its mean is taken over the continuous feature map of the same render
  (:func:`openinsgaussian.instances.association.associate_view`).
* ``per_leaf``: the public code's way, every leaf with at least 10 visible Gaussians rendered
  alone, silhouette ``alpha > 0.8``
  (:func:`openinsgaussian.instances.association.association_score`).

They differ where leaves overlap on screen: the one-pass silhouette holds only the visible part of
a leaf (a leaf behind another one loses the occluded pixels, and where two leaves blend the pixel
goes to the larger weight), while a per-leaf render also counts the pixels that the leaf covers
behind others, and its alpha comes from the leaf alone. Leaf eligibility differs too: at least 10
dominated pixels (one pass) against at least 10 visible Gaussians (per leaf). Both then use the
same score and threshold.

Occurrence gate (the public code, ``occurrence_gate``): the leaves of coarse cluster r are not
matched in a view where the adaptive-k2 pass of stage 2 flagged r absent (``bClusterOccur``).

Output: ``instances.npz`` (see :mod:`openinsgaussian.run.instances`) written atomically, and
``metrics/stage3.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import __version__
from ..data.camera import Camera
from ..errors import ConfigError, RunError
from ..instances.association import (
    AssociationAccumulator,
    ViewMatch,
    associate_view,
    association_score,
    expand_matches,
    leaf_means_from_maps,
    pick_matches,
)
from ..instances.codebook import TwoLevelCodebook
from ..run.instances import Instances, save_instances
from ..instances.losses import to_render_space
from ..instances.pseudo import ids_to_masks
from ..io import write_json
from ..render import Backend
from ..splats.gaussians import GaussianModel
from .feature_stage import FrozenGeometry
from .inputs import TrainingInputs, ViewInputs
from ..run.directory import RunDir
from ..run.serialize import config_hash
from .stage2 import (
    CODEBOOK_FILE,
    Stage2Config,
    ViewPseudo,
    build_pseudo,
    codebook_views,
    load_pseudo,
    mask_areas,
    pseudo_path,
)

STAGE = "stage3"


@dataclass
class Stage3Config:
    """Association of leaves with masks and per-leaf language aggregation (METHOD §5)."""

    aggregation: Literal["attention", "mean"] = "attention"
    """Per-leaf fusion of the views: cosine-softmax attention (OpenInsGaussian) or the mean
    (OpenGaussian)."""
    association: Literal["one_pass", "per_leaf"] = "one_pass"
    """one_pass: one render with top-contributor ids per view; per_leaf: each leaf alone."""
    score_thresh: float = 0.2
    """A leaf is matched to its best mask when IoU * (1 - L1) exceeds this."""
    min_leaf_pixels: int = 10
    """one_pass: leaves dominating fewer pixels of a view are not matched in it."""
    leaf_silhouette: float = 0.8
    """Alpha above which a pixel belongs to a leaf's silhouette (per_leaf: the leaf rendered alone;
    one_pass: the full render, on pixels the leaf dominates)."""
    min_leaf_gaussians: int = 10
    """per_leaf: leaves with fewer Gaussians visible in the view are skipped."""
    pseudo: Literal["fine_stage", "recompute"] = "recompute"
    """Pseudo masks/features: rebuilt from the final continuous features (the public code), or
    those of the fine-stage construction (saved by stage 2)."""
    occurrence_gate: bool = True
    """The public code: leaves of a coarse cluster are not matched in views where stage 2's
    adaptive-k2 pass flagged that cluster absent. False: every view is tried."""
    save_match_info: bool = True
    """Store the [leaves, views, 3] match table in instances.npz."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_thresh < 1.0:
            raise ConfigError(f"stage3.score_thresh must lie in [0, 1), got {self.score_thresh}")


# ---- per-view association -----------------------------------------------------------------------
@torch.no_grad()
def one_pass_view(
    geom: FrozenGeometry,
    feats: Tensor,
    leaf_ids: Tensor,
    num_leaves: int,
    camera: Camera,
    view: ViewInputs,
    pseudo: ViewPseudo,
    cfg: Stage3Config,
    backend: Backend = "auto",
    allowed: Tensor | None = None,
) -> ViewMatch:
    """Match every leaf in one view from one render with top-contributor ids.

    ``feats [N, 6]`` render-space continuous features, ``leaf_ids [N]`` (``num_leaves`` = none),
    ``allowed [L]`` bool leaves that may match in this view (the occurrence gate; None: all).
    """
    out = geom.render(feats, camera, backend=backend, return_ids=True)
    top = out.top_id  # [H,W] Gaussian index, -1 = none
    assert top is not None
    solid = (top >= 0) & (out.alpha[0] > cfg.leaf_silhouette)  # the faint fringe belongs to no leaf
    leaf_map = torch.where(solid, leaf_ids[top.clamp(min=0)], torch.full_like(top, -1))  # [H,W]
    dev = feats.device
    match = associate_view(
        leaf_map,
        pseudo.kept_ids(view, dev),
        pseudo.feats_with_dummy(dev),
        num_leaves,
        feat_map=out.image,
        min_pixels=cfg.min_leaf_pixels,
        score_thresh=cfg.score_thresh,
    )
    if allowed is None:
        return match
    ok = match.matched & allowed.to(dev)
    zero = torch.zeros_like(match.match_idx)
    return ViewMatch(
        torch.where(ok, match.match_idx, zero),
        torch.where(ok, match.match_score, torch.zeros_like(match.match_score)),
        ok,
    )


class LeafGroups:
    """Gaussian indices of every leaf (sorted once, sliced per leaf)."""

    def __init__(self, leaf_ids: Tensor, num_leaves: int) -> None:
        self.order = torch.argsort(leaf_ids, stable=True)  # [N]
        counts = torch.bincount(leaf_ids, minlength=num_leaves + 1)[: num_leaves + 1]
        self.starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        self.num_leaves = num_leaves

    def members(self, leaf: int) -> Tensor:
        return self.order[self.starts[leaf] : self.starts[leaf + 1]]


@torch.no_grad()
def per_leaf_view(
    geom: FrozenGeometry,
    feats: Tensor,
    leaf_ids: Tensor,
    num_leaves: int,
    camera: Camera,
    view: ViewInputs,
    pseudo: ViewPseudo,
    cfg: Stage3Config,
    backend: Backend = "auto",
    allowed: Tensor | None = None,
    groups: LeafGroups | None = None,
) -> ViewMatch:
    """Match every leaf in one view by rendering each leaf alone (the public code's procedure).

    Leaves with fewer than ``min_leaf_gaussians`` visible Gaussians, or not ``allowed`` (``[L]``
    bool, the occurrence gate), are not rendered and stay unmatched.
    """
    dev = feats.device
    groups = groups or LeafGroups(leaf_ids, num_leaves)
    visible = geom.visible(camera)  # [N]
    vis_count = torch.bincount(leaf_ids[visible], minlength=num_leaves + 1)[:num_leaves]  # [L]
    ok = vis_count >= cfg.min_leaf_gaussians
    if allowed is not None:
        ok &= allowed.to(dev)
    eligible = ok.nonzero().flatten()  # [L']
    if eligible.numel() == 0:
        zeros = torch.zeros(num_leaves, dtype=torch.long, device=dev)
        return ViewMatch(zeros, torch.zeros(num_leaves, device=dev), zeros.bool())
    sils, means = [], []
    for leaf in eligible.tolist():
        idx = groups.members(leaf)
        out = geom.render(feats[idx], camera, backend=backend, subset=idx)
        sil = out.alpha[0] > cfg.leaf_silhouette  # [H,W]
        sils.append(sil)
        means.append(leaf_means_from_maps(out.image[None], sil[None])[0])
    kept = pseudo.kept_ids(view, dev)
    masks = torch.cat(
        [
            torch.zeros(1, *kept.shape, dtype=torch.bool, device=dev),
            ids_to_masks(kept, view.num_masks),
        ]
    )  # [m+1,H,W], dummy row 0
    scores = association_score(
        torch.stack(sils), masks, torch.stack(means), pseudo.feats_with_dummy(dev)
    )
    return expand_matches(pick_matches(scores, cfg.score_thresh), eligible, num_leaves)


# ---- the stage ----------------------------------------------------------------------------------
def gate_occurrence(run: RunDir, cb: TwoLevelCodebook, names: list[str]) -> Tensor:
    """``[V, k1]`` occurrence flags of stage 2 for the training views ``names`` (in order)."""
    cb_file = run.path / CODEBOOK_FILE
    if cb.occurrence is None:
        raise RunError(
            f"{cb_file}: holds no per-view occurrence flags (made by an older version or with "
            "the adaptive-k2 pass off); re-run stage 2 or set stage3.occurrence_gate=false"
        )
    views = codebook_views(cb_file) if cb_file.is_file() else None
    if views is not None and views != list(names):
        raise RunError(
            f"{cb_file}: the occurrence flags were computed on other training views "
            f"({len(views)} then, {len(names)} now); re-run stage 2"
        )
    if cb.occurrence.shape[0] != len(names):
        raise RunError(
            f"{cb_file}: occurrence flags for {cb.occurrence.shape[0]} views, "
            f"{len(names)} training views now; re-run stage 2"
        )
    return cb.occurrence


def stage3_done(run: RunDir) -> bool:
    return run.metrics_path(STAGE).is_file() and run.instances.is_file()


def associate_views(
    model: GaussianModel,
    cb: TwoLevelCodebook,
    inputs: TrainingInputs,
    pseudo: list[ViewPseudo],
    cfg: Stage3Config,
    backend: Backend = "auto",
    occurrence: Tensor | None = None,
) -> tuple[AssociationAccumulator, float]:
    """Run the association over every training view; ``(accumulator, seconds)``.

    ``occurrence [V, k1]`` bool: coarse clusters present per view (the occurrence gate), or None.
    """
    if cb.leaf_ids is None:
        raise RunError("stage 3 needs the fine codebook (run stage 2 first)")
    geom = FrozenGeometry(model)
    feats = to_render_space(model.ins_feat.detach())  # [N,6]
    L = cb.cfg.num_leaves
    leaf_ids = cb.leaf_ids.to(feats.device)
    groups = LeafGroups(leaf_ids, L) if cfg.association == "per_leaf" else None
    acc = AssociationAccumulator(L, inputs.dim, store_views=cfg.aggregation == "attention")
    roots = torch.arange(L, device=feats.device) // cb.cfg.k2  # [L] coarse id of every leaf
    t0 = time.perf_counter()
    for i in tqdm(
        range(len(inputs)),
        desc=f"stage 3 ({cfg.association})",
        unit="view",
        disable=not cfg.progress,
    ):
        args = (
            geom,
            feats,
            leaf_ids,
            L,
            inputs.frames[i].camera,
            inputs.views[i],
            pseudo[i],
            cfg,
            backend,
            None if occurrence is None else occurrence[i].to(feats.device)[roots],
        )
        match = (
            one_pass_view(*args)
            if cfg.association == "one_pass"
            else per_leaf_view(*args, groups=groups)
        )
        acc.add(
            ViewMatch(match.match_idx.cpu(), match.match_score.cpu(), match.matched.cpu()),
            inputs.views[i].lang,
        )
    return acc, time.perf_counter() - t0


def train_stage3(
    model: GaussianModel,
    cb: TwoLevelCodebook,
    inputs: TrainingInputs,
    run_dir: Path | str,
    cfg: Stage3Config,
    *,
    backend: Backend = "auto",
    seed: int = 0,
    stage2: Stage2Config | None = None,
    out: Path | None = None,
    write_metrics: bool = True,
) -> Instances:
    """Associate, aggregate, write ``instances.npz`` (``out``, default ``<run>/instances.npz``)."""
    run = RunDir(run_dir)
    if inputs.dim == 0:
        raise RunError("stage 3: the language features are empty (no masks in the cache)")
    h = config_hash(cfg)
    names = [f.name for f in inputs.frames]
    p_file = pseudo_path(run, "fine")
    t0 = time.perf_counter()
    if cfg.pseudo == "fine_stage" and p_file.is_file():
        pseudo = load_pseudo(p_file, names)
        pseudo_src = "fine_stage"
    else:
        if cfg.pseudo == "fine_stage" and stage2 is None:
            raise RunError(
                f"{p_file}: fine-stage pseudo labels not found; re-run stage 2 or set "
                "stage3.pseudo=recompute"
            )
        pseudo = build_pseudo(
            FrozenGeometry(model),
            model.ins_feat.detach(),
            inputs,
            stage2 or Stage2Config(),
            backend,
            desc="pseudo labels",
        )
        pseudo_src = "recomputed"
    for vp, view in zip(pseudo, inputs.views, strict=False):
        same = vp.feats.shape[0] == view.num_masks and (
            vp.areas is None or torch.equal(vp.areas, mask_areas(view))
        )
        if not same:
            raise RunError(
                f"{p_file}: the fine-stage pseudo labels of view {view.name!r} were built on "
                f"other masks ({vp.feats.shape[0]} then, {view.num_masks} now, or in another "
                "order); re-run stage 2, "
                "or set stage3.pseudo=recompute"
            )
    pseudo_s = time.perf_counter() - t0
    occurrence = gate_occurrence(run, cb, names) if cfg.occurrence_gate else None
    acc, assoc_s = associate_views(model, cb, inputs, pseudo, cfg, backend, occurrence)
    t1 = time.perf_counter()
    leaf_feat = (
        acc.attention_features() if cfg.aggregation == "attention" else acc.mean_features()
    )  # [L,D]
    aggregate_s = time.perf_counter() - t1
    assert cb.leaf_ids is not None and cb.coarse_ids is not None and cb.leaf_centers is not None
    assert cb.coarse_centers is not None and cb.leaf_k is not None
    header: dict[str, Any] = {
        "language_source": inputs.language_source,
        "language_detail": inputs.language_detail,
        "aggregation": cfg.aggregation,
        "association": cfg.association,
        "package_version": __version__,
        "seed": seed,
        "mask_level": inputs.level,
        "views": len(inputs),
        "score_thresh": cfg.score_thresh,
        "pseudo": pseudo_src,
        "occurrence_gate": cfg.occurrence_gate,
        "stage3_config_hash": h,
    }
    inst = Instances(
        leaf_ind=cb.leaf_ids.cpu().numpy(),
        coarse_ind=cb.coarse_ids.cpu().numpy(),
        leaf_feat=leaf_feat.cpu().numpy(),
        leaf_score=acc.leaf_score().cpu().numpy(),
        occu_count=acc.occu_count.cpu().numpy(),
        leaf_centers=cb.leaf_centers.cpu().numpy(),
        coarse_centers=cb.coarse_centers.cpu().numpy(),
        leaf_k=cb.leaf_k.cpu().numpy(),
        k1=cb.cfg.k1,
        k2=cb.cfg.k2,
        header=header,
        match_info=acc.match_table().cpu().numpy() if cfg.save_match_info else None,
    )
    target = Path(out) if out is not None else run.instances
    save_instances(target, inst)
    if write_metrics:
        occ = acc.occu_count
        write_json(
            run.metrics_path(STAGE),
            {
                "stage": STAGE,
                "association": cfg.association,
                "aggregation": cfg.aggregation,
                "views": len(inputs),
                "leaves": cb.cfg.num_leaves,
                "matched_pairs": int(occ.sum()),
                "leaves_matched_1plus": int((occ >= 1).sum()),
                "leaves_matched_2plus": int((occ >= 2).sum()),
                "pseudo": pseudo_src,
                "occurrence_gate": cfg.occurrence_gate,
                "root_view_pairs_gated": None
                if occurrence is None
                else int((~occurrence).sum()),
                "pseudo_seconds": round(pseudo_s, 3),
                "association_seconds": round(assoc_s, 3),
                "aggregation_seconds": round(aggregate_s, 4),
                "instances": str(target),
                "language_source": inputs.language_source,
                "seed": seed,
                "config_hash": h,
                "package_version": __version__,
                "device": str(model.device),
                "backend": backend,
            },
        )
    return inst
