"""run_eval (ScanNet protocol) on the shared tiny run: metrics JSON, plot, typed result, the text
side (prompt template, text-features files), clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from openinsgaussian.data.classes import SCANNET19
from openinsgaussian.errors import ConfigError, DataError, RunError
from openinsgaussian.evaluate.run import file_keys, run_eval
from openinsgaussian.perception.oracle import OracleLanguage
from openinsgaussian.train.finished import load_run


@pytest.fixture(scope="module")
def run(finished_tiny_run) -> Path:
    return finished_tiny_run  # tests/conftest.py


def test_run_eval_writes_metrics_and_plot_and_returns_them(run):
    res = run_eval(run)
    saved = json.loads((run / "metrics" / "scannet.json").read_text())
    assert res.metrics == saved and res.metrics_path == run / "metrics" / "scannet.json"
    for key in ("seed", "config_hash", "package_version", "device", "language_source", "protocol",
                "prompt_template", "text_features"):
        assert key in saved, key
    assert saved["seed"] == 0 and saved["language_source"] == "oracle" and saved["compat"] is False
    assert saved["prompt_template"] == "a photo of a {}." and saved["text_features"] is None
    assert saved["protocol"] == "scannet-v2-text-query-3d-semseg"
    assert set(saved["lists"]) == set(res.summary) == {"scannet19", "scannet15", "scannet10"}
    assert res.summary["scannet19"]["miou"] == saved["lists"]["scannet19"]["miou"]
    assert 0.0 <= saved["lists"]["scannet19"]["miou"] <= 1.0 and saved["points"] == 4000
    assert Path(saved["plot"]).is_file() and res.plot == Path(saved["plot"])
    compat = run_eval(run, compat=True)
    assert compat.compat and compat.metrics["config_hash"] == saved["config_hash"]


def test_class_names_map_to_the_keys_of_public_text_feature_files():
    keys = ["wall", "showercurtain", "refridgerator", "otherfurniture", "table"]
    got = file_keys(["wall", "shower curtain", "refrigerator", "other furniture", "sink"], keys)
    assert got == {"wall": "wall", "shower curtain": "showercurtain",
                   "refrigerator": "refridgerator", "other furniture": "otherfurniture",
                   "sink": "sink"}


def _file(path: Path, run: Path, swap: tuple[str, str] | None = None) -> Path:
    """The oracle's class vectors under the public files' run-together keys."""
    oracle = OracleLanguage(load_run(run).scene)
    vec = {n: oracle.class_vector(n).tolist() for n in SCANNET19.names}
    if swap:
        a, b = swap
        vec[a], vec[b] = vec[b], vec[a]
    path.write_text(json.dumps({n.replace(" ", ""): v for n, v in vec.items()}))
    return path


def test_text_features_file_is_used_as_is(run, tmp_path):
    """The same vectors as the run's text side give the same metrics; swapping the door and
    bed vectors in the file swaps those predictions (the door's IoU falls to about 0), so the
    file is what scores."""
    ref = run_eval(run).metrics["lists"]
    same = run_eval(run, text_features=_file(tmp_path / "same.json", run)).metrics
    assert same["lists"] == ref and same["text_features"].endswith("same.json")
    assert same["text_feature_keys"]["shower curtain"] == "showercurtain"
    assert not same["prompt_template_applied"]
    swapped = run_eval(run, text_features=_file(tmp_path / "sw.json", run, ("door", "bed")))
    door = swapped.metrics["lists"]["scannet19"]["per_class"]["door"]["iou"]
    assert ref["scannet19"]["per_class"]["door"]["iou"] > 0.5 and door < 0.2


def test_text_features_errors_name_the_file_and_the_problem(run, tmp_path):
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"wall": [1.0] * 640, "floor": [0.5] * 640}))
    with pytest.raises(DataError, match=r"partial\.json.*no entry for the phrase 'cabinet'"):
        run_eval(run, text_features=partial)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({n: [1.0, 0.0] for n in SCANNET19.names}))
    with pytest.raises(DataError, match=r"small\.json.*2-d.*640-d"):
        run_eval(run, text_features=small)


def _copy_with_config(run: Path, dest: Path, edit) -> Path:
    shutil.copytree(run, dest)
    cfg = yaml.safe_load((dest / "config.yml").read_text())
    edit(cfg)
    (dest / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def test_runs_without_the_point_identity_or_labels_are_refused(run, tmp_path):
    room = Path(yaml.safe_load((run / "config.yml").read_text())["data"])
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
        run_eval(run, protocol="lerf3d")  # type: ignore[arg-type]
    with pytest.raises(RunError, match="not found"):
        run_eval(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="--labels"):
        run_eval(run, "lerf")
    assert np.isfinite(run_eval(run).summary["scannet10"]["miou"])
