"""The demo end to end on the tiny room with a short schedule: table, outputs, rerun reuses work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openinsgaussian.cli import _print_demo
from openinsgaussian.demo import run_demo
from openinsgaussian.errors import ConfigError

from tests.tiny_schedule import TINY_PIPELINE

TINY = {k: v for k, v in TINY_PIPELINE.items() if k != "stage1.lr"} | {"query.min_views_select": 2}


@pytest.fixture(autouse=True)
def restore_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_demo_runs_everything_and_says_where_the_outputs_are(tmp_path, capsys):
    res = run_demo(tmp_path, seed=0, preset="tiny", overrides=TINY)
    _print_demo(res)  # what openins demo prints
    printed = capsys.readouterr().out
    assert "scannet19" in printed and "mIoU" in printed and "where things are" in printed
    assert "openins view" in printed and printed.rstrip().splitlines()[-1].startswith("next:")
    run = res.run
    for p in (
        run / "exports" / "point_cloud.ply",
        run / "metrics" / "scannet.json",
        res.evaluation.plot,
    ):
        assert p.is_file(), p
        assert str(p) in printed.replace("\n", "") or p.name in printed
    assert res.queries is not None and all(res.queries.renders)
    assert all(s.found for s in res.queries.selections)  # the room's own classes
    assert res.evaluation.language_source == "oracle"
    again = run_demo(tmp_path, seed=0, preset="tiny", overrides=TINY)  # finished stages are reused
    stages = json.loads((run / "metrics" / "pipeline.json").read_text())["stages"]
    assert set(stages) >= {"stage0", "stage1", "stage2", "stage3"}
    assert again.evaluation.metrics["lists"] == res.evaluation.metrics["lists"]


def test_unknown_room_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="room size"):
        run_demo(tmp_path, preset="huge")


def test_demo_with_classical_masks_uses_its_own_cache_and_run(tmp_path):
    res = run_demo(tmp_path, seed=0, preset="tiny", masks="classical", overrides=TINY)
    assert res.run.name == "run_tiny_0_classical"
    scene = res.scene
    assert (scene / "language_features_classical" / "preprocess.json").is_file()
    assert not (scene / "language_features").exists()
    assert 0.0 <= res.evaluation.summary["scannet19"]["miou"] <= 1.0
    with pytest.raises(ConfigError, match="mask source"):
        run_demo(tmp_path, seed=0, preset="tiny", masks="sam", overrides=TINY)
