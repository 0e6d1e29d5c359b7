"""The library face (``openinsgaussian.api``) on the shared tiny trained run: every documented
example runs (doctests), and each public name does what its docstring says."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

import openinsgaussian as oig
from openinsgaussian import api
from openinsgaussian.errors import DataError, RunError
from openinsgaussian.splats.ply import load_gaussians_ply


@pytest.fixture(scope="module")
def run(finished_tiny_run) -> oig.Run:
    return oig.open_run(finished_tiny_run, device="cpu")


def test_documented_examples_run(finished_tiny_run):
    """The ``>>>`` examples of ``openinsgaussian.api`` (the README's Python section uses them)."""
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(api, globs={"oig": oig, "RUN": finished_tiny_run})
    examples = sum(len(t.examples) for t in tests)
    for t in tests:
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert examples >= 15 and res.attempted == examples and res.failed == 0


def test_package_face_exports_the_api():
    for name in ("open_run", "Run", "Selection", "Instance", "train", "preprocess", "evaluate",
                 "TrainResult", "PreprocessResult", "EvalResult"):
        assert getattr(oig, name) is getattr(api, name), name
    assert callable(oig.train) and callable(oig.evaluate)  # functions, not the subpackages


def test_open_run_refuses_what_is_not_a_finished_run(tmp_path, finished_tiny_run):
    with pytest.raises(RunError, match="not found"):
        oig.open_run(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="config.yml"):
        oig.open_run(tmp_path / "empty")
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(finished_tiny_run, partial)
    (partial / "instances.npz").unlink()
    with pytest.raises(DataError, match="instances.npz"):
        oig.open_run(partial)


def test_selection_fields_and_geometry(run):
    sel = run.query("bed")
    assert sel.found and sel.reason is None
    ids = sel.gaussian_ids
    assert ids.dtype == np.int64 and ids.ndim == 1 and len(ids) == sel.n_gaussians > 0
    assert np.all(np.diff(ids) > 0) and ids.max() < run.num_gaussians
    leaf_ind = run._loaded.instances.leaf_ind
    assert set(np.unique(leaf_ind[ids])) <= set(sel.leaves.tolist())
    assert sel.leaves[0] == sel.best_leaf and -1.0 <= sel.score <= 1.0
    means = run.model.means.detach().numpy().astype(np.float64)
    inl = means[sel.inliers]
    lo, hi = sel.bounds
    np.testing.assert_allclose(lo, inl.min(0)), np.testing.assert_allclose(hi, inl.max(0))
    np.testing.assert_allclose(sel.centroid, inl.mean(0))
    obb = sel.obb
    np.testing.assert_allclose(obb.axes @ obb.axes.T, np.eye(3), atol=1e-9)
    local = (inl - obb.center) @ obb.axes.T  # [S, 3] in the box frame
    assert np.all(np.abs(local) <= obb.extent / 2 + 1e-9)
    d = sel.to_json()
    assert d["found"] and d["gaussian_ids"] == ids.tolist() and len(d["bounds"]) == 2
    json.dumps(d)  # plain data


def test_mask_is_the_selection_rendered_alone(run):
    sel = run.query("bed")
    cam = run.cameras[0]
    m = sel.mask(cam)
    assert m.shape == (cam.height, cam.width) and m.dtype == bool
    alpha = run.render(cam, sel).alpha[0].numpy()  # [H, W]
    np.testing.assert_array_equal(m, alpha > 0.5)
    np.testing.assert_array_equal(sel.mask(0, threshold=0.9), alpha > 0.9)
    assert (sel.mask(cam.name) == m).all()
    full = run.render(0).alpha[0].numpy()
    assert full.sum() > alpha.sum()  # all Gaussians cover more than the bed alone


def test_export_ply_holds_only_the_selection(run, tmp_path):
    sel = run.query("door")
    path = sel.export_ply(tmp_path / "door.ply")
    g, extra = load_gaussians_ply(path)
    assert len(g) == sel.n_gaussians
    leaf_ind = run._loaded.instances.leaf_ind
    np.testing.assert_array_equal(extra["leaf_id"], leaf_ind[sel.gaussian_ids])
    np.testing.assert_allclose(g.means.detach().numpy(),
                               run.model.means.detach().numpy()[sel.gaussian_ids], atol=1e-6)


def test_absent_objects_are_not_found(run):
    sel = run.query("zebra")
    assert not sel.found and sel.n_gaussians == 0 and "vocabulary" in sel.reason
    assert sel.bounds is None and sel.centroid is None and not sel.mask(0).any()
    both = run.query_all(["zebra", "bed"])
    assert [s.found for s in both] == [False, True]


def test_instances_are_the_matched_leaves_with_labels(run):
    inst = run.instances()
    ids = [i.id for i in inst]
    assert len(ids) == len(set(ids)) > 0
    leaf_ind = run._loaded.instances.leaf_ind
    occu = run._loaded.instances.occu_count
    for i in inst:
        assert np.array_equal(i.gaussian_ids, np.flatnonzero(leaf_ind == i.id))
        assert i.n_views == int(occu[i.id]) >= run.query_config.min_views_label
    labels = inst[0].labels("scannet19", k=3)
    assert len(labels) == 3 and labels[0][1] >= labels[1][1] >= labels[2][1]
    # the oracle: the best label of the bed's leaf is bed
    bed = run.query("bed").best_leaf
    assert next(i for i in inst if i.id == bed).labels("scannet19", k=1)[0][0] == "bed"


def test_cameras_are_train_then_test(run):
    scene = run.scene
    names = [c.name for c in run.cameras]
    assert names == [f.name for f in scene.train_frames + scene.test_frames]


def test_evaluate_returns_the_metrics_it_wrote(finished_tiny_run):
    res = oig.evaluate(finished_tiny_run, protocol="scannet")
    saved = json.loads(Path(res.metrics_path).read_text())
    assert res.metrics == saved and res.protocol == "scannet"
    assert res.summary["scannet19"]["miou"] == saved["lists"]["scannet19"]["miou"]


def test_train_and_preprocess_return_what_they_did(finished_tiny_run, tmp_path):
    """``oig.train`` resuming a finished run skips every stage and reports the saved config;
    ``oig.preprocess`` on the room whose cache training built computes nothing new."""
    import shutil

    import yaml

    room = Path(yaml.safe_load((finished_tiny_run / "config.yml").read_text())["data"])
    copy = tmp_path / "run"
    shutil.copytree(finished_tiny_run, copy)
    res = oig.train(room, run=copy, preset="synthetic", resume=True)
    assert isinstance(res, oig.TrainResult) and res.run == copy and res.finished
    assert set(res.stages) == {"stage0", "stage1", "stage2", "stage3"}  # no inputs loaded
    assert all(res.stages[s]["skipped"] for s in ("stage0", "stage1", "stage2", "stage3"))
    assert res.config.query.min_views_select == 2  # the saved config, not the preset's 5
    assert res.open().num_gaussians == oig.open_run(finished_tiny_run).num_gaussians

    pre = oig.preprocess(room, masks="ground_truth", language="oracle", progress=False)
    assert isinstance(pre, oig.PreprocessResult) and pre.processed == 0
    assert pre.images > 0
    assert pre.language_source is not None and pre.cache.is_dir()
