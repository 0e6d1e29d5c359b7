"""Stage 1 on the tiny synthetic room: the loss falls, only ins_feat moves, resume is exact."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from openinsgaussian.errors import ConfigError, RunError
from openinsgaussian.instances.losses import instance_loss, to_render_space
from openinsgaussian.splats.gaussians import GaussianModel
from openinsgaussian.run.checkpoints import list_checkpoints
from openinsgaussian.train.feature_stage import FrozenGeometry
from openinsgaussian.train.inputs import InputsConfig
from openinsgaussian.run import RunDir
from openinsgaussian.train.stage1 import Stage1Config, instance_loss_over_views, train_stage1

pytestmark = pytest.mark.usefixtures("one_thread")  # the resume test compares runs bitwise


@pytest.fixture(scope="module")
def setup(trained_room):
    _, model, inputs = trained_room(150, InputsConfig(source="direct"))
    return model.state_dict(), inputs


CFG = Stage1Config(
    iterations=80, lr=1e-2, hard_pairs_after=40, checkpoint_every=40, save_renders=2, progress=False
)


def _model(state) -> GaussianModel:
    return GaussianModel.from_state_dict(state)


def test_stage1_lowers_the_loss_and_trains_only_the_features(setup, tmp_path):
    state, inputs = setup
    model = _model(state)
    before = instance_loss_over_views(model, inputs, CFG)
    geometry = {k: v.detach().clone() for k, v in model.params.items() if k != "ins_feat"}
    feat0 = model.ins_feat.detach().clone()
    train_stage1(model, inputs, tmp_path / "run", CFG, seed=0)
    after = instance_loss_over_views(model, inputs, CFG)
    # the code-form L_c stays above ~0.3: 1/(d^2+1) >= 1/2 on the render-space sphere (diameter 1)
    assert after["loss"] < 0.95 * before["loss"], (before, after)
    assert after["L_c"] < before["L_c"]
    for k, v in geometry.items():
        assert torch.equal(model.params[k].detach(), v), k
    assert not torch.equal(model.ins_feat.detach(), feat0)
    rd = RunDir(tmp_path / "run")
    metrics = json.loads(rd.metrics_path("stage1").read_text())
    assert metrics["iterations"] == 80 and metrics["final_loss_all_views"]["loss"] == pytest.approx(
        after["loss"]
    )
    assert len(list(rd.render_dir("stage1").glob("*.png"))) == 2
    assert [s for s, _ in list_checkpoints(rd, "stage1")] == [40, 80]
    assert rd.load_config_section("stage1", Stage1Config).lr == CFG.lr


def test_hard_pair_switch_follows_the_configured_step(setup):
    state, inputs = setup
    model = _model(state)
    soft = instance_loss_over_views(model, inputs, CFG, step=CFG.hard_pairs_after)
    hard = instance_loss_over_views(model, inputs, CFG, step=CFG.hard_pairs_after + 1)
    assert hard["L_c"] < soft["L_c"]  # weights below 0.9 drop to 0.1
    assert hard["L_s"] == pytest.approx(soft["L_s"])


def test_view_loss_is_the_instance_loss_of_one_render(setup):
    """The stage renders (f/|f|+1)/2 with one 6-channel call and uses alpha > 0.7 as silhouette."""
    state, inputs = setup
    model = _model(state)
    geom = FrozenGeometry(model)
    out = geom.render(to_render_space(model.ins_feat.detach()), inputs.frames[0].camera)
    masks = inputs.views[0].masks()
    masks = masks[masks.flatten(1).any(1)]
    ref = instance_loss(out.image, masks, out.alpha[0] > 0.7, 0, 0.1).total
    one = Stage1Config(progress=False)
    view_only = replace(inputs, frames=inputs.frames[:1], views=inputs.views[:1])
    assert instance_loss_over_views(model, view_only, one)["loss"] == pytest.approx(
        float(ref), rel=1e-6
    )


def test_interrupted_stage1_resumes_to_the_same_features(setup, tmp_path):
    state, inputs = setup
    full = _model(state)
    train_stage1(full, inputs, tmp_path / "a", CFG, seed=3)
    part = _model(state)
    train_stage1(part, inputs, tmp_path / "b", CFG, seed=3, stop_at=40)
    assert not RunDir(tmp_path / "b").metrics_path("stage1").exists()
    with pytest.raises(RunError, match="resume"):
        train_stage1(_model(state), inputs, tmp_path / "b", CFG, seed=3)
    with pytest.raises(ConfigError, match="config hash"):
        train_stage1(
            _model(state), inputs, tmp_path / "b", replace(CFG, lr=5e-3), seed=3, resume=True
        )
    resumed = _model(state)  # fresh stage-0 model: the features come from the checkpoint
    train_stage1(resumed, inputs, tmp_path / "b", CFG, seed=3, resume=True)
    assert torch.equal(resumed.ins_feat, full.ins_feat)


def test_masks_without_pixels_stay_in_the_losses_as_the_code_keeps_them(setup):
    """A mask hidden by later ones (or lost by the resize) is an all-False plane: the code's one-hot
    keeps it, so its zero mean takes part in L_c and it counts in the L_s average."""
    from openinsgaussian.train.inputs import ViewInputs

    state, inputs = setup
    model = _model(state)
    v = inputs.views[0]
    hidden = ViewInputs(v.name, v.mask_ids, torch.cat([v.lang, v.lang[:1]]))  # mask m+1: no pixel
    view = replace(inputs, frames=inputs.frames[:1], views=[hidden])
    geom = FrozenGeometry(model)
    out = geom.render(to_render_space(model.ins_feat.detach()), inputs.frames[0].camera)
    masks = hidden.masks()
    assert not masks[-1].any()
    sil = out.alpha[0] > 0.7
    keep_ref = instance_loss(out.image, masks, sil, 0, 0.1)
    drop_ref = instance_loss(out.image, masks[:-1], sil, 0, 0.1)
    keep = instance_loss_over_views(model, view, Stage1Config(progress=False))
    drop = instance_loss_over_views(model, view, Stage1Config(progress=False, keep_empty_masks=False))
    assert keep["loss"] == pytest.approx(float(keep_ref.total), rel=1e-6)
    assert drop["loss"] == pytest.approx(float(drop_ref.total), rel=1e-6)
    m = masks.shape[0]  # L_s: the empty mask adds a zero term to the mean over m masks
    assert keep["L_s"] == pytest.approx(drop["L_s"] * (m - 1) / m, rel=1e-5)
    assert keep["L_c"] != pytest.approx(drop["L_c"], rel=1e-3)
