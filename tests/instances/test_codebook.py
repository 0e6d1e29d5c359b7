import pytest
import torch

from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.instances.codebook import (
    CodebookConfig,
    TwoLevelCodebook,
    active_root,
    adaptive_k2,
    coarse_features,
    quantize_st,
    should_reassign,
)


def test_quantize_st_forward_is_centre_and_gradient_passes_to_f(device):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(5, 6, generator=g).to(device).requires_grad_(True)
    centers = torch.randn(3, 9, generator=g).to(device)
    ids = torch.tensor([2, 0, 0, 1, 2], device=device)
    q = quantize_st(f, centers, ids)
    torch.testing.assert_close(q.detach(), centers[ids][:, :6])
    upstream = torch.randn(5, 6, generator=g).to(device)
    q.backward(upstream)
    assert torch.equal(f.grad, upstream)


def test_adaptive_k2_rule():
    counts = torch.tensor([0, 1, 2, 3, 7])
    assert adaptive_k2(counts, 5).tolist() == [2, 2, 3, 4, 5]  # min(max(1, n) + 1, k2)
    assert adaptive_k2(counts, 10).tolist() == [2, 2, 3, 4, 8]
    assert adaptive_k2(counts, 1).tolist() == [1, 1, 1, 1, 1]


def test_reassign_cadence_and_active_root():
    assert should_reassign(50_001, 50_000, 200)  # stage start
    assert not should_reassign(50_002, 50_000, 200)
    assert should_reassign(50_201, 50_000, 200) and not should_reassign(50_200, 50_000, 200)
    assert should_reassign(40_001, 40_000, 200) and not should_reassign(40_002, 40_000, 200)
    assert [
        active_root(i, 70_000, 4, 300) for i in (70_001, 70_299, 70_300, 70_899, 70_900, 71_200)
    ] == [0, 0, 1, 2, 3, 0]


def test_coarse_features_concatenates_weighted_xyz():
    f, xyz = torch.ones(2, 6, requires_grad=True), torch.tensor([[1.0, 2, 3], [4, 5, 6]])
    x = coarse_features(f, xyz, 0.5)
    assert x.shape == (2, 9) and not x.requires_grad
    torch.testing.assert_close(x[:, 6:], 0.5 * xyz)


def _scene(n_per=20, seed=0):
    """Four instances: two far-apart positions x two distinct feature values."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]])
    pos = torch.tensor([[0.0, 0, 0], [10.0, 0, 0]])
    f, xyz = [], []
    for p in range(2):
        for q in range(2):
            f.append(feats[q] + 0.01 * torch.randn(n_per, 6, generator=g))
            xyz.append(pos[p] + 0.1 * torch.randn(n_per, 3, generator=g))
    return torch.cat(f), torch.cat(xyz)


def test_two_level_codebook_flow():
    f, xyz = _scene()
    cfg = CodebookConfig(
        k1=2, k2=3, pos_weight=1.0, coarse_every=200, fine_every=50, root_every=300, seed=0
    )
    cb = TwoLevelCodebook(cfg)
    ids = cb.coarse_step(f, xyz, 50_001, 50_000)
    # coarse clusters follow position (10 units apart) rather than the small feature difference
    assert ids[:40].unique().numel() == 1 and ids[40:].unique().numel() == 1 and ids[0] != ids[40]
    q = cb.quantize_coarse(f)
    torch.testing.assert_close(q, cb.coarse_centers[ids][:, :6])

    # code behaviour: on non-reassign steps the centres do not move even if f changes
    before = cb.coarse_centers.clone()
    cb.coarse_step(f + 1.0, xyz, 50_002, 50_000)
    assert torch.equal(cb.coarse_centers, before)

    leaf_k = cb.init_fine(f, torch.tensor([2, 0]))
    assert leaf_k.tolist() == [3, 2]
    assert cb.leaf_centers.shape == (7, 6) and (cb.leaf_ids == 6).all()
    r = cb.fine_step(f, 70_001, 70_000)
    assert r == 0
    members = cb.coarse_ids == 0
    assert ((cb.leaf_ids[members] >= 0) & (cb.leaf_ids[members] < 3)).all()
    assert (cb.leaf_ids[~members] == 6).all()  # other root not assigned yet: sentinel
    # 3 leaves for 2 feature groups: no leaf mixes the groups
    grp = cb.leaf_ids[members]
    assert not set(grp[:20].tolist()) & set(grp[20:].tolist())
    q = cb.quantize_fine(f)
    torch.testing.assert_close(q, cb.leaf_centers[cb.leaf_ids])

    r = cb.fine_step(f, 70_301, 70_000)
    assert r == 1 and ((cb.leaf_ids[~members] >= 3) & (cb.leaf_ids[~members] < 5)).all()

    state = cb.state_dict()
    cb2 = TwoLevelCodebook(cfg)
    cb2.load_state_dict(state)
    torch.testing.assert_close(cb2.quantize_fine(f), cb.quantize_fine(f))
    with pytest.raises(DataError):
        TwoLevelCodebook(CodebookConfig(k1=3, k2=3)).load_state_dict(state)


def test_update_centers_each_step_follows_paper():
    f, xyz = _scene()
    cb = TwoLevelCodebook(CodebookConfig(k1=2, k2=2, update_centers_each_step=True))
    ids = cb.coarse_step(f, xyz, 50_001, 50_000)
    cb.coarse_step(f + 1.0, xyz, 50_002, 50_000)
    x = coarse_features(f + 1.0, xyz, 1.0)
    expect = torch.stack([x[ids == c].mean(0) for c in range(2)])
    torch.testing.assert_close(cb.coarse_centers, expect)
    assert torch.equal(cb.coarse_ids, ids)


def test_codebook_misuse_errors():
    with pytest.raises(ConfigError):
        CodebookConfig(k1=0)
    cb = TwoLevelCodebook(CodebookConfig(k1=2, k2=2))
    with pytest.raises(ConfigError):
        cb.quantize_coarse(torch.zeros(3, 6))
    with pytest.raises(ConfigError):
        cb.init_fine(torch.zeros(3, 6))


def _blobs(n_blobs=30, per=40, seed=0):
    """Gaussians in well separated feature blobs spread over the scene (positions on a line)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_blobs, 6, generator=g) * 4.0
    f = centres.repeat_interleave(per, 0) + 0.02 * torch.randn(n_blobs * per, 6, generator=g)
    xyz = torch.arange(n_blobs).repeat_interleave(per).float()[:, None] * torch.tensor([1.0, 0, 0])
    return f, xyz


def _fine_leaves(empty: str, seed: int = 0) -> tuple[TwoLevelCodebook, int]:
    f, xyz = _blobs(seed=seed)
    cfg = CodebookConfig(k1=6, k2=5, pos_weight=1.0, fine_every=50, root_every=100,
                         empty_clusters=empty, seed=seed)  # type: ignore[arg-type]
    cb = TwoLevelCodebook(cfg)
    cb.coarse_step(f, xyz, 1, 0)
    cb.init_fine(f, torch.full((6,), 5))
    for root in range(6):
        cb.fine_step(f, 1 + root * 100, 0)
    return cb, int(torch.unique(cb.leaf_ids[cb.leaf_ids < cfg.num_leaves]).numel())


def test_zero_rule_keeps_fewer_live_leaves_than_reseeding():
    """Leaf centres start at Gaussians of the whole scene, so most of a root's slots lie far from
    its Gaussians; under the code's rule they die (METHOD §4.2: about half the live leaves)."""
    live_zero = [_fine_leaves("zero", s)[1] for s in range(3)]
    live_reseed = [_fine_leaves("reseed", s)[1] for s in range(3)]
    assert all(z < r for z, r in zip(live_zero, live_reseed, strict=True))
    cb, _ = _fine_leaves("zero")
    dead = torch.ones(30, dtype=torch.bool)
    dead[torch.unique(cb.leaf_ids[cb.leaf_ids < 30])] = False
    assert (cb.leaf_centers[:30][dead] == 0).all()  # dead slots sit at the origin


def test_fine_init_draws_distinct_gaussians_and_zeroes_unused_slots():
    f = torch.arange(40, dtype=torch.float32)[:, None].repeat(1, 6)  # Gaussian i has feature i
    xyz = torch.zeros(40, 3)
    cb = TwoLevelCodebook(CodebookConfig(k1=2, k2=5, fine_every=50, root_every=100))
    cb.coarse_step(f, xyz, 1, 0)
    cb.init_fine(f, torch.tensor([1, 1]))  # leaf_k = 2 of 5 slots per root
    rows = cb.leaf_centers[:, 0]
    assert torch.unique(rows).numel() == 11  # k1*k2 + 1 distinct Gaussians (randperm)
    cb.fine_step(f, 1, 0)  # root 0, re-assign: its slots 2..4 are zeroed as in the code
    assert (cb.leaf_centers[2:5] == 0).all() and (cb.leaf_centers[5:] != 0).any()
    reseed = TwoLevelCodebook(CodebookConfig(k1=2, k2=5, empty_clusters="reseed"))
    reseed.coarse_step(f, xyz, 1, 0)
    reseed.init_fine(f, torch.tensor([1, 1]))
    kept = reseed.leaf_centers[2:5].clone()
    reseed.fine_step(f, 1, 0)
    assert torch.equal(reseed.leaf_centers[2:5], kept)  # our rule leaves unused slots alone


def test_occurrence_flags_are_part_of_the_codebook_state():
    f, xyz = _scene()
    cfg = CodebookConfig(k1=2, k2=3)
    cb = TwoLevelCodebook(cfg)
    cb.coarse_step(f, xyz, 1, 0)
    occ = torch.tensor([[True, False], [False, True], [True, True]])
    cb.init_fine(f, torch.tensor([2, 2]), occ)
    back = TwoLevelCodebook(cfg)
    back.load_state_dict(cb.state_dict())
    assert torch.equal(back.occurrence, occ)
    with pytest.raises(DataError, match="occurrence"):
        cb.init_fine(f, torch.tensor([2, 2]), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="empty_clusters"):
        CodebookConfig(empty_clusters="drop")  # type: ignore[arg-type]
