"""Real spherical harmonics (degree <= 3) with 3DGS constants and colour mapping."""

from __future__ import annotations

import math

import pytest
import torch

from openinsgaussian.render.sh import C0, eval_sh, rgb_to_sh, sh_basis, sh_colors, sh_to_rgb


def test_c0_and_rgb_round_trip():
    assert C0 == pytest.approx(1.0 / (2.0 * math.sqrt(math.pi)), abs=1e-15)
    rgb = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.7, 0.9]], dtype=torch.float64)
    assert torch.allclose(sh_to_rgb(rgb_to_sh(rgb)), rgb)
    assert torch.allclose(rgb_to_sh(torch.tensor([0.5])), torch.tensor([0.0]))


def test_degree_one_hand_computed():
    # 3DGS band 1: -C1*y*sh1 + C1*z*sh2 - C1*x*sh3 with C1 = sqrt(3/(4 pi)).
    c1 = math.sqrt(3.0 / (4.0 * math.pi))
    d = torch.tensor([[0.6, 0.0, 0.8]], dtype=torch.float64)
    coeffs = torch.zeros(1, 4, 3, dtype=torch.float64)
    coeffs[0, 0] = torch.tensor([1.0, 0.0, 0.0])
    coeffs[0, 2] = torch.tensor([0.0, 1.0, 0.0])
    coeffs[0, 3] = torch.tensor([0.0, 0.0, 1.0])
    out = eval_sh(1, coeffs, d)[0]
    assert torch.allclose(out, torch.tensor([C0, c1 * 0.8, -c1 * 0.6], dtype=torch.float64))
    # Degree 0 ignores the higher bands.
    assert torch.allclose(
        eval_sh(0, coeffs, d)[0], torch.tensor([C0, 0.0, 0.0], dtype=torch.float64)
    )


def test_basis_is_orthonormal_on_the_sphere():
    # Fibonacci-sphere quadrature of Y_i Y_j: the identity for a correct real SH basis.
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (1.0 + math.sqrt(5.0)) * i
    r = torch.sqrt(1.0 - z * z)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    Y = sh_basis(3, dirs)  # [n,16]
    gram = 4.0 * math.pi * (Y.T @ Y) / n
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-3)


def test_degree_three_known_value():
    # Y_3^{-3} (index 9) at d = (x, y, z): C3_0 * y * (3x^2 - y^2), C3_0 = -sqrt(35/(32 pi)).
    d = torch.tensor([[0.48, 0.6, 0.64]], dtype=torch.float64)
    coeffs = torch.zeros(1, 16, 3, dtype=torch.float64)
    coeffs[0, 9, 0] = 1.0
    x, y = 0.48, 0.6
    expected = -math.sqrt(35.0 / (32.0 * math.pi)) * y * (3 * x * x - y * y)
    assert eval_sh(3, coeffs, d)[0, 0].item() == pytest.approx(expected, rel=1e-12)


def test_sh_colors_direction_offset_and_clamp():
    means = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    center = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    coeffs = torch.zeros(2, 4, 3, dtype=torch.float64)
    coeffs[:, 0] = rgb_to_sh(torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64))
    coeffs[:, 3, 0] = 0.2  # -C1 * x term on red
    coeffs[:, 0, 2] = -10.0  # strongly negative blue, clamped to 0
    out = sh_colors(1, coeffs, means, center)
    c1 = math.sqrt(3.0 / (4.0 * math.pi))
    dx0 = 1.0 / math.sqrt(2.0)  # direction (1, 0, -1)/sqrt(2)
    assert out[0, 0].item() == pytest.approx(0.2 - 0.2 * c1 * dx0)
    assert out[1, 0].item() == pytest.approx(0.2)  # direction (0, 0, 1): no x component
    assert out[0, 1].item() == pytest.approx(0.4)
    assert (out[:, 2] == 0).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="K >= 16"):
        eval_sh(3, torch.zeros(2, 9, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="dirs"):
        eval_sh(1, torch.zeros(2, 4, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="sh_degree"):
        sh_basis(4, torch.zeros(2, 3))
