"""run_query on a finished tiny run: text encoders, the printed table, renders and query.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openinsgaussian.data.load import load_scene
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.errors import ConfigError
from openinsgaussian.perception.oracle import OracleLanguage
from openinsgaussian.query.run import QueryConfig, run_query, selection_overlay, text_encoder
from openinsgaussian.train.pipeline import load_run


@pytest.fixture(scope="module")
def finished(finished_tiny_run) -> Path:
    return finished_tiny_run  # tests/conftest.py


def test_oracle_text_encoder_returns_the_class_vectors(tmp_path):
    room = generate_room(SynthConfig(out=tmp_path, preset="tiny", seed=0, progress=False))
    scene = load_scene(room)
    enc = text_encoder("oracle", 640, scene)
    torch.testing.assert_close(
        enc(["chair", "Shower curtain"]),
        torch.stack(
            [
                OracleLanguage(scene).class_vector("chair"),
                OracleLanguage(scene).class_vector("showercurtain"),
            ]
        ),
    )
    assert text_encoder("oracle(noise=0.1,seed=0)", 640, scene)(["bed"]).shape == (1, 640)
    with pytest.raises(ConfigError, match="unknown language source"):
        text_encoder("sbert:foo", 640, scene)
    with pytest.raises(ConfigError, match="CLIP model"):
        text_encoder("clip:convnext_base_w", 640, scene)
    with pytest.raises(ConfigError, match="scene"):
        text_encoder("oracle", 640, None)


def test_run_query_prints_the_matches_and_writes_renders(finished, capsys):
    res = run_query(finished, ["bed", "wall"], views=2)
    printed = capsys.readouterr().out
    assert "bed" in printed and "best leaf" in printed and "oracle" in printed
    out = finished / "renders" / "query"
    assert (
        res["out"] == str(out)
        and json.loads((out / "query.json").read_text())["queries"][0]["query"] == "bed"
    )
    assert len(list(out.glob("*.png"))) == 4
    loaded = load_run(finished)
    gt = np.asarray(loaded.scene.point_labels)
    for row, nyu in zip(res["queries"], (4, 1), strict=False):  # NYU40 bed = 4, wall = 1
        assert (
            row["best_leaf"] is not None and row["score"] > 0.9
        )  # clean oracle: leaf ~ class vector
        sel = np.isin(loaded.instances.leaf_ind, row["leaves"])
        assert sel.sum() == row["n_gaussians"] > 0
        assert (gt[sel] == nyu).mean() > 0.5, row
        assert row["labelled_gaussians"] > 0
    img = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).open(res["queries"][0]["renders"][0])
    )
    assert img.shape == (48, 64, 3)


def test_selection_overlay_colours_only_the_selection(finished):
    loaded = load_run(finished)
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


def test_compat_switch_reaches_the_selection(finished):
    """With no leaf seen often enough, the fixed selection returns nothing, while the public
    code's behaviour (compat) zeroes those leaves and still picks one of them."""
    strict = QueryConfig(min_views_select=10_000)
    fixed = run_query(finished, ["wall"], views=0, config=strict, print_table=False)["queries"][0]
    compat = run_query(finished, ["wall"], views=0, config=strict, compat=True, print_table=False)
    assert fixed["best_leaf"] is None and fixed["n_gaussians"] == 0
    assert compat["queries"][0]["best_leaf"] is not None


def test_empty_queries_are_refused(finished):
    with pytest.raises(ConfigError, match="at least one"):
        run_query(finished, ["  "])


def test_min_relevancy_selects_nothing_for_weak_matches(finished, capsys):
    res = run_query(finished, ["wall", "red mug"], views=0, print_table=False)["queries"]
    wall, mug = res
    assert wall["relevancy"] > 0.99 and not wall["rejected"]  # oracle: the class vector itself
    assert mug["relevancy"] < wall["relevancy"] and mug["n_gaussians"] > 0  # best leaf by default
    strict = run_query(finished, ["wall", "red mug"], views=0, min_relevancy=0.99)["queries"]
    assert strict[0]["n_gaussians"] == wall["n_gaussians"] and not strict[0]["rejected"]
    assert strict[1]["rejected"] and strict[1]["n_gaussians"] == 0 and strict[1]["leaves"] == []
    assert strict[1]["best_leaf"] == mug["best_leaf"]  # still reported
    assert "no match" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="min_relevancy"):
        run_query(finished, ["wall"], views=0, min_relevancy=1.5)
