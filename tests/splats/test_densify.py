"""Clone / split / prune / opacity reset on hand-made cases, with Adam states kept aligned."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from openinsgaussian.splats.densify import DensifyConfig, DensifyStrategy, append_rows, remove_rows

EXTENT = 10.0  # percent_dense * extent = 0.1: max scale <= 0.1 is "small"


def _params() -> dict[str, nn.Parameter]:
    """G0 large, G1 small, G2 transparent, G3 ordinary."""
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    t = {
        "means": torch.tensor([[0.0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]]),
        "scales": torch.log(torch.tensor([[1.0, 0.5, 0.25], [0.01, 0.01, 0.01], [0.05] * 3, [0.05] * 3])),
        "quats": torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]),
        "opacities": torch.tensor([logit(0.5), logit(0.6), logit(0.001), logit(0.7)]),
        "sh0": torch.arange(12, dtype=torch.float32).reshape(4, 1, 3),
        "shN": torch.arange(4 * 15 * 3, dtype=torch.float32).reshape(4, 15, 3),
        "ins_feat": torch.arange(24, dtype=torch.float32).reshape(4, 6) / 24,
    }
    return {k: nn.Parameter(v.clone()) for k, v in t.items()}


def _optimizers(params: dict[str, nn.Parameter]) -> dict[str, torch.optim.Adam]:
    opts = {k: torch.optim.Adam([p], lr=1e-3, eps=1e-15) for k, p in params.items()}
    # one step with row-distinct gradients so every row has a recognisable exp_avg
    for k, p in params.items():
        rows = torch.arange(1, p.shape[0] + 1, dtype=torch.float32).reshape(-1, *([1] * (p.ndim - 1)))
        p.grad = rows.expand_as(p).clone()
        opts[k].step()
        opts[k].zero_grad(set_to_none=True)
    return opts


def _out(grad_px: list[list[float]], radii: list[int]) -> SimpleNamespace:
    m = torch.zeros(len(radii), 2)
    m.grad = torch.tensor(grad_px)
    return SimpleNamespace(means2d=m, radii=torch.tensor(radii, dtype=torch.int32))


def _exp_avg(opts, params, name):
    return opts[name].state[params[name]]["exp_avg"]


def test_clone_split_prune_with_aligned_adam_state():
    params = _params()
    opts = _optimizers(params)
    before = {k: p.detach().clone() for k, p in params.items()}
    avg_before = {k: _exp_avg(opts, params, k).clone() for k in params}
    gen = torch.Generator().manual_seed(0)
    s = DensifyStrategy(DensifyConfig(start=500, interval=100), EXTENT, generator=gen)
    # W = H = 100: NDC gradient = pixel gradient * 50. G0, G1: 1e-3 px -> 0.05 NDC (high).
    info = s.step_post_backward(params, opts, 600, _out([[1e-3, 0], [0, 1e-3], [0, 0], [1e-7, 0]], [5, 5, 5, 5]),
                                100, 100)
    assert info == {"cloned": 1, "split": 1, "pruned": 1, "reset": 0}
    # order: [G1, G3, clone of G1, child a of G0, child b of G0]
    assert params["means"].shape[0] == 5
    for k in params:
        assert params[k].shape[0] == 5
        torch.testing.assert_close(params[k][0], before[k][1])
        torch.testing.assert_close(params[k][1], before[k][3])
        torch.testing.assert_close(params[k][2], before[k][1])  # exact clone
        # Adam moments follow their rows; new rows start at zero
        avg = _exp_avg(opts, params, k)
        assert avg.shape == params[k].shape
        torch.testing.assert_close(avg[0], avg_before[k][1])
        torch.testing.assert_close(avg[1], avg_before[k][3])
        assert torch.all(avg[2:] == 0)
        assert opts[k].param_groups[0]["params"][0] is params[k]
    # split children: scales / 1.6, everything else but the mean copied from G0
    torch.testing.assert_close(params["scales"][3:], (before["scales"][0] - math.log(1.6)).expand(2, 3))
    for k in ("quats", "opacities", "sh0", "shN", "ins_feat"):
        torch.testing.assert_close(params[k][3:], before[k][0].expand_as(params[k][3:]))
    children = params["means"][3:].detach()
    assert not torch.equal(children[0], children[1])
    assert torch.all(children.abs() < 3 * torch.tensor([1.0, 0.5, 0.25]) * 2)  # within a few sigma of G0
    # statistics start afresh
    assert s.count is not None and s.count.shape == (5,) and torch.all(s.count == 0)


def test_split_samples_follow_the_rotated_covariance():
    # One elongated Gaussian rotated 90 degrees about z: std 1 along its local x = world y.
    params = {k: v[:1].clone() for k, v in _params().items()}
    params["quats"] = nn.Parameter(torch.tensor([[math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]]))
    params["scales"] = nn.Parameter(torch.log(torch.tensor([[1.0, 1e-3, 1e-3]])))
    params = {k: nn.Parameter(v.detach().clone()) for k, v in params.items()}
    s = DensifyStrategy(DensifyConfig(split_samples=4000), EXTENT, generator=torch.Generator().manual_seed(1))
    kids = s._split_children(params, torch.tensor([True]))["means"]  # [4000,3]
    std = kids.std(dim=0)
    assert std[1] == pytest.approx(1.0, rel=0.06) and std[0] < 0.01 and std[2] < 0.01


def test_ndc_gradient_scaling_and_visibility_average():
    cfg = DensifyConfig(start=0, interval=1, grad_threshold=2e-4)
    # width 200 -> x factor 100: 3e-6 px -> 3e-4 NDC (densified), 1e-6 px -> 1e-4 (not).
    for grad, width, expect in ((3e-6, 200, 1), (1e-6, 200, 0), (3e-6, 50, 0)):
        params = {k: v[1:2].clone() for k, v in _params().items()}  # the small G1 -> clone
        params = {k: nn.Parameter(v.detach()) for k, v in params.items()}
        s = DensifyStrategy(cfg, EXTENT)
        info = s.step_post_backward(params, {}, 1, _out([[grad, 0]], [3]), width, 100)
        assert info["cloned"] == expect, (grad, width)
    # averaged over visible steps: 3e-4 then 0 -> 1.5e-4 < 2e-4; invisible steps do not count
    params = {k: nn.Parameter(v[1:2].detach().clone()) for k, v in _params().items()}
    s = DensifyStrategy(DensifyConfig(start=0, interval=3), EXTENT)
    s.step_post_backward(params, {}, 1, _out([[3e-6, 0]], [3]), 200, 100)
    s.step_post_backward(params, {}, 2, _out([[5e-6, 0]], [0]), 200, 100)  # culled: ignored
    assert s.count is not None and float(s.count[0]) == 1
    info = s.step_post_backward(params, {}, 3, _out([[0.0, 0]], [3]), 200, 100)
    assert info["cloned"] == 0 and params["means"].shape[0] == 1


def test_size_pruning_after_threshold_and_opacity_reset():
    params = _params()
    opts = _optimizers(params)
    cfg = DensifyConfig(start=500, interval=100, screen_size_after=3000, opacity_reset_every=3000,
                        max_screen_size=20, max_world_size=0.05)  # world limit 0.05 * 10 = 0.5
    s = DensifyStrategy(cfg, EXTENT)
    g1_mean = params["means"][1].detach().clone()
    quiet = [[0.0, 0.0]] * 4
    # before step 3000 a 30 px wide Gaussian and G0 (scale 1.0 > 0.5) both survive
    s.step_post_backward(params, opts, 2900, _out(quiet, [30, 5, 5, 5]), 100, 100)
    assert params["means"].shape[0] == 3  # only the transparent G2 went
    # step 3100: G3 (now row 2) was 25 px wide on screen, G0 (row 0) is 1.0 > 0.5 in the world
    info = s.step_post_backward(params, opts, 3100, _out([[0.0, 0.0]] * 3, [5, 5, 25]), 100, 100)
    assert info["pruned"] == 2 and params["means"].shape[0] == 1
    assert torch.equal(params["means"][0], g1_mean)  # the small G1 is the survivor
    # opacity reset at step 6000: capped at 0.01, Adam moments of the opacities zeroed
    s.step_post_backward(params, opts, 6000, _out([[0.0, 0.0]], [5]), 100, 100)
    assert float(torch.sigmoid(params["opacities"][0].detach())) == pytest.approx(0.01, rel=1e-5)
    st = opts["opacities"].state[params["opacities"]]
    assert torch.all(st["exp_avg"] == 0) and torch.all(st["exp_avg_sq"] == 0)
    assert opts["opacities"].param_groups[0]["params"][0] is params["opacities"]


def test_disabled_or_late_does_nothing():
    params = _params()
    s = DensifyStrategy(DensifyConfig(enabled=False), EXTENT)
    info = s.step_post_backward(params, {}, 600, _out([[1.0, 1.0]] * 4, [5] * 4), 100, 100)
    assert info == {"cloned": 0, "split": 0, "pruned": 0, "reset": 0} and params["means"].shape[0] == 4
    s = DensifyStrategy(DensifyConfig(stop=500), EXTENT)
    s.step_post_backward(params, {}, 600, _out([[1.0, 1.0]] * 4, [5] * 4), 100, 100)
    assert params["means"].shape[0] == 4


def test_row_helpers_keep_order():
    params = {"a": nn.Parameter(torch.arange(5.0)), "b": nn.Parameter(torch.arange(10.0).reshape(5, 2))}
    remove_rows(params, {}, torch.tensor([False, True, False, True, False]))
    assert params["a"].tolist() == [0.0, 2.0, 4.0]
    append_rows(params, {}, {"a": torch.tensor([9.0]), "b": torch.tensor([[7.0, 8.0]])})
    assert params["a"].tolist() == [0.0, 2.0, 4.0, 9.0] and params["b"][-1].tolist() == [7.0, 8.0]
