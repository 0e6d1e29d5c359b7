"""ClipModel: loading paths and errors, output shapes, and the dense map / head split."""

from __future__ import annotations

import os

import pytest
import torch

from openinsgaussian.errors import ConfigError, ModelLoadError
from openinsgaussian.perception import clip_model as cm
from openinsgaussian.perception.clip_model import ClipModel

from tests.perception.perception_fixtures import TINY_CONVNEXT, TINY_VIT


def test_checkpoint_loading_restores_the_saved_weights(tiny_clip, tiny_clip_checkpoint):
    saved = torch.load(tiny_clip_checkpoint, weights_only=True)
    state = tiny_clip.model.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert tiny_clip.name == f"clip:{TINY_CONVNEXT}:random-test"
    assert tiny_clip.dim == 32 and tiny_clip.dense_channels == 320


def test_env_checkpoint_and_load_errors(tiny_clip_checkpoint, tiny_clip_configs, monkeypatch, tmp_path):
    monkeypatch.setenv("OIG_CLIP_CHECKPOINT", str(tiny_clip_checkpoint))
    clip = ClipModel(TINY_CONVNEXT, pretrained="x", device="cpu")
    w = clip.model.visual.head.proj.weight
    assert torch.equal(w, torch.load(tiny_clip_checkpoint, weights_only=True)["visual.head.proj.weight"])
    monkeypatch.delenv("OIG_CLIP_CHECKPOINT")
    with pytest.raises(ModelLoadError, match="does not exist"):
        ClipModel(TINY_CONVNEXT, checkpoint=tmp_path / "nope.pt", device="cpu")
    bad = tmp_path / "bad.pt"
    torch.save({"visual.head.proj.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(ModelLoadError, match="bad.pt"):
        ClipModel(TINY_CONVNEXT, checkpoint=bad, device="cpu")
    with pytest.raises(ConfigError, match="no model config"):
        ClipModel("no_such_model", device="cpu")


def test_offline_without_cache_names_both_options(monkeypatch):
    monkeypatch.delenv("OIG_CLIP_CHECKPOINT", raising=False)
    monkeypatch.setattr(cm, "_cached_weights", lambda cfg: None)
    monkeypatch.setattr(cm, "_online", lambda *a, **k: False)
    with pytest.raises(ModelLoadError) as err:
        ClipModel("convnext_base_w", "laion2b_s13b_b82k_augreg", device="cpu")
    assert "--clip-checkpoint" in str(err.value) and "internet" in str(err.value)
    with pytest.raises(ConfigError, match="known tags"):
        ClipModel("convnext_base_w", "no_such_tag", device="cpu")


def test_output_shapes_and_normalisation(tiny_clip):
    t = tiny_clip.encode_text(["chair", "table", "lamp"])
    assert t.shape == (3, 32) and t.dtype == torch.float32
    torch.testing.assert_close(t.norm(dim=1), torch.ones(3))
    crops = torch.rand(5, 3, 64, 64)
    e = tiny_clip.encode_crops(crops)
    assert e.shape == (5, 32)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5))
    dense = tiny_clip.dense_features(torch.rand(3, 40, 70))  # padded to 64 x 96
    assert dense.shape == (320, 2, 3)
    assert tiny_clip.project(torch.rand(4, 320)).shape == (4, 32)
    assert tiny_clip.encode_text([]).shape == (0, 32)


def test_pooled_dense_map_reproduces_encode_image(tiny_clip):
    """Average-pooling the dense map over the whole image, then the head, is ``encode_image``."""
    g = torch.Generator().manual_seed(0)
    for h, w in ((64, 64), (64, 96)):
        img = torch.rand(3, h, w, generator=g)
        dense = tiny_clip.dense_features(img)
        pooled = dense.flatten(1).mean(1)[None]
        torch.testing.assert_close(tiny_clip.project(pooled), tiny_clip.encode_image_raw(img[None]),
                                   atol=1e-5, rtol=1e-5)


def test_vit_has_no_dense_map(tiny_clip_configs):
    vit = ClipModel(TINY_VIT, pretrained="random", device="cpu")
    assert not vit.supports_dense
    assert vit.encode_crops(torch.rand(2, 3, 32, 32)).shape == (2, 32)
    with pytest.raises(ConfigError, match="ConvNeXt"):
        vit.dense_features(torch.rand(3, 32, 32))


@pytest.mark.skipif(not os.environ.get("OIG_CLIP_CHECKPOINT"), reason="needs real CLIP weights (OIG_CLIP_CHECKPOINT)")
def test_real_weights_zero_shot_colour():
    """With real weights, a red square reads as "red" rather than "blue" (and vice versa)."""
    model = os.environ.get("OIG_CLIP_MODEL", "convnext_base_w")
    clip = ClipModel(model, os.environ.get("OIG_CLIP_PRETRAINED", "laion2b_s13b_b82k_augreg"), device="auto")
    text = clip.encode_text(["red", "blue"], template="a {} square.")
    for colour, expect in (((1.0, 0.0, 0.0), 0), ((0.0, 0.0, 1.0), 1)):
        img = torch.ones(1, 3, 224, 224)
        img[:, :, 56:168, 56:168] = torch.tensor(colour).view(1, 3, 1, 1)
        sims = clip.encode_crops(img) @ text.T
        assert int(sims.argmax()) == expect, sims


@pytest.mark.slow
def test_convnext_base_w_architecture_and_invariant():
    """The OpenInsGaussian backbone (random weights): 640-d embedding, 1024-channel stride-32
    dense map, and the full-image pooled map reproduces ``encode_image``."""
    torch.manual_seed(0)
    clip = ClipModel("convnext_base_w", pretrained="random", device="cpu")
    assert clip.name == "clip:convnext_base_w:random" and clip.dim == 640 and clip.dense_channels == 1024
    img = torch.rand(3, 64, 64)
    dense = clip.dense_features(img)
    assert dense.shape == (1024, 2, 2)
    torch.testing.assert_close(clip.project(dense.flatten(1).mean(1)[None]), clip.encode_image_raw(img[None]),
                               atol=1e-4, rtol=1e-4)
