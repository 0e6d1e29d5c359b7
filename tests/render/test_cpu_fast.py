"""The compiled CPU compositor (render/cpu_fast.py) against the plain-torch reference (stage B)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.errors import BackendError
from openinsgaussian.render import cpu_fast
from openinsgaussian.render.api import render
from openinsgaussian.render.cpu_fast import (
    composite_cpu,
    cpu_backend_available,
    cpu_backend_error,
    visible_depth_order,
)
from openinsgaussian.render.projection import project_gaussians
from openinsgaussian.render.reference import composite_reference

F64 = torch.float64

pytestmark = pytest.mark.skipif(
    not cpu_backend_available(),
    reason=f"fast CPU compositor cannot be built here: {cpu_backend_error()}",
)


def _scene(n: int, width: int, height: int, channels: int, seed: int = 0,
           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Projected random Gaussians with every hard case of the contract mixed in.

    A tenth lies behind the camera (culled), a tenth has degenerate tiny scales, three are huge
    (their boxes cover the whole image), a tenth forms a near-opaque stack on one spot (opacity up
    to 1: the 0.99 clamp and the 1e-4 stop both trigger), the rest spreads a bit beyond the image
    border with log-uniform scales. Features are ``channels`` colours plus camera depth, as the API
    appends it. Returns (means2d, conics, opacities, features, depths, radii).
    """
    g = torch.Generator().manual_seed(seed)

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=F64)

    f = 0.8 * width
    eye = torch.eye(4, dtype=F64)
    cam = Camera.from_intrinsics(f, f, width / 2, height / 2, width, height, eye)
    z = 1.0 + 5.0 * u(n)  # [N]
    half_fov = torch.tensor([width / 2 / f, height / 2 / f], dtype=F64)
    means = torch.cat([(u(n, 2) * 2 - 1) * half_fov * 1.2 * z[:, None], z[:, None]], dim=1)  # [N,3]
    scales = torch.exp(math.log(0.003) + u(n, 3) * math.log(0.4 / 0.003))  # [N,3]
    opacities = u(n)  # [N]
    k = n // 10
    means[:k, 2] = -1.0 - u(k)  # behind the camera
    scales[k:2 * k] = 1e-6  # degenerate tiny: the eps2d low-pass alone
    scales[2 * k:2 * k + 3] = 20.0  # huge
    s = 3 * k
    means[s:s + k] = torch.stack([0.05 + 0.01 * u(k), -0.03 + 0.01 * u(k), 1.5 + u(k)], dim=1)
    scales[s:s + k] = 0.05
    opacities[s:s + k] = 0.9 + 0.1 * u(k)
    quats = torch.randn(n, 4, generator=g, dtype=F64)  # [N,4]
    p = project_gaussians(means, quats, scales, cam.world_to_cam, cam.K, width, height)
    feats = torch.cat([u(n, channels), p.depths[:, None]], dim=1)  # [N,C+1]
    return (p.means2d.to(dtype), p.conics.to(dtype), opacities.to(dtype), feats.to(dtype),
            p.depths.to(dtype), p.radii)


def _run(fn, scene, width, height, seed=1):
    """Forward with ids, then backward of a random linear loss; returns outputs and input grads."""
    means2d, conics, opacities, feats, depths, radii = scene
    inputs = [t.clone().requires_grad_(True) for t in (means2d, conics, opacities, feats)]
    image, alpha, top_id = fn(*inputs, depths, radii, width, height, return_ids=True)
    g = torch.Generator().manual_seed(seed)
    w_img = torch.randn(image.shape, generator=g, dtype=image.dtype)
    w_alpha = torch.randn(alpha.shape, generator=g, dtype=alpha.dtype)
    loss = (image * w_img).sum() + (alpha * w_alpha).sum()
    if loss.requires_grad:  # the reference builds no graph when no Gaussian touches a pixel
        loss.backward()
    grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in inputs]
    return image.detach(), alpha.detach(), top_id, grads


def _assert_grads_close(ref: list[torch.Tensor], got: list[torch.Tensor], tol: float) -> None:
    """Each gradient within ``tol`` of the reference, relative to that gradient's largest entry."""
    for name, a, b in zip(("means2d", "conics", "opacities", "features"), ref, got):
        assert a.shape == b.shape, name
        if a.numel() == 0:
            continue
        scale = max(1.0, float(a.abs().max()))
        err = float((a - b).abs().max())
        assert err <= tol * scale, f"grad {name}: max error {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("width,height,n,channels", [(40, 32, 300, 3), (70, 50, 400, 6)])
def test_matches_reference_float32(width, height, n, channels):
    scene = _scene(n, width, height, channels)
    opacities, radii = scene[2], scene[5]
    # The hard cases are present: culled, larger than the image, clamped opacities.
    assert (radii == 0).sum() >= n // 10 and int(radii.max()) > max(width, height)
    assert bool((opacities > 0.99).any())
    ref = _run(composite_reference, scene, width, height)
    got = _run(composite_cpu, scene, width, height)
    assert got[0].shape == (height, width, channels + 1) and got[0].dtype == torch.float32
    colour, depth = slice(0, channels), channels
    torch.testing.assert_close(got[0][..., colour], ref[0][..., colour], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0][..., depth], ref[0][..., depth], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], ref[1], atol=1e-5, rtol=1e-5)
    assert float(ref[1].max()) > 0.999  # the stack drives T down to the stop threshold
    assert torch.equal(got[2], ref[2])
    _assert_grads_close(ref[3], got[3], 1e-4)


def test_matches_reference_float64():
    width, height = 37, 21
    scene = _scene(250, width, height, 2, seed=3, dtype=F64)
    ref = _run(composite_reference, scene, width, height)
    got = _run(composite_cpu, scene, width, height)
    assert got[0].dtype == F64
    torch.testing.assert_close(got[0], ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got[1], ref[1], atol=1e-12, rtol=1e-12)
    assert torch.equal(got[2], ref[2])
    _assert_grads_close(ref[3], got[3], 1e-10)


def test_hand_computed_stack_stop_and_clamp():
    """Five Gaussians centred on pixel (1,1) of a 3x3 image, front to back by depth.

    Alphas at the centre: 0.99 (opacity 1 clamps), 0.5, 0.9 -> T = 0.01, 0.005, 0.0005; the
    fourth (0.9) would leave T = 5e-5 < 1e-4, so the pixel stops and neither it nor the fifth is
    composited. Image = 0.99*f0 + 0.005*f1 + 0.0045*f2, alpha = 1 - 0.0005.
    """
    n = 5
    means2d = torch.full((n, 2), 1.5, dtype=F64)
    conics = torch.tensor([[1.0, 0.0, 1.0]], dtype=F64).repeat(n, 1)
    opacities = torch.tensor([1.0, 0.5, 0.9, 0.9, 0.7], dtype=F64, requires_grad=True)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0], [5.0, 5.0], [7.0, 7.0]], dtype=F64,
                         requires_grad=True)
    depths = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64)
    radii = torch.full((n,), 1, dtype=torch.int32)
    image, alpha, top = composite_cpu(means2d, conics, opacities, feats, depths, radii, 3, 3,
                                      return_ids=True)
    assert image.shape == (3, 3, 2) and alpha.shape == (3, 3) and top.dtype == torch.int64
    expected = 0.99 * feats[0] + 0.005 * feats[1] + 0.0045 * feats[2]
    torch.testing.assert_close(image[1, 1], expected.detach(), atol=1e-12, rtol=0)
    assert abs(float(alpha[1, 1].detach()) - (1 - 0.0005)) < 1e-12
    assert int(top[1, 1]) == 0
    image[1, 1].sum().backward()
    assert float(opacities.grad[0]) == 0.0  # clamped at 0.99: no gradient
    assert float(opacities.grad[3]) == 0.0 and float(opacities.grad[4]) == 0.0  # not composited
    assert float(opacities.grad[1]) != 0.0
    expected_grad = torch.tensor([0.99, 0.005, 0.0045, 0.0, 0.0], dtype=F64)
    torch.testing.assert_close(feats.grad[:, 0], expected_grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.float16])
def test_visible_depth_order_is_torch_stable_argsort(dtype):
    nan, inf = float("nan"), float("inf")
    values = [3.0, -0.0, 0.0, nan, -1.0, inf, -inf, 3.0, 1e-40, -1e-40, -nan, 2.0, -2.0, 0.0, 3.0]
    d = torch.tensor(values, dtype=dtype)
    radii = torch.tensor([1, 2, 0, 3, 4, 5, 6, 7, 8, 9, 1, 1, 1, 1, -2], dtype=torch.int32)
    visible = torch.nonzero(radii > 0).squeeze(1)
    expected = visible[torch.argsort(d[visible], stable=True)]
    order, rad = visible_depth_order(d, radii)
    assert order.tolist() == expected.tolist() and rad.tolist() == radii[expected].tolist()
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(5000, generator=g).round(decimals=2).to(dtype)  # many ties
    radii = torch.randint(-1, 3, (5000,), generator=g)  # int64
    visible = torch.nonzero(radii > 0).squeeze(1)
    order, rad = visible_depth_order(rand, radii)
    assert torch.equal(order, visible[torch.argsort(rand[visible], stable=True)])
    assert torch.equal(rad, radii[order])


def _runs_by_threads(counts: tuple[int, ...], width: int = 96, height: int = 80) -> list:
    scene = _scene(2000, width, height, 3, seed=5)
    threads = torch.get_num_threads()
    out = []
    try:
        for n in counts:
            torch.set_num_threads(n)
            out.append(_run(composite_cpu, scene, width, height))
    finally:
        torch.set_num_threads(threads)
    return out


def test_results_are_bitwise_equal_for_any_thread_count():
    runs = _runs_by_threads((1, 2, 3, 2, 4))
    one = runs[0]
    for other in runs[1:]:
        for a, b in zip(one[:3], other[:3]):
            assert torch.equal(a, b)  # forward: tiles are independent
        for a, b in zip(one[3], other[3]):
            assert torch.equal(a, b)  # backward: per-pair slots summed in a fixed order


def test_backward_without_pair_budget_falls_back_to_thread_buffers(monkeypatch):
    exact = _runs_by_threads((1,))[0]
    monkeypatch.setattr(cpu_fast, "PAIR_BUDGET_BYTES", 0)  # no room for the per-pair slots
    monkeypatch.setattr(cpu_fast, "_WARNED_FALLBACK", False)
    one = _runs_by_threads((1,))[0]  # one thread: fixed order, no warning
    with pytest.warns(UserWarning, match="not bitwise reproducible"):
        two = _runs_by_threads((2,))[0]
    for a, b in zip(exact[:3], two[:3]):
        assert torch.equal(a, b)
    _assert_grads_close(exact[3], one[3], 1e-5)  # other summation order, same sums
    _assert_grads_close(exact[3], two[3], 1e-5)  # thread buffers may add in another order


@pytest.mark.parametrize("case", ["empty", "all_culled", "one_channel", "many_channels",
                                  "nan_mean", "huge_radius"])
def test_edge_cases(case):
    width, height = 20, 18
    means2d, conics, opacities, feats, depths, radii = _scene(60, width, height, 2, seed=7)
    if case == "empty":
        means2d, conics, opacities, feats, depths, radii = (
            t[:0] for t in (means2d, conics, opacities, feats, depths, radii))
    elif case == "all_culled":
        radii = torch.zeros_like(radii)
    elif case == "one_channel":
        feats = feats[:, :1].contiguous()
    elif case == "many_channels":
        feats = torch.rand(feats.shape[0], 65, generator=torch.Generator().manual_seed(2))
    elif case == "nan_mean":
        means2d = means2d.clone()
        means2d[5] = float("nan")
        radii = radii.clone()
        radii[5] = 4
    elif case == "huge_radius":
        radii = torch.full_like(radii, 2**30)
    scene = (means2d, conics, opacities, feats, depths, radii)
    ref = _run(composite_reference, scene, width, height)
    got = _run(composite_cpu, scene, width, height)
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], ref[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(got[2], ref[2])
    _assert_grads_close(ref[3], got[3], 1e-4)
    if case in ("empty", "all_culled"):
        assert float(got[1].abs().max()) == 0.0 and bool((got[2] == -1).all())


def test_inputs_are_checked():
    means2d, conics, opacities, feats, depths, radii = _scene(10, 16, 16, 2)
    with pytest.raises(ValueError, match="conics"):
        composite_cpu(means2d, conics[:, :2], opacities, feats, depths, radii, 16, 16)
    with pytest.raises(ValueError, match="radii"):
        composite_cpu(means2d, conics, opacities, feats, depths, radii.float(), 16, 16)
    # Non-contiguous and mixed-dtype inputs are accepted (copied); outputs follow type promotion.
    strided = means2d.T.contiguous().T
    image, _, top = composite_cpu(strided, conics, opacities.double(), feats, depths, radii, 16, 16)
    assert image.dtype == F64 and top is None


def test_render_api_cpu_matches_reference_with_gradients():
    """End to end through projection: gradients of all Gaussian parameters agree (float64)."""
    width, height = 36, 28
    g = torch.Generator().manual_seed(11)
    n = 150
    cam = Camera.from_intrinsics(30.0, 32.0, 18.3, 13.9, width, height, torch.eye(4, dtype=F64))
    params = [
        torch.randn(n, 3, generator=g, dtype=F64) * 0.5 + torch.tensor([0.0, 0.0, 2.5], dtype=F64),
        torch.randn(n, 4, generator=g, dtype=F64),
        torch.exp(torch.rand(n, 3, generator=g, dtype=F64) * 3 - 5),
        torch.rand(n, generator=g, dtype=F64),
        torch.rand(n, 4, generator=g, dtype=F64),
    ]
    bg = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    results = []
    for backend in ("reference", "cpu"):
        inputs = [p.clone().requires_grad_(True) for p in params]
        out = render(*inputs, cam, background=bg, backend=backend, return_ids=True)
        weights = torch.linspace(-1, 1, out.image.numel(), dtype=F64).reshape(out.image.shape)
        ((out.image * weights).sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
        results.append((out, [p.grad for p in inputs]))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(b.image, a.image, atol=1e-10, rtol=0)
    torch.testing.assert_close(b.depth, a.depth, atol=1e-10, rtol=0)
    assert torch.equal(b.top_id, a.top_id)
    torch.testing.assert_close(b.means2d.grad, a.means2d.grad, atol=1e-8, rtol=1e-8)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x, atol=1e-8, rtol=1e-8)


def _reset_build_state(monkeypatch, ext_dir: Path) -> None:
    """Point the cache at ``ext_dir`` and forget the loaded library (restored after the test)."""
    monkeypatch.setenv("OIG_EXT_DIR", str(ext_dir))
    for attr in ("_lib", "_error", "_tried", "_build_info"):
        monkeypatch.setattr(cpu_fast, attr, getattr(cpu_fast, attr))
    cpu_fast._lib, cpu_fast._error, cpu_fast._tried, cpu_fast._build_info = None, None, False, {}


def test_missing_compiler_is_reported(monkeypatch, tmp_path):
    _reset_build_state(monkeypatch, tmp_path / "ext")
    monkeypatch.setattr(cpu_fast, "_find_compiler", lambda: None)
    assert not cpu_fast.cpu_backend_available()
    assert "no C++ compiler" in (cpu_fast.cpu_backend_error() or "")
    with pytest.raises(BackendError, match="unavailable"):
        composite_cpu(*_scene(4, 8, 8, 1), 8, 8)


def test_compile_error_is_reported(monkeypatch, tmp_path):
    _reset_build_state(monkeypatch, tmp_path / "ext")
    bad = tmp_path / "broken.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_fast, "_SOURCE", bad)
    assert not cpu_fast.cpu_backend_available()
    error = cpu_fast.cpu_backend_error() or ""
    assert "broken.cpp" in error and "failed" in error


def test_concurrent_first_builds_share_one_library(monkeypatch, tmp_path):
    """Two builders racing on an empty cache (as parallel test workers do) both load one library.

    The lock is an flock on a file opened separately by each builder, so threads exercise the
    same exclusion as processes.
    """
    _reset_build_state(monkeypatch, tmp_path)
    results: list[object] = []

    def build() -> None:
        try:
            cpu_fast._load()
            results.append(cpu_fast._build_info["path"])
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2 and all(isinstance(r, str) for r in results), results
    assert len(set(results)) == 1 and Path(results[0]).is_file()
    assert len(list(tmp_path.glob("*.so"))) == 1 and not list(tmp_path.glob(".*.tmp"))
