"""Stage 2: the two-level instance codebook with pseudo-feature supervision (METHOD §4.2).

One loop of ``coarse_iterations + fine_iterations`` steps over random training views:

* coarse (2.1), steps ``1..Tc``: k-means of ``[f, w*xyz]`` into k1 clusters, re-assigned when
  ``step % coarse_every == 1``; the quantised features ``f + sg(c - f)`` (straight-through) are
  rendered with a probabilistic rescale (p = 0.5: all scales times one U(0,1) factor) and pulled
  towards the view's pseudo-feature map with an L1 loss on pixels with alpha > 0.7; Adam lr 1e-4.
* fine (2.2), steps ``Tc+1..Tc+Tf``: pseudo labels are rebuilt from the current features, the
  adaptive leaf count per coarse cluster is measured once, and one coarse cluster is active at a
  time (advancing every ``root_every`` steps); its Gaussians are k-means'd into its leaves every
  ``fine_every`` steps and rendered alone, with an MSE loss against the pseudo map inside the
  cluster's silhouette; views where the cluster is not visible are skipped; Adam lr 1e-3.
  Occurrence gate (the public code, ``occurrence_gate``): a view gives root r a loss only when the
  adaptive-k2 pass flagged r present in it (``bClusterOccur``) and r's render reaches alpha > 0.8
  somewhere; without the gate any pixel above the 0.7 silhouette suffices.

The math (k-means, quantisation, pseudo labels, losses, object counting) is in
:mod:`openinsgaussian.instances`; this module drives it. Short schedules scale the cadences
through ``codebook.coarse_every`` / ``fine_every`` / ``root_every``; every coarse cluster must
get at least one active window, so ``fine_iterations >= k1 * root_every`` is required.

Outputs: ``checkpoints/stage2/`` (plus the pseudo labels of each phase, ``pseudo_coarse.pt`` and
``pseudo_fine.pt``, which stage 3 reuses), ``codebook.npz`` (centres and ids of both levels),
``renders/stage2/`` (quantised leaf features) and ``metrics/stage2.json``, written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ConfigError, DataError, RunError
from ..instances.codebook import CodebookConfig, TwoLevelCodebook
from ..instances.losses import pseudo_feature_loss, to_render_space
from ..instances.pseudo import count_cluster_objects, ids_to_masks, pseudo_features
from ..io import save_npz, save_torch, write_json
from ..render import Backend
from ..splats.gaussians import GaussianModel
from .feature_stage import (
    FeatureTraining,
    FrozenGeometry,
    refuse_unresumed,
    save_feature_renders,
)
from .inputs import TrainingInputs, ViewInputs
from ..run.directory import RunDir
from ..run.serialize import config_hash

STAGE = "stage2"
CODEBOOK_FILE = "codebook.npz"


@dataclass
class Stage2Config:
    """Two-level codebook training (defaults: OpenGaussian on ScanNet, METHOD §4.2, §9)."""

    coarse_iterations: int = 20_000
    """Steps of the coarse level 2.1 (ScanNet 20k, LeRF 10k)."""
    fine_iterations: int = 20_000
    """Steps of the fine level 2.2 (20k); must be >= k1 * root_every."""
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    """k1, k2, position weight and the k-means cadences."""
    lr_coarse: float = 1e-4
    """Adam learning rate of the features during the coarse level."""
    lr_fine: float = 1e-3
    """Adam learning rate of the features during the fine level."""
    adam_eps: float = 1e-15
    """Adam epsilon."""
    rescale_prob: float = 0.5
    """Probability of the random rescale (all scales times one U(0,1) factor) of a render."""
    silhouette: float = 0.7
    """Rendered alpha above which a pixel counts in L_p."""
    pseudo_var_thresh: float = 0.006
    """Pseudo labels: masks whose mean per-channel variance exceeds this are discarded ..."""
    pseudo_keep_large: float = 0.8
    """... unless larger than this fraction of the view's largest mask (background)."""
    adaptive_k2: bool = True
    """Measure the leaves per coarse cluster (min(n_c + 1, k2)); False: k2 leaves everywhere."""
    k2_max_scale: float = 0.5
    """Adaptive k2: only Gaussians whose scales are all below this render the cluster."""
    k2_min_gaussians: int = 100
    """Adaptive k2: clusters with fewer such Gaussians are not counted."""
    k2_visible_alpha: float = 0.8
    """Adaptive k2: a cluster is visible in a view when its alpha exceeds this somewhere (also
    the fine-stage visibility test of the occurrence gate)."""
    occurrence_gate: bool = True
    """Fine stage as the public code: root r gets a loss in a view only when the adaptive-k2 pass
    flagged it present there (>= k2_min_gaussians visible small Gaussians, alpha above
    k2_visible_alpha, at least one matching pseudo mask) and its render exceeds
    k2_visible_alpha; False: any pixel above ``silhouette`` suffices."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    save_renders: int = 3
    """Quantised-feature renders to save at the end (0: none)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        cb = self.codebook
        if self.coarse_iterations < 1 or self.fine_iterations < 1:
            raise ConfigError("stage2: coarse_iterations and fine_iterations must be >= 1")
        if self.fine_iterations < cb.k1 * cb.root_every:
            raise ConfigError(
                f"stage2.fine_iterations ({self.fine_iterations}) < k1 * root_every "
                f"({cb.k1} * {cb.root_every}): some coarse clusters would never get leaves; raise "
                "fine_iterations or lower root_every"
            )
        if cb.root_every < cb.fine_every:
            raise ConfigError(
                f"stage2: root_every ({cb.root_every}) must be >= fine_every ({cb.fine_every}) so "
                "that every active cluster is re-assigned at least once"
            )
        if not 0.0 <= self.rescale_prob <= 1.0:
            raise ConfigError(f"stage2.rescale_prob must lie in [0, 1], got {self.rescale_prob}")


# ---- pseudo labels ------------------------------------------------------------------------------
@dataclass
class ViewPseudo:
    """Pseudo labels of one view in compact form (the id map comes from the view's inputs)."""

    feats: Tensor  # [m, 6] kept mask means, zero rows for discarded masks
    valid: Tensor  # [m] bool
    areas: Tensor | None = None  # [m] int64 pixels per mask when built (identifies the mask set)

    def kept_ids(self, view: ViewInputs, device: torch.device | str) -> Tensor:
        """``[H, W]`` int64: mask id where the mask is kept, else 0."""
        ids = view.ids(device)
        keep = torch.cat(
            [torch.zeros(1, dtype=torch.bool, device=ids.device), self.valid.to(ids.device)]
        )
        return torch.where(keep[ids], ids, torch.zeros_like(ids))

    def feats_with_dummy(self, device: torch.device | str) -> Tensor:
        """``[m+1, 6]`` with the zero row of the dummy mask 0 first."""
        f = self.feats.to(device)
        return torch.cat([f.new_zeros(1, f.shape[1]), f], 0)

    def pseudo_map(self, view: ViewInputs, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """``(pseudo map [6, H, W], kept id map [H, W])``."""
        kept = self.kept_ids(view, device)
        return self.feats_with_dummy(device)[kept].permute(2, 0, 1).contiguous(), kept


@torch.no_grad()
def build_pseudo(
    geom: FrozenGeometry,
    f: Tensor,
    inputs: TrainingInputs,
    cfg: Stage2Config,
    backend: Backend = "auto",
    desc: str = "pseudo labels",
) -> list[ViewPseudo]:
    """Render every view's continuous features and keep each mask's mean where consistent."""
    feats = to_render_space(f.detach())
    out: list[ViewPseudo] = []
    for i in tqdm(
        range(len(inputs)), desc=desc, unit="view", disable=not cfg.progress, leave=False
    ):
        img = geom.render(feats, inputs.frames[i].camera, backend=backend).image  # [6,H,W]
        pl = pseudo_features(
            img, inputs.views[i].masks(f.device), cfg.pseudo_var_thresh, cfg.pseudo_keep_large
        )
        out.append(ViewPseudo(pl.mask_feats.cpu(), pl.valid.cpu(), mask_areas(inputs.views[i])))
    return out


def mask_areas(view: ViewInputs) -> Tensor:
    """``[m]`` int64 pixels of each mask of a view."""
    return torch.bincount(view.ids().flatten(), minlength=view.num_masks + 1)[
        1 : view.num_masks + 1
    ]


def pseudo_path(run: RunDir, phase: Literal["coarse", "fine"]) -> Path:
    return run.stage_checkpoints(STAGE) / f"pseudo_{phase}.pt"


def save_pseudo(path: Path, names: list[str], pseudo: list[ViewPseudo]) -> None:
    save_torch(
        path,
        {
            "names": list(names),
            "feats": [p.feats for p in pseudo],
            "valid": [p.valid for p in pseudo],
            "areas": [p.areas for p in pseudo],
        },
    )


def load_pseudo(path: Path, names: list[str]) -> list[ViewPseudo]:
    """Pseudo labels saved by :func:`save_pseudo` for the views ``names`` (same order)."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure means "rebuild"
        raise RunError(f"{path}: cannot read pseudo labels ({type(e).__name__}: {e})") from None
    if list(d.get("names", [])) != list(names):
        raise RunError(f"{path}: pseudo labels were built for other training views; re-run stage 2")
    areas = d.get("areas") or [None] * len(d["feats"])
    return [ViewPseudo(f, v, a) for f, v, a in zip(d["feats"], d["valid"], areas, strict=False)]


@torch.no_grad()
def count_objects(
    geom: FrozenGeometry,
    f: Tensor,
    coarse_ids: Tensor,
    inputs: TrainingInputs,
    pseudo: list[ViewPseudo],
    cfg: Stage2Config,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor]:
    """The adaptive-k2 pass over every view (METHOD §4.2 "Adaptive k2").

    For each view and coarse cluster c: the Gaussians of c that are visible in the view (screen
    radius > 0) and small (all scales < ``k2_max_scale``); fewer than ``k2_min_gaussians`` ->
    absent; else render them, absent when the alpha never exceeds ``k2_visible_alpha``; else count
    the matching pseudo masks (:func:`count_cluster_objects`), absent when none matches.

    Returns:
        ``(counts [k1] int64, occurrence [V, k1] bool)``: the maximum count over views (starting
        at 1, as the code) and where each cluster was present (the code's ``bClusterOccur``).
    """
    k1 = cfg.codebook.k1
    dev = f.device
    small = (geom.scales < cfg.k2_max_scale).all(1)  # [N]
    feats = to_render_space(f.detach())
    members = [((coarse_ids == c) & small) for c in range(k1)]  # k1 x [N] bool
    counts = torch.ones(k1, dtype=torch.long)
    occurrence = torch.zeros(len(inputs), k1, dtype=torch.bool)
    for i in tqdm(
        range(len(inputs)), desc="adaptive k2", unit="view", disable=not cfg.progress, leave=False
    ):
        pmap, kept = pseudo[i].pseudo_map(inputs.views[i], dev)
        pmasks = ids_to_masks(kept, inputs.views[i].num_masks)  # [m,H,W]
        cam = inputs.frames[i].camera
        visible = geom.visible(cam)  # [N]
        for c in range(k1):
            idx = (members[c] & visible).nonzero().flatten()
            if idx.numel() < cfg.k2_min_gaussians:
                continue
            out = geom.render(feats[idx], cam, backend=backend, subset=idx)
            if float(out.alpha.max()) <= cfg.k2_visible_alpha:
                continue
            n = count_cluster_objects(pmasks, pmap, out.image, out.alpha[0])
            if n == 0:  # no pseudo mask matches the cluster here: flagged absent
                continue
            occurrence[i, c] = True
            counts[c] = max(int(counts[c]), n)
    return counts, occurrence


# ---- codebook file ------------------------------------------------------------------------------
OPTIONAL_STATE = ("occurrence",)  # codebook state a run may lack (made without the k2 pass)


def save_codebook(path: Path, cb: TwoLevelCodebook, views: list[str] | None = None) -> None:
    """Centres and ids of both levels as numpy arrays (``codebook.npz``), with the per-view
    occurrence flags and the names of the views they refer to."""
    st = cb.state_dict()
    if any(v is None for k, v in st.items() if k not in OPTIONAL_STATE):
        raise RunError("stage 2: the codebook is incomplete (the fine level never ran)")
    extra = {}
    if views is not None:
        extra["views"] = np.asarray(list(views), dtype=np.str_)
    save_npz(
        path,
        **{k: v.detach().cpu().numpy() for k, v in st.items() if v is not None},
        k1=np.asarray(cb.cfg.k1),
        k2=np.asarray(cb.cfg.k2),
        **extra,
    )


def codebook_views(path: Path) -> list[str] | None:
    """Names of the training views the occurrence flags of ``codebook.npz`` refer to."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return [str(v) for v in z["views"]] if "views" in z.files else None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot read codebook ({e})", "re-run stage 2") from None


def load_codebook(
    path: Path, cfg: CodebookConfig, device: torch.device | str = "cpu"
) -> TwoLevelCodebook:
    """Inverse of :func:`save_codebook` (checks k1 / k2 against ``cfg``)."""
    if not path.is_file():
        raise RunError(f"{path}: codebook not found; run stage 2 first")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot read codebook ({e})", "re-run stage 2") from None
    if int(data.get("k1", -1)) != cfg.k1 or int(data.get("k2", -1)) != cfg.k2:
        raise DataError(
            path,
            f"codebook has k1={data.get('k1')}, k2={data.get('k2')} but the config says "
            f"k1={cfg.k1}, k2={cfg.k2}",
        )
    cb = TwoLevelCodebook(cfg)
    keys = ("coarse_centers", "coarse_ids", "leaf_centers", "leaf_ids", "leaf_k")
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(path, f"codebook lacks {', '.join(missing)}", "re-run stage 2")
    state = {k: torch.from_numpy(data[k]).to(device) for k in keys}
    if "occurrence" in data:
        state["occurrence"] = torch.from_numpy(data["occurrence"])
    cb.load_state_dict(state)
    return cb


def stage2_done(run: RunDir) -> bool:
    return run.metrics_path(STAGE).is_file() and (run.path / CODEBOOK_FILE).is_file()


# ---- training -----------------------------------------------------------------------------------
def train_stage2(
    model: GaussianModel,
    inputs: TrainingInputs,
    run_dir: Path | str,
    cfg: Stage2Config,
    *,
    backend: Backend = "auto",
    seed: int = 0,
    resume: bool = False,
    stop_at: int | None = None,
) -> tuple[GaussianModel, TwoLevelCodebook]:
    """Train (or resume) both codebook levels on ``model`` (the stage-1 result, in place)."""
    run = RunDir(run_dir)
    device = model.device
    h = config_hash(cfg)
    refuse_unresumed(run, STAGE, resume)
    run.write_config_section(STAGE, cfg)
    n_c, n_f = cfg.coarse_iterations, cfg.fine_iterations
    names = [f.name for f in inputs.frames]

    rescale_gen = torch.Generator().manual_seed(seed + 203)
    train = FeatureTraining(
        model,
        run,
        STAGE,
        cfg,
        h,
        lr=cfg.lr_coarse,
        views=len(inputs),
        sampler_seed=seed + 202,
        generators={"rescale": rescale_gen},
    )
    geom, opt, sampler = train.geom, train.opt, train.sampler
    feat = train.feat  # [N,6]
    cb = TwoLevelCodebook(cfg.codebook)
    pseudo: dict[str, list[ViewPseudo] | None] = {"coarse": None, "fine": None}
    timings = {"pseudo_coarse_s": 0.0, "pseudo_fine_s": 0.0, "adaptive_k2_s": 0.0}

    def get_state() -> dict[str, Any]:
        return train.state(codebook=cb.state_dict(), timings=dict(timings))

    def load_state(ck: dict[str, Any]) -> None:
        train.load(ck)
        cb.load_state_dict(ck["codebook"])
        timings.update(ck.get("timings", {}))

    loop = train.loop(n_c + n_f, desc="stage 2")
    start = loop.resume(load_state, map_location=device) if resume else 0
    if 1 <= start < n_c:
        pseudo["coarse"] = load_pseudo(pseudo_path(run, "coarse"), names)
    elif start > n_c:
        pseudo["fine"] = load_pseudo(pseudo_path(run, "fine"), names)

    def begin_phase(phase: Literal["coarse", "fine"]) -> None:
        t0 = time.perf_counter()
        labels = build_pseudo(geom, feat, inputs, cfg, backend, desc=f"pseudo labels ({phase})")
        save_pseudo(pseudo_path(run, phase), names, labels)
        pseudo[phase] = labels
        timings[f"pseudo_{phase}_s"] = time.perf_counter() - t0
        if phase == "fine":
            t0 = time.perf_counter()
            counts = occurrence = None
            if cfg.adaptive_k2 or cfg.occurrence_gate:
                counts, occurrence = count_objects(
                    geom, feat, cb.coarse_ids, inputs, labels, cfg, backend  # type: ignore[arg-type]
                )
            cb.init_fine(feat.detach(), counts if cfg.adaptive_k2 else None, occurrence)
            timings["adaptive_k2_s"] = time.perf_counter() - t0

    ema: dict[str, float] = {}

    def rescale() -> float | None:
        if float(torch.rand((), generator=rescale_gen)) < cfg.rescale_prob:
            return float(torch.rand((), generator=rescale_gen))
        return None

    def step_fn(step: int) -> dict[str, Any]:
        coarse = step <= n_c
        phase: Literal["coarse", "fine"] = "coarse" if coarse else "fine"
        if pseudo[phase] is None:
            begin_phase(phase)
        for g in opt.param_groups:
            g["lr"] = cfg.lr_coarse if coarse else cfg.lr_fine
        i = sampler.next()
        view, cam = inputs.views[i], inputs.frames[i].camera
        pmap, _ = pseudo[phase][i].pseudo_map(view, device)  # type: ignore[index]
        factor = rescale()
        if coarse:
            cb.coarse_step(feat, geom.means, step, 0)
            fq = cb.quantize_coarse(feat)  # [N,6] straight-through
            out = geom.render(to_render_space(fq), cam, backend=backend, scale_factor=factor)
            kind: Literal["l1", "mse"] = "l1"
            root = -1
        else:
            root = cb.fine_step(feat, step - n_c, 0)
            members = (cb.coarse_ids == root).nonzero().flatten()  # type: ignore[union-attr]
            gated = cfg.occurrence_gate and not bool(cb.occurrence[i, root])  # type: ignore[index]
            if members.numel() == 0 or gated:
                timings["fine_steps_without_loss"] = timings.get("fine_steps_without_loss", 0) + 1
                return {"phase": phase, "root": root, "loss": ema.get(phase, float("nan"))}
            fq = cb.quantize_fine(feat)[members]  # [n_r,6]
            out = geom.render(
                to_render_space(fq), cam, backend=backend, subset=members, scale_factor=factor
            )
            kind = "mse"
        sil = out.alpha[0] > cfg.silhouette  # [H,W]
        if not coarse and cfg.occurrence_gate:  # the code: the root is visible when alpha > 0.8
            seen = float(out.alpha.detach().max()) > cfg.k2_visible_alpha
        else:
            seen = bool(sil.any())
        if not seen:  # nothing of it visible in this view: no update
            key = "coarse_steps_without_loss" if coarse else "fine_steps_without_loss"
            timings[key] = timings.get(key, 0) + 1
            return {"phase": phase, "root": root, "loss": ema.get(phase, float("nan"))}
        loss = pseudo_feature_loss(out.image, pmap, sil, kind)
        if not torch.isfinite(loss):
            raise RunError(f"stage 2: the loss became {float(loss)} at step {step}")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        v = float(loss.detach())
        ema[phase] = v if phase not in ema else 0.95 * ema[phase] + 0.05 * v
        return {"phase": phase, "root": root, "loss": ema[phase]}

    seconds, finished = train.train(loop, step_fn, get_state, start, stop_at)
    if not finished:
        return model, cb

    save_codebook(run.path / CODEBOOK_FILE, cb, names)
    assert cb.leaf_ids is not None and cb.leaf_k is not None
    sentinel = int((cb.leaf_ids == cfg.codebook.num_leaves).sum())
    renders = save_feature_renders(
        model,
        inputs,
        run.render_dir(STAGE),
        cfg.save_renders,
        backend,
        feats=cb.quantize_fine(feat.detach()),
    )
    write_json(
        run.metrics_path(STAGE),
        {
            "stage": STAGE,
            "coarse_iterations": n_c,
            "fine_iterations": n_f,
            "train_seconds": round(seconds, 3),
            **{k: round(v, 3) for k, v in timings.items() if k.endswith("_s")},
            "coarse_steps_without_loss": int(timings.get("coarse_steps_without_loss", 0)),
            "fine_steps_without_loss": int(timings.get("fine_steps_without_loss", 0)),
            "empty_clusters": cfg.codebook.empty_clusters,
            "occurrence_gate": cfg.occurrence_gate,
            "coarse_used": int(torch.unique(cb.coarse_ids).numel()),  # type: ignore[arg-type]
            "views_with_occurrence": None
            if cb.occurrence is None
            else [int(x) for x in cb.occurrence.sum(0).tolist()],
            "k1": cfg.codebook.k1,
            "k2": cfg.codebook.k2,
            "leaf_k": cb.leaf_k.tolist(),
            "leaves_used": int(
                torch.unique(cb.leaf_ids[cb.leaf_ids < cfg.codebook.num_leaves]).numel()
            ),
            "never_assigned_gaussians": sentinel,
            "ema_loss_coarse": ema.get("coarse"),
            "ema_loss_fine": ema.get("fine"),
            "renders": [str(p) for p in renders],
            "seed": seed,
            "config_hash": h,
            "package_version": __version__,
            "device": str(device),
            "backend": backend,
        },
    )
    return model, cb
