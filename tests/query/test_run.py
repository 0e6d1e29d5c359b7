"""QueryEngine on a finished tiny run: selections, query.json, renders, PLYs, the inventory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from openinsgaussian.errors import ConfigError
from openinsgaussian.query.run import QueryEngine, selection_overlay
from openinsgaussian.splats.ply import load_gaussians_ply
from openinsgaussian.train.finished import load_run


@pytest.fixture(scope="module")
def loaded(finished_tiny_run):
    return load_run(finished_tiny_run)  # tests/conftest.py


@pytest.fixture(scope="module")
def engine(loaded) -> QueryEngine:
    return QueryEngine(loaded)


def test_selections_are_the_class_objects_of_the_clean_oracle(engine, loaded):
    gt = np.asarray(loaded.scene.point_labels)
    for sel, nyu in zip(engine.select(["bed", "wall"]), (4, 1), strict=True):  # NYU40 bed, wall
        assert sel.found and sel.best_leaf is not None and sel.score > 0.9
        ids = np.flatnonzero(np.isin(loaded.instances.leaf_ind, sel.leaves))
        np.testing.assert_array_equal(sel.gaussian_ids, ids)
        assert sel.gaussian_ids.dtype == np.int64 and (gt[ids] == nyu).mean() > 0.5
    assert engine.labelled_counts(["bed", "wall"])[0] > 0


def test_save_writes_renders_plys_and_query_json(engine, tmp_path):
    sels = engine.select(["bed", "zebra"])
    report = engine.save(sels, tmp_path / "q", views=2, export_ply=tmp_path / "ply")
    saved = json.loads(report.json_path.read_text())
    assert [q["text"] for q in saved["queries"]] == ["bed", "zebra"]
    bed, zebra = saved["queries"]
    assert bed["found"] and not zebra["found"] and zebra["n_gaussians"] == 0
    assert bed["gaussian_ids"] == sels[0].gaussian_ids.tolist() and len(bed["bounds"]) == 2
    assert saved["prompt_template"] == "a photo of a {}." and saved["text_features"] is None
    assert len(list((tmp_path / "q").glob("*.png"))) == 4 and len(bed["renders"]) == 2
    img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(bed["renders"][0]))
    assert img.shape == (48, 64, 3)
    model, extras = load_gaussians_ply(bed["ply"])
    assert len(model) == sels[0].n_gaussians and set(extras["leaf_id"]) == {sels[0].best_leaf}
    empty, _ = load_gaussians_ply(zebra["ply"])
    assert len(empty) == 0


def test_selection_overlay_colours_only_the_selection(loaded):
    model, cam = loaded.model, loaded.eval_frames[0].camera
    n = len(model)
    none = selection_overlay(model, cam, torch.zeros(n, dtype=torch.bool)).astype(np.float64)
    full = selection_overlay(model, cam, torch.ones(n, dtype=torch.bool)).astype(np.float64)
    assert np.allclose(none[..., 0], none[..., 1], atol=1) and np.allclose(
        none[..., 1], none[..., 2], atol=1
    )  # grey
    rgb = model.render(cam).image.clamp(0, 1).permute(1, 2, 0).numpy() * 255
    alpha = model.render(cam).alpha[0].numpy()
    solid = alpha > 0.99
    assert np.abs(full[solid] - rgb[solid]).max() < 2.0  # everything selected: the colour render
    assert full.mean() > none.mean()


def test_compat_switch_reaches_the_selection(loaded):
    """With no leaf seen often enough, the fixed selection returns nothing, while the public
    code's behaviour (compat) zeroes those leaves and still picks one of them."""
    strict = QueryEngine(loaded, replace(loaded.config.query, min_views_select=10_000))
    fixed = strict.select(["wall"])[0]
    compat = strict.select(["wall"], compat=True)[0]
    assert fixed.best_leaf is None and fixed.n_gaussians == 0 and not fixed.found
    assert "views" in fixed.reason
    assert compat.best_leaf is not None


def test_empty_queries_and_bad_thresholds_are_refused(engine):
    with pytest.raises(ConfigError, match="at least one"):
        engine.select(["  "])
    with pytest.raises(ConfigError, match="min_relevancy"):
        engine.select(["wall"], min_relevancy=1.5)


def test_inventory_lists_each_matched_leaf_once(engine, loaded):
    inst = loaded.instances
    items = engine.instances()
    ids = [i.id for i in items]
    assert ids == sorted(ids) and all(inst.occu_count[i] >= 2 for i in ids)
    seen = np.concatenate([i.gaussian_ids for i in items])
    assert len(seen) == len(set(seen.tolist()))
    for i in items:
        np.testing.assert_array_equal(i.gaussian_ids, np.flatnonzero(inst.leaf_ind == i.id))
    everything = engine.instances(min_views=0)
    assert sum(i.n_gaussians for i in everything) == int((inst.leaf_ind < inst.num_leaves).sum())
    with pytest.raises(ConfigError, match="min_views"):
        engine.instances(min_views=-1)


def test_oracle_labels_name_the_class_of_the_leaf(engine, loaded):
    """With the clean oracle a leaf's feature is a class vector: its top label is that class at
    cosine ~1, the next ones near 0 (random vectors in 640-d)."""
    gt = np.asarray(loaded.scene.point_labels)
    from openinsgaussian.data.classes import NYU40_NAMES, SCANNET19

    hits = 0
    for item in engine.instances():
        (top, score), *rest = item.labels("scannet19", k=3)
        assert len(rest) == 2 and score > rest[0][1]
        nyu = np.bincount(gt[item.gaussian_ids]).argmax()
        if nyu in SCANNET19.ids and score > 0.99:
            hits += NYU40_NAMES[int(nyu)] == top
    assert hits >= 1


def test_vocabulary_files(engine, tmp_path):
    item = engine.instances()[0]
    top = item.labels("scannet19", k=1)[0][0]
    txt = tmp_path / "vocab.txt"
    txt.write_text(f"# my classes\n{top}\nzebra\n\n")
    assert item.labels(txt, k=2)[0][0] == top
    js = tmp_path / "vocab.json"
    feat = engine.side.encode([top])[0]
    js.write_text(json.dumps({"thing": feat.tolist(), "other": (-feat).tolist()}))
    (name, score), (other, low) = item.labels(js, k=2)
    assert name == "thing" and other == "other" and score == pytest.approx(-low, abs=1e-5)
    with pytest.raises(ConfigError, match="neither a class list"):
        item.labels(tmp_path / "missing.txt")
    assert item.labels(["chair", top], k=1)[0][0] == top


def test_outputs_stay_in_the_default_folder(engine, loaded):
    report = engine.save(engine.select(["wall"]), views=1)
    assert report.out == loaded.run.render_dir("query") and report.json_path.is_file()
    assert report.plys == [None] and Path(report.renders[0][0]).is_file()
