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
from openinsgaussian.evaluate.benchmark_lerf import BENCHMARK_SCENES, mean, tables
from openinsgaussian.evaluate.published import LERF_PUBLISHED
from openinsgaussian.evaluate.run import run_eval

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
    folder = lerf_root / "label" / "synth_tiny_0"
    assert written["pairs"] == _pairs(folder)
    assert written["frames"] == len(list(folder.glob("frame_*.json")))
    assert written["preset"] == "lerf" and written["scene_name"] == "synth_tiny_0"
    assert ok["scene_overrides"] == {}  # not a published scene name
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
        "| OpenInsGaussian (published) | - | 58.93 | 45.99 |",
        "these runs used the oracle language source", "ground_truth masks instead of SAM",
        "Mean (ours: 1 of 2 scenes)",
    ):
        assert text in md, text

    # resume: the finished scene is read back, nothing is retrained
    stamp = (run / "instances.npz").stat().st_mtime_ns

    def again(overrides=LERF_NO_MODELS, labels=None) -> dict:
        res = run_benchmark(
            "lerf", lerf_root, out, scenes=["synth_tiny_0"], fast=True, overrides=overrides,
            progress=False, command="test", labels=labels,
        )
        return res["scenes"][0]

    same = again()
    assert same["reused"] and same["metrics"] == ok["metrics"]
    # the same annotations elsewhere give the same result; edited annotations are re-scored
    other = tmp_path / "labels_copy"
    shutil.copytree(lerf_root / "label", other)
    assert again(labels=other)["reused"]
    first = sorted((other / "synth_tiny_0").glob("frame_*.json"))[0]
    ann = json.loads(first.read_text())
    ann["objects"] = ann["objects"][1:]  # one object fewer
    first.write_text(json.dumps(ann))
    edited = again(labels=other)
    assert not edited["reused"] and edited["metrics"]["pairs"] == _pairs(other / "synth_tiny_0")
    assert edited["metrics"]["pairs"] < ok["metrics"]["pairs"]
    # a query setting changed: re-evaluated with it, not retrained
    changed = again(overrides={**LERF_NO_MODELS, "query.min_views_select": 3})
    assert not changed["reused"]
    assert json.loads((run / "metrics" / "lerf.json").read_text())["min_views"] == 3
    # metrics written with the compat switch are never taken for the benchmark's
    run_eval(run, "lerf", compat=True, labels=lerf_root / "label")
    back = again()
    assert not back["reused"] and back["metrics"] == ok["metrics"]
    assert json.loads((run / "metrics" / "lerf.json").read_text())["compat"] is False
    assert (run / "instances.npz").stat().st_mtime_ns == stamp


def _pairs(folder: Path) -> int:
    """(frame, category) pairs of a label folder."""
    return sum(
        len({o["category"] for o in json.loads(p.read_text())["objects"]})
        for p in folder.glob("frame_*.json")
    )


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
    with pytest.raises(DataError, match="LeRF-OVS root folder not found"):
        run_benchmark("lerf", tmp_path / "nowhere", tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="--root"):
        run_benchmark("lerf", None, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="lerf benchmark only"):
        run_benchmark("synthetic", None, tmp_path / "out", labels=tmp_path, progress=False)


def _fake(scene: str, miou: float, a25: float, a50: float, pairs: int) -> dict:
    metrics = {"miou": miou, "macc@0.25": a25, "macc@0.5": a50, "pairs": pairs, "frames": 2,
               "queries": 3, "thresholds": [0.25, 0.5]}
    return {"scene": scene, "status": "ok", "metrics": metrics, "scene_overrides": {}}


def test_mean_is_unweighted_over_scenes_and_tables_follow_the_published_layout():
    ok = [_fake("teatime", 0.6, 0.8, 0.5, 100), _fake("figurines", 0.2, 0.4, 0.1, 10)]
    ok[0]["scene_overrides"] = {"stage2.codebook.k1": 32}
    m = mean(ok)
    assert m["miou"] == pytest.approx(0.4)  # not weighted by the 100 vs 10 pairs
    assert m["macc@0.25"] == pytest.approx(0.6) and m["macc@0.5"] == pytest.approx(0.3)
    assert mean([]) is None
    failed = {"scene": "ramen", "status": "failed", "error": {"type": "DataError"}}
    md = "\n".join(tables({"scenes": [*ok, failed], "mean": m}))
    assert "| Method | teatime | figurines | ramen | Mean (ours: 2 of 3 scenes) |" in md
    assert "| **ours** | 60.00 / 80.00 | 20.00 / 40.00 | failed (DataError) | 40.00 / 60.00 |" in md
    assert "| OpenGaussian (published) | 60.44 / 76.27 | 39.29 / 55.36 | 31.01 / 42.25 |" in md
    assert "| **ours** | 50.00 | 10.00 | failed (DataError) | 30.00 |" in md  # mAcc@0.5
    assert "teatime: stage2.codebook.k1 = 32" in md
    assert BENCHMARK_SCENES == ("figurines", "teatime", "ramen", "waldo_kitchen")  # §8.2 order


# METHOD §8.2, copied as printed: method -> scene -> (mIoU, mAcc@0.25) in percent.
METHOD_8_2 = {
    "LangSplat": {"figurines": (10.16, 8.93), "teatime": (11.38, 20.34), "ramen": (7.92, 11.27),
                  "waldo_kitchen": (9.18, 9.09), "mean": (9.66, 12.41)},
    "LEGaussians": {"figurines": (17.99, 23.21), "teatime": (19.27, 27.12),
                    "ramen": (15.79, 26.76), "waldo_kitchen": (11.78, 18.18),
                    "mean": (16.21, 23.82)},
    "OpenGaussian": {"figurines": (39.29, 55.36), "teatime": (60.44, 76.27),
                     "ramen": (31.01, 42.25), "waldo_kitchen": (22.70, 31.82),
                     "mean": (38.36, 51.43)},
    "OpenInsGaussian": {"figurines": (53.75, 76.79), "teatime": (58.55, 77.97),
                        "ramen": (26.38, 43.66), "waldo_kitchen": (31.78, 50.00),
                        "mean": (42.62, 62.11)},
}
OIG_ACC50 = {"figurines": 58.93, "ramen": 19.72, "teatime": 64.41, "waldo_kitchen": 40.91,
             "mean": 45.99}


def test_published_lerf_table_equals_method_8_2():
    assert set(LERF_PUBLISHED) == set(METHOD_8_2)
    for method, rows in METHOD_8_2.items():
        got = LERF_PUBLISHED[method].scores
        for scene, (miou, acc25) in rows.items():
            assert got[scene]["miou"] == pytest.approx(miou / 100, abs=1e-9), (method, scene)
            assert got[scene]["macc@0.25"] == pytest.approx(acc25 / 100, abs=1e-9)
            if method == "OpenInsGaussian":
                assert got[scene]["macc@0.5"] == pytest.approx(OIG_ACC50[scene] / 100, abs=1e-9)
            else:
                assert "macc@0.5" not in got[scene]


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the hint is for machines without a GPU")
def test_full_schedule_without_gpu_prints_a_hint(lerf_root, tmp_path, capsys):
    with pytest.raises(BenchmarkFailed):  # the scene is missing: it fails at once
        run_benchmark("lerf", lerf_root, tmp_path / "out", scenes=["figurines"], progress=False)
    out = capsys.readouterr().out
    assert "no CUDA GPU found" in out and "70,000 steps per scene" in out and "--fast" in out
