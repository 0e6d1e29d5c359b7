"""Photometric losses and metrics of 3DGS: L1, SSIM (11x11 Gaussian window, sigma 1.5), PSNR.

Images are ``[C,H,W]`` or ``[B,C,H,W]`` floats in [0,1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2  # (K1 * L)^2 with K1 = 0.01, L = 1
SSIM_C2 = 0.03**2  # (K2 * L)^2 with K2 = 0.03


def _batched(img: Tensor) -> Tensor:
    if img.ndim == 3:
        return img[None]
    if img.ndim != 4:
        raise ValueError(f"expected an image [C,H,W] or [B,C,H,W], got shape {tuple(img.shape)}")
    return img


def gaussian_window(size: int = 11, sigma: float = 1.5, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim_map(img1: Tensor, img2: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM ``[B,C,H,W]`` as 3DGS computes it.

    Local statistics use a separable Gaussian window with zero padding (so the ``(size-1)/2``
    border pixels see a truncated window); population (biased) variances; C1 = 0.01^2,
    C2 = 0.03^2 for a data range of 1.
    """
    x, y = _batched(img1), _batched(img2)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    c = x.shape[1]
    g = gaussian_window(window_size, sigma, dtype=x.dtype, device=x.device)
    pad = window_size // 2
    wx = g.view(1, 1, 1, -1).expand(c, 1, 1, window_size)  # horizontal pass, per channel
    wy = g.view(1, 1, -1, 1).expand(c, 1, window_size, 1)  # vertical pass

    def blur(t: Tensor) -> Tensor:
        t = F.conv2d(t, wx, padding=(0, pad), groups=c)
        return F.conv2d(t, wy, padding=(pad, 0), groups=c)

    mu1, mu2 = blur(x), blur(y)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = blur(x * x) - mu1_sq
    s2 = blur(y * y) - mu2_sq
    s12 = blur(x * y) - mu12
    return ((2 * mu12 + SSIM_C1) * (2 * s12 + SSIM_C2)) / ((mu1_sq + mu2_sq + SSIM_C1) * (s1 + s2 + SSIM_C2))


def ssim(img1: Tensor, img2: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM over all pixels, channels and batch (scalar), differentiable."""
    return ssim_map(img1, img2, window_size, sigma).mean()


def l1(img1: Tensor, img2: Tensor) -> Tensor:
    """Mean absolute difference (scalar)."""
    return (img1 - img2).abs().mean()


def mse(img1: Tensor, img2: Tensor) -> Tensor:
    """Mean squared difference (scalar)."""
    return ((img1 - img2) ** 2).mean()


def psnr(img1: Tensor, img2: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for a data range of 1: ``-10 log10(MSE)`` (scalar)."""
    return -10.0 * torch.log10(mse(img1, img2).clamp_min(1e-20))


def photometric_loss(pred: Tensor, gt: Tensor, ssim_lambda: float = 0.2) -> tuple[Tensor, Tensor]:
    """3DGS stage-0 loss ``(1 - lambda) L1 + lambda (1 - SSIM)``; returns ``(loss, l1)``."""
    l1_val = l1(pred, gt)
    if ssim_lambda == 0.0:
        return l1_val, l1_val
    return (1.0 - ssim_lambda) * l1_val + ssim_lambda * (1.0 - ssim(pred, gt)), l1_val


def psnr_from_mse(m: float) -> float:
    """PSNR in dB of a mean squared error (data range 1)."""
    return -10.0 * math.log10(max(m, 1e-20))
