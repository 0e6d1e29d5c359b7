"""Loading a finished run as typed objects: its config, scene, newest Gaussians and instances.

The query layer, the evaluation protocols and the library face (:func:`openinsgaussian.open_run`)
start from :func:`load_run`. It sits in ``train/`` because the saved config is a
:class:`~openinsgaussian.train.pipeline.PipelineConfig`; the files themselves are located through
:mod:`openinsgaussian.run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.scene import Frame, Scene
from ..errors import DataError, RunError
from ..run.checkpoints import latest_model_state
from ..run.directory import RunDir
from ..run.instances import Instances, load_instances
from ..splats.gaussians import GaussianModel
from .pipeline import PipelineConfig, read_pipeline_config
from .stage0 import prepare_frames


@dataclass
class LoadedRun:
    """Everything a finished run provides to the query and evaluation commands."""

    run: RunDir
    config: PipelineConfig
    scene: Scene
    model: GaussianModel  # newest Gaussians (on the device given to load_run)
    instances: Instances

    @property
    def eval_frames(self) -> list[Frame]:
        """Test frames (train frames when there are none) at the training resolution."""
        return prepare_frames(self.scene.test_frames or self.scene.train_frames, self.config.stage0)

    @property
    def frames(self) -> list[Frame]:
        """Train then test frames at the training resolution."""
        return prepare_frames(self.scene.train_frames + self.scene.test_frames, self.config.stage0)


def load_scene_of_run(rd: RunDir, cfg: PipelineConfig) -> Scene:
    """The scene folder named in ``config.yml``, read as training read it (same undistortion)."""
    from ..data.load import load_scene

    data = rd.read_config().get("data")
    if not data:
        raise RunError(f"{rd.config_path}: no 'data' entry naming the scene folder")
    return load_scene(Path(data), undistort=cfg.undistort, progress=False)


def load_run(run: Path | str, device: torch.device | str = "cpu") -> LoadedRun:
    """Config, scene, newest model and ``instances.npz`` of a finished run.

    Raises:
        RunError: the folder, its config or its checkpoints are missing.
        DataError: ``instances.npz`` is missing, unreadable or does not match the Gaussians.
    """
    rd = RunDir(run)
    if not rd.path.is_dir():
        raise RunError(f"{rd.path}: run directory not found (train one with `openins train`)")
    if not rd.config_path.is_file():
        raise RunError(f"{rd.config_path}: not found; is {rd.path} a run made by `openins train`?")
    cfg = read_pipeline_config(rd)
    scene = load_scene_of_run(rd, cfg)
    _, ck = latest_model_state(rd, map_location=device)
    model = GaussianModel.from_state_dict(ck["model"], device=device)
    for p in model.params.values():
        p.requires_grad_(False)
    inst = load_instances(rd.instances)
    if inst.num_gaussians != len(model):
        raise DataError(
            rd.instances,
            f"holds leaf ids for {inst.num_gaussians} Gaussians but the model has {len(model)}",
            "re-run stage 3",
        )
    return LoadedRun(run=rd, config=cfg, scene=scene, model=model, instances=inst)


__all__ = ["LoadedRun", "load_run", "load_scene_of_run"]
