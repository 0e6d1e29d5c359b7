"""Stage 3: one-pass vs per-leaf association, aggregation modes, and the instances.npz it writes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.errors import RunError
from openinsgaussian.instances.codebook import CodebookConfig
from openinsgaussian.run.instances import load_instances
from openinsgaussian.instances.losses import to_render_space
from openinsgaussian.splats.gaussians import GaussianModel
from openinsgaussian.train.feature_stage import FrozenGeometry
from openinsgaussian.train.inputs import InputsConfig, ViewInputs
from openinsgaussian.run import RunDir
from openinsgaussian.train.stage2 import (
    Stage2Config,
    ViewPseudo,
    load_pseudo,
    pseudo_path,
    train_stage2,
)
from openinsgaussian.train.stage3 import (
    LeafGroups,
    Stage3Config,
    one_pass_view,
    per_leaf_view,
    train_stage3,
)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- a hand-made scene: two flat squares of Gaussians seen head-on ------------------------------
def _square(cx: float, cy: float, z: float, n: int = 12, step: float = 0.02) -> torch.Tensor:
    g = torch.arange(n, dtype=torch.float32) * step
    xs, ys = torch.meshgrid(g - g.mean() + cx, g - g.mean() + cy, indexing="xy")
    return torch.stack([xs.flatten(), ys.flatten(), torch.full((n * n,), z)], 1)  # [n*n,3]


def _toy(offset_b: float, z_b: float):
    """Leaf 0: a square at z=1; leaf 1: a square at ``(offset_b, 0, z_b)``; distinct features."""
    a, b = _square(-0.15, 0.0, 1.0), _square(offset_b, 0.0, z_b)
    means = torch.cat([a, b])
    n = len(means)
    model = GaussianModel(
        {
            "means": means,
            "scales": torch.full((n, 3), np.log(0.012), dtype=torch.float32),
            "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
            "opacities": torch.full((n,), 4.0),
            "sh0": torch.zeros(n, 1, 3),
            "shN": torch.zeros(n, 0, 3),
            "ins_feat": torch.cat(
                [
                    torch.tensor([[1.0, 0, 0, 0, 0, 0]]).repeat(len(a), 1),
                    torch.tensor([[0, 0, 0, 1.0, 0, 0]]).repeat(len(b), 1),
                ]
            ),
        },
        sh_degree=0,
    )
    leaf = torch.cat([torch.zeros(len(a), dtype=torch.long), torch.ones(len(b), dtype=torch.long)])
    cam = Camera.from_intrinsics(
        fx=80.0, fy=80.0, cx=32.0, cy=24.0, width=64, height=48, world_to_cam=np.eye(4)
    )
    return model, leaf, cam


def _views_and_pseudo(model, leaf, cam):
    """Masks = what a 2D segmenter sees (each square's visible pixels); pseudo features = means."""
    geom = FrozenGeometry(model)
    feats = to_render_space(model.ins_feat)
    out = geom.render(feats, cam, return_ids=True)
    top, solid = out.top_id, out.alpha[0] > 0.5  # the object's pixels, not its faint fringe
    ids = torch.zeros_like(top)
    ids[solid & (top >= 0) & (leaf[top.clamp(min=0)] == 0)] = 1
    ids[solid & (top >= 0) & (leaf[top.clamp(min=0)] == 1)] = 2
    view = ViewInputs("toy", ids.to(torch.int16), torch.eye(2, 4))
    means = torch.stack([out.image[:, ids == j].mean(1) for j in (1, 2)])  # [2,6]
    return geom, feats, view, ViewPseudo(means, torch.tensor([True, True]))


def test_one_pass_equals_per_leaf_without_occlusion():
    model, leaf, cam = _toy(offset_b=0.15, z_b=1.0)
    geom, feats, view, vp = _views_and_pseudo(model, leaf, cam)
    cfg = Stage3Config()
    a = one_pass_view(geom, feats, leaf, 2, cam, view, vp, cfg)
    b = per_leaf_view(geom, feats, leaf, 2, cam, view, vp, cfg, groups=LeafGroups(leaf, 2))
    assert a.match_idx.tolist() == b.match_idx.tolist() == [1, 2]
    assert a.matched.all() and b.matched.all()


def test_occluded_leaf_keeps_its_match_but_only_one_pass_scores_the_visible_part():
    """Leaf 1 sits behind leaf 0, half hidden. Its mask is its visible half. One pass sees exactly
    that half (IoU ~1); the per-leaf render also counts the hidden half (IoU ~0.5)."""
    model, leaf, cam = _toy(offset_b=-0.03, z_b=1.3)
    geom, feats, view, vp = _views_and_pseudo(model, leaf, cam)
    cfg = Stage3Config()
    a = one_pass_view(geom, feats, leaf, 2, cam, view, vp, cfg)
    b = per_leaf_view(geom, feats, leaf, 2, cam, view, vp, cfg, groups=LeafGroups(leaf, 2))
    assert a.match_idx.tolist() == b.match_idx.tolist() == [1, 2]
    assert float(a.match_score[1]) > 0.8
    assert float(b.match_score[1]) < float(a.match_score[1]) - 0.2


# ---- the tiny room ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(trained_room):
    run, model, inputs = trained_room(200, InputsConfig(), stage1_iterations=150)
    cb_cfg = CodebookConfig(k1=8, k2=4, coarse_every=20, fine_every=5, root_every=10)
    s2 = Stage2Config(
        coarse_iterations=40,
        fine_iterations=80,
        codebook=cb_cfg,
        k2_min_gaussians=20,
        save_renders=0,
        progress=False,
    )
    model, cb = train_stage2(model, inputs, run, s2)
    return run, model, cb, inputs


def test_one_pass_and_per_leaf_agree_on_the_tiny_room(trained):
    """Where both modes match a leaf in a view, they pick the same mask. Leaves matched by only one
    mode differ in silhouette (visible top-contributor pixels vs alpha > 0.8 of the leaf alone)."""
    run, model, cb, inputs = trained
    pseudo = load_pseudo(pseudo_path(RunDir(run), "fine"), [f.name for f in inputs.frames])
    geom, feats, L = FrozenGeometry(model), to_render_space(model.ins_feat), cb.cfg.num_leaves
    groups, cfg = LeafGroups(cb.leaf_ids, L), Stage3Config()
    both = same = either = 0
    for i in range(len(inputs)):
        args = (
            geom,
            feats,
            cb.leaf_ids,
            L,
            inputs.frames[i].camera,
            inputs.views[i],
            pseudo[i],
            cfg,
        )
        a, b = one_pass_view(*args), per_leaf_view(*args, groups=groups)
        both += int((a.matched & b.matched).sum())
        same += int((a.matched & b.matched & (a.match_idx == b.match_idx)).sum())
        either += int((a.matched | b.matched).sum())
    assert both > 0 and same == both
    assert both >= 0.6 * either, (both, either)


def test_stage3_writes_instances_for_both_aggregations(trained, tmp_path):
    run, model, cb, inputs = trained
    inst = train_stage3(model, cb, inputs, run, Stage3Config(progress=False), seed=4)
    back = load_instances(RunDir(run).instances)
    assert back.header["aggregation"] == "attention" and back.header["association"] == "one_pass"
    assert back.header["language_source"] == "oracle" and back.header["seed"] == 4
    assert back.header["language_detail"]["source"] == "oracle" and back.dim == 640
    np.testing.assert_array_equal(back.leaf_ind, cb.leaf_ids.numpy())
    assert back.match_info.shape == (cb.cfg.num_leaves, len(inputs), 3)
    assert int(back.occu_count.sum()) == int(back.match_info[..., 2].sum()) > 0
    # leaves never matched keep zero features; matched ones carry unit-ish oracle vectors
    zero = back.occu_count == 0
    assert np.all(back.leaf_feat[zero] == 0)
    assert np.all(np.linalg.norm(back.leaf_feat[~zero], axis=1) > 0.3)
    metrics = json.loads(RunDir(run).metrics_path("stage3").read_text())
    assert metrics["matched_pairs"] == int(back.occu_count.sum())
    # mean aggregation to another file: same association, features differ at most by the weighting
    mean = train_stage3(
        model,
        cb,
        inputs,
        run,
        replace(Stage3Config(progress=False), aggregation="mean"),
        out=tmp_path / "mean.npz",
        write_metrics=False,
    )
    np.testing.assert_array_equal(mean.occu_count, inst.occu_count)
    assert load_instances(tmp_path / "mean.npz").header["aggregation"] == "mean"
    single = inst.occu_count == 1  # one view: attention weight 1, mean divides by 1 + 1e-4
    np.testing.assert_allclose(
        mean.leaf_feat[single] * (1 + 1e-4), inst.leaf_feat[single], rtol=1e-5, atol=1e-6
    )


def test_stage3_refuses_pseudo_labels_of_other_masks(trained, tmp_path):
    run, model, cb, inputs = trained
    v = inputs.views[0]
    areas = torch.bincount(v.ids().flatten(), minlength=v.num_masks + 1)[1:]
    a, b = [
        int(i) + 1 for i in torch.argsort(areas, descending=True)[:2]
    ]  # two masks of different size
    swapped = v.mask_ids.clone()
    swapped[v.mask_ids == a], swapped[v.mask_ids == b] = b, a
    other = replace(inputs, views=[ViewInputs(v.name, swapped, v.lang)] + inputs.views[1:])
    fine = Stage3Config(progress=False, pseudo="fine_stage")
    with pytest.raises(RunError, match="other masks"):
        train_stage3(model, cb, other, run, fine, out=tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_occurrence_gate_keeps_leaves_of_absent_roots_unmatched(trained, tmp_path):
    run, model, cb, inputs = trained
    assert cb.occurrence is not None
    cfg = Stage3Config(progress=False, association="per_leaf")
    on = train_stage3(model, cb, inputs, run, cfg, out=tmp_path / "on.npz", write_metrics=False)
    off = train_stage3(
        model, cb, inputs, run, replace(cfg, occurrence_gate=False), out=tmp_path / "off.npz",
        write_metrics=False,
    )
    # a leaf is matched in a view only where its root is present (match table [L, V, 3])
    roots = torch.arange(cb.cfg.num_leaves) // cb.cfg.k2
    present = cb.occurrence.T[roots].numpy()  # [L, V]
    assert not (on.match_info[..., 2].astype(bool) & ~present).any()
    assert (off.match_info[..., 2].astype(bool) & ~present).any()  # the gate removed matches
    assert on.occu_count.sum() < off.occu_count.sum()
    for mode in ("per_leaf", "one_pass"):  # every root absent: nothing matched in either mode
        saved = cb.occurrence
        cb.occurrence = torch.zeros_like(saved)
        try:
            inst = train_stage3(
                model, cb, inputs, run, replace(cfg, association=mode),
                out=tmp_path / f"{mode}.npz", write_metrics=False,
            )
        finally:
            cb.occurrence = saved
        assert inst.occu_count.sum() == 0, mode
    cb.occurrence = None
    try:
        with pytest.raises(RunError, match="occurrence"):
            train_stage3(model, cb, inputs, run, cfg, out=tmp_path / "x.npz", write_metrics=False)
    finally:
        cb.occurrence = saved
