"""run_eval: ScanNet-protocol metrics JSON, plot and table of a finished run; clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.errors import ConfigError, DataError, RunError
from openinsgaussian.evaluate.run import run_eval
from openinsgaussian.train.pipeline import run_pipeline

from tests.tiny_schedule import TINY_PIPELINE

TINY = {**TINY_PIPELINE, "stage0.eval": False}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    old = torch.get_num_threads()
    room = generate_room(
        SynthConfig(out=tmp_path_factory.mktemp("data"), preset="tiny", seed=2, progress=False)
    )
    run = tmp_path_factory.mktemp("runs") / "run"
    run_pipeline(room, run, "synthetic", seed=2, **TINY)
    torch.set_num_threads(old)
    return room, run


def test_run_eval_writes_metrics_plot_and_prints_the_table(finished, capsys):
    _, run = finished
    res = run_eval(run)
    printed = capsys.readouterr().out
    assert "scannet19" in printed and "mIoU" in printed
    saved = json.loads((run / "metrics" / "scannet.json").read_text())
    for key in ("seed", "config_hash", "package_version", "device", "language_source", "protocol"):
        assert key in saved, key
    assert saved["seed"] == 2 and saved["language_source"] == "oracle" and saved["compat"] is False
    assert saved["protocol"] == "scannet-v2-text-query-3d-semseg"
    assert set(saved["lists"]) == {"scannet19", "scannet15", "scannet10"}
    assert 0.0 <= saved["lists"]["scannet19"]["miou"] <= 1.0 and saved["points"] == 4000
    assert Path(saved["plot"]).is_file() and saved["plot"] == res["plot"]
    compat = run_eval(run, compat=True, print_table=False)
    assert compat["compat"] is True and compat["config_hash"] == saved["config_hash"]


def _copy_with_config(run: Path, dest: Path, edit) -> Path:
    shutil.copytree(run, dest)
    cfg = yaml.safe_load((dest / "config.yml").read_text())
    edit(cfg)
    (dest / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def test_runs_without_the_point_identity_or_labels_are_refused(finished, tmp_path):
    room, run = finished
    moved = _copy_with_config(
        run, tmp_path / "moved", lambda c: c["pipeline"]["stage0"].update(frozen_points=False)
    )
    with pytest.raises(RunError, match="frozen"):
        run_eval(moved)
    scene = tmp_path / "scene"
    shutil.copytree(room, scene)
    for p in scene.glob("*_vh_clean_2.labels.ply"):
        p.unlink()
    unlabelled = _copy_with_config(
        run, tmp_path / "unlabelled", lambda c: c.update(data=str(scene))
    )
    with pytest.raises(DataError, match="GT labels"):
        run_eval(unlabelled)
    with pytest.raises(ConfigError, match="protocol"):
        run_eval(run, protocol="lerf")  # type: ignore[arg-type]
    with pytest.raises(RunError, match="not found"):
        run_eval(tmp_path / "nothing")


def test_lerf_protocol_needs_labels(finished):
    _, run = finished
    with pytest.raises(ConfigError, match="--labels"):
        run_eval(run, "lerf")
