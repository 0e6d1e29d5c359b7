"""The benchmark runner end to end on two tiny rooms in the ScanNet layout (fast schedule):
reports, means, published rows, resume without retraining, a failing scene that does not stop
the others; plus the published constants against METHOD §8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.evaluate.benchmark import (
    FAST_OVERRIDES,
    SCANNET_SCENES,
    SYNTHETIC_SUITE,
    BenchmarkFailed,
    run_benchmark,
)
from openinsgaussian.evaluate.published import (
    OIG_SCANNET_PER_SCENE,
    OIG_SCANNET_PER_SCENE_MEAN,
    SCANNET_PUBLISHED,
)

# tiny rooms have no SAM / CLIP cache: ground-truth masks and the oracle language source
NO_MODELS = {"inputs.masks": "ground_truth", "inputs.language": "oracle", "threads": 1}


@pytest.fixture(autouse=True)
def restore_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def scannet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scannet")
    for seed in (0, 1):
        generate_room(SynthConfig(out=root, preset="tiny", seed=seed, progress=False))
    broken = root / "scene_broken"
    broken.mkdir()
    (broken / "transforms_train.json").write_text("{ not json")
    return root


def test_scannet_runner_reports_resumes_and_survives_a_failing_scene(scannet_root, tmp_path):
    out = tmp_path / "bench"
    scenes = ["synth_tiny_0", "scene_broken", "synth_tiny_1"]
    with pytest.raises(BenchmarkFailed, match="1 of 3 scenes failed") as exc:
        run_benchmark(
            "scannet", scannet_root, out, scenes=scenes, fast=True,
            overrides=NO_MODELS, progress=False, command="test",
        )
    res = exc.value.result
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["failed"] == ["scene_broken"] == res["failed"]
    by_name = {s["name"]: s for s in saved["scenes"]}
    assert [s["name"] for s in saved["scenes"]] == scenes  # the scene after the failure ran
    broken = by_name["scene_broken"]
    assert broken["status"] == "failed" and "scene_broken" in broken["error"]["message"]
    ok = [by_name["synth_tiny_0"], by_name["synth_tiny_1"]]
    assert all(s["status"] == "ok" and not s["reused"] for s in ok)
    assert saved["language_sources"] == ["oracle"] and saved["preset"] == "scannet"
    assert saved["mask_sources"] == ["ground_truth"]
    assert all(s["masks"] == "ground_truth" for s in ok)
    assert saved["seed"] == 0 and saved["fast"] and saved["package_version"]
    assert saved["machine"]["cpu_count"] >= 1 and saved["command"] == "test" and saved["date"]
    for n in ("scannet19", "scannet15", "scannet10"):
        per = [s["metrics"][n]["miou"] for s in ok]
        assert all(0.0 <= v <= 1.0 for v in per)
        assert saved["mean"]["lists"][n]["miou"] == pytest.approx(np.mean(per))
        assert saved["mean"]["lists"][n]["scenes_counted"] == 2
    # the per-scene metrics are those run_eval wrote into the run
    run0 = out / "runs" / "synth_tiny_0_fast"
    written = json.loads((run0 / "metrics" / "scannet.json").read_text())
    ours = by_name["synth_tiny_0"]["metrics"]["scannet19"]
    assert ours["miou"] == written["lists"]["scannet19"]["miou"]
    assert saved["overrides"]["stage0.iterations"] == FAST_OVERRIDES["stage0.iterations"]

    md = (out / "benchmark.md").read_text()
    for text in (
        "synth_tiny_0 |", "synth_tiny_1 |", "**Mean** (ours, 2 of 3 scenes)",
        "scene_broken (failed",
        "OpenGaussian (published", "OpenInsGaussian (published", "37.50 | 54.38", "24.73 | 41.54",
        "19 classes mIoU", "command: `test`",
    ):
        assert text in md, text
    m19 = saved["mean"]["lists"]["scannet19"]
    assert f"{100 * m19['miou']:.2f} | {100 * m19['macc']:.2f}" in md

    # resume: finished scenes are read back; a scene without metrics is re-evaluated, not retrained
    run1 = out / "runs" / "synth_tiny_1_fast"
    mtimes = {r: (r / "instances.npz").stat().st_mtime_ns for r in (run0, run1)}
    (run1 / "metrics" / "scannet.json").unlink()
    again = run_benchmark(
        "scannet", scannet_root, out, scenes=["synth_tiny_0", "synth_tiny_1"], fast=True,
        overrides=NO_MODELS, progress=False, command="test",
    )
    assert again["failed"] == []
    assert [s["reused"] for s in again["scenes"]] == [True, False]
    assert {r: (r / "instances.npz").stat().st_mtime_ns for r in (run0, run1)} == mtimes
    assert (run1 / "metrics" / "scannet.json").is_file()
    for a, b in zip(again["scenes"], ok):
        assert a["metrics"] == b["metrics"]


def test_missing_scannet_scenes_are_listed(tmp_path):
    (tmp_path / "scene0000_00").mkdir()
    with pytest.raises(DataError) as exc:
        run_benchmark("scannet", tmp_path, tmp_path / "out", progress=False)
    msg = str(exc.value)
    assert "10 of 10 ScanNet scenes" in msg and "scene0645_00/ (folder missing)" in msg
    assert "scene0000_00/ lacks transforms_train.json" in msg and "points3d.ply" in msg
    with pytest.raises(ConfigError, match="--root"):
        run_benchmark("scannet", None, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="unknown synthetic benchmark scenes"):
        run_benchmark("synthetic", None, tmp_path / "out", scenes=["synth_huge_9"], progress=False)


def test_suites_and_fast_schedule_are_consistent():
    assert len(SCANNET_SCENES) == 10 and SCANNET_SCENES[0] == "scene0000_00"
    assert set(SCANNET_SCENES) == set(OIG_SCANNET_PER_SCENE)
    assert {e.masks for e in SYNTHETIC_SUITE} == {"ground_truth", "classical"}
    assert len({e.name for e in SYNTHETIC_SUITE}) == len(SYNTHETIC_SUITE)
    f = FAST_OVERRIDES  # stage-2 constraints of PipelineConfig
    assert f["stage2.fine_iterations"] >= f["stage2.codebook.k1"] * f["stage2.codebook.root_every"]
    assert f["stage2.codebook.root_every"] >= f["stage2.codebook.fine_every"]


def test_published_numbers_match_method_tables():
    oig, og = SCANNET_PUBLISHED["OpenInsGaussian"], SCANNET_PUBLISHED["OpenGaussian"]
    assert oig.published and "Tab. 1" in oig.source
    assert oig.scores["scannet19"] == (0.3750, 0.5438)
    assert oig.scores["scannet15"] == (0.3814, 0.5530)
    assert oig.scores["scannet10"] == (0.5142, 0.6915)
    assert og.scores["scannet19"] == (0.2473, 0.4154) and og.scores["scannet10"] == (0.3829, 0.5519)
    assert SCANNET_PUBLISHED["LangSplat"].scores["scannet15"] == (0.0535, 0.1320)
    assert SCANNET_PUBLISHED["LEGaussians"].scores["scannet10"] == (0.1282, 0.2862)
    assert OIG_SCANNET_PER_SCENE["scene0000_00"]["scannet10"] == (0.4744, 0.7469)
    assert OIG_SCANNET_PER_SCENE["scene0645_00"]["scannet19"] == (0.3416, 0.6509)
    # Tab. 6's Mean row equals Tab. 1's OIG row, and is the mean of its scenes to rounding
    assert OIG_SCANNET_PER_SCENE_MEAN == oig.scores
    for n, (miou, macc) in OIG_SCANNET_PER_SCENE_MEAN.items():
        rows = [OIG_SCANNET_PER_SCENE[s][n] for s in SCANNET_SCENES]
        assert np.mean([r[0] for r in rows]) == pytest.approx(miou, abs=6e-4)
        assert np.mean([r[1] for r in rows]) == pytest.approx(macc, abs=6e-4)
