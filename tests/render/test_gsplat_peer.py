"""Projection and SH against gsplat's own pure-torch implementations (CPU, no CUDA needed).

gsplat 1.5's ``gsplat.cuda._torch_impl`` mirrors its CUDA kernels in plain torch. We compare what
both define the same way: rotation matrices, 3D covariances, projected centres, depths, conics,
depth culling and SH. Radii are defined differently on purpose: gsplat 1.5 uses per-axis radii
``ceil(3.33 * sqrt(cov2d_xx))`` / ``..._yy`` (its CUDA kernel further tightens them by opacity),
while the render contract uses one 3-sigma radius along the major axis, as 3DGS does. For radii we
therefore check that gsplat's per-axis values follow from our 2D covariance.
"""

from __future__ import annotations

import math

import pytest
import torch

from openinsgaussian.render.projection import covariance_3d, project_gaussians, quat_to_rotmat
from openinsgaussian.render.sh import eval_sh

torch_impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat is not installed")


def _random_camera(g: torch.Generator):
    q = torch.randn(1, 4, generator=g, dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3] = quat_to_rotmat(q)[0]
    viewmat[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64)
    w, h = (
        64 + int(torch.randint(0, 64, (1,), generator=g)),
        48 + int(torch.randint(0, 48, (1,), generator=g)),
    )
    f = 40.0 + 60.0 * torch.rand(1, generator=g, dtype=torch.float64).item()
    cx = w * (0.4 + 0.2 * torch.rand(1, generator=g, dtype=torch.float64).item())
    cy = h * (0.4 + 0.2 * torch.rand(1, generator=g, dtype=torch.float64).item())
    K = torch.tensor([[f, 0.0, cx], [0.0, f * 1.05, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return viewmat, K, w, h


def _random_gaussians(n: int, viewmat: torch.Tensor, g: torch.Generator):
    # Camera-space points spread wider than the view (some off-screen, some behind), then to world.
    pc = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [2.0, 2.0, 2.0]
    ) + torch.tensor([0, 0, 2.0])
    c2w = torch.linalg.inv(viewmat)
    means = pc @ c2w[:3, :3].T + c2w[:3, 3]
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=torch.float64) - 3.0)
    return means, quats, scales


def test_rotation_and_covariance_match_gsplat():
    g = torch.Generator().manual_seed(0)
    quats = torch.randn(100, 4, generator=g, dtype=torch.float64)
    scales = torch.rand(100, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(quat_to_rotmat(quats), torch_impl._quat_to_rotmat(quats), atol=1e-12)
    covars, _ = torch_impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    assert torch.allclose(covariance_3d(quats, scales), covars, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matches_gsplat(seed):
    g = torch.Generator().manual_seed(seed)
    viewmat, K, w, h = _random_camera(g)
    means, quats, scales = _random_gaussians(500, viewmat, g)
    ours = project_gaussians(means, quats, scales, viewmat, K, w, h, near=0.01, far=1e10, eps2d=0.3)
    covars, _ = torch_impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        means, covars, viewmat[None], K[None], w, h, eps2d=0.3, near_plane=0.01, far_plane=1e10
    )
    radii, means2d, depths, conics = (
        radii[0],
        means2d[0],
        depths[0],
        conics[0],
    )  # [N,2], [N,2], [N], [N,3]

    in_depth = (depths > 0.01) & (depths < 1e10)
    assert in_depth.any() and (~in_depth).any()
    assert torch.allclose(ours.depths, depths, atol=1e-12)
    assert torch.allclose(ours.means2d[in_depth], means2d[in_depth], rtol=1e-10, atol=1e-8)
    assert torch.allclose(ours.conics[in_depth], conics[in_depth], rtol=1e-8, atol=1e-10)
    # Depth culling agrees; gsplat's per-axis radii follow from our 2D covariance.
    assert not (ours.radii[~in_depth] > 0).any() and not (radii[~in_depth] > 0).any()
    kept = radii.max(dim=-1).values > 0
    rx = torch.ceil(3.33 * ours.cov2d[:, 0].sqrt())
    ry = torch.ceil(3.33 * ours.cov2d[:, 2].sqrt())
    assert torch.equal(radii[kept, 0].double(), rx[kept]) and torch.equal(
        radii[kept, 1].double(), ry[kept]
    )
    # Both cull by a box against the image: a centre on screen is always kept by both, and a box
    # that misses the image by a wide margin is culled by both.
    mx, my = means2d[:, 0], means2d[:, 1]
    centre_on = in_depth & (mx >= 0) & (mx < w) & (my >= 0) & (my < h)
    assert centre_on.sum() > 50
    assert (kept[centre_on]).all() and (ours.radii[centre_on] > 0).all()
    lam = 0.5 * (ours.cov2d[:, 0] + ours.cov2d[:, 2])
    lam = (
        lam
        + (lam * lam - ours.cov2d[:, 0] * ours.cov2d[:, 2] + ours.cov2d[:, 1] ** 2)
        .clamp(min=0.1)
        .sqrt()
    )
    big = torch.maximum(torch.maximum(rx, ry), torch.ceil(3.0 * lam.sqrt()))  # >= both radii
    far_off = in_depth & ((mx + big < 0) | (mx - big > w) | (my + big < 0) | (my - big > h))
    assert far_off.any() and not kept[far_off].any() and not (ours.radii[far_off] > 0).any()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(200, 16, 3, generator=g, dtype=torch.float64)
    dirs = torch.randn(200, 3, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    theirs = torch_impl._spherical_harmonics(degree, dirs, coeffs)
    assert torch.allclose(eval_sh(degree, coeffs, dirs), theirs, atol=1e-10)
    assert math.isfinite(float(theirs.abs().max()))
