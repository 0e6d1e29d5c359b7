"""The ``render`` API: gradients, robustness, errors, background/depth/SH handling, dispatch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.errors import BackendError
from openinsgaussian.render import api
from openinsgaussian.render.api import RenderOutput, render, resolve_backend
from openinsgaussian.render.sh import rgb_to_sh


def _camera(w=12, h=10, f=12.0) -> Camera:
    # Slightly rotated and translated camera so every code path sees a generic view matrix.
    a = 0.1
    w2c = np.eye(4)
    w2c[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    w2c[:3, 3] = [0.05, -0.02, 0.1]
    return Camera.from_intrinsics(f, f * 1.1, w / 2 + 0.13, h / 2 - 0.21, w, h, w2c)


def _gaussians(dtype=torch.float64, device="cpu"):
    means = torch.tensor(
        [[-0.1, 0.05, 2.2], [0.2, -0.1, 2.7], [0.05, 0.2, 3.1]], dtype=dtype, device=device
    )
    quats = torch.tensor(
        [[0.9, 0.1, -0.2, 0.3], [0.7, -0.3, 0.2, 0.1], [1.0, 0.2, 0.1, -0.4]],
        dtype=dtype,
        device=device,
    )
    scales = torch.tensor(
        [[0.25, 0.15, 0.2], [0.3, 0.2, 0.1], [0.2, 0.35, 0.15]], dtype=dtype, device=device
    )
    opacities = torch.tensor([0.55, 0.7, 0.6], dtype=dtype, device=device)
    return means, quats, scales, opacities


def _flat(out: RenderOutput) -> torch.Tensor:
    return torch.cat([out.image.flatten(), out.alpha.flatten(), out.depth.flatten()])


def test_gradcheck_features():
    cam = _camera()
    means, quats, scales, opacities = _gaussians()
    colors = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]], dtype=torch.float64)
    bg = torch.tensor([0.3, 0.1], dtype=torch.float64)
    inputs = tuple(
        t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)
    )
    out = render(*inputs, cam, background=bg, backend="reference")
    assert (out.alpha > 0.5).any() and (out.radii > 0).all()  # a real overlap, nothing culled

    def fn(m, q, s, o, c):
        return _flat(render(m, q, s, o, c, cam, background=bg, backend="reference"))

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_sh():
    cam = _camera()
    means, quats, scales, opacities = _gaussians()
    g = torch.Generator().manual_seed(1)
    coeffs = torch.randn(3, 4, 3, generator=g, dtype=torch.float64) * 0.2
    coeffs[:, 0] = rgb_to_sh(torch.tensor([0.6, 0.5, 0.4], dtype=torch.float64))  # colour stays > 0
    inputs = tuple(
        t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, coeffs)
    )

    def fn(m, q, s, o, c):
        return _flat(render(m, q, s, o, c, cam, sh_degree=1, backend="reference"))

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_means2d_receives_grad(device):
    cam = _camera()
    means, quats, scales, opacities = (t.to(device) for t in _gaussians(torch.float32))
    means.requires_grad_(True)
    out = render(
        means, quats, scales, opacities, torch.rand(3, 3, device=device), cam, backend="reference"
    )
    assert (
        out.means2d.shape == (3, 2) and out.radii.shape == (3,) and out.radii.dtype == torch.int32
    )
    out.image.sum().backward()
    assert out.means2d.grad is not None and out.means2d.grad.shape == (3, 2)
    assert out.means2d.grad.abs().sum() > 0 and means.grad.abs().sum() > 0


def test_background_and_depth():
    cam = _camera()
    means, quats, scales, opacities = _gaussians()
    colors = torch.rand(3, 3, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)
    plain = render(means, quats, scales, opacities, colors, cam, backend="reference")
    with_bg = render(
        means, quats, scales, opacities, colors, cam, background=bg, backend="reference"
    )
    assert torch.allclose(with_bg.image, plain.image + (1 - plain.alpha) * bg[:, None, None])
    assert torch.equal(with_bg.alpha, plain.alpha)
    # Expected depth lies between the nearest and farthest camera-space depth where covered.
    z = torch.tensor([2.2, 2.7, 3.1], dtype=torch.float64)
    z_cam = torch.from_numpy(cam.world_to_camera_points(means)[:, 2])
    covered = plain.alpha > 0
    assert covered.any() and (~covered).any()
    assert (plain.depth[covered] >= z_cam.min() - 1e-9).all() and (
        plain.depth[covered] <= z_cam.max() + 1e-9
    ).all()
    assert (plain.depth[~covered] == 0).all()
    assert not torch.allclose(z, z_cam)  # the camera really is not the identity


def test_sh_degree_zero_equals_features():
    cam = _camera()
    means, quats, scales, opacities = _gaussians()
    rgb = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.6], [0.5, 0.4, 0.0]], dtype=torch.float64)
    coeffs = torch.randn(3, 16, 3, dtype=torch.float64)  # higher bands ignored at degree 0
    coeffs[:, 0] = rgb_to_sh(rgb)
    a = render(means, quats, scales, opacities, rgb, cam, backend="reference")
    b = render(means, quats, scales, opacities, coeffs, cam, sh_degree=0, backend="reference")
    assert torch.allclose(a.image, b.image, atol=1e-12)


def test_opacities_n1_accepted_and_top_id():
    cam = _camera()
    means, quats, scales, opacities = _gaussians()
    out = render(
        means,
        quats,
        scales,
        opacities[:, None],
        torch.ones(3, 1, dtype=torch.float64),
        cam,
        backend="reference",
        return_ids=True,
    )
    assert (
        out.top_id is not None and out.top_id.shape == (10, 12) and out.top_id.dtype == torch.int64
    )
    assert set(out.top_id.unique().tolist()) <= {-1, 0, 1, 2}
    assert torch.equal(out.top_id >= 0, out.alpha[0] > 0)


@pytest.mark.parametrize(
    "case", ["near", "behind", "offscreen", "zero_scale", "tiny_scale", "zero_quat", "at_camera"]
)
def test_no_nans(case, device):
    cam = _camera()
    means, quats, scales, opacities = (t.to(device) for t in _gaussians(torch.float32))
    c2w = torch.from_numpy(np.linalg.inv(cam.world_to_cam.numpy())).float().to(device)

    def cam_point(x, y, z):
        return c2w[:3, :3] @ torch.tensor([x, y, z], device=device) + c2w[:3, 3]

    if case == "near":
        means[0] = cam_point(0.0, 0.0, 0.005)
    elif case == "behind":
        means[0] = cam_point(0.1, 0.0, -1.0)
    elif case == "offscreen":
        means[0] = cam_point(50.0, 0.0, 1.0)
    elif case == "zero_scale":
        scales[0] = 0.0
    elif case == "tiny_scale":
        scales[0] = 1e-30
    elif case == "zero_quat":
        quats[0] = 0.0
    elif case == "at_camera":
        means[0] = cam_point(0.0, 0.0, 0.0)
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities)]
    colors = torch.rand(3, 3, device=device, requires_grad=True)
    out = render(*params, colors, cam, backend="reference", return_ids=True)
    for t in (out.image, out.alpha, out.depth, out.means2d):
        assert torch.isfinite(t).all()
    if case in ("near", "behind", "offscreen", "at_camera"):
        assert out.radii[0] == 0 and not (out.top_id == 0).any()
    (out.image.sum() + out.depth.sum() + out.alpha.sum()).backward()
    for t in [*params, colors, out.means2d]:
        assert torch.isfinite(t.grad).all()


def test_shape_errors_name_the_argument():
    cam = _camera()
    means, quats, scales, opacities = _gaussians()
    colors = torch.rand(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"quats must have shape \[3, 4\]"):
        render(means, quats[:, :3], scales, opacities, colors, cam)
    with pytest.raises(ValueError, match="scales"):
        render(means, quats, scales[:2], opacities, colors, cam)
    with pytest.raises(ValueError, match="opacities"):
        render(means, quats, scales, opacities[:2], colors, cam)
    with pytest.raises(ValueError, match=r"K >= 16"):
        render(
            means,
            quats,
            scales,
            opacities,
            torch.zeros(3, 9, 3, dtype=torch.float64),
            cam,
            sh_degree=3,
        )
    with pytest.raises(ValueError, match=r"\[N,C\]"):
        render(means, quats, scales, opacities, torch.zeros(3, 4, 3, dtype=torch.float64), cam)
    with pytest.raises(ValueError, match="background"):
        render(means, quats, scales, opacities, colors, cam, background=torch.zeros(4))
    with pytest.raises(ValueError, match="means"):
        render(means[:, :2], quats, scales, opacities, colors, cam)
    with pytest.raises(ValueError, match="backend"):
        render(means, quats, scales, opacities, colors, cam, backend="opengl")  # type: ignore[arg-type]


def test_gsplat_on_cpu_is_a_clear_error():
    cam = _camera()
    means, quats, scales, opacities = _gaussians(torch.float32)
    with pytest.raises(BackendError, match="CUDA"):
        render(means, quats, scales, opacities, torch.rand(3, 3), cam, backend="gsplat")


def test_cpu_backend_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(api, "_cpu_compositor", lambda: (None, "not built"))
    monkeypatch.setattr(api, "_warned", set())
    cam = _camera()
    means, quats, scales, opacities = _gaussians(torch.float32)
    colors = torch.rand(3, 3)
    with pytest.warns(RuntimeWarning, match="not built"):
        out = render(means, quats, scales, opacities, colors, cam, backend="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = render(means, quats, scales, opacities, colors, cam, backend="auto")
    ref = render(means, quats, scales, opacities, colors, cam, backend="reference")
    assert torch.equal(out.image, ref.image) and torch.equal(again.image, ref.image)
    assert resolve_backend("auto", torch.device("cpu")) == "reference"


def test_cpu_backend_matches_reference_when_available():
    fn, reason = api._cpu_compositor()
    if fn is None:
        pytest.skip(reason)
    cam = _camera(40, 30, 30.0)
    g = torch.Generator().manual_seed(0)
    n = 200
    means = torch.randn(n, 3, generator=g) * 0.4 + torch.tensor([0.0, 0.0, 2.5])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.08 + 0.005
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 5, generator=g)
    a = render(means, quats, scales, opacities, colors, cam, backend="cpu", return_ids=True)
    b = render(means, quats, scales, opacities, colors, cam, backend="reference", return_ids=True)
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert torch.allclose(a.image, b.image, atol=1e-5) and torch.allclose(
        a.alpha, b.alpha, atol=1e-5
    )
    assert torch.allclose(a.depth, b.depth, atol=1e-4)
    assert (a.top_id != b.top_id).float().mean() < 0.01  # float32 near-ties may differ
