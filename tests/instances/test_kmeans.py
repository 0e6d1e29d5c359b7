import pytest
import torch

from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.instances.kmeans import assign, kmeans, update_centers

BLOB_CENTRES = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def _blobs(n_per: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([c + 0.1 * torch.randn(n_per, 2, generator=g) for c in BLOB_CENTRES])
    truth = torch.arange(3).repeat_interleave(n_per)
    return x, truth


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Labels equal up to a renaming of the clusters."""
    pairs = {(int(i), int(j)) for i, j in zip(a, b)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_separable_blobs(device):
    x, truth = _blobs()
    res = kmeans(x.to(device), 3, iters=5, seed=0)
    assert _same_partition(res.labels.cpu(), truth)
    order = torch.cdist(BLOB_CENTRES, res.centers.cpu()).argmin(1)
    torch.testing.assert_close(res.centers.cpu()[order], BLOB_CENTRES, atol=0.05, rtol=0)
    assert res.counts.tolist() == [50, 50, 50]


def test_kmeans_is_deterministic_per_seed():
    x, _ = _blobs(seed=3)
    for init in ("kmeans++", "random"):
        a = kmeans(x, 4, iters=3, init=init, seed=7)
        b = kmeans(x, 4, iters=3, init=init, seed=7)
        assert torch.equal(a.centers, b.centers) and torch.equal(a.labels, b.labels)
    c = kmeans(x, 4, iters=0, init="random", seed=8)
    d = kmeans(x, 4, iters=0, init="random", seed=7)
    assert not torch.equal(c.centers, d.centers)


def test_labels_are_nearest_centre_assignment():
    x, _ = _blobs(seed=1)
    res = kmeans(x, 5, iters=2, seed=1)
    d = torch.cdist(x, res.centers)
    assert torch.equal(res.labels, d.argmin(1))


def test_empty_cluster_is_reseeded_at_farthest_point():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    init = torch.tensor([[0.5], [100.0], [10.5]])
    res = kmeans(x, 3, iters=1, init_centers=init)
    # round 1: labels [0,0,0,2,2], centre 1 empty; point 2 is farthest from its centre (1.5)
    # -> centre 1 := 2, then means [0.5, 2, 10.5]; final assignment
    torch.testing.assert_close(res.centers, torch.tensor([[0.5], [2.0], [10.5]]))
    assert res.labels.tolist() == [0, 0, 1, 2, 2]
    assert res.counts.tolist() == [2, 1, 2]


def test_more_clusters_than_points_does_not_crash():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    for init in ("kmeans++", "random"):
        res = kmeans(x, 5, iters=3, init=init, seed=0)
        assert res.centers.shape == (5, 2) and res.labels.max() < 5
        assert int(res.counts.sum()) == 3


def test_chunked_assignment_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(103, 9, generator=g), torch.randn(7, 9, generator=g)
    assert torch.equal(assign(x, c, chunk_size=10), assign(x, c))
    assert torch.equal(assign(x, c), torch.cdist(x, c).argmin(1))


def test_update_centers_keeps_empty_centre():
    x = torch.tensor([[0.0], [2.0], [4.0]])
    new, counts = update_centers(x, torch.tensor([0, 0, 2]), torch.tensor([[9.0], [7.0], [5.0]]))
    torch.testing.assert_close(new, torch.tensor([[1.0], [7.0], [4.0]]))
    assert counts.tolist() == [2, 0, 1]


def test_kmeans_rejects_bad_arguments():
    with pytest.raises(ConfigError):
        kmeans(torch.zeros(3, 2), 0)
    with pytest.raises(DataError):
        kmeans(torch.zeros(0, 2), 2)
    with pytest.raises(DataError):
        kmeans(torch.zeros(3, 2), 2, init_centers=torch.zeros(3, 2))


# ---- the public code's empty-cluster rule (METHOD §4.2) ------------------------------------------
from openinsgaussian.instances.kmeans import code_counts  # noqa: E402


def test_code_counts_add_one_guard_per_chunk():
    """labels [0, 0, 1], k = 3, chunks of 2 rows: N // 2 + 1 = 2 chunks ([0, 0] and [1]), each
    adding its counts + 1e-6 to the initial guard 1e-6: [2 + 3e-6, 1 + 3e-6, 3e-6]."""
    labels = torch.tensor([0, 0, 1])
    got = code_counts(labels, 3, torch.full((3,), 1e-6), chunk_rows=2)
    expect = torch.tensor([2 + 3e-6, 1 + 3e-6, 3e-6], dtype=torch.float32)
    torch.testing.assert_close(got, expect, rtol=0, atol=3e-7)  # float32 ulp at 2: 2.4e-7
    assert float(got[2]) == pytest.approx(3e-6, rel=1e-5)  # an empty cluster: guards only
    one = code_counts(labels, 3, torch.full((3,), 1e-6), chunk_rows=None)  # fine level: 1 chunk
    torch.testing.assert_close(one, torch.tensor([2 + 2e-6, 1 + 2e-6, 2e-6]), rtol=0, atol=3e-7)
    assert float(one[2]) == pytest.approx(2e-6, rel=1e-5)


def test_zero_rule_collapses_an_empty_cluster_to_the_origin_where_it_captures_points():
    """x = 0, 1, 10, 11 (1-D), centres 0.5, 10.5, 50: cluster 2 gets no point. The code divides its
    zero sum by the guard -> centre 0, which then owns the point at 0 in the final assignment
    (distance 0 < 0.5); the re-seeding rule instead moves cluster 2 onto the farthest point."""
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    init = torch.tensor([[0.5], [10.5], [50.0]])
    zero = kmeans(x, 3, iters=1, init_centers=init, empty="zero", code_chunk_rows=10_000)
    c = 1.0 / (2 + 2e-6)  # sums over counts + guards (1 chunk, guard 1e-6 + 1e-6)
    torch.testing.assert_close(
        zero.centers, torch.tensor([[c], [21 * c], [0.0]]), rtol=1e-7, atol=0
    )
    assert zero.labels.tolist() == [2, 0, 1, 1]
    # re-seeding moves point 0 (farthest from its centre, lowest index on ties) into cluster 2,
    # and cluster 0 is re-averaged over the point 1 alone
    reseed = kmeans(x, 3, iters=1, init_centers=init, empty="reseed")
    assert reseed.labels.tolist() == [2, 0, 1, 1] and float(reseed.centers[0, 0]) == 1.0
    with pytest.raises(Exception, match="empty-cluster"):
        kmeans(x, 3, iters=1, init_centers=init, empty="drop")  # type: ignore[arg-type]
