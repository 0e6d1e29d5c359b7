"""instances.npz: round trip, header, validation and readable errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openinsgaussian.errors import DataError
from openinsgaussian.run.instances import Instances, load_instances, save_instances


def _example(n: int = 50, k1: int = 3, k2: int = 2, d: int = 8, views: int = 4) -> Instances:
    rng = np.random.default_rng(0)
    L = k1 * k2
    leaf = rng.integers(0, L + 1, n)  # includes the sentinel L
    return Instances(
        leaf_ind=leaf,
        coarse_ind=np.minimum(leaf // k2, k1 - 1),
        leaf_feat=rng.normal(size=(L, d)).astype(np.float32),
        leaf_score=rng.random(L).astype(np.float32),
        occu_count=rng.integers(0, views + 1, L),
        leaf_centers=rng.random((L + 1, 6)).astype(np.float32),
        coarse_centers=rng.random((k1, 9)).astype(np.float32),
        leaf_k=np.full(k1, k2),
        k1=k1,
        k2=k2,
        header={
            "language_source": "clip:convnext_base_w:laion2b_s13b_b82k_augreg",
            "aggregation": "attention",
            "association": "one_pass",
            "package_version": "0.1.0",
            "seed": 7,
        },
        match_info=rng.random((L, views, 3)).astype(np.float32),
    )


def test_round_trip_keeps_every_array_and_the_header(tmp_path):
    inst = _example()
    path = save_instances(tmp_path / "instances.npz", inst)
    back = load_instances(path)
    for name in (
        "leaf_ind",
        "coarse_ind",
        "leaf_feat",
        "leaf_score",
        "occu_count",
        "leaf_centers",
        "coarse_centers",
        "leaf_k",
        "match_info",
    ):
        np.testing.assert_array_equal(getattr(back, name), getattr(inst, name), err_msg=name)
    assert (back.k1, back.k2, back.num_leaves, back.dim) == (3, 2, 6, 8)
    assert back.language_source == "clip:convnext_base_w:laion2b_s13b_b82k_augreg"
    for key, value in inst.header.items():
        assert back.header[key] == value
    assert back.header["num_gaussians"] == 50 and back.header["format_version"] == 1
    # readable without pickle, with OpenGaussian's cluster_lang names, header as a JSON string
    with np.load(path, allow_pickle=False) as z:
        assert {"leaf_feat", "leaf_score", "occu_count", "leaf_ind"} <= set(z.files)
        assert json.loads(str(z["header"]))["aggregation"] == "attention"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_match_info_is_optional(tmp_path):
    inst = _example()
    inst.match_info = None
    back = load_instances(save_instances(tmp_path / "i.npz", inst))
    assert back.match_info is None


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("leaf_feat", np.zeros((5, 8), np.float32), "leaf_feat has shape"),
        ("leaf_centers", np.zeros((6, 6), np.float32), "leaf_centers"),
        ("leaf_ind", np.full(50, 99), "leaf_ind must lie"),
        ("header", {"aggregation": "mean"}, "header lacks"),
    ],
)
def test_invalid_content_is_refused_with_the_file_named(tmp_path, field, value, words):
    inst = _example()
    setattr(inst, field, value)
    with pytest.raises(DataError, match=words) as e:
        save_instances(tmp_path / "bad.npz", inst)
    assert "bad.npz" in str(e.value)
    assert not (tmp_path / "bad.npz").exists()


def test_reading_something_else_names_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_instances(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", leaf_feat=np.zeros((2, 2)))
    with pytest.raises(DataError, match="missing"):
        load_instances(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_instances(tmp_path / "junk.npz")
