"""What the feature stages share: frozen geometry, feature renders, the trained-feature state.

Stages 1-3 never change the geometry of the stage-0 Gaussians: :class:`FrozenGeometry` holds it
detached and renders any per-Gaussian features with it. Stages 1 and 2 train ``ins_feat`` alone;
:class:`FeatureTraining` freezes every other parameter and owns the optimiser and view sampler of
such a stage, their checkpoint payload (refused on resume when the stage config changed) and the
stop-at / run logic. :func:`save_feature_renders` writes the end-of-stage feature images of both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ..data.camera import Camera
from ..errors import ConfigError, RunError
from ..instances.losses import to_render_space
from ..io import save_image
from ..render import Backend, RenderOutput, render
from ..splats.gaussians import GaussianModel
from ..run.checkpoints import list_checkpoints, restore_rng_state, rng_state
from .inputs import TrainingInputs
from .loop import TrainLoop, ViewSampler
from ..run.directory import RunDir


# ---- frozen geometry shared by stages 1-3 ----------------------------------------------------
class FrozenGeometry:
    """Detached geometry of a Gaussian model (the part stages 1-3 never change)."""

    def __init__(self, model: GaussianModel) -> None:
        with torch.no_grad():
            self.means = model.means.detach()  # [N,3]
            self.quats = model.quats.detach()  # [N,4]
            self.scales = model.scales.detach()  # [N,3]
            self.opacities = model.opacities.detach()  # [N]

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @torch.no_grad()
    def visible(self, camera: Camera) -> Tensor:
        """``[N]`` bool: Gaussians with a non-zero screen radius in ``camera`` (the code's
        ``radii > 0`` visibility filter)."""
        from ..render.projection import visible_mask

        return visible_mask(self.means, self.quats, self.scales, camera)

    def render(
        self,
        feats: Tensor,
        camera: Camera,
        *,
        backend: Backend = "auto",
        subset: Tensor | None = None,
        scale_factor: float | None = None,
        return_ids: bool = False,
    ) -> RenderOutput:
        """Composite per-Gaussian ``feats [N, C]`` (black background).

        ``subset`` ``[n]`` int64 indices render only those Gaussians (``feats`` then ``[n, C]``;
        ``top_id`` then indexes the subset); ``scale_factor`` multiplies every scale.
        """
        means, quats, scales, opac = self.means, self.quats, self.scales, self.opacities
        if subset is not None:
            means, quats, scales, opac = means[subset], quats[subset], scales[subset], opac[subset]
        if scale_factor is not None:
            scales = scales * scale_factor
        return render(
            means, quats, scales, opac, feats, camera, backend=backend, return_ids=return_ids
        )


# ---- feature renders ----------------------------------------------------------------------------
def feature_image(feat_map: Tensor) -> np.ndarray:
    """``[6,H,W]`` render-space features -> ``[H, 2W, 3]`` uint8: channels 0-2 | 3-5."""
    img = torch.cat([feat_map[:3], feat_map[3:6]], dim=2).clamp(0, 1)  # [3,H,2W]
    return (img.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "view"


@torch.no_grad()
def save_feature_renders(
    model: GaussianModel,
    inputs: TrainingInputs,
    folder: Path,
    count: int,
    backend: Backend = "auto",
    feats: Tensor | None = None,
) -> list[Path]:
    """Render ``count`` evenly spaced training views' features to ``folder/<view>.png``."""
    if count <= 0 or len(inputs) == 0:
        return []
    geom = FrozenGeometry(model)
    f = to_render_space(model.ins_feat.detach() if feats is None else feats)
    picks = sorted(
        {int(round(x)) for x in np.linspace(0, len(inputs) - 1, min(count, len(inputs)))}
    )
    paths = []
    for i in picks:
        img = geom.render(f, inputs.frames[i].camera, backend=backend).image
        p = folder / f"{_safe(inputs.frames[i].name)}.png"
        save_image(p, feature_image(img))
        paths.append(p)
    return paths


# ---- training of ins_feat alone (stages 1 and 2) ------------------------------------------------
class FeatureStageConfig(Protocol):
    """The optimiser and checkpoint settings every feature-training stage config has."""

    adam_eps: float
    checkpoint_every: int
    keep_checkpoints: int
    progress: bool


def _label(stage: str) -> str:
    """``stage1`` -> ``stage-1`` (as messages name a stage)."""
    return stage.replace("stage", "stage-", 1)


def refuse_unresumed(run: RunDir, stage: str, resume: bool) -> None:
    """A stage started afresh must not mix its checkpoints with those of an earlier start."""
    if not resume and list_checkpoints(run, stage):
        raise RunError(
            f"{run.stage_checkpoints(stage)} already holds {_label(stage)} checkpoints; resume the "
            "run (--resume) or choose a new run directory"
        )


class FeatureTraining:
    """The trained state of a stage that learns ``ins_feat`` alone on frozen geometry.

    Construction freezes every other parameter of ``model`` and creates the detached geometry
    (``geom``), one Adam over the features (``opt``) and the stage's view sampler. :meth:`state`
    and :meth:`load` are the checkpoint payload and its inverse; the payload carries the stage
    config hash and :meth:`load` refuses a checkpoint of another config, because the resumed run
    would silently continue a different schedule.
    """

    def __init__(
        self,
        model: GaussianModel,
        run: RunDir,
        stage: str,
        cfg: FeatureStageConfig,
        config_hash: str,
        *,
        lr: float,
        views: int,
        sampler_seed: int,
        generators: dict[str, torch.Generator] | None = None,
    ) -> None:
        for name, p in model.params.items():
            p.requires_grad_(name == "ins_feat")
        self.model = model
        self.run = run
        self.stage = stage
        self.cfg = cfg
        self.config_hash = config_hash
        self.generators = generators  # named generators checkpointed with the global RNG
        self.geom = FrozenGeometry(model)
        self.feat = model.params["ins_feat"]  # [N,6], the only trained tensor
        self.opt = torch.optim.Adam([self.feat], lr=lr, eps=cfg.adam_eps)
        self.sampler = ViewSampler(views, seed=sampler_seed)

    def state(self, **extra: Any) -> dict[str, Any]:
        """Checkpoint payload: model, optimiser, sampler, RNG states, ``extra``, config hash."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(self.generators),
            **extra,
            "config_hash": self.config_hash,
        }

    def load(self, ck: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved (the stage restores its ``extra`` entries itself)."""
        if ck.get("config_hash") != self.config_hash:
            raise ConfigError(
                f"{self.run.stage_checkpoints(self.stage)}: checkpoint config hash "
                f"{ck.get('config_hash')} does not match the current {_label(self.stage)} config "
                f"({self.config_hash})"
            )
        with torch.no_grad():
            self.feat.copy_(ck["model"]["params"]["ins_feat"].to(self.model.device))
        self.opt.load_state_dict(ck["optimizer"])
        self.sampler.load_state_dict(ck["sampler"])
        restore_rng_state(ck["rng"], self.generators)

    def loop(self, total_steps: int, desc: str) -> TrainLoop:
        """The stage's :class:`TrainLoop` with the config's checkpoint and progress settings."""
        return TrainLoop(
            self.run,
            self.stage,
            total_steps,
            checkpoint_every=self.cfg.checkpoint_every,
            keep_checkpoints=self.cfg.keep_checkpoints,
            progress=self.cfg.progress,
            desc=desc,
        )

    def train(
        self,
        loop: TrainLoop,
        step_fn: Callable[[int], dict[str, Any]],
        get_state: Callable[[], dict[str, Any]],
        start: int,
        stop_at: int | None,
    ) -> tuple[float, bool]:
        """Steps ``start+1 .. min(stop_at, total)``; ``(training seconds, all steps done)``.

        ``stop_at`` ends the run early (checkpointed there) for time-limited jobs; afterwards the
        features no longer require gradients.
        """
        total = loop.total_steps
        end = total if stop_at is None else min(stop_at, total)
        loop.total_steps = end
        seconds = (
            loop.run(step_fn, get_state, start_step=start) if end > start else loop.elapsed_before
        )
        self.feat.requires_grad_(False)
        return seconds, end >= total
