"""Stage 1: contrastive 6-d instance features on frozen Gaussians (METHOD §4.1).

Geometry and colour are frozen (detached); only ``ins_feat`` trains, with Adam at lr 1e-3. Each
step renders one random training view's features ``(f/|f| + 1)/2`` with one 6-channel call of
the rasterizer, takes the silhouette ``alpha > 0.7`` and the view's masks, and minimises
``L = L_c + lambda * L_s`` (:func:`openinsgaussian.instances.losses.instance_loss`).

Hard-pair switch. The public code keeps only the hardest ~10 % of mask pairs in L_c after the
absolute iteration 35,000, i.e. 5,000 steps into stage 1 for both datasets (stage 1 starts at
30,001). Here the switch is ``Stage1Config.hard_pairs_after``, counted in stage-1 steps: 5,000
for the ScanNet / LeRF presets, and a quarter of the schedule for short (synthetic) schedules,
which is the ScanNet ratio (5k of 20k).

Outputs: ``checkpoints/stage1/``, ``metrics/stage1.json`` (written last: the stage is complete
when it exists) and feature renders ``renders/stage1/<view>.png`` (channels 0-2 | 3-5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ConfigError, RunError
from ..instances.losses import LossForm, instance_loss, to_render_space
from ..io import write_json
from ..render import Backend
from ..splats.gaussians import GaussianModel
from .feature_stage import (
    FeatureTraining,
    FrozenGeometry,
    refuse_unresumed,
    save_feature_renders,
)
from .inputs import TrainingInputs
from ..run.directory import RunDir
from ..run.serialize import config_hash

STAGE = "stage1"


@dataclass
class Stage1Config:
    """Instance-feature learning (defaults: OpenGaussian on ScanNet, METHOD §4.1, §9)."""

    iterations: int = 20_000
    """Optimisation steps, one random training view each (ScanNet 20k, LeRF 10k)."""
    lr: float = 1e-3
    """Adam learning rate of the instance features."""
    adam_eps: float = 1e-15
    """Adam epsilon (the 3DGS optimiser's value)."""
    lambda_s: float = 0.1
    """Weight of the intra-mask smoothing L_s (LeRF ramen: 0.01)."""
    form_s: LossForm = "code"
    """L_s form: "code" (un-squared, per-mask mean) or "paper" (squared)."""
    form_c: LossForm = "code"
    """L_c form: "code" (1/(d^2+1) with rank weights) or "paper" (1/d^2)."""
    hard_pairs_after: int = 5_000
    """Stage-1 step after which L_c keeps only the hardest pairs (code: absolute 35k = 5k into
    stage 1); a step beyond ``iterations`` disables the switch."""
    silhouette: float = 0.7
    """Rendered alpha above which a pixel counts for the mask means."""
    keep_empty_masks: bool = True
    """Keep masks that cover no pixel at the training size (painted over by later masks, or lost
    by the resize) in the losses, as the public code's one-hot does: their mean is the zero
    vector, they count in the L_s average and take part in L_c. False drops them."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    save_renders: int = 3
    """Feature renders to save at the end (evenly spaced training views; 0: none)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or self.lambda_s < 0:
            raise ConfigError("stage1: iterations >= 0, lr > 0 and lambda_s >= 0 are required")
        if not 0.0 <= self.silhouette < 1.0:
            raise ConfigError(f"stage1.silhouette must lie in [0, 1), got {self.silhouette}")


# ---- evaluation ---------------------------------------------------------------------------------
def _view_loss(
    geom: FrozenGeometry,
    f: Tensor,
    inputs: TrainingInputs,
    i: int,
    cfg: Stage1Config,
    step: int,
    backend: Backend,
) -> tuple[Tensor | None, Tensor]:
    """``(loss terms or None when the view has no mask, rendered [6,H,W])`` of view ``i``."""
    out = geom.render(to_render_space(f), inputs.frames[i].camera, backend=backend)
    masks = inputs.views[i].masks(f.device)  # [m,H,W]
    if not cfg.keep_empty_masks:
        masks = masks[masks.flatten(1).any(1)]  # masks lost by the resize play no part
    if masks.shape[0] == 0:
        return None, out.image
    sil = out.alpha[0] > cfg.silhouette  # [H,W]
    terms = instance_loss(
        out.image, masks, sil, step, cfg.lambda_s, cfg.form_s, cfg.form_c, cfg.hard_pairs_after
    )
    return torch.stack([terms.total, terms.separation, terms.cohesion]), out.image


@torch.no_grad()
def instance_loss_over_views(
    model: GaussianModel,
    inputs: TrainingInputs,
    cfg: Stage1Config,
    backend: Backend = "auto",
    step: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Mean stage-1 loss terms over every training view (no hard-pair switch at ``step`` 0)."""
    geom = FrozenGeometry(model)
    f = model.ins_feat.detach()
    rows = []
    for i in tqdm(
        range(len(inputs)), desc="stage 1 loss", disable=not progress, leave=False, unit="view"
    ):
        terms, _ = _view_loss(geom, f, inputs, i, cfg, step, backend)
        if terms is not None:
            rows.append(terms)
    if not rows:
        raise RunError("stage 1: no training view has a mask")
    mean = torch.stack(rows).mean(0)
    return {
        "loss": float(mean[0]),
        "L_c": float(mean[1]),
        "L_s": float(mean[2]),
        "views": len(rows),
    }


# ---- training -----------------------------------------------------------------------------------
def stage1_done(run: RunDir) -> bool:
    """Stage 1 finished (its metrics file is written last)."""
    return run.metrics_path(STAGE).is_file()


def train_stage1(
    model: GaussianModel,
    inputs: TrainingInputs,
    run_dir: Path | str,
    cfg: Stage1Config,
    *,
    backend: Backend = "auto",
    seed: int = 0,
    resume: bool = False,
    stop_at: int | None = None,
) -> GaussianModel:
    """Train (or resume) the instance features of ``model`` in place; returns the model.

    ``model`` is the stage-0 result. ``stop_at`` ends the call after that step (checkpointed)
    without the final metrics, for time-limited jobs; ``resume=True`` continues from the newest
    stage-1 checkpoint.
    """
    run = RunDir(run_dir)
    device = model.device
    h = config_hash(cfg)
    refuse_unresumed(run, STAGE, resume)
    if len(inputs) != len(inputs.views):
        raise RunError("stage 1: one input entry per training view is required")
    run.write_config_section(STAGE, cfg)

    train = FeatureTraining(
        model, run, STAGE, cfg, h, lr=cfg.lr, views=len(inputs), sampler_seed=seed + 101
    )
    geom, opt, sampler = train.geom, train.opt, train.sampler
    feat = train.feat  # [N,6], the only trained tensor

    loop = train.loop(cfg.iterations, desc="stage 1")
    start = loop.resume(train.load, map_location=device) if resume else 0
    ema: dict[str, float] = {}
    skipped = [0]

    def step_fn(step: int) -> dict[str, Any]:
        i = sampler.next()
        terms, _ = _view_loss(geom, feat, inputs, i, cfg, step, backend)
        if terms is None:
            skipped[0] += 1
            return {"loss": ema.get("loss", float("nan")), "skipped": skipped[0]}
        if not torch.isfinite(terms[0]):
            raise RunError(f"stage 1: the loss became {float(terms[0])} at step {step}")
        terms[0].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        for k, v in zip(("loss", "L_c", "L_s"), terms.detach().tolist(), strict=False):
            ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
        return {"loss": ema["loss"], "L_c": ema["L_c"], "L_s": ema["L_s"]}

    seconds, finished = train.train(loop, step_fn, train.state, start, stop_at)
    if not finished:
        return model

    t0 = time.perf_counter()
    final = instance_loss_over_views(model, inputs, cfg, backend, step=0, progress=cfg.progress)
    renders = save_feature_renders(model, inputs, run.render_dir(STAGE), cfg.save_renders, backend)
    write_json(
        run.metrics_path(STAGE),
        {
            "stage": STAGE,
            "iterations": cfg.iterations,
            "train_seconds": round(seconds, 3),
            "eval_seconds": round(time.perf_counter() - t0, 3),
            "final_loss_all_views": final,
            "ema_loss": ema.get("loss"),
            "views_without_masks_skipped": skipped[0],
            "renders": [str(p) for p in renders],
            "seed": seed,
            "config_hash": h,
            "package_version": __version__,
            "device": str(device),
            "backend": backend,
        },
    )
    return model
