"""Local / context / fused mask features (METHOD §3.2–3.4) against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.perception.perception_fixtures import blocks_image

from openinsgaussian.errors import ConfigError
from openinsgaussian.perception.features import (
    ClipLanguage,
    LanguageSource,
    context_features,
    fuse,
    grid_masks,
    local_crops,
    local_features,
)


def test_local_crop_hand_case():
    """Mask outside -> black, crop to the inclusive bbox, centre on a square (no resize at S=4)."""
    img = torch.arange(3 * 6 * 8, dtype=torch.float32).reshape(3, 6, 8) / (3 * 6 * 8)
    mask = torch.zeros(1, 6, 8, dtype=torch.bool)
    mask[0, 1:3, 2:6] = True  # 2 x 4 box
    mask[0, 1, 2] = False  # a hole: stays black
    crop = local_crops(img, mask, crop_size=4)[0]  # [3,4,4]
    expected = torch.zeros(3, 4, 4)
    expected[:, 1:3, :] = img[:, 1:3, 2:6]  # offset (4 - 2) // 2 = 1 rows
    expected[:, 1, 0] = 0
    torch.testing.assert_close(crop, expected)
    assert local_crops(img, torch.zeros(1, 6, 8, dtype=torch.bool), 4).abs().sum() == 0


def test_grid_masks_bilinear_and_small_mask_fallback():
    m = torch.zeros(3, 64, 64, dtype=torch.bool)
    m[0, :32, :32] = True  # exactly cell (0,0)
    m[1, 0, 0] = True  # one pixel: bilinear samples near cell centres miss it -> area fallback
    m[2, 10:50, 40:64] = True  # covers the centre samples of cells (0,1) and (1,1)
    g = grid_masks(m, (2, 2), (64, 64))
    assert g[0].tolist() == [[1, 0], [0, 0]]
    assert g[1].tolist() == [[1, 0], [0, 0]]
    assert g[2].tolist() == [[0, 1], [0, 1]]
    # a 40x40 image is padded to 64x64 (mask zero in the padding): only cell (0,0) has its
    # centre samples (pixels 15-16) inside the image; the others sample the padding
    g = grid_masks(torch.ones(1, 40, 40, dtype=torch.bool), (2, 2), (64, 64))
    assert g[0].tolist() == [[1, 0], [0, 0]]


def test_grid_threshold_is_any_bilinear_weight_above_zero():
    """64 -> 2 cells samples at pixel 15.5: a mask ending at pixel 15 in both axes has bilinear
    value 0.25 there; ``> 0`` (FC-CLIP) keeps the cell, a 0.5 threshold would drop it."""
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    m[0, :16, :16] = True  # weight 0.25 at the centre sample of cell (0, 0)
    m[0, :32, 32:] = True  # all of cell (0, 1): the mask is not empty on the grid, no fallback
    assert grid_masks(m, (2, 2), (64, 64))[0].tolist() == [[1, 1], [0, 0]]


def test_context_feature_is_masked_average_then_projection(tiny_clip):
    """Eq. 6–7 by hand: average the dense map over the mask's cells, project, normalise."""
    image = blocks_image(64, 64)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, :32, :] = True  # cells (0,0), (0,1)
    masks[1, 40:60, 40:60] = True  # cell (1,1) only
    got = context_features(tiny_clip, image, masks)
    dense = tiny_clip.dense_features(torch.from_numpy(image).permute(2, 0, 1).float() / 255)  # [C,2,2]
    want0 = tiny_clip.project(((dense[:, 0, 0] + dense[:, 0, 1]) / 2)[None])
    want1 = tiny_clip.project(dense[:, 1, 1][None])
    torch.testing.assert_close(got, F.normalize(torch.cat([want0, want1]), dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
def test_full_image_context_equals_clip_image_embedding(tiny_clip, hw):
    """Key invariant: a full-image mask's context feature is the CLIP embedding of the image."""
    image = blocks_image(*hw, seed=1)
    ctx = context_features(tiny_clip, image, np.ones((1, *hw), bool))
    ref = tiny_clip.encode_image_raw(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    torch.testing.assert_close(ctx, F.normalize(ref, dim=-1), atol=1e-4, rtol=0)


def test_fuse_hand_case():
    local = torch.tensor([[2.0, 0.0]])
    context = torch.tensor([[0.0, 5.0]])
    out = fuse(local, context, alpha=0.2)  # 0.2*[0,1] + 0.8*[1,0] = [0.8, 0.2] -> normalised
    torch.testing.assert_close(out, torch.tensor([[0.8, 0.2]]) / np.hypot(0.8, 0.2))
    torch.testing.assert_close(fuse(local, context, 0.0), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(fuse(local, context, 1.0), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ConfigError):
        fuse(local, context, 1.5)


def test_clip_language_modes(tiny_clip):
    image = blocks_image(48, 64)
    masks = np.zeros((3, 48, 64), bool)
    masks[0, :24, :32] = True
    masks[1, 24:, :] = True
    masks[2] = masks[0]  # duplicate: encoded once, same row
    loc = ClipLanguage(tiny_clip, mode="local", crop_size=64)
    ctx = ClipLanguage(tiny_clip, mode="context")
    fus = ClipLanguage(tiny_clip, mode="fused", alpha=0.3, crop_size=64)
    fl, fc, ff = loc(image, masks), ctx(image, masks), fus(image, masks)
    for f in (fl, fc, ff):
        assert f.shape == (3, 32) and f.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(f[0], f[2])
    mix = 0.3 * fc + 0.7 * fl
    np.testing.assert_allclose(ff, mix / np.linalg.norm(mix, axis=1, keepdims=True), atol=1e-5)
    direct = local_features(tiny_clip, image, masks[:2], crop_size=64).numpy()
    np.testing.assert_allclose(fl[:2], direct, atol=1e-5)
    assert fus.name == "clip:oig_test_convnext:random-test:fused:alpha=0.3" and fus.dim == 32
    assert loc.name.endswith(":local") and isinstance(fus, LanguageSource)
    assert loc(image, np.zeros((0, 48, 64), bool)).shape == (0, 32)
    t = fus.encode_text(["chair"])
    assert t.shape == (1, 32) and t.dtype == np.float32


def test_clip_language_rejects_bad_settings(tiny_clip, tiny_clip_configs):
    from openinsgaussian.perception.clip_model import ClipModel

    with pytest.raises(ConfigError):
        ClipLanguage(tiny_clip, mode="both")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ClipLanguage(tiny_clip, alpha=-0.1)
    vit = ClipModel("oig_test_vit", pretrained="random", device="cpu")
    assert ClipLanguage(vit, mode="local", crop_size=32).name.endswith(":local")
    with pytest.raises(ConfigError, match="ConvNeXt"):
        ClipLanguage(vit, mode="fused")
    with pytest.raises(ValueError, match="masks must be"):
        ClipLanguage(tiny_clip, mode="local")(blocks_image(48, 64), np.zeros((1, 10, 10), bool))
