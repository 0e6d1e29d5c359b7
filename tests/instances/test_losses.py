import math

import pytest
import torch

from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.instances.losses import (
    instance_loss,
    inter_mask_loss,
    intra_mask_loss,
    mask_means,
    pseudo_feature_loss,
    rank_weights,
    to_render_space,
)


def _row(*vals):
    """[H=1, W] bool mask from 0/1 values."""
    return torch.tensor([[bool(v) for v in vals]])


# Feature map with C=2, H=1, W=4: pixel p has feature (ch0[p], ch1[p]).
FEAT = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[0.0, 0.0, 4.0, 8.0]]])  # [2, 1, 4]


def test_to_render_space_normalises_then_maps_to_unit_interval(device):
    f = torch.tensor([[3.0, 4.0, 0, 0, 0, 0], [0, 0, 0, 0, 0, -2.0]], device=device)
    out = to_render_space(f)
    torch.testing.assert_close(out[0].cpu(), torch.tensor([0.8, 0.9, 0.5, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(out[1].cpu(), torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.0]))


def test_mask_means_uses_only_silhouette_pixels():
    masks = torch.stack([_row(1, 1, 0, 0), _row(0, 1, 1, 1), _row(0, 0, 0, 1)])  # [3, 1, 4]
    sil = _row(1, 1, 1, 0)[0:1].reshape(1, 4)
    means = mask_means(FEAT, masks, sil)
    # mask0: pixels 0,1 -> (1.5, 0); mask1: pixels 1,2 (3 is outside S) -> (2.5, 2); mask2: none -> 0
    torch.testing.assert_close(means, torch.tensor([[1.5, 0.0], [2.5, 2.0], [0.0, 0.0]]))
    # without a silhouette every mask pixel counts
    torch.testing.assert_close(mask_means(FEAT, masks)[1], torch.tensor([3.0, 4.0]))


def test_intra_mask_loss_code_and_paper_forms_by_hand():
    masks = torch.stack([_row(1, 1, 0, 0), _row(0, 0, 1, 1)])
    means = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    # mask0: distances 0 and 1 -> 0.5; mask1: 0 and sqrt(17) -> sqrt(17)/2
    code = intra_mask_loss(FEAT, masks, means, "code")
    assert code.item() == pytest.approx((0.5 + math.sqrt(17) / 2) / 2, rel=1e-6)
    # paper (squared, same normalisation): mask0 (0+1)/2, mask1 (0+17)/2
    paper = intra_mask_loss(FEAT, masks, means, "paper")
    assert paper.item() == pytest.approx((0.5 + 8.5) / 2, rel=1e-6)
    # an empty mask counts as one more mask with loss 0 (divide by max(1, |B|))
    masks3 = torch.cat([masks, _row(0, 0, 0, 0)[None]])
    means3 = torch.cat([means, torch.zeros(1, 2)])
    assert intra_mask_loss(FEAT, masks3, means3, "code").item() == pytest.approx(
        (0.5 + math.sqrt(17) / 2) / 3, rel=1e-6
    )


def test_intra_mask_loss_gradients_finite_when_pixel_equals_mean():
    feat = FEAT.clone().requires_grad_(True)
    masks = torch.stack([_row(1, 1, 0, 0), _row(0, 0, 1, 1)])
    loss = intra_mask_loss(feat, masks, mask_means(feat, masks), "code")
    loss.backward()
    assert torch.isfinite(feat.grad).all()
    # no masks: exactly zero, still differentiable
    feat.grad = None
    zero = intra_mask_loss(feat, torch.zeros(0, 1, 4, dtype=torch.bool), torch.zeros(0, 2))
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(feat.grad, torch.zeros_like(feat))


MEANS3 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # squared distances 1, 4, 5


def test_inter_mask_loss_paper_form_by_hand():
    val = inter_mask_loss(MEANS3, "paper", eps=0.0)
    assert val.item() == pytest.approx(2 * (1 + 1 / 4 + 1 / 5) / 6, rel=1e-6)


def test_rank_weights_by_hand_and_late_switch():
    d = 1.0 / (torch.tensor([[0.0, 1, 4], [1, 0, 5], [4, 5, 0]]) + 1.0)
    d.fill_diagonal_(0.0)  # rows: [0,.5,.2], [.5,0,1/6], [.2,1/6,0]
    expect = torch.tensor([[0.1, 1.0, 0.55], [1.0, 0.1, 0.55], [1.0, 0.55, 0.1]])
    torch.testing.assert_close(rank_weights(d), expect)
    torch.testing.assert_close(
        rank_weights(d, hard=True), torch.where(expect < 0.9, torch.tensor(0.1), expect)
    )
    # m = 11: ranks 0..10 map to 0.1 + 0.09 r; hard keeps 0.91 and 1.0 only
    w = rank_weights(torch.arange(11.0).repeat(11, 1), hard=True)[0]
    torch.testing.assert_close(w, torch.tensor([0.1] * 9 + [0.91, 1.0]))


def test_inter_mask_loss_code_form_by_hand_before_and_after_switch():
    # d = 1/(d2+1): d01 = 1/2, d02 = 1/5, d12 = 1/6; weights as in the rank test
    soft = (1.0 * 0.5 + 0.55 * 0.2) + (1.0 * 0.5 + 0.55 / 6) + (1.0 * 0.2 + 0.55 / 6)
    hard = (0.5 + 0.1 * 0.2) + (0.5 + 0.1 / 6) + (0.2 + 0.1 / 6)
    assert inter_mask_loss(MEANS3, "code", iteration=35_000).item() == pytest.approx(
        soft / 6, rel=1e-6
    )
    assert inter_mask_loss(MEANS3, "code", iteration=35_001).item() == pytest.approx(
        hard / 6, rel=1e-6
    )
    assert inter_mask_loss(
        MEANS3, "code", iteration=11, hard_switch_iter=10
    ).item() == pytest.approx(hard / 6, rel=1e-6)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_inter_mask_loss_fewer_than_two_masks_is_zero_without_nan(form):
    for m in (0, 1):
        means = torch.rand(m, 6, requires_grad=True)
        loss = inter_mask_loss(means, form)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(means.grad).all()
    # identical means in the paper form stay finite thanks to eps
    assert torch.isfinite(inter_mask_loss(torch.zeros(2, 6), "paper"))


def test_instance_loss_is_separation_plus_lambda_cohesion():
    masks = torch.stack([_row(1, 1, 0, 0), _row(0, 0, 1, 1)])
    sil = torch.ones(1, 4, dtype=torch.bool)
    out = instance_loss(FEAT, masks, sil, iteration=40_000, lambda_s=0.1)
    means = mask_means(FEAT, masks, sil)
    torch.testing.assert_close(out.means, means)
    torch.testing.assert_close(out.cohesion, intra_mask_loss(FEAT, masks, means, "code"))
    torch.testing.assert_close(out.separation, inter_mask_loss(means, "code", 40_000))
    torch.testing.assert_close(out.total, out.separation + 0.1 * out.cohesion)


def test_pseudo_feature_loss_l1_and_mse_by_hand():
    rendered = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]])  # [2, 1, 3]
    pseudo = torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]])
    sil = torch.tensor([[True, False, True]])
    # selected differences: ch0 1, 3; ch1 -1, -1
    assert pseudo_feature_loss(rendered, pseudo, sil, "l1").item() == pytest.approx(
        (1 + 3 + 1 + 1) / 4
    )
    assert pseudo_feature_loss(rendered, pseudo, sil, "mse").item() == pytest.approx(
        (1 + 9 + 1 + 1) / 4
    )
    assert pseudo_feature_loss(rendered, pseudo, torch.zeros_like(sil), "l1").item() == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DataError):
        mask_means(FEAT, torch.zeros(2, 3, 3, dtype=torch.bool))
    with pytest.raises(ConfigError):
        inter_mask_loss(MEANS3, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        pseudo_feature_loss(FEAT, FEAT, torch.ones(1, 4, dtype=torch.bool), "l2")  # type: ignore[arg-type]


def test_instance_loss_backward_is_bitwise_repeatable_on_two_threads():
    """Gathers whose backward scatter-adds many pixels into one mask mean must not add in
    thread order (advanced indexing did, on the CPU)."""
    g = torch.Generator().manual_seed(0)
    h, w, m = 120, 160, 30
    feat = torch.rand(6, h, w, generator=g)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    corners = torch.randint(0, 100, (m, 2), generator=g)
    sizes = torch.randint(10, 60, (m, 2), generator=g)
    masks = torch.stack([
        (ys >= y) & (ys < y + dy) & (xs >= x) & (xs < x + dx)
        for (y, x), (dy, dx) in zip(corners.tolist(), sizes.tolist())
    ])  # [m, H, W] overlapping boxes
    sil = torch.rand(h, w, generator=g) > 0.2  # [H, W]
    threads = torch.get_num_threads()
    grads = set()
    try:
        torch.set_num_threads(2)
        for _ in range(12):
            f = feat.clone().requires_grad_(True)
            instance_loss(f, masks, sil, 10, 0.1).total.backward()
            grads.add(f.grad.numpy().tobytes())
    finally:
        torch.set_num_threads(threads)
    assert len(grads) == 1
