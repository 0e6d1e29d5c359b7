"""Stage 0 end to end on the tiny synthetic room: learning, frozen points, outputs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from openinsgaussian.data.load import load_scene
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.errors import ConfigError, RunError
from openinsgaussian.splats.densify import DensifyConfig
from openinsgaussian.splats.ply import load_gaussians_ply
from openinsgaussian.run.checkpoints import list_checkpoints
from openinsgaussian.run import RunDir, dataclass_to_dict
from openinsgaussian.train.stage0 import (
    Stage0Config,
    evaluate_stage0,
    export_run,
    init_model,
    prepare_frames,
    run_train,
    stage0_preset,
    train_stage0,
)


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    return generate_room(SynthConfig(out=tmp_path_factory.mktemp("data"), preset="tiny", seed=0, progress=False))


@pytest.fixture
def one_thread():
    """One fixed thread count for the resume tests, which compare runs bitwise; also the faster
    setting for 64x48 images on a busy machine (no thread synchronisation per small op)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_short_training_learns_keeps_frozen_points_and_writes_outputs(room, tmp_path, one_thread):
    run = tmp_path / "run"
    scene = load_scene(room)
    cfg = stage0_preset("synthetic")
    init = init_model(scene, cfg, torch.device("cpu"))
    psnr0 = evaluate_stage0(init, prepare_frames(scene.test_frames, cfg), cfg, progress=False)["psnr"]

    model = run_train(room, run, "synthetic", overrides={"iterations": 200, "progress": False,
                                                         "checkpoint_every": 100})
    metrics = json.loads((run / "metrics" / "stage0.json").read_text())
    assert metrics["split"] == "test" and metrics["n_views"] == len(scene.test_frames)
    assert metrics["psnr"] > psnr0 + 5.0, (psnr0, metrics["psnr"])
    for key in ("seed", "config_hash", "package_version", "device", "ssim", "train_seconds"):
        assert key in metrics
    # frozen points: Gaussian i is still input point i, none added or removed
    assert len(model) == len(scene.points)
    assert torch.equal(model.means.detach(), torch.from_numpy(scene.points))
    # outputs: config, checkpoints, renders, PLY equal to the returned model
    rd = RunDir(run)
    assert rd.load_config_section("stage0", Stage0Config).iterations == 200
    assert [s for s, _ in list_checkpoints(rd, "stage0")] == [100, 200]
    pngs = sorted(p.name for p in rd.render_dir("stage0").glob("*.png"))
    assert len(pngs) == len(scene.test_frames)
    ply_model, _ = load_gaussians_ply(rd.ply)
    for k in model.params:
        assert torch.equal(ply_model.params[k], model.params[k].detach()), k
    # export with leaf ids from a later stage's instances.npz
    np.savez(rd.instances, leaf_ind=np.arange(len(model)) % 7)
    out = export_run(run, "ply")
    exp_model, extras = load_gaussians_ply(out)
    assert out == run / "exports" / "point_cloud.ply"
    assert torch.equal(exp_model.params["sh0"], model.params["sh0"].detach())
    np.testing.assert_array_equal(extras["leaf_id"], np.arange(len(model)) % 7)
    with pytest.raises(ConfigError):
        export_run(run, "obj")  # type: ignore[arg-type]


def _resume_cfg() -> Stage0Config:
    """Tiny densifying run: exercises the strategy state, the split RNG and the view order."""
    return Stage0Config(iterations=60, sh_increase_every=20, checkpoint_every=10, keep_checkpoints=10,
                        densify=DensifyConfig(start=5, interval=10, stop=45, opacity_reset_every=30,
                                              screen_size_after=25, grad_threshold=5e-5),
                        progress=False, eval=False)


def _assert_same_model(a, b) -> None:
    assert len(a) == len(b)
    for k in a.params:
        torch.testing.assert_close(a.params[k].detach(), b.params[k].detach(), rtol=0, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def reference_run(room, tmp_path_factory):
    """Uninterrupted run of ``_resume_cfg`` (single-threaded, bitwise reproducible)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_stage0(load_scene(room), tmp_path_factory.mktemp("ref"), _resume_cfg())
    finally:
        torch.set_num_threads(old)
    return model


def test_resume_matches_uninterrupted_run(room, tmp_path, reference_run, one_thread):
    scene = load_scene(room)
    assert len(reference_run) != len(scene.points)  # densification did act
    run = tmp_path / "run"
    half = train_stage0(scene, run, _resume_cfg(), stop_at=30)
    assert [s for s, _ in list_checkpoints(RunDir(run), "stage0")][-1] == 30
    assert not (run / "point_cloud.ply").exists()
    with pytest.raises(RunError, match="resume"):
        train_stage0(scene, run, _resume_cfg())  # would silently overwrite the run
    other = _resume_cfg()
    other.lr_sh0 = 1e-2
    with pytest.raises(ConfigError, match="lr_sh0"):
        train_stage0(scene, run, other, resume=True)
    assert half.active_sh_degree == 1
    resumed = train_stage0(scene, run, _resume_cfg(), resume=True)
    _assert_same_model(resumed, reference_run)
    assert resumed.active_sh_degree == 3


_CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
from openinsgaussian.train import loop
_save = loop.TrainLoop.save
def _slow_save(self, *args, **kwargs):  # widen the window in which the parent can kill us
    _save(self, *args, **kwargs)
    time.sleep(0.3)
loop.TrainLoop.save = _slow_save
from openinsgaussian.data.load import load_scene
from openinsgaussian.run import dict_to_dataclass
from openinsgaussian.train.stage0 import Stage0Config, train_stage0
cfg = dict_to_dataclass(Stage0Config, json.loads(sys.argv[3]))
train_stage0(load_scene(sys.argv[1]), sys.argv[2], cfg)
"""


def test_resume_after_sigkill(room, tmp_path, reference_run, one_thread):
    run = tmp_path / "run"
    cfg = _resume_cfg()
    args = [sys.executable, "-c", _CHILD, str(room), str(run), json.dumps(dataclass_to_dict(cfg))]
    log = tmp_path / "child.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckdir = RunDir(run).stage_checkpoints("stage0")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ckdir.is_dir() and any(ckdir.glob("step_*.pt")):
                break
            time.sleep(0.005)
        assert proc.poll() is None, log.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    steps = [s for s, _ in list_checkpoints(RunDir(run), "stage0")]
    assert steps and steps[-1] < cfg.iterations  # killed mid-training
    resumed = train_stage0(load_scene(room), run, cfg, resume=True)
    _assert_same_model(resumed, reference_run)
