"""select_for_text on hand-made leaves: the found test (relevancy, oracle vocabulary, filter)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.errors import ConfigError
from openinsgaussian.query.selection import make_selection, resolve_camera, select_for_text
from openinsgaussian.run.instances import Instances
from openinsgaussian.run.query_config import QueryConfig


def _instances() -> Instances:
    """4 leaves (k1 = 4, k2 = 1) with features e0..e3; leaf 3 matched in 1 view only; Gaussian
    i belongs to leaf i // 5 (20 Gaussians)."""
    L = 4
    return Instances(
        leaf_ind=np.repeat(np.arange(L), 5), coarse_ind=np.repeat(np.arange(L), 5),
        leaf_feat=np.eye(L, dtype=np.float32), leaf_score=np.ones(L, np.float32),
        occu_count=np.array([5, 5, 5, 1]), leaf_centers=np.zeros((L + 1, 6), np.float32),
        coarse_centers=np.zeros((L, 9), np.float32), leaf_k=np.ones(L, np.int64), k1=L, k2=1,
    )


TEXT = torch.tensor([0.6, 0.0, 0.0, 0.8])  # closest to leaf 3 (0.8), which is ineligible
CANON = torch.tensor([[0.8, 0.6, 0.0, 0.0]])  # cos 0.8 with leaf 0
MEANS, SCALES = torch.zeros(20, 3), torch.full((20, 3), 0.01)
CFG = QueryConfig(min_views_select=2)


def test_relevancy_decides_found_for_clip_like_sides():
    """Best eligible leaf 0: cosine 0.6; canonical cosine 0.8, so the LERF relevancy is
    sigmoid(10 (0.6 - 0.8)) = sigmoid(-2) = 0.1192, below the default 0.5."""
    sel = select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, CANON)
    assert sel.best_leaf == 0 and sel.score == pytest.approx(0.6)
    assert sel.relevancy == pytest.approx(1 / (1 + math.exp(2)), abs=1e-6)
    assert not sel.found and sel.rejected and sel.leaves.numel() == 0 and not sel.mask.any()
    assert "0.119" in sel.reason and sel.min_relevancy == 0.5
    low = select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, CANON, min_relevancy=0.1)
    assert low.found and low.leaves.tolist() == [0] and low.mask.nonzero().flatten().tolist() == [
        0, 1, 2, 3, 4]
    off = select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, CANON, min_relevancy=0.0)
    assert off.found and off.min_relevancy == 0.0  # 0: always the best leaf
    none = select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, None)
    assert none.found and none.relevancy is None and none.min_relevancy is None
    with pytest.raises(ConfigError, match="min_relevancy"):
        select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, CANON, min_relevancy=1.0)


def test_oracle_vocabulary_decides_found_whatever_the_relevancy():
    out = select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, CANON, in_vocabulary=False)
    assert not out.found and "vocabulary" in out.reason and out.best_leaf == 0
    inside = select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, CANON, in_vocabulary=True)
    assert inside.found and inside.min_relevancy is None  # low relevancy, but a scene class


def test_no_eligible_leaf_and_an_emptied_filter_are_not_found():
    strict = QueryConfig(min_views_select=10)
    out = select_for_text(TEXT, _instances(), MEANS, SCALES, strict, CANON)
    assert out.best_leaf is None and not out.found and "10 views" in out.reason
    filt = QueryConfig(min_views_select=2, filter=True, min_count=6)  # leaf 0 has 5 Gaussians
    out = select_for_text(TEXT, _instances(), MEANS, SCALES, filt, CANON, min_relevancy=0.0)
    assert not out.found and "filter" in out.reason and not out.mask.any()


def test_selection_without_a_run_and_camera_resolution():
    ts = select_for_text(TEXT, _instances(), MEANS, SCALES, CFG, CANON, min_relevancy=0.0)
    sel = make_selection("mug", ts, {"text_side": "test"}, None)
    assert sel.gaussian_ids.tolist() == [0, 1, 2, 3, 4] and sel.gaussian_ids.dtype == np.int64
    data = sel.to_json()
    assert data["text"] == "mug" and data["found"] and data["text_side"] == "test"
    with pytest.raises(ConfigError, match="not attached"):
        _ = sel.bounds
    cams = [Camera.from_intrinsics(10, 10, 4, 4, 8, 8, np.eye(4), name=n) for n in ("a", "b")]
    assert resolve_camera(1, cams) is cams[1] and resolve_camera("a", cams) is cams[0]
    assert resolve_camera(cams[0], []) is cams[0] and resolve_camera(-1, cams) is cams[1]
    for bad, msg in ((5, "out of range"), ("c", "no camera named"), (1.5, "expected a Camera")):
        with pytest.raises(ConfigError, match=msg):
            resolve_camera(bad, cams)
