"""Reference compositor (render contract, stage B) against hand-computed and brute-force cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.render import reference
from openinsgaussian.render.api import render
from openinsgaussian.render.reference import composite_reference


def _one_pixel_stack(opacities, features, depths=None, dtype=torch.float64):
    """Gaussians all centred on pixel (1, 1) of a 3x3 image, radius 1, unit conic."""
    n = len(opacities)
    means2d = torch.full((n, 2), 1.5, dtype=dtype)
    conics = torch.tensor([[1.0, 0.0, 1.0]] * n, dtype=dtype)
    op = torch.tensor(opacities, dtype=dtype)
    f = torch.tensor(features, dtype=dtype)
    d = torch.arange(n, dtype=dtype) + 1.0 if depths is None else torch.tensor(depths, dtype=dtype)
    radii = torch.ones(n, dtype=torch.int32)
    return means2d, conics, op, f, d, radii


def brute_force(means2d, conics, opacities, features, depths, radii, width, height):
    """The contract, literally: per pixel, sequential front-to-back loop in float64."""
    m, cn, op, f, d, r = (
        t.detach().double().numpy() for t in (means2d, conics, opacities, features, depths, radii)
    )
    order = sorted(range(len(d)), key=lambda i: (d[i], i))
    img = np.zeros((height, width, f.shape[1]))
    alpha = np.zeros((height, width))
    top = np.full((height, width), -1)
    for y in range(height):
        for x in range(width):
            px, py = x + 0.5, y + 0.5
            T, best = 1.0, 0.0
            for i in order:
                if r[i] <= 0 or abs(px - m[i, 0]) > r[i] or abs(py - m[i, 1]) > r[i]:
                    continue
                dx, dy = px - m[i, 0], py - m[i, 1]
                power = -0.5 * (cn[i, 0] * dx * dx + cn[i, 2] * dy * dy) - cn[i, 1] * dx * dy
                if power > 0:
                    continue
                a = min(0.99, op[i] * math.exp(power))
                if a < 1.0 / 255.0:
                    continue
                test_T = T * (1 - a)
                if test_T < 1e-4:
                    break
                w = a * T
                img[y, x] += w * f[i]
                if w > best:
                    best, top[y, x] = w, i
                T = test_T
            alpha[y, x] = 1 - T
    return img, alpha, top


def test_single_isotropic_gaussian_matches_analytic_2d_gaussian(device):
    fx, fy, cx, cy, w, h = 40.0, 40.0, 11.7, 9.2, 24, 20
    z, s, opacity = 2.0, 0.1, 0.8
    cam = Camera.from_intrinsics(fx, fy, cx, cy, w, h, np.eye(4))
    rgb = torch.tensor([[0.9, 0.4, 0.1]], dtype=torch.float64, device=device)
    out = render(
        torch.tensor([[0.0, 0.0, z]], dtype=torch.float64, device=device),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64, device=device),
        torch.full((1, 3), s, dtype=torch.float64, device=device),
        torch.tensor([opacity], dtype=torch.float64, device=device),
        rgb,
        cam,
        backend="reference",
    )
    var = (fx * s / z) ** 2 + 0.3  # isotropic screen variance incl. the 0.3 px low-pass
    r = math.ceil(3 * math.sqrt(var + math.sqrt(0.1)))
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    dx, dy = xx - cx, yy - cy
    a = np.minimum(0.99, opacity * np.exp(-0.5 * (dx**2 + dy**2) / var))
    a[(np.abs(dx) > r) | (np.abs(dy) > r) | (a < 1 / 255)] = 0.0
    assert (a == 0).any() and (a > 0).sum() > 100  # the box and the 1/255 cut both matter here
    assert np.allclose(out.alpha[0].cpu().numpy(), a, atol=1e-12)
    assert np.allclose(
        out.image.cpu().numpy(), a[None] * rgb[0].cpu().numpy()[:, None, None], atol=1e-12
    )
    assert np.allclose(out.depth[0].cpu().numpy(), np.where(a > 0, z, 0.0), atol=1e-12)
    assert out.radii.item() == r


def test_two_gaussians_composite_in_depth_order():
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    args = _one_pixel_stack([0.5, 0.6], [red, green], depths=[1.0, 2.0])
    img, alpha, _ = composite_reference(*args, width=3, height=3)
    assert torch.allclose(img[1, 1], torch.tensor([0.5, 0.5 * 0.6, 0.0], dtype=torch.float64))
    assert alpha[1, 1].item() == pytest.approx(1 - 0.5 * 0.4)
    # Swapping the depths puts green in front.
    args = _one_pixel_stack([0.5, 0.6], [red, green], depths=[2.0, 1.0])
    img, alpha, _ = composite_reference(*args, width=3, height=3)
    assert torch.allclose(img[1, 1], torch.tensor([0.4 * 0.5, 0.6, 0.0], dtype=torch.float64))
    assert alpha[1, 1].item() == pytest.approx(1 - 0.5 * 0.4)
    # Equal depths: ties broken by index.
    args = _one_pixel_stack([0.5, 0.6], [red, green], depths=[1.0, 1.0])
    img, _, _ = composite_reference(*args, width=3, height=3)
    assert torch.allclose(img[1, 1], torch.tensor([0.5, 0.3, 0.0], dtype=torch.float64))


def test_transmittance_stop_rule_and_alpha_clamp():
    # Opacities 0.95: T goes 0.05, 0.0025, 1.25e-4; the 4th would give 6.25e-6 < 1e-4, so the
    # pixel stops there, and the 5th (alpha 0.1, which alone would keep T >= 1e-4) is skipped too.
    eye = np.eye(5).tolist()
    args = _one_pixel_stack([0.95, 0.95, 0.95, 0.95, 0.1], eye)
    img, alpha, top = composite_reference(*args, width=3, height=3, return_ids=True)
    expected = torch.tensor([0.95, 0.05 * 0.95, 0.0025 * 0.95, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(img[1, 1], expected, atol=1e-15)
    assert alpha[1, 1].item() == pytest.approx(1 - 1.25e-4, abs=1e-15)
    assert top[1, 1].item() == 0
    # Opacity 1 is clamped to alpha 0.99 and gets no gradient through the clamp.
    m, c, op, f, d, r = _one_pixel_stack([1.0], [[1.0]])
    op.requires_grad_(True)
    img, alpha, _ = composite_reference(m, c, op, f, d, r, 3, 3)
    assert img[1, 1, 0].item() == pytest.approx(0.99)
    alpha[1, 1].backward()
    assert op.grad.item() == 0.0


def test_skips_small_alpha_positive_power_and_outside_box():
    m, c, op, f, d, r = _one_pixel_stack([0.003, 0.5, 0.5, 0.5], np.eye(4).tolist())
    c[1] = torch.tensor([-1.0, 0.0, -1.0], dtype=torch.float64)  # power > 0 away from the centre
    m[1] = torch.tensor([1.2, 1.5], dtype=torch.float64)
    m[2] = torch.tensor([0.4, 1.5], dtype=torch.float64)  # pixel centre 1.1 px away, radius 1
    c[2] = torch.tensor([1e-6, 0.0, 1e-6], dtype=torch.float64)  # alpha would be ~0.5 there
    img, alpha, top = composite_reference(m, c, op, f, d, r, 3, 3, return_ids=True)
    # Only Gaussian 3 reaches pixel (1, 1): 0 is below 1/255, 1 has power > 0, 2's box misses.
    assert torch.allclose(img[1, 1], torch.tensor([0.0, 0.0, 0.0, 0.5], dtype=torch.float64))
    assert top[1, 1].item() == 3
    # Gaussian 0 alone composites nothing: top_id -1, alpha 0.
    img, alpha, top = composite_reference(
        *(t[:1] for t in (m, c, op, f, d, r)), 3, 3, return_ids=True
    )
    assert (top == -1).all() and (alpha == 0).all()


def test_top_id_is_largest_weight():
    # Front alpha 0.3 (w = 0.3), back alpha 0.8 (w = 0.56): the back one wins.
    args = _one_pixel_stack([0.3, 0.8], [[1.0], [1.0]], depths=[2.0, 5.0])
    _, _, top = composite_reference(*args, width=3, height=3, return_ids=True)
    assert top[1, 1].item() == 1
    # Front alpha 0.6 (w = 0.6) beats back 0.8 (w = 0.32).
    args = _one_pixel_stack([0.6, 0.8], [[1.0], [1.0]], depths=[2.0, 5.0])
    _, _, top = composite_reference(*args, width=3, height=3, return_ids=True)
    assert top[1, 1].item() == 0
    _, _, none = composite_reference(*args, width=3, height=3, return_ids=False)
    assert none is None


def _random_splats(n, width, height, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means2d = (
        torch.rand(n, 2, generator=g, dtype=dtype)
        * torch.tensor([width + 6.0, height + 6.0], dtype=dtype)
        - 3
    )
    L = torch.rand(n, 2, 2, generator=g, dtype=dtype) * 3
    cov = L @ L.transpose(1, 2) + 0.3 * torch.eye(2, dtype=dtype)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], dim=-1)
    lam = torch.linalg.eigvalsh(cov)[:, 1]
    radii = torch.ceil(3 * lam.sqrt()).to(torch.int32)
    radii[::7] = 0  # some culled
    opacities = torch.rand(n, generator=g, dtype=dtype) * 1.05  # a few get clamped at 0.99
    features = torch.rand(n, 4, generator=g, dtype=dtype)
    depths = torch.rand(n, generator=g, dtype=dtype) * 5 + 1
    depths[3] = depths[4]  # a depth tie
    return means2d, conics, opacities, features, depths, radii


def test_matches_brute_force_on_random_scene():
    w, h = 21, 18  # two tiles per axis, partial edge tiles
    args = _random_splats(200, w, h, seed=3)
    img, alpha, top = composite_reference(*args, w, h, return_ids=True)
    bimg, balpha, btop = brute_force(*args, w, h)
    assert np.allclose(img.numpy(), bimg, atol=1e-12)
    assert np.allclose(alpha.numpy(), balpha, atol=1e-12)
    assert (top.numpy() == btop).all()
    assert (balpha > 0.999).any()  # the stop rule is exercised


def test_blocking_does_not_change_values_or_gradients(monkeypatch):
    w, h = 21, 18
    args = list(_random_splats(60, w, h, seed=5))
    for i in (0, 1, 2, 3):
        args[i] = args[i].clone().requires_grad_(True)

    def run():
        img, alpha, top = composite_reference(*args, w, h, return_ids=True)
        grads = torch.autograd.grad(
            (img * torch.linspace(0, 1, 4, dtype=img.dtype)).sum() + alpha.sum(), args[:4]
        )
        return img.detach(), alpha.detach(), top, grads

    base = run()
    monkeypatch.setattr(reference, "PAIR_BUDGET", 40)  # blocks of 1-2 Gaussians per tile
    monkeypatch.setattr(reference, "TILE", 5)
    small = run()
    for a, b in zip(base[:3], small[:3]):
        assert torch.allclose(a, b, atol=1e-12) if a.is_floating_point() else torch.equal(a, b)
    for a, b in zip(base[3], small[3]):
        assert torch.allclose(a, b, atol=1e-10)


def test_shape_errors_name_the_argument():
    m, c, op, f, d, r = _one_pixel_stack([0.5], [[1.0]])
    with pytest.raises(ValueError, match="conics"):
        composite_reference(m, c[:, :2], op, f, d, r, 3, 3)
    with pytest.raises(ValueError, match="features"):
        composite_reference(m, c, op, f[0], d, r, 3, 3)
    with pytest.raises(ValueError, match="radii"):
        composite_reference(m, c, op, f, d, r[None], 3, 3)


def test_gradcheck_compositing_inputs():
    # Full (not fast-mode) Jacobian check of stage B alone on a 5x4 image with overlapping splats.
    means2d = torch.tensor([[2.1, 1.7], [2.9, 2.2], [1.3, 2.6], [3.6, 1.1]], dtype=torch.float64)
    conics = torch.tensor(
        [[0.5, 0.1, 0.4], [0.3, -0.05, 0.6], [0.8, 0.2, 0.35], [0.45, 0.0, 0.5]],
        dtype=torch.float64,
    )
    opacities = torch.tensor([0.6, 0.75, 0.5, 0.65], dtype=torch.float64)
    features = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.4, 0.4], [0.1, 0.95]], dtype=torch.float64)
    depths = torch.tensor([1.0, 1.5, 2.0, 0.7], dtype=torch.float64)
    radii = torch.full((4,), 6, dtype=torch.int32)
    inputs = tuple(t.clone().requires_grad_(True) for t in (means2d, conics, opacities, features))

    def fn(m, c, o, f):
        img, alpha, _ = composite_reference(m, c, o, f, depths, radii, 5, 4)
        return torch.cat([img.flatten(), alpha.flatten()])

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
