"""gsplat backend: CPU checks of its helpers; against the reference on CUDA (skipped without).

Exact equality is not expected: gsplat clamps alpha at 0.999, stops at T <= 1e-4 and lets a
Gaussian reach every pixel of its tiles (not only its 3-sigma box), so faint tails differ by up to
about opacity * exp(-4.5) per pixel. Tolerances below reflect that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.render.api import render
from openinsgaussian.render.gsplat_backend import (
    _unbatched_with_grad,
    gsplat_status,
    output_from_rasterization,
    rasterization_arguments,
    top_ids_from_pairs,
)
from openinsgaussian.render.reference import composite_reference


@pytest.fixture
def need_gsplat():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ok, reason = gsplat_status()
    if not ok:
        pytest.skip(reason)


def _contract_pairs(means2d, conics, opacities, depths, radii, width, height):
    """Composited (Gaussian, pixel) pairs per the render contract, pixel-major, front to back."""
    order = sorted(range(len(depths)), key=lambda i: (float(depths[i]), i))
    gs, px = [], []
    for p in range(width * height):
        x, y = p % width + 0.5, p // width + 0.5
        T = 1.0
        for i in order:
            dx, dy = x - float(means2d[i, 0]), y - float(means2d[i, 1])
            if radii[i] <= 0 or abs(dx) > radii[i] or abs(dy) > radii[i]:
                continue
            a, b, c = (float(v) for v in conics[i])
            power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
            alpha = min(0.99, float(opacities[i]) * float(np.exp(power)))
            if power > 0 or alpha < 1 / 255:
                continue
            if T * (1 - alpha) < 1e-4:
                break
            gs.append(i)
            px.append(p)
            T *= 1 - alpha
    return torch.tensor(gs, dtype=torch.int64), torch.tensor(px, dtype=torch.int64)


def test_top_ids_from_pairs_matches_reference_top_id():
    g = torch.Generator().manual_seed(0)
    n, w, h = 80, 13, 11
    means2d = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [w, h], dtype=torch.float64
    )
    L = torch.rand(n, 2, 2, generator=g, dtype=torch.float64) * 2
    cov = L @ L.transpose(1, 2) + 0.3 * torch.eye(2, dtype=torch.float64)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    radii = torch.ceil(3 * torch.linalg.eigvalsh(cov)[:, 1].sqrt()).to(torch.int32)
    opacities = torch.rand(n, generator=g, dtype=torch.float64)
    depths = torch.rand(n, generator=g, dtype=torch.float64)
    _, _, top = composite_reference(
        means2d,
        conics,
        opacities,
        torch.ones(n, 1, dtype=torch.float64),
        depths,
        radii,
        w,
        h,
        return_ids=True,
    )
    gs, px = _contract_pairs(means2d, conics, opacities, depths, radii, w, h)
    ours = top_ids_from_pairs(gs, px, means2d, conics, opacities, w, h, alpha_max=0.99)
    assert torch.equal(ours, top)
    assert (top >= 0).float().mean() > 0.9
    empty = top_ids_from_pairs(gs[:0], px[:0], means2d, conics, opacities, w, h)
    assert (empty == -1).all()


def test_unbatched_view_gets_the_batched_gradient():
    x = torch.randn(1, 5, 2, requires_grad=True)
    batched = x * 3.0  # [1,N,2], not a leaf, like gsplat's means2d
    view = _unbatched_with_grad(batched)
    assert view.shape == (5, 2)
    (batched**2).sum().backward(retain_graph=True)
    assert torch.allclose(view.grad, 2 * batched[0].detach())
    (batched**2).sum().backward(retain_graph=True)
    assert torch.allclose(view.grad, 4 * batched[0].detach())  # accumulates like a leaf
    view.grad = None
    (batched.sum()).backward()
    assert torch.allclose(view.grad, torch.ones(5, 2))


def _scene(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    cam = Camera.from_intrinsics(60.0, 62.0, 33.0, 23.5, 64, 48, np.eye(4))
    z = torch.rand(n, generator=g) * 3 + 2
    xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([1.2, 0.9]) * z[:, None]
    means = torch.cat([xy, z[:, None]], 1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 3.2)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 5, generator=g)
    sh = torch.randn(n, 16, 3, generator=g) * 0.2
    return cam, [t.cuda() for t in (means, quats, scales, opacities, colors, sh)]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(
        torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0)
    )


@pytest.mark.gpu
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_gsplat_matches_reference(need_gsplat, sh_degree):
    cam, (means, quats, scales, opacities, colors, sh) = _scene()
    feats = colors if sh_degree is None else sh
    bg = torch.rand(feats.shape[1] if sh_degree is None else 3, device="cuda")
    outs, grads = {}, {}
    weights = None
    for backend in ("gsplat", "reference"):
        params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, feats)]
        out = render(
            *params, cam, sh_degree=sh_degree, background=bg, backend=backend, return_ids=True
        )
        if weights is None:
            gen = torch.Generator(device="cuda").manual_seed(1)
            weights = [
                torch.rand(t.shape, device="cuda", generator=gen)
                for t in (out.image, out.depth, out.alpha)
            ]
        loss = (
            (out.image * weights[0]).sum()
            + (out.depth * weights[1]).sum()
            + (out.alpha * weights[2]).sum()
        )
        loss.backward()
        outs[backend] = out
        grads[backend] = [p.grad for p in params] + [out.means2d.grad]
    a, b = outs["gsplat"], outs["reference"]
    assert (
        a.image.shape == b.image.shape
        and a.alpha.shape == b.alpha.shape
        and a.depth.shape == b.depth.shape
    )
    for x, y in ((a.image, b.image), (a.alpha, b.alpha)):
        assert (x - y).abs().mean() < 3e-3 and (x - y).abs().max() < 0.08
    covered = (b.alpha > 0.5) & (a.alpha > 0.5)
    assert covered.sum() > 100
    assert ((a.depth - b.depth).abs()[covered] / b.depth[covered]).mean() < 5e-3
    assert (a.top_id == b.top_id).float().mean() > 0.95
    assert a.means2d.shape == b.means2d.shape == (means.shape[0], 2)
    assert a.radii.shape == b.radii.shape and a.radii.dtype == torch.int32
    for name, ga, gb in zip(
        ("means", "quats", "scales", "opacities", "colors", "means2d"),
        grads["gsplat"],
        grads["reference"],
    ):
        assert ga is not None and gb is not None, name
        assert _cos(ga, gb) > 0.98, (name, _cos(ga, gb))


@pytest.mark.gpu
def test_means2d_grad_accumulates_like_a_leaf(need_gsplat):
    cam, (means, quats, scales, opacities, colors, _) = _scene(50)
    out = render(
        means.requires_grad_(True), quats, scales, opacities, colors, cam, backend="gsplat"
    )
    out.image.sum().backward(retain_graph=True)
    first = out.means2d.grad.clone()
    out.image.sum().backward()
    assert torch.allclose(out.means2d.grad, 2 * first)


def test_rasterization_arguments_bind_to_gsplat_signature():
    gsplat = pytest.importorskip("gsplat")
    import inspect

    cam = Camera.from_intrinsics(60.0, 62.0, 33.0, 23.5, 64, 48, np.eye(4))
    n = 7
    args, kwargs = rasterization_arguments(
        torch.rand(n, 3, dtype=torch.float64),
        torch.rand(n, 4),
        torch.rand(n, 3),
        torch.rand(n),
        torch.rand(n, 16, 3),
        cam,
        sh_degree=3,
        background=torch.zeros(3),
        near=0.05,
        far=50.0,
        eps2d=0.3,
    )
    bound = inspect.signature(gsplat.rasterization).bind(*args, **kwargs)
    assert bound.arguments["viewmats"].shape == (1, 4, 4) and bound.arguments["Ks"].shape == (
        1,
        3,
        3,
    )
    assert bound.arguments["backgrounds"].shape == (1, 3)
    assert (bound.arguments["width"], bound.arguments["height"]) == (64, 48)
    assert all(
        bound.arguments[k].dtype == torch.float32
        for k in ("means", "quats", "scales", "opacities", "colors")
    )
    assert kwargs["render_mode"] == "RGB+ED" and kwargs["packed"] is False


def test_output_from_rasterization_shapes_and_radii():
    n, h, w = 4, 3, 5
    colors = torch.arange(h * w * 3, dtype=torch.float32).reshape(1, h, w, 3)  # 2 channels + depth
    alphas = torch.full((1, h, w, 1), 0.5)
    info = {
        "radii": torch.tensor([[[1, 4], [0, 0], [3, 2], [5, 5]]], dtype=torch.int32),
        "means2d": torch.rand(1, n, 2, requires_grad=True) * 1.0,
    }
    out = output_from_rasterization(colors, alphas, info, torch.float64)
    assert (
        out.image.shape == (2, h, w)
        and out.depth.shape == (1, h, w)
        and out.alpha.shape == (1, h, w)
    )
    assert torch.equal(out.depth[0], colors[0, :, :, 2].double())
    assert torch.equal(out.image[1], colors[0, :, :, 1].double())
    assert out.radii.tolist() == [4, 0, 3, 5] and out.radii.dtype == torch.int32
    assert out.means2d.shape == (n, 2) and out.top_id is None
