"""Fixtures of the stage tests: one CPU thread; the tiny room trained through stage 0 (and 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from openinsgaussian.data.load import load_scene
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.splats.gaussians import GaussianModel
from openinsgaussian.train.inputs import InputsConfig, TrainingInputs, load_training_inputs
from openinsgaussian.run import apply_overrides
from openinsgaussian.train.stage0 import prepare_frames, stage0_preset, train_stage0
from openinsgaussian.train.stage1 import Stage1Config, train_stage1

TrainedRoom = tuple[Path, GaussianModel, TrainingInputs]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: the faster setting for tiny images on a busy machine, and one fixed
    thread count for the resume tests, which compare runs bitwise.

    Modules that compare runs use it for all their tests:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def trained_room(tmp_path_factory) -> Callable[..., TrainedRoom]:
    """Factory: ``(run dir, model, training inputs)`` of the tiny synthetic room after
    ``stage0_iterations`` stage-0 steps and, when ``stage1_iterations`` > 0, that many stage-1 steps
    (lr 1e-2, hard pairs after 40) in the same run."""

    def make(
        stage0_iterations: int, inputs_cfg: InputsConfig, stage1_iterations: int = 0
    ) -> TrainedRoom:
        root = generate_room(
            SynthConfig(out=tmp_path_factory.mktemp("data"), preset="tiny", seed=0, progress=False)
        )
        scene = load_scene(root)
        s0 = apply_overrides(
            stage0_preset("synthetic"),
            {"iterations": stage0_iterations, "progress": False, "eval": False},
        )
        run = tmp_path_factory.mktemp("run")
        model = train_stage0(scene, run, s0)
        inputs = load_training_inputs(
            scene, prepare_frames(scene.train_frames, s0), inputs_cfg, progress=False
        )
        if stage1_iterations > 0:
            s1 = Stage1Config(
                iterations=stage1_iterations,
                lr=1e-2,
                hard_pairs_after=40,
                save_renders=0,
                progress=False,
            )
            train_stage1(model, inputs, run, s1)
        return run, model, inputs

    return make
