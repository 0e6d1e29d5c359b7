"""run_eval_lerf: LeRF metrics JSON, overlays and table of a finished tiny run; refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from openinsgaussian.errors import DataError, OpenInsError, RunError
from openinsgaussian.evaluate.lerf_run import run_eval_lerf
from openinsgaussian.train.finished import load_run


# Two frames (a train and a held-out view) that both show the door and the sink of the seed-0 room.
FRAMES = ("000000", "000007")
CATEGORIES = ("door", "sink")


@pytest.fixture(scope="module")
def finished(finished_tiny_run) -> Path:
    return finished_tiny_run  # tests/conftest.py


def _write_labels(run: Path, folder: Path, frames=FRAMES, scale: dict | None = None) -> Path:
    """LeRF-style JSONs whose polygons are the GT instance boxes of CATEGORIES in ``frames``."""
    scene = load_run(run).scene
    by_name = {f.name: f for f in scene.train_frames + scene.test_frames}
    folder.mkdir(parents=True, exist_ok=True)
    for name in frames:
        f = by_name.get(name, by_name[FRAMES[0]])
        s = (scale or {}).get(name, 1)
        inst = f.load_instances()  # [H, W]
        objects = []
        for iid, (cls, _) in scene.instance_classes.items():
            ys, xs = np.nonzero(inst == iid)
            if cls not in CATEGORIES or len(xs) == 0:
                continue
            x1, y1 = int(xs.min()) * s, int(ys.min()) * s
            x2, y2 = (int(xs.max()) + 1) * s, (int(ys.max()) + 1) * s
            objects.append(
                {
                    "category": cls,
                    "segmentation": [[x1, y1], [x2, y1], [x2, y2], [x1, y2]],
                    "bbox": [x1, y1, x2, y2],
                }
            )
        info = {"width": f.camera.width * s, "height": f.camera.height * s}
        (folder / f"frame_{name}.json").write_text(json.dumps({"info": info, "objects": objects}))
    return folder


def test_run_eval_lerf_writes_metrics_and_overlays_and_returns_them(finished, tmp_path):
    labels = _write_labels(finished, tmp_path / "label", scale={"000007": 2})
    res = run_eval_lerf(finished, labels)
    assert res.protocol == "lerf" and set(res.summary) == {*CATEGORIES, "scene"}
    assert res.overlays == finished / "renders" / "lerf"
    saved = json.loads((finished / "metrics" / "lerf.json").read_text())
    for key in ("seed", "config_hash", "package_version", "language_source", "protocol", "compat"):
        assert key in saved, key
    assert saved["protocol"] == "lerf" and saved["language_source"] == "oracle"
    assert saved["compat"] is False and saved["min_views"] == 2
    assert saved["queries_from"] == "labels" and set(saved["query_list"]) == set(CATEGORIES)
    assert saved["pairs"] == len(FRAMES) * len(CATEGORIES) == len(saved["per_pair"])
    assert saved["frames_matched_by"] == "frame number"  # frame_000000.json <-> camera 000000
    # The second label file is annotated at twice the camera size: GT resized, and recorded.
    assert saved["gt_resized"] == {"frame_000007": {"label": [128, 96], "camera": [64, 48]}}
    ious = {(p["frame"], p["query"]): p["iou"] for p in saved["per_pair"]}
    assert all(0.0 <= v <= 1.0 for v in ious.values())
    # Measured on this run: the clean-up runs per camera on the Gaussians visible there, as the
    # public renderer: sink renders in frame 7 (IoU 0.25) but fewer than 100 of its small
    # Gaussians are visible in frame 0, so it renders nothing there; the door never keeps 100.
    sink = saved["selections"]["sink"]["rendered_per_frame"]
    assert sink["frame_000000"] == 0 and sink["frame_000007"] > 0
    assert ious[("frame_000007", "sink")] > 0.2 and ious[("frame_000000", "sink")] == 0.0
    assert saved["selections"]["door"]["n_gaussians"] == 0
    assert ious[("frame_000000", "door")] == ious[("frame_000007", "door")] == 0.0
    assert saved["miou"] == pytest.approx(np.mean(list(ious.values())))
    assert saved["macc@0.25"] == pytest.approx(np.mean([v > 0.25 for v in ious.values()]))
    assert res.summary["scene"]["miou"] == saved["miou"] and res.metrics == saved
    assert saved["prompt_template"] == "a photo of a {}." and saved["text_features"] is None
    assert len(saved["overlays"]) == 4 and all(Path(p).is_file() for p in saved["overlays"])
    assert all(Path(p).parent == finished / "renders" / "lerf" for p in saved["overlays"])
    compat = run_eval_lerf(finished, labels, compat=True).metrics
    assert compat["compat"] is True and compat["config_hash"] == saved["config_hash"]


def test_lerf_queries_are_looked_up_in_a_text_features_file(finished, tmp_path):
    """The file's "sink" vector is the oracle's "door": the sink query then selects the door
    leaves, so the file is what scores (and a missing query key is an error naming it)."""
    from openinsgaussian.perception.oracle import OracleLanguage

    labels = _write_labels(finished, tmp_path / "label")
    ref = run_eval_lerf(finished, labels).metrics["selections"]
    oracle = OracleLanguage(load_run(finished).scene)
    tf = tmp_path / "text_features.json"
    tf.write_text(json.dumps({"sink": oracle.class_vector("door").tolist(),
                              "door": oracle.class_vector("door").tolist()}))
    got = run_eval_lerf(finished, labels, text_features=tf).metrics
    assert got["selections"]["sink"]["leaves"] == ref["door"]["leaves"] != ref["sink"]["leaves"]
    assert got["text_features"] == str(tf)
    tf.write_text(json.dumps({"door": oracle.class_vector("door").tolist()}))
    with pytest.raises(DataError, match=r"text_features\.json.*'sink'"):
        run_eval_lerf(finished, labels, text_features=tf)


def test_unmatched_frames_missing_labels_and_instances_are_refused(finished, tmp_path):
    labels = _write_labels(finished, tmp_path / "label", frames=("000099",))
    with pytest.raises(DataError, match="do not match the run's cameras") as err:
        run_eval_lerf(finished, labels)
    assert "frame_000099" in str(err.value) and "000000" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OpenInsError, match="no LeRF label files"):
        run_eval_lerf(finished, tmp_path / "empty")
    bare = tmp_path / "bare"
    shutil.copytree(finished, bare)
    (bare / "instances.npz").unlink()
    with pytest.raises(RunError, match="instances.npz"):
        run_eval_lerf(bare, labels)
