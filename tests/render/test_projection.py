"""EWA projection against hand-computed cases (render contract, stage A)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openinsgaussian.data.camera import Camera
from openinsgaussian.render.projection import covariance_3d, project_gaussians, quat_to_rotmat

FX, FY, CX, CY, W, H = 40.0, 50.0, 12.3, 9.6, 24, 20


def _K(dtype=torch.float64, device="cpu") -> torch.Tensor:
    return torch.tensor([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _identity(dtype=torch.float64, device="cpu") -> torch.Tensor:
    return torch.eye(4, dtype=dtype, device=device)


def test_quat_to_rotmat_known_rotations():
    q = torch.tensor(
        [[1.0, 0, 0, 0], [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], [0.0, 0, 0, 0]],
        dtype=torch.float64,
    )
    R = quat_to_rotmat(q)
    assert torch.allclose(R[0], torch.eye(3, dtype=torch.float64))
    # 90 degrees about z maps x to y.
    rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(R[1], rz, atol=1e-12)
    assert torch.allclose(R[2], torch.eye(3, dtype=torch.float64))  # zero quaternion -> identity


def test_quat_to_rotmat_normalises_and_is_orthonormal():
    torch.manual_seed(0)
    q = torch.randn(64, 4, dtype=torch.float64)
    R = quat_to_rotmat(q)
    assert torch.allclose(R, quat_to_rotmat(3.7 * q), atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(64, dtype=torch.float64), atol=1e-12)


def test_covariance_3d_is_R_S2_Rt():
    q = torch.tensor([[0.9, 0.1, -0.3, 0.2]], dtype=torch.float64)
    s = torch.tensor([[0.5, 0.2, 0.1]], dtype=torch.float64)
    R = quat_to_rotmat(q)[0]
    expected = R @ torch.diag(s[0] ** 2) @ R.T
    assert torch.allclose(covariance_3d(q, s)[0], expected, atol=1e-12)


def test_isotropic_gaussian_on_axis(device):
    z, s = 2.0, 0.1
    means = torch.tensor([[0.0, 0.0, z]], dtype=torch.float64, device=device)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64, device=device)
    scales = torch.full((1, 3), s, dtype=torch.float64, device=device)
    p = project_gaussians(means, quats, scales, _identity(device=device), _K(device=device), W, H)
    vx, vy = (FX * s / z) ** 2 + 0.3, (FY * s / z) ** 2 + 0.3
    assert torch.allclose(p.means2d.cpu(), torch.tensor([[CX, CY]], dtype=torch.float64))
    assert torch.allclose(p.cov2d.cpu(), torch.tensor([[vx, 0.0, vy]], dtype=torch.float64))
    assert torch.allclose(
        p.conics.cpu(), torch.tensor([[1 / vx, 0.0, 1 / vy]], dtype=torch.float64)
    )
    assert p.depths.item() == pytest.approx(z)
    # gsplat/3DGS radius: largest eigenvalue (+ the sqrt(0.1) floor), 3 sigma, ceil.
    mid = 0.5 * (vx + vy)
    lam = mid + math.sqrt(max(0.1, mid * mid - vx * vy))
    assert p.radii.dtype == torch.int32
    assert p.radii.item() == math.ceil(3 * math.sqrt(lam))


def test_off_axis_matches_hand_jacobian_with_rotated_camera():
    # Camera rotated about y and translated; Gaussian anisotropic and rotated.
    ang = 0.3
    R = np.array([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = [0.2, -0.1, 1.5]
    mu = np.array([0.3, 0.25, 1.0])
    q = torch.tensor([[0.8, 0.2, 0.4, -0.1]], dtype=torch.float64)
    s = np.array([0.3, 0.1, 0.05])
    Rg = quat_to_rotmat(q)[0].numpy()
    sigma = Rg @ np.diag(s**2) @ Rg.T
    t = R @ mu + w2c[:3, 3]
    # Hand EWA: t is inside the FOV limits here, so no clamping.
    assert -(CX / FX + 0.15 * W / FX) < t[0] / t[2] < (W - CX) / FX + 0.15 * W / FX
    assert -(CY / FY + 0.15 * H / FY) < t[1] / t[2] < (H - CY) / FY + 0.15 * H / FY
    J = np.array([[FX / t[2], 0, -FX * t[0] / t[2] ** 2], [0, FY / t[2], -FY * t[1] / t[2] ** 2]])
    cov = J @ R @ sigma @ R.T @ J.T + 0.3 * np.eye(2)
    uv = np.array([FX * t[0] / t[2] + CX, FY * t[1] / t[2] + CY])

    p = project_gaussians(
        torch.tensor(mu[None]), q, torch.tensor(s[None]), torch.tensor(w2c), _K(), W, H
    )
    assert np.allclose(p.means2d[0].numpy(), uv, atol=1e-10)
    assert np.allclose(p.cov2d[0].numpy(), [cov[0, 0], cov[0, 1], cov[1, 1]], atol=1e-10)
    inv = np.linalg.inv(cov)
    assert np.allclose(p.conics[0].numpy(), [inv[0, 0], inv[0, 1], inv[1, 1]], atol=1e-10)
    assert p.depths.item() == pytest.approx(t[2])
    # Means agree with the camera module's independent projection.
    cam = Camera.from_intrinsics(FX, FY, CX, CY, W, H, w2c)
    uv_cam, z_cam = cam.project(mu[None])
    assert np.allclose(uv_cam[0], uv) and z_cam[0] == pytest.approx(t[2])


def test_jacobian_uses_fov_clamped_mean():
    z, x = 2.0, 3.0  # x/z = 1.5, far beyond the right-hand limit
    lim_pos = (W - CX) / FX + 0.3 * 0.5 * W / FX
    assert x / z > lim_pos
    means = torch.tensor([[x, 0.0, z]], dtype=torch.float64)
    scales = torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64)  # only depth extent
    p = project_gaussians(
        means, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), scales, _identity(), _K(), W, H
    )
    # cov_xx = (fx * tx_clamped / z^2)^2 * sz^2 + 0.3 with tx_clamped = z * lim_pos
    expected_xx = (FX * (z * lim_pos) / z**2) ** 2 * 0.25 + 0.3
    assert p.cov2d[0, 0].item() == pytest.approx(expected_xx, rel=1e-12)
    assert p.means2d[0, 0].item() == pytest.approx(FX * x / z + CX)  # the centre is not clamped


@pytest.mark.parametrize(
    ("point", "kept"),
    [
        ((0.0, 0.0, 0.005), False),  # in front of the camera but closer than near
        ((0.0, 0.0, 0.01), False),  # exactly at near (t_z <= near culls)
        ((0.0, 0.0, -1.0), False),  # behind the camera
        ((0.0, 0.0, 0.0), False),  # at the camera centre
        ((0.0, 0.0, 2e10), False),  # beyond far
        ((0.0, 0.0, 1.0), True),
        ((2.0, 0.0, 1.0), False),  # projects 68 px right of the image, small radius
        ((-5.0, 0.0, 1.0), False),  # far left
        ((0.0, 2.0, 1.0), False),  # below
    ],
)
def test_culling(point, kept):
    means = torch.tensor([point], dtype=torch.float64, requires_grad=True)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64, requires_grad=True)
    scales = torch.full((1, 3), 0.01, dtype=torch.float64, requires_grad=True)
    p = project_gaussians(means, quats, scales, _identity(), _K(), W, H)
    assert (p.radii.item() > 0) == kept
    for t in (p.means2d, p.conics, p.cov2d, p.depths):
        assert torch.isfinite(t).all()
    (p.means2d.sum() + p.conics.sum()).backward()
    for t in (means, quats, scales):
        assert torch.isfinite(t.grad).all()


def test_off_screen_box_edge():
    # A Gaussian centred left of the image is kept while its 3-sigma box still overlaps x > 0.
    z, s = 1.0, 0.05  # sigma2d = 2 px in x
    p0 = project_gaussians(
        torch.tensor([[0.0, 0.0, z]], dtype=torch.float64),
        torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
        torch.full((1, 3), s, dtype=torch.float64),
        _identity(),
        _K(),
        W,
        H,
    )
    r = p0.radii.item()
    for mx, kept in (
        (-(r - 0.5), True),
        (-(r + 0.5), False),
        (W + r - 0.5, True),
        (W + r + 0.5, False),
    ):
        x = (mx - CX) * z / FX
        p = project_gaussians(
            torch.tensor([[x, 0.0, z]], dtype=torch.float64),
            torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
            torch.full((1, 3), s, dtype=torch.float64),
            _identity(),
            _K(),
            W,
            H,
        )
        assert p.means2d[0, 0].item() == pytest.approx(mx)
        assert (p.radii.item() > 0) == kept, (mx, p.radii.item())


def test_degenerate_scales_and_quats_are_finite():
    means = torch.tensor(
        [[0.0, 0.0, 2.0], [0.1, 0.1, 3.0]], dtype=torch.float32, requires_grad=True
    )
    quats = torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0]], requires_grad=True)
    scales = torch.tensor([[0.0, 0.0, 0.0], [1e-30, 1e-30, 1e-30]], requires_grad=True)
    p = project_gaussians(means, quats, scales, _identity(torch.float32), _K(torch.float32), W, H)
    assert torch.allclose(p.cov2d, torch.tensor([[0.3, 0.0, 0.3]] * 2), atol=1e-6)
    assert (p.radii == math.ceil(3 * math.sqrt(0.3 + math.sqrt(0.1)))).all()
    (p.conics.sum() + p.means2d.sum()).backward()
    for t in (means, quats, scales):
        assert torch.isfinite(t.grad).all()
