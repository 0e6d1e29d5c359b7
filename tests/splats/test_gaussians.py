"""GaussianModel initialisation, activations and state dicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.splats.gaussians import SH_C0, GaussianModel, knn_init_scales, rgb_to_sh0, sh0_to_rgb


def test_knn_scale_by_hand():
    # Points on a line at 0, 1, 3, 6: the 3 nearest neighbours of 0 are at 1, 3, 6 ->
    # sqrt((1 + 9 + 36) / 3).
    xyz = np.array([[0, 0, 0], [1, 0, 0], [3, 0, 0], [6, 0, 0]], dtype=np.float64)
    s = knn_init_scales(xyz)
    assert s[0] == pytest.approx(math.sqrt(46 / 3))
    assert s[1] == pytest.approx(math.sqrt((1 + 4 + 25) / 3))


def test_from_points_initialisation(device):
    rng = np.random.default_rng(0)
    xyz = rng.random((50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    m = GaussianModel.from_points(xyz, rgb, sh_degree=3, init_opacity=0.1, seed=7, device=device)
    assert len(m) == 50 and m.device.type == device.type
    assert m.params["shN"].shape == (50, 15, 3) and m.params["sh0"].shape == (50, 1, 3)
    torch.testing.assert_close(m.means.cpu(), torch.from_numpy(xyz))  # order preserved
    torch.testing.assert_close(m.colors_rgb().cpu(), torch.from_numpy(rgb / 255.0).float(), atol=1e-6, rtol=0)
    assert torch.all(m.params["shN"] == 0)
    torch.testing.assert_close(m.opacities.cpu(), torch.full((50,), 0.1), atol=1e-6, rtol=0)
    torch.testing.assert_close(m.quats.cpu(), torch.tensor([[1.0, 0, 0, 0]]).repeat(50, 1))
    expected_scale = torch.from_numpy(knn_init_scales(xyz)).float()[:, None].repeat(1, 3)
    torch.testing.assert_close(m.scales.cpu(), expected_scale, rtol=1e-5, atol=0)
    f = m.ins_feat
    assert f.shape == (50, 6) and f.min() >= 0 and f.max() < 1
    again = GaussianModel.from_points(xyz, rgb, seed=7, device=device)
    assert torch.equal(again.ins_feat, f)
    assert m.active_sh_degree == 0


def test_sh_dc_roundtrip():
    rgb = torch.tensor([[0.0, 0.5, 1.0]])
    torch.testing.assert_close(sh0_to_rgb(rgb_to_sh0(rgb)), rgb)
    assert float(rgb_to_sh0(torch.tensor(0.5 + SH_C0))) == pytest.approx(1.0)


def test_random_in_bounds():
    m = GaussianModel.random_in_bounds((-1, -2, -3), (1, 2, 3), 200, seed=3)
    lo, hi = m.means.min(0).values, m.means.max(0).values
    assert torch.all(lo >= torch.tensor([-1.0, -2, -3])) and torch.all(hi <= torch.tensor([1.0, 2, 3]))
    assert len(m) == 200
    with pytest.raises(ConfigError):
        GaussianModel.random_in_bounds((0, 0, 0), (0, 1, 1), 10)


def test_bad_points_raise_clear_errors():
    with pytest.raises(DataError, match="NaN"):
        GaussianModel.from_points(np.array([[0.0, 0, np.nan], [1, 1, 1]]))
    with pytest.raises(DataError, match="shape"):
        GaussianModel.from_points(np.zeros((4, 2)))
    with pytest.raises(ConfigError):
        GaussianModel.from_points(np.zeros((4, 3)), init_opacity=1.5)


def test_state_dict_roundtrip_preserves_everything():
    m = GaussianModel.from_points(np.random.default_rng(1).random((10, 3)), sh_degree=2, seed=0)
    m.active_sh_degree = 1
    m.params["means"].requires_grad_(False)
    m2 = GaussianModel.from_state_dict(m.state_dict())
    assert m2.sh_degree == 2 and m2.active_sh_degree == 1
    assert not m2.params["means"].requires_grad and m2.params["scales"].requires_grad
    for k in m.params:
        assert torch.equal(m.params[k], m2.params[k])
    with pytest.raises(ConfigError):
        GaussianModel.from_state_dict({"params": {}})
