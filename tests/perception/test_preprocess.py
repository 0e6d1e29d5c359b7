"""Preprocessing driver: cache contents, resume, configuration guard, working resolution."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tests.perception.perception_fixtures import TINY_CONVNEXT, make_scene

from openinsgaussian.errors import ConfigError
from openinsgaussian.perception import LEVELS
from openinsgaussian.perception.cache import entry_paths, read_level
from openinsgaussian.perception.features import ClipLanguage
from openinsgaussian.perception.masks import ClassicalMaskGenerator, GroundTruthMaskGenerator
from openinsgaussian.perception.preprocess import PreprocessConfig, load_working_image, run_preprocess, working_size


class Counting:
    """Wraps a mask generator and counts the images it was asked for."""

    def __init__(self, inner):
        self.inner, self.calls, self.name = inner, 0, inner.name

    def __call__(self, image, frame=None):
        self.calls += 1
        return self.inner(image, frame)


class MeanColour:
    """A cheap language source with the same protocol: the unit mean colour of each mask."""

    name, dim = "mean-colour", 3

    def __call__(self, image, masks, frame=None):
        rgb = np.stack([image[m].mean(0) if m.any() else np.ones(3) for m in masks]) if len(masks) else np.zeros((0, 3))
        return (rgb / np.linalg.norm(rgb, axis=1, keepdims=True)).astype(np.float32)

    def encode_text(self, texts):
        return np.zeros((len(texts), 3), np.float32)


@pytest.fixture
def setup(tmp_path):
    scene = make_scene(tmp_path / "scene", n_train=2, n_test=1)
    cfg = PreprocessConfig(data=scene.root, masks="ground_truth", language="clip", clip_model=TINY_CONVNEXT,
                           clip_pretrained="random-test", crop_size=64, progress=False)
    return scene, cfg, MeanColour()


def test_cache_contents(setup, tiny_clip):
    scene, cfg, _ = setup
    lang = ClipLanguage(tiny_clip, mode="fused", alpha=0.2, crop_size=64)
    masks = Counting(GroundTruthMaskGenerator())
    out = run_preprocess(cfg, scene=scene, mask_generator=masks, language=lang)
    assert out == scene.root / "language_features" and masks.calls == 3
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["complete"] and meta["language_source"] == lang.name and meta["dim"] == 32
    assert meta["mask_source"] == "ground_truth" and meta["levels"] == list(LEVELS) and meta["alpha"] == 0.2
    assert list(meta["images"]) == [f.name for f in scene.frames]
    for f in scene.frames:
        assert meta["images"][f.name] == {"counts": [4, 4, 4, 4], "size": [64, 48]}
        seg = np.load(entry_paths(out, f.name)[0])
        assert seg.shape == (4, 48, 64) and seg.dtype == np.float32 and seg.max() == 15
        inst = f.load_instances()
        for level in range(4):
            m, feats = read_level(out, f.name, level)
            assert m.shape == (4, 48, 64) and feats.shape == (4, 32) and feats.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
            assert {tuple(np.unique(inst[mk])) for mk in m} == {(1,), (2,), (3,), (4,)}
        # the cached rows are the language source's features of the same masks
        m, feats = read_level(out, f.name, 3)
        np.testing.assert_allclose(feats, lang(f.load_rgb(), m), atol=1e-5)


def test_resume_skips_finished_images(setup):
    scene, cfg, lang = setup
    run_preprocess(cfg, scene=scene, mask_generator=GroundTruthMaskGenerator(), language=lang)
    out = scene.root / "language_features"
    stamps = {p: os.stat(p).st_mtime_ns for f in scene.frames for p in entry_paths(out, f.name)}
    again = Counting(GroundTruthMaskGenerator())
    run_preprocess(cfg, scene=scene, mask_generator=again, language=lang)
    assert again.calls == 0
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}
    for p in entry_paths(out, scene.frames[1].name):  # an interrupted run lost one entry
        p.unlink()
    again = Counting(GroundTruthMaskGenerator())
    run_preprocess(cfg, scene=scene, mask_generator=again, language=lang)
    assert again.calls == 1
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["complete"] and meta["processed"] == 1 and len(meta["images"]) == 3
    assert all(v["counts"] == [4, 4, 4, 4] for v in meta["images"].values())


def test_refuses_to_mix_configurations(setup):
    scene, cfg, lang = setup
    run_preprocess(cfg, scene=scene, mask_generator=GroundTruthMaskGenerator(), language=lang)
    cfg.alpha = 0.5
    with pytest.raises(ConfigError, match="--overwrite"):
        run_preprocess(cfg, scene=scene, mask_generator=GroundTruthMaskGenerator(), language=lang)
    cfg.overwrite = True
    again = Counting(GroundTruthMaskGenerator())
    run_preprocess(cfg, scene=scene, mask_generator=again, language=lang)
    assert again.calls == 3
    sig = json.loads((scene.root / "language_features" / "preprocess.json").read_text())["signature"]
    assert sig["language"]["alpha"] == 0.5


def test_foreign_cache_is_not_touched(setup):
    scene, cfg, lang = setup
    out = scene.root / "language_features"
    out.mkdir()
    np.save(out / f"{scene.frames[0].name}_s.npy", np.zeros((4, 2, 2), np.float32))
    with pytest.raises(ConfigError, match="not made by this tool"):
        run_preprocess(cfg, scene=scene, mask_generator=GroundTruthMaskGenerator(), language=lang)


def test_working_resolution_and_classical_masks(setup, tmp_path):
    scene, cfg, lang = setup
    assert working_size(1920, 1440, 1080) == (1440, 1080) and working_size(640, 480, 1080) == (640, 480)
    cfg.masks, cfg.max_height, cfg.output, cfg.splits = "classical", 24, tmp_path / "cache", "train"
    out = run_preprocess(cfg, scene=scene, mask_generator=ClassicalMaskGenerator(min_area_fraction=0.01),
                         language=lang)
    meta = json.loads((out / "preprocess.json").read_text())
    assert list(meta["images"]) == [f.name for f in scene.train_frames]
    for f in scene.train_frames:
        assert meta["images"][f.name]["size"] == [32, 24]
        m, feats = read_level(out, f.name, 1)
        assert m.shape[1:] == (24, 32) and len(m) == meta["images"][f.name]["counts"][1] == len(feats) > 0
        np.testing.assert_allclose(feats, lang(load_working_image(f, 24), m), atol=1e-6)


def test_oracle_language_through_the_driver(setup):
    """``language="oracle"`` builds the oracle source lazily; GT masks get their class vectors."""
    oracle_mod = pytest.importorskip("openinsgaussian.perception.oracle")
    scene, cfg, _ = setup
    cfg.language, cfg.oracle_dim = "oracle", 16
    out = run_preprocess(cfg, scene=scene)
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["language_source"] == "oracle" and meta["dim"] == 16
    oracle = oracle_mod.OracleLanguage(scene, dim=16)
    want = oracle.encode_text(["chair", "table", "cabinet", "floor"]).numpy()
    for f in scene.frames:
        m, feats = read_level(out, f.name, 0)  # ids in area-descending order
        inst = f.load_instances()
        ids = [int(np.unique(inst[mk])[0]) for mk in m]
        np.testing.assert_allclose(feats, want[np.array(ids) - 1], atol=1e-6)
