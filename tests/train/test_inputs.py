"""Per-view training inputs: nearest resize of id maps, the cache path and the direct path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from openinsgaussian.data.load import load_scene
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.errors import RunError
from openinsgaussian.perception.cache import entry_exists
from openinsgaussian.train.inputs import (
    InputsConfig,
    load_training_inputs,
    masks_to_id_map,
    resize_ids_nearest,
)
from openinsgaussian.train.stage0 import Stage0Config, prepare_frames


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    return generate_room(
        SynthConfig(out=tmp_path_factory.mktemp("data"), preset="tiny", seed=1, progress=False)
    )


def test_resize_ids_nearest_samples_pixel_centres():
    ids = np.array([[1, 2], [3, 4]])
    up = resize_ids_nearest(ids, 4, 4)
    np.testing.assert_array_equal(up, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    big = np.arange(16).reshape(4, 4)
    # 4x4 -> 2x2: output pixel centres 0.5, 1.5 map to input 1.0, 3.0 -> rows/cols 1 and 3
    np.testing.assert_array_equal(resize_ids_nearest(big, 2, 2), [[5, 7], [13, 15]])
    # 4 wide -> 3 wide: centres (0.5, 1.5, 2.5) * 4/3 = (0.67, 2.0, 3.33) -> cols 0, 2, 3
    np.testing.assert_array_equal(resize_ids_nearest(big, 3, 4)[0], [0, 2, 3])
    assert resize_ids_nearest(ids, 2, 2) is ids


def test_resize_ids_stride_is_the_public_subsampling():
    """The public loader takes ``sam_mask[:, ::s, ::s]``: rows/cols 0, 2 of a 4x4 map at s = 2,
    and ceil(5 / 2) = 3 rows of a 5-row map; other ratios fall back to pixel centres."""
    big = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resize_ids_nearest(big, 2, 2, "stride"), [[0, 2], [8, 10]])
    odd = np.arange(20).reshape(5, 4)
    np.testing.assert_array_equal(resize_ids_nearest(odd, 2, 3, "stride"), odd[::2, ::2])
    np.testing.assert_array_equal(
        resize_ids_nearest(big, 3, 4, "stride"), resize_ids_nearest(big, 3, 4, "centre")
    )


def test_masks_to_id_map():
    m = np.zeros((2, 2, 3), bool)
    m[0, 0, :2] = True
    m[1, 1, 2] = True
    np.testing.assert_array_equal(masks_to_id_map(m), [[1, 1, 0], [0, 0, 2]])
    assert masks_to_id_map(np.zeros((0, 2, 2), bool)).shape == (2, 2)


def test_cache_is_built_with_gt_masks_and_oracle_and_resized_to_training_cameras(room):
    scene = load_scene(room)
    cfg = InputsConfig(level=0, mask_resize="centre")  # as the frames resize their instance maps
    frames = prepare_frames(scene.train_frames, Stage0Config(downscale=2.0))
    with pytest.raises(RunError, match="openins preprocess"):
        load_training_inputs(scene, frames, cfg, progress=False, build=False)
    inputs = load_training_inputs(scene, frames, cfg, progress=False)
    assert all(entry_exists(room / "language_features", f.name) for f in scene.train_frames)
    assert inputs.language_source == "oracle" and inputs.dim == 640 and len(inputs) == len(frames)
    for f, v in zip(frames, inputs.views, strict=False):
        assert tuple(v.mask_ids.shape) == (f.camera.height, f.camera.width)
        masks = v.masks()
        assert masks.shape[0] == v.num_masks == v.lang.shape[0]
        # each mask is one GT instance of the half-size instance map (nearest resampling)
        inst = f.load_instances()
        assert inst.shape == tuple(v.mask_ids.shape)
        for j in range(v.num_masks):
            ids_under = np.unique(inst[masks[j].numpy()])
            assert len(ids_under) <= 1
        np.testing.assert_allclose(v.lang.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_direct_source_matches_the_cache(room):
    scene = load_scene(room)
    frames = prepare_frames(scene.train_frames, Stage0Config())
    cached = load_training_inputs(scene, frames, InputsConfig(), progress=False)
    direct = load_training_inputs(scene, frames, InputsConfig(source="direct"), progress=False)
    assert direct.cache_dir is None and direct.language_source == "oracle"
    for a, b in zip(cached.views, direct.views, strict=False):
        ma, mb = a.masks(), b.masks()
        assert ma.shape == mb.shape  # same masks, maybe in another order (the cache sorts by area)
        for j in range(mb.shape[0]):
            k = int(torch.nonzero((ma == mb[j]).flatten(1).all(1))[0])
            torch.testing.assert_close(a.lang[k], b.lang[j])


def test_direct_source_applies_view_corruption(room):
    scene = load_scene(room)
    frames = prepare_frames(scene.train_frames, Stage0Config())
    clean = load_training_inputs(scene, frames, InputsConfig(source="direct"), progress=False)
    bad = load_training_inputs(
        scene,
        frames,
        replace(InputsConfig(source="direct"), oracle_view_corrupt_fraction=1.0),
        progress=False,
    )
    assert "view_corrupt=1" in bad.language_detail["description"]
    for a, b in zip(clean.views, bad.views, strict=False):
        if a.num_masks:
            assert not torch.allclose(a.lang, b.lang)


def test_relabel_inputs_keeps_the_masks_and_swaps_the_features(room):
    from openinsgaussian.perception.oracle import OracleLanguage
    from openinsgaussian.train.inputs import relabel_inputs

    scene = load_scene(room)
    frames = prepare_frames(scene.train_frames, Stage0Config())
    base = load_training_inputs(scene, frames, InputsConfig(), progress=False)
    same = relabel_inputs(base, OracleLanguage(scene), progress=False)
    bad = relabel_inputs(base, OracleLanguage(scene, view_corrupt_fraction=1.0), progress=False)
    assert bad.language_detail["description"].startswith("oracle(view_corrupt=1")
    for a, b, c in zip(base.views, same.views, bad.views, strict=False):
        assert b.mask_ids is a.mask_ids and c.mask_ids is a.mask_ids
        torch.testing.assert_close(b.lang, a.lang)
        if a.num_masks:
            assert not torch.allclose(c.lang, a.lang)
