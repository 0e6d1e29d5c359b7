"""Stage 2 on the tiny room: valid two-level ids, the straight-through path, pseudo maps, resume."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from openinsgaussian.errors import ConfigError
from openinsgaussian.instances.codebook import CodebookConfig
from openinsgaussian.instances.losses import pseudo_feature_loss, to_render_space
from openinsgaussian.splats.gaussians import GaussianModel
from openinsgaussian.train.feature_stage import FrozenGeometry
from openinsgaussian.train.inputs import InputsConfig, ViewInputs
from openinsgaussian.run import RunDir
from openinsgaussian.train.stage2 import (
    CODEBOOK_FILE,
    Stage2Config,
    ViewPseudo,
    load_codebook,
    pseudo_path,
    train_stage2,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # the resume test compares runs bitwise


@pytest.fixture(scope="module")
def setup(trained_room):
    _, model, inputs = trained_room(150, InputsConfig(source="direct"), stage1_iterations=80)
    return model.state_dict(), inputs


CB = CodebookConfig(k1=8, k2=4, coarse_every=20, fine_every=5, root_every=10)
CFG = Stage2Config(
    coarse_iterations=40,
    fine_iterations=80,
    codebook=CB,
    k2_min_gaussians=20,
    checkpoint_every=30,
    save_renders=1,
    progress=False,
)


def test_stage2_writes_a_valid_two_level_codebook(setup, tmp_path):
    state, inputs = setup
    model = GaussianModel.from_state_dict(state)
    geometry = {k: v.detach().clone() for k, v in model.params.items() if k != "ins_feat"}
    feat1 = model.ins_feat.detach().clone()
    model, cb = train_stage2(model, inputs, tmp_path, CFG, seed=0)
    L = CB.k1 * CB.k2
    leaf, coarse = cb.leaf_ids, cb.coarse_ids
    assert leaf.shape == coarse.shape == (len(model),)
    assert (
        int(leaf.min()) >= 0 and int(leaf.max()) < L
    )  # every root had an active window: no sentinel
    assert torch.equal(leaf // CB.k2, coarse)  # leaf r*k2 + j belongs to root r
    assert bool(
        ((leaf % CB.k2) < cb.leaf_k[coarse]).all()
    )  # only the adaptive number of slots is used
    assert bool((cb.leaf_k >= 2).all()) and bool((cb.leaf_k <= CB.k2).all())
    assert cb.leaf_centers.shape == (L + 1, 6) and cb.coarse_centers.shape == (CB.k1, 9)
    for k, v in geometry.items():
        assert torch.equal(model.params[k].detach(), v), k
    assert not torch.equal(model.ins_feat.detach(), feat1)
    rd = RunDir(tmp_path)
    back = load_codebook(tmp_path / CODEBOOK_FILE, CB)
    for k, v in cb.state_dict().items():
        assert torch.equal(getattr(back, k), v), k
    assert pseudo_path(rd, "coarse").is_file() and pseudo_path(rd, "fine").is_file()
    m = json.loads(rd.metrics_path("stage2").read_text())
    assert m["never_assigned_gaussians"] == 0 and m["leaf_k"] == cb.leaf_k.tolist()
    assert len(list(rd.render_dir("stage2").glob("*.png"))) == 1


def test_straight_through_render_uses_centres_and_sends_gradients_to_the_members(setup, tmp_path):
    state, inputs = setup
    model, cb = train_stage2(GaussianModel.from_state_dict(state), inputs, tmp_path, CFG, seed=0)
    f = model.ins_feat.detach().clone().requires_grad_(True)
    fq = cb.quantize_fine(f)
    torch.testing.assert_close(fq.detach(), cb.leaf_centers[cb.leaf_ids], rtol=0, atol=1e-6)
    counts = torch.bincount(cb.coarse_ids, minlength=CB.k1)
    root = int(counts.argmax())
    members = (cb.coarse_ids == root).nonzero().flatten()
    geom = FrozenGeometry(model)
    best = None
    for i in range(len(inputs)):  # the view where the root covers most pixels
        a = geom.render(
            to_render_space(fq.detach()[members]), inputs.frames[i].camera, subset=members
        ).alpha
        if best is None or (a > 0.7).sum() > best[1]:
            best = (i, int((a > 0.7).sum()))
    i = best[0]
    out = geom.render(to_render_space(fq[members]), inputs.frames[i].camera, subset=members)
    target = torch.full_like(out.image, 0.5)
    loss = pseudo_feature_loss(out.image, target, out.alpha[0] > 0.7, "mse")
    loss.backward()
    g = f.grad.abs().sum(1)
    assert float(g[members].sum()) > 0
    outside = torch.ones(len(f), dtype=torch.bool)
    outside[members] = False
    assert float(g[outside].sum()) == 0.0


def test_view_pseudo_map_by_hand():
    ids = torch.tensor([[1, 1, 2], [0, 2, 2]], dtype=torch.int16)
    view = ViewInputs("v", ids, torch.zeros(2, 4))
    a = torch.arange(6, dtype=torch.float32) / 10
    vp = ViewPseudo(feats=torch.stack([a, torch.zeros(6)]), valid=torch.tensor([True, False]))
    pmap, kept = vp.pseudo_map(view, "cpu")
    assert kept.tolist() == [[1, 1, 0], [0, 0, 0]]
    assert pmap.shape == (6, 2, 3)
    torch.testing.assert_close(pmap[:, 0, 0], a)
    assert float(pmap[:, 0, 2].abs().sum()) == 0.0 and float(pmap[:, 1].abs().sum()) == 0.0
    assert vp.feats_with_dummy("cpu").shape == (3, 6)


def test_schedules_that_skip_roots_are_refused():
    with pytest.raises(ConfigError, match="k1 \\* root_every"):
        Stage2Config(fine_iterations=50, codebook=CB)
    with pytest.raises(ConfigError, match="fine_every"):
        Stage2Config(fine_iterations=200, codebook=replace(CB, root_every=4))


def test_interrupted_stage2_resumes_exactly(setup, tmp_path):
    state, inputs = setup
    full_model, full = train_stage2(
        GaussianModel.from_state_dict(state), inputs, tmp_path / "a", CFG, seed=5
    )
    train_stage2(
        GaussianModel.from_state_dict(state), inputs, tmp_path / "b", CFG, seed=5, stop_at=70
    )  # fine phase
    model, cb = train_stage2(
        GaussianModel.from_state_dict(state), inputs, tmp_path / "b", CFG, seed=5, resume=True
    )
    assert torch.equal(cb.leaf_ids, full.leaf_ids) and torch.equal(cb.coarse_ids, full.coarse_ids)
    assert torch.equal(model.ins_feat, full_model.ins_feat)
