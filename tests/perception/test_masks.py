"""Mask generators: SAM (levels from the multimask outputs, checkpoint resolution), classical, GT."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from tests.perception.perception_fixtures import blocks_image, make_scene, tiny_sam

from openinsgaussian.errors import ConfigError, DataError, ModelLoadError
from openinsgaussian.perception import LEVELS
from openinsgaussian.perception import masks as masks_mod
from openinsgaussian.perception.masks import (
    ClassicalMaskGenerator,
    GroundTruthMaskGenerator,
    MaskGenerator,
    MaskSet,
    SamMaskGenerator,
    _remove_small_regions,
    make_mask_generator,
    resolve_sam_checkpoint,
)


def _check_maskset(ms: MaskSet, hw: tuple[int, int]) -> None:
    assert list(ms.levels) == list(LEVELS) or set(ms.levels) == set(LEVELS)
    for name in LEVELS:
        m = ms.as_level(name)
        assert m.dtype == bool and m.ndim == 3 and m.shape[1:] == hw
        assert ms.scores[name].shape == (len(m),) and ms.scores[name].dtype == np.float32
    assert ms.size == hw


# ---- SAM ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_sam_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny_sam.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


def test_sam_through_the_loading_code(tiny_sam_registry, tiny_sam_checkpoint):
    gen = SamMaskGenerator("vit_b", checkpoint=tiny_sam_checkpoint, device="cpu", points_per_side=4,
                           pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=1,
                           min_mask_region_area=10)
    saved = torch.load(tiny_sam_checkpoint, weights_only=True)
    assert all(torch.equal(v, gen.model.state_dict()[k]) for k, v in saved.items())
    ms = gen(blocks_image(48, 64))
    _check_maskset(ms, (48, 64))
    assert isinstance(gen, MaskGenerator) and gen.describe()["model"] == "vit_b"


def _disk_predictor(predictor, radii=(3.0, 8.0, 16.0)):
    """Stand-in for the mask decoder: output k for point p = disk of radius radii[k] around p."""

    def predict_torch(point_coords, point_labels, multimask_output=True, return_logits=True, **_):
        h, w = predictor.original_size
        scale = predictor.transform.target_length / max(h, w)
        p = point_coords[:, 0, :].float() / scale  # [B,2] (x, y) in crop pixels
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        d = torch.sqrt((xx[None] - p[:, 0, None, None]) ** 2 + (yy[None] - p[:, 1, None, None]) ** 2)
        logits = torch.stack([(r - d) * 20.0 for r in radii], 1)  # [B,3,h,w]
        return logits, torch.full((len(p), 3), 0.95), None

    return predict_torch


def test_sam_levels_are_the_three_multimask_outputs():
    """s/m/l hold outputs 0/1/2 of every prompt, default holds all; each level de-duplicated."""
    gen = SamMaskGenerator("vit_b", model=tiny_sam(), points_per_side=4, crop_n_layers=0,
                           min_mask_region_area=0, box_nms_thresh=0.7)
    gen._generator.predictor.predict_torch = _disk_predictor(gen._generator.predictor)
    ms = gen(blocks_image(96, 128))
    _check_maskset(ms, (96, 128))
    areas = {n: ms.as_level(n).reshape(len(ms.as_level(n)), -1).sum(1) for n in LEVELS}
    assert len(areas["s"]) == 16  # 4x4 prompts, small disks never overlap
    assert np.all(areas["s"] < np.pi * 3.5**2)
    assert np.all((areas["m"] > np.pi * 7**2) & (areas["m"] < np.pi * 9**2))
    assert areas["l"].min() > areas["m"].max()
    # default starts from all 48 outputs; LangSplat's containment rule then drops every disk that
    # lies inside a bigger one, so only the whole-object disks survive
    assert len(gen._generator.generate_levels(blocks_image(96, 128))["default"][0]) == 48
    assert sorted(areas["default"]) == sorted(areas["l"])
    assert np.all(ms.scores["s"] > 0.9)  # stability x predicted IoU


def test_remove_small_regions_hand_case():
    mask = np.zeros((10, 10), bool)
    mask[1:8, 1:8] = True
    mask[4, 4] = False  # 1-px hole
    mask[9, 9] = True  # 1-px island
    out, changed = _remove_small_regions(mask, 3, "holes")
    assert changed and out[4, 4] and out[9, 9]
    out, changed = _remove_small_regions(out, 3, "islands")
    assert changed and not out[9, 9] and out[1:8, 1:8].all()
    out2, changed = _remove_small_regions(out, 3, "islands")
    assert not changed and np.array_equal(out, out2)
    lonely = np.zeros((5, 5), bool)
    lonely[0, 0] = lonely[4, 3:5] = True  # all islands small: the largest stays
    out, _ = _remove_small_regions(lonely, 10, "islands")
    assert out.sum() == 2 and out[4, 3:5].all()


def test_sam_checkpoint_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("OIG_SAM_CHECKPOINT", raising=False)
    monkeypatch.setenv("OIG_CACHE", str(tmp_path / "cache"))
    given = tmp_path / "mine.pth"
    given.write_bytes(b"x")
    assert resolve_sam_checkpoint("vit_b", given) == given
    monkeypatch.setenv("OIG_SAM_CHECKPOINT", str(given))
    assert resolve_sam_checkpoint("vit_b") == given
    monkeypatch.setenv("OIG_SAM_CHECKPOINT", str(tmp_path / "missing.pth"))
    with pytest.raises(ModelLoadError, match="OIG_SAM_CHECKPOINT"):
        resolve_sam_checkpoint("vit_b")
    monkeypatch.delenv("OIG_SAM_CHECKPOINT")
    # "download" from a local mirror: written atomically into the per-user cache
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "sam_vit_b_01ec64.pth").write_bytes(b"weights" * 1000)
    monkeypatch.setattr(masks_mod, "SAM_URL_BASE", mirror.as_uri() + "/")
    got = resolve_sam_checkpoint("vit_b")
    assert got == tmp_path / "cache" / "sam" / "sam_vit_b_01ec64.pth" and got.read_bytes() == b"weights" * 1000
    assert resolve_sam_checkpoint("vit_b") == got  # cached now
    # offline, nothing cached: the error names both ways out
    monkeypatch.setattr(masks_mod, "SAM_URL_BASE", (tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(ModelLoadError) as err:
        resolve_sam_checkpoint("vit_h")
    assert "--sam-checkpoint" in str(err.value) and "internet" in str(err.value)
    with pytest.raises(ConfigError):
        resolve_sam_checkpoint("vit_x")


def test_sam_mismatched_checkpoint(tiny_sam_registry, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, bad)
    with pytest.raises(ModelLoadError, match="bad.pth"):
        SamMaskGenerator("vit_b", checkpoint=bad, device="cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="junk.pth"):
        SamMaskGenerator("vit_b", checkpoint=junk, device="cpu")


# ---- classical / ground truth ---------------------------------------------------------------


def test_classical_levels_partition_the_image():
    gen = ClassicalMaskGenerator(scales=(20.0, 100.0, 500.0), min_area_fraction=0.01)
    ms = gen(blocks_image(48, 64))
    _check_maskset(ms, (48, 64))
    for name in LEVELS:
        m = ms.as_level(name)
        assert m.sum(0).max() <= 1  # no overlaps within a level
        assert m.reshape(len(m), -1).sum(1).min() >= 0.01 * 48 * 64
    assert len(ms.as_level("s")) >= len(ms.as_level("l")) >= 1  # coarser scale, fewer segments
    covered = ms.as_level("l").any(0).mean()
    assert covered > 0.9  # only leftover specks below the minimum area carry no mask
    assert np.array_equal(ms.as_level("default"), ms.as_level("m"))
    with pytest.raises(ConfigError):
        ClassicalMaskGenerator(scales=(1.0, 2.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ms.as_level("xl")


def test_ground_truth_masks(tmp_path):
    scene = make_scene(tmp_path, n_train=1, n_test=0)
    frame = scene.train_frames[0]
    gen = make_mask_generator("ground_truth")
    ms = gen(blocks_image(48, 64), frame)
    _check_maskset(ms, (48, 64))
    inst = frame.load_instances()
    for name in LEVELS:
        m = ms.as_level(name)
        assert len(m) == 4
        for k, mask in enumerate(m):
            assert np.array_equal(mask, inst == k + 1)
    small = gen(blocks_image(24, 32), frame)  # resized working image: nearest-resampled ids
    assert small.size == (24, 32) and len(small.as_level("l")) == 4
    with pytest.raises(ConfigError, match="frame"):
        gen(blocks_image(48, 64))
    frame.instance_path = None
    with pytest.raises(DataError, match="instance map"):
        gen(blocks_image(48, 64), frame)
    with pytest.raises(ConfigError):
        make_mask_generator("magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        gen(np.zeros((4, 4), np.float32), frame)


@pytest.mark.skipif(not os.environ.get("OIG_SAM_CHECKPOINT"), reason="needs real SAM weights (OIG_SAM_CHECKPOINT)")
def test_real_sam_finds_the_colour_blocks():
    """With real weights, each flat colour block is (nearly) one of the masks."""
    gen = SamMaskGenerator(os.environ.get("OIG_SAM_MODEL", "vit_h"), points_per_side=8, crop_n_layers=0)
    image = blocks_image(96, 128)
    ms = gen(image)
    found = np.concatenate([ms.as_level(n) for n in LEVELS])
    h, w = 96, 128
    blocks = [np.zeros((h, w), bool) for _ in range(4)]
    blocks[0][: h // 2, : w // 2] = blocks[1][: h // 2, w // 2 :] = True
    blocks[2][h // 2 :, : w // 3] = blocks[3][h // 2 :, w // 3 :] = True
    for b in blocks:
        ious = (found & b).sum((1, 2)) / (found | b).sum((1, 2))
        assert ious.max() > 0.8
