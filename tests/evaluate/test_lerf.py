"""LeRF-OVS 2D metrics: mask IoU, mIoU / mAcc@k (strict thresholds), per-frame pairs, overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openinsgaussian.data.lerf import category_masks, read_lerf_labels
from openinsgaussian.errors import DataError
from openinsgaussian.evaluate.lerf import (
    FN_COLOR,
    FP_COLOR,
    PROTOCOL,
    TP_COLOR,
    evaluate_lerf_frame,
    lerf_metrics,
    lerf_scene_ious,
    mask_iou,
    mean_over_lerf_scenes,
    overlay,
    save_overlay,
)


def _m(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows])


def test_mask_iou_hand_computed():
    pred = _m(["##..", "##..", "...."])
    gt = _m([".##.", ".##.", "...."])
    assert mask_iou(pred, gt) == pytest.approx(2 / 6)  # intersection 2, union 6
    assert mask_iou(gt, gt) == 1.0
    assert mask_iou(~gt, gt) == 0.0
    assert mask_iou(None, gt) == 0.0  # missing prediction
    empty = np.zeros((3, 4), bool)
    assert mask_iou(empty, empty) == 0.0  # empty union: the protocol value (code: calculate_iou)
    assert mask_iou(None, empty) == 0.0
    # uint8 0/255 masks and a [1, H, W] torch tensor (rendered alpha > 0.7) are accepted
    assert mask_iou(pred.astype(np.uint8) * 255, gt) == pytest.approx(2 / 6)
    alpha = torch.from_numpy(pred.astype(np.float32))[None] * 0.9  # [1, H, W]
    assert mask_iou(alpha > 0.7, gt) == pytest.approx(2 / 6)


def test_mask_iou_shape_mismatch_names_frame_and_shapes():
    with pytest.raises(DataError) as e:
        mask_iou(np.zeros((5, 6), bool), np.zeros((4, 6), bool), frame="frame_00041", query="waldo")
    msg = str(e.value)
    assert "frame_00041" in msg and "waldo" in msg and "6x5" in msg and "6x4" in msg
    with pytest.raises(DataError, match="2D"):
        mask_iou(np.zeros((2, 3, 4)), np.zeros((3, 4)))


def test_evaluate_lerf_frame_pairs_come_from_gt():
    gt = {"cup": _m(["##", ".."]), "plate": _m(["..", "##"]), "spoon": _m(["#.", ".."])}
    pred = {"cup": _m(["#.", ".."]), "plate": None, "bowl": _m(["##", "##"])}
    got = evaluate_lerf_frame(pred, gt, frame="frame_00002")
    assert got == {"cup": 0.5, "plate": 0.0, "spoon": 0.0}  # "bowl" has no GT: ignored
    with pytest.raises(DataError, match="frame 'frame_00002', query 'cup'"):
        evaluate_lerf_frame({"cup": np.zeros((3, 2), bool)}, gt, frame="frame_00002")


def test_lerf_metrics_thresholds_are_strict():
    ious = {
        ("frame_00001", "a"): 0.25,  # exactly the threshold: not a hit at 0.25
        ("frame_00001", "b"): 0.5,  # exactly 0.5: a hit at 0.25, not at 0.5
        ("frame_00002", "a"): 0.75,
        ("frame_00002", "c"): 0.0,
    }
    r = lerf_metrics(ious)
    assert r["protocol"] == PROTOCOL
    assert (r["pairs"], r["frames"], r["queries"]) == (4, 2, 3)
    assert r["miou"] == pytest.approx(0.375)
    assert r["macc@0.25"] == pytest.approx(0.5) and r["hits@0.25"] == 2
    assert r["macc@0.5"] == pytest.approx(0.25) and r["hits@0.5"] == 1
    assert r["per_query"]["a"] == {"pairs": 2, "iou": 0.5, "macc@0.25": 0.5, "macc@0.5": 0.5}
    assert r["per_frame"]["frame_00001"]["iou"] == pytest.approx(0.375)
    assert r["per_frame"]["frame_00001"]["macc@0.25"] == pytest.approx(0.5)
    assert r["per_frame"]["frame_00002"]["macc@0.5"] == pytest.approx(0.5)
    assert r["per_pair"][0] == {"frame": "frame_00001", "query": "a", "iou": 0.25}
    assert lerf_metrics(ious, thresholds=(0.7,))["macc@0.7"] == pytest.approx(0.25)
    with pytest.raises(DataError, match="no \\(frame, query\\) pairs"):
        lerf_metrics({})
    with pytest.raises(DataError, match="outside"):
        lerf_metrics({("f", "q"): float("nan")})


def test_scene_ious_and_dataset_mean():
    gt = {"f1": {"a": _m(["#."]), "b": _m([".#"])}, "f2": {"a": _m(["##"])}}
    pred = {"f1": {"a": _m(["##"])}, "f9": {"a": _m(["##"])}}  # f2 missing, f9 has no GT
    ious = lerf_scene_ious(pred, gt)
    assert ious == {("f1", "a"): 0.5, ("f1", "b"): 0.0, ("f2", "a"): 0.0}
    s1 = lerf_metrics(ious)
    s2 = lerf_metrics({("g", "x"): 1.0})
    d = mean_over_lerf_scenes({"ramen": s1, "teatime": s2})
    assert d["scenes"] == ["ramen", "teatime"]
    assert d["miou"] == pytest.approx((0.5 / 3 + 1.0) / 2)
    assert d["macc@0.25"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert d["per_scene"]["teatime"]["miou"] == 1.0
    with pytest.raises(DataError):
        mean_over_lerf_scenes({})


def test_real_gt_against_itself_and_a_shift(lerf_labels_dir: Path):
    ann = read_lerf_labels(lerf_labels_dir, "figurines")["frame_00152"]
    gt = category_masks(ann)
    assert evaluate_lerf_frame(gt, gt) == {q: 1.0 for q in gt}
    shifted = {q: np.roll(m, 3, axis=1) for q, m in gt.items()}
    r = lerf_metrics({("frame_00152", q): v for q, v in evaluate_lerf_frame(shifted, gt).items()})
    assert 0.5 < r["miou"] < 1.0 and r["pairs"] == len(ann.categories)


def test_overlay_colours_and_png(tmp_path: Path):
    img = np.full((3, 4, 3), 100, np.uint8)
    pred = _m(["##..", "....", "...."])
    gt = _m([".#..", ".#..", "...."])
    out = overlay(img, pred, gt, alpha=0.5)

    def blend(c):
        return tuple(int(np.rint(0.5 * 100 + 0.5 * v)) for v in c)

    assert tuple(out[0, 1]) == blend(TP_COLOR)
    assert tuple(out[0, 0]) == blend(FP_COLOR)
    assert tuple(out[1, 1]) == blend(FN_COLOR)
    assert tuple(out[2, 3]) == (100, 100, 100)
    path = save_overlay(img, pred, gt, tmp_path / "vis" / "frame_00041_waldo.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (4, 3)
        assert np.array_equal(np.asarray(im.convert("RGB")), out)
    assert not list((tmp_path / "vis").glob(".*.tmp"))  # atomic write left no temp file
    none = overlay(img, None, gt)  # missing prediction: GT drawn as false negatives
    assert tuple(none[0, 1]) == blend(FN_COLOR)
    with pytest.raises(DataError, match="sizes differ"):
        overlay(img, pred[:2], gt)
    with pytest.raises(DataError, match=".png or .jpg"):
        save_overlay(img, pred, gt, tmp_path / "x.tif")
