"""The LeRF benchmark runner end to end on a tiny room written in the LeRF-OVS layout (fast
schedule): report in the published format, resume, re-scoring on new labels, a missing scene that
does not stop the others, root checks; plus the published LeRF constants against METHOD §8.2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from openinsgaussian.data.lerf import LERF_SCENES
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.data.synthetic_lerf import write_lerf_layout
from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.evaluate.benchmark import BenchmarkFailed, run_benchmark
from openinsgaussian.evaluate.published import LERF_PUBLISHED

from tests.evaluate.test_benchmark import NO_MODELS


@pytest.fixture(autouse=True)
def restore_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


# LeRF: the tiny room's selections must be seen from 2 views (the preset's 5 suits real captures)
LERF_NO_MODELS = {**NO_MODELS, "query.min_views_select": 2}


@pytest.fixture(scope="module")
def lerf_root(tmp_path_factory) -> Path:
    """A tiny room written in the LeRF-OVS layout: ROOT/synth_tiny_0 (COLMAP) + ROOT/label/."""
    rooms = tmp_path_factory.mktemp("rooms")
    room = generate_room(SynthConfig(out=rooms, preset="tiny", seed=0, progress=False))
    root = tmp_path_factory.mktemp("lerf_ovs")
    write_lerf_layout(room, root, progress=False)
    return root


def test_lerf_runner_reports_resumes_and_survives_a_missing_scene(lerf_root, tmp_path):
    out = tmp_path / "bench"
    scenes = ["synth_tiny_0", "figurines"]  # figurines is not there: recorded as failed
    with pytest.raises(BenchmarkFailed, match="1 of 2 scenes failed"):
        run_benchmark(
            "lerf", lerf_root, out, scenes=scenes, fast=True, overrides=LERF_NO_MODELS,
            progress=False, command="test",
        )
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["protocol"] == "lerf" and saved["preset"] == "lerf"
    assert saved["labels"] == str(lerf_root / "label") and saved["failed"] == ["figurines"]
    by_name = {s["name"]: s for s in saved["scenes"]}
    ok = by_name["synth_tiny_0"]
    assert ok["status"] == "ok" and not ok["reused"] and ok["language_source"] == "oracle"
    run = out / "runs" / "synth_tiny_0_fast"
    written = json.loads((run / "metrics" / "lerf.json").read_text())
    for k in ("miou", "macc@0.25", "macc@0.5", "pairs"):
        assert ok["metrics"][k] == written[k]
    # the queries are the label categories (not a LeRF scene): every annotated object is scored
    labels = sorted((lerf_root / "label" / "synth_tiny_0").glob("frame_*.json"))
    n_pairs = sum(
        len({o["category"] for o in json.loads(p.read_text())["objects"]}) for p in labels
    )
    assert written["pairs"] == n_pairs and written["frames"] == len(labels)
    assert written["preset"] == "lerf" and written["scene_name"] == "synth_tiny_0"
    assert 0.0 <= ok["metrics"]["miou"] <= 1.0
    assert saved["mean"]["scenes"] == ["synth_tiny_0"]
    assert saved["mean"]["miou"] == ok["metrics"]["miou"]
    assert saved["mean"]["macc@0.5"] == ok["metrics"]["macc@0.5"]
    assert "figurines" in by_name["figurines"]["error"]["message"]

    md = (out / "benchmark.md").read_text()
    m = ok["metrics"]
    mine = f"{100 * m['miou']:.2f} / {100 * m['macc@0.25']:.2f}"
    for text in (
        "# Benchmark: lerf", "| Method | synth_tiny_0 | figurines |", f"| **ours** | {mine} |",
        "failed (DataError)", "OpenGaussian (published) | - | 39.29 / 55.36 | 38.36 / 51.43 |",
        "OpenInsGaussian (published) | - | 53.75 / 76.79 | 42.62 / 62.11 |",
        "| OpenInsGaussian (published) | - | 58.93 | 45.99 |", "oracle language source was used",
        "Mean (ours: 1 of 2 scenes)",
    ):
        assert text in md, text

    # resume: the finished scene is read back, nothing retrained; another label folder re-scores
    stamp = (run / "instances.npz").stat().st_mtime_ns
    again = run_benchmark(
        "lerf", lerf_root, out, scenes=["synth_tiny_0"], fast=True, overrides=LERF_NO_MODELS,
        progress=False, command="test",
    )
    assert again["scenes"][0]["reused"] and again["scenes"][0]["metrics"] == ok["metrics"]
    other = tmp_path / "labels_copy"
    shutil.copytree(lerf_root / "label", other)
    third = run_benchmark(
        "lerf", lerf_root, out, scenes=["synth_tiny_0"], fast=True, overrides=LERF_NO_MODELS,
        progress=False, command="test", labels=other,
    )
    assert not third["scenes"][0]["reused"] and third["scenes"][0]["metrics"] == ok["metrics"]
    assert (run / "instances.npz").stat().st_mtime_ns == stamp


def test_lerf_root_problems_are_listed_before_anything_runs(lerf_root, tmp_path):
    with pytest.raises(DataError) as exc:
        run_benchmark("lerf", lerf_root, tmp_path / "out", progress=False)
    msg = str(exc.value)
    assert "4 of 4 LeRF-OVS scenes" in msg
    assert all(f"{s}: folder missing" in msg for s in LERF_SCENES)
    (tmp_path / "teatime" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        run_benchmark("lerf", tmp_path, tmp_path / "out", progress=False)
    msg = str(exc.value)
    assert "teatime: no COLMAP model" in msg and "no annotations" in msg
    assert not (tmp_path / "out" / "runs").exists()
    with pytest.raises(ConfigError, match="--root"):
        run_benchmark("lerf", None, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="lerf benchmark only"):
        run_benchmark("synthetic", None, tmp_path / "out", labels=tmp_path, progress=False)


def test_published_lerf_numbers_match_method_tables():
    og, oig = LERF_PUBLISHED["OpenGaussian"], LERF_PUBLISHED["OpenInsGaussian"]
    assert og.published and "Tab. 1" in og.source and "Tab. 7" in oig.source
    assert og.scores["teatime"] == {"miou": 0.6044, "macc@0.25": 0.7627}
    assert oig.scores["figurines"] == {"miou": 0.5375, "macc@0.25": 0.7679, "macc@0.5": 0.5893}
    assert oig.scores["mean"] == {"miou": 0.4262, "macc@0.25": 0.6211, "macc@0.5": 0.4599}
    langsplat = LERF_PUBLISHED["LangSplat"].scores
    assert langsplat["waldo_kitchen"] == {"miou": 0.0918, "macc@0.25": 0.0909}
    assert LERF_PUBLISHED["LEGaussians"].scores["ramen"] == {"miou": 0.1579, "macc@0.25": 0.2676}
    # every published Mean is the mean of its four scenes, to the printed rounding
    for row in LERF_PUBLISHED.values():
        assert set(row.scores) == {*LERF_SCENES, "mean"}
        for key, value in row.scores["mean"].items():
            per = [row.scores[s][key] for s in LERF_SCENES]
            assert np.mean(per) == pytest.approx(value, abs=6e-5), (row.method, key)
