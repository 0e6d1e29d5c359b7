"""The shared machinery of the feature stages: freezing, checkpoint payload and its guards."""

import numpy as np
import pytest
import torch

from openinsgaussian.errors import ConfigError, RunError
from openinsgaussian.splats.gaussians import GaussianModel
from openinsgaussian.run.checkpoints import save_checkpoint
from openinsgaussian.train.feature_stage import FeatureTraining, feature_image, refuse_unresumed
from openinsgaussian.run import RunDir
from openinsgaussian.train.stage1 import Stage1Config


def _model() -> GaussianModel:
    xyz = np.random.default_rng(0).uniform(-1, 1, (20, 3)).astype(np.float32)
    return GaussianModel.from_points(xyz, seed=0)


def test_only_ins_feat_trains_and_state_round_trips(tmp_path):
    run = RunDir(tmp_path / "run")
    model = _model()
    ft = FeatureTraining(model, run, "stage1", Stage1Config(), "hash-a", lr=0.1, views=4, sampler_seed=3)
    assert [n for n, p in model.params.items() if p.requires_grad] == ["ins_feat"]
    before = ft.feat.detach().clone()
    ck = ft.state(extra_entry=7)
    assert ck["extra_entry"] == 7 and ck["config_hash"] == "hash-a"
    (ft.feat.sum() * 1.0).backward()
    ft.opt.step()
    assert not torch.equal(ft.feat.detach(), before)
    ft.load(ck)
    assert torch.equal(ft.feat.detach(), before)
    other = FeatureTraining(_model(), run, "stage1", Stage1Config(), "hash-b", lr=0.1, views=4, sampler_seed=3)
    with pytest.raises(ConfigError, match="config hash"):
        other.load(ck)


def test_refuse_unresumed_only_when_checkpoints_exist(tmp_path):
    run = RunDir(tmp_path / "run")
    refuse_unresumed(run, "stage2", resume=False)  # nothing yet: fine
    save_checkpoint(run, "stage2", 5, {"x": 1})
    refuse_unresumed(run, "stage2", resume=True)
    with pytest.raises(RunError, match="stage-2 checkpoints"):
        refuse_unresumed(run, "stage2", resume=False)


def test_feature_image_is_two_rgb_halves_side_by_side():
    fm = torch.zeros(6, 4, 5)
    fm[0] = 1.0  # first triplet red
    img = feature_image(fm)
    assert img.dtype == np.uint8 and img.shape == (4, 10, 3)
    assert (img[:, :5, 0] == 255).all() and (img[:, 5:] == 0).all()  # channels 0-2 | 3-5
