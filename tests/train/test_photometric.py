"""SSIM / L1 / PSNR against hand-computed values and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openinsgaussian.train.photometric import (
    SSIM_C1,
    gaussian_window,
    l1,
    photometric_loss,
    psnr,
    ssim,
    ssim_map,
)


def test_gaussian_window_is_normalised_and_symmetric():
    g = gaussian_window(11, 1.5, dtype=torch.float64)
    assert g.shape == (11,)
    assert torch.isclose(g.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(g, g.flip(0))
    # ratio of neighbouring taps of exp(-x^2 / (2 sigma^2)) at x = 0, 1
    assert math.isclose(float(g[6] / g[5]), math.exp(-1.0 / (2 * 1.5**2)), rel_tol=1e-12)


def test_ssim_constant_images_by_hand():
    # Two constant images a, b: inside the window-valid region the local means are a and b and all
    # variances vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.3, 0.7
    x = torch.full((3, 20, 24), a, dtype=torch.float64)
    y = torch.full((3, 20, 24), b, dtype=torch.float64)
    m = ssim_map(x, y)[0, :, 5:-5, 5:-5]
    expected = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)
    assert torch.allclose(m, torch.full_like(m, expected), atol=1e-10)
    assert math.isclose(expected, 0.4201 / 0.5801, rel_tol=1e-12)  # = 0.72419


def test_ssim_identical_images_is_one():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_skimage_on_valid_region():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.random((32, 40, 3))
    b = np.clip(a + 0.15 * rng.standard_normal(a.shape), 0, 1)
    _, full = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, channel_axis=-1, full=True)
    ours = ssim_map(torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1))[0]
    ours = ours.permute(1, 2, 0).numpy()
    # skimage reflects at the borders, 3DGS zero-pads: compare where the 11x11 window fits.
    np.testing.assert_allclose(ours[5:-5, 5:-5], full[5:-5, 5:-5], atol=1e-9)
    assert not np.allclose(ours[:5], full[:5], atol=1e-3)  # the border conventions do differ


def test_ssim_is_differentiable():
    x = torch.rand(3, 12, 12, requires_grad=True)
    y = torch.rand(3, 12, 12)
    (1 - ssim(x, y)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_l1_psnr_and_loss_by_hand():
    x = torch.zeros(3, 4, 4)
    y = torch.full((3, 4, 4), 0.1)
    assert float(l1(x, y)) == pytest.approx(0.1)
    assert float(psnr(x, y)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 -> 20 dB
    loss, l1v = photometric_loss(x, y, 0.2)
    expected = 0.8 * 0.1 + 0.2 * (1 - float(ssim(x, y)))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(l1v) == pytest.approx(0.1)
