"""Batched torch k-means (Lloyd) for the codebooks (METHOD §4.2).

Why our own: the codebook runs a few Lloyd steps on up to ~10^6 points every few hundred
iterations, on whatever device the Gaussians live on, from persistent centres. That is a handful
of tensor ops; scikit-learn would force a device round-trip and cannot warm-start per call.

Determinism: every random choice draws from a CPU ``torch.Generator`` seeded by ``seed``, so the
same seed gives the same centres on every device (bitwise on CPU; on CUDA the float sums of the
centre update may differ in the last bits). Distances are computed in row chunks so that
``N = 500k`` points against ``k = 64`` centres never materialise an ``[N, k]`` matrix at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError, DataError

#: default number of distance entries (rows x centres) computed per chunk.
CHUNK_ELEMENTS = 1 << 22
#: rows per chunk of the public ``Quantize_kMeans`` (coarse level); each chunk adds 1e-6 to every
#: cluster's count, so the count guard of an empty cluster depends on it (METHOD §4.2).
CODE_CHUNK_ROWS = 10_000

EmptyClusters = Literal["zero", "reseed"]


@dataclass
class KMeansResult:
    """Output of :func:`kmeans`. ``labels`` is always the nearest-centre assignment of ``centers``."""

    centers: Tensor  # [k, D]
    labels: Tensor  # [N] int64 in [0, k)
    counts: Tensor  # [k] int64 points per cluster (a cluster can be empty when k > distinct points)


def _chunk_rows(k: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, CHUNK_ELEMENTS // max(1, k))


def assign_with_distance(
    x: Tensor, centers: Tensor, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Nearest centre of every point and its squared distance.

    Args:
        x: ``[N, D]`` points.
        centers: ``[k, D]``.
        chunk_size: rows per chunk (default: ``2^22 / k``).

    Returns:
        ``(labels [N] int64, sq_dist [N])``; ties go to the lowest centre index.
    """
    if x.dim() != 2 or centers.dim() != 2 or x.shape[1] != centers.shape[1]:
        raise DataError(
            None,
            f"k-means needs x [N,D] and centers [k,D], got {tuple(x.shape)} and {tuple(centers.shape)}",
        )
    if centers.shape[0] == 0:
        raise DataError(None, "k-means needs at least one centre")
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    dmin = torch.empty(n, dtype=x.dtype, device=x.device)
    rows = _chunk_rows(centers.shape[0], chunk_size)
    c = centers.to(x.dtype)
    for s in range(0, n, rows):
        d = torch.cdist(x[s : s + rows], c, compute_mode="donot_use_mm_for_euclid_dist")  # [r, k]
        val, idx = d.min(dim=1)
        labels[s : s + rows] = idx
        dmin[s : s + rows] = val.square()
    return labels, dmin


def assign(x: Tensor, centers: Tensor, chunk_size: int | None = None) -> Tensor:
    """``[N]`` int64 index of the nearest centre (Euclidean) of every row of ``x [N, D]``."""
    return assign_with_distance(x, centers, chunk_size)[0]


def update_centers(x: Tensor, labels: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Means of the points of each cluster; an empty cluster keeps its previous centre.

    Args:
        x: ``[N, D]``; labels: ``[N]`` in ``[0, k)``; centers: ``[k, D]`` previous centres.

    Returns:
        ``(centers [k, D], counts [k] int64)``.
    """
    k = centers.shape[0]
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    new = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
    new = torch.where((counts > 0).unsqueeze(1), new, centers.to(x.dtype))
    return new, counts


def _sq_dist_to(x: Tensor, i: int) -> Tensor:
    """``[N]`` squared distance of every row of ``x`` to row ``i`` (one fused kernel)."""
    return torch.cdist(x, x[i : i + 1], compute_mode="donot_use_mm_for_euclid_dist")[:, 0].square()


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (D² sampling): ``[k, D]`` centres picked among the rows of ``x``.

    Random numbers come from the CPU ``generator``; sampling is done by inverse CDF on ``x``'s
    device. When every point already coincides with a centre, the rest are drawn uniformly.
    """
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    idx = [first]
    d2 = _sq_dist_to(x, first).to(torch.float64)  # [N] squared distance to nearest centre
    for _ in range(1, k):
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        total = float(d2.sum())
        if total <= 0.0:
            nxt = min(int(u * n), n - 1)
        else:
            cdf = torch.cumsum(d2, 0)
            # first index whose cumulative weight exceeds u*total: never a zero-weight point
            v = torch.tensor([u * total], dtype=cdf.dtype, device=cdf.device)
            nxt = int(torch.searchsorted(cdf, v, right=True))
            nxt = min(nxt, n - 1)
        idx.append(nxt)
        d2 = torch.minimum(d2, _sq_dist_to(x, nxt).to(torch.float64))
    return x[torch.tensor(idx, device=x.device)].clone()


def _random_init(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator)[: min(k, n)]
    if k > n:  # more clusters than points: repeat points (those clusters will end empty)
        perm = torch.cat([perm, torch.randint(n, (k - n,), generator=generator)])
    return x[perm.to(x.device)].clone()


def _reseed_empty(
    x: Tensor, labels: Tensor, sq_dist: Tensor, centers: Tensor, counts: Tensor
) -> bool:
    """Move each empty cluster (in index order) onto the point farthest from its own centre.

    Only points of clusters with more than one member are eligible, so no cluster is emptied by
    a move. Modifies ``labels``, ``sq_dist``, ``centers`` and ``counts`` in place; returns whether
    anything moved. Deterministic: ties go to the lowest point index.
    """
    empty = (counts == 0).nonzero().flatten().tolist()
    moved = False
    for j in empty:
        eligible = counts[labels] > 1  # [N]
        if not bool(eligible.any()):
            break
        score = torch.where(eligible, sq_dist, torch.full_like(sq_dist, -1.0))
        p = int(torch.argmax(score))
        counts[labels[p]] -= 1
        labels[p] = j
        counts[j] = 1
        centers[j] = x[p]
        sq_dist[p] = 0.0
        moved = True
    return moved


def code_counts(labels: Tensor, k: int, guard: Tensor, chunk_rows: int | None) -> Tensor:
    """Cluster sizes as the public ``Quantize_kMeans`` accumulates them, with its ``1e-6`` guards.

    The code starts from ``guard`` (``1e-6`` at the first Lloyd round) and, for every chunk of
    ``chunk_rows`` points (``N // chunk_rows + 1`` chunks, the last one possibly empty; one chunk
    when ``chunk_rows`` is None, as for the fine level), adds the chunk's per-cluster counts plus
    ``1e-6``, in float32. Returns ``[k]`` float32.
    """
    counts = guard.clone().to(torch.float32)
    n = labels.shape[0]
    if chunk_rows is None:
        return counts + (torch.bincount(labels, minlength=k).to(torch.float32) + 1e-6)
    for c in range(n // chunk_rows + 1):
        part = labels[c * chunk_rows : (c + 1) * chunk_rows]
        counts += torch.bincount(part, minlength=k).to(torch.float32) + 1e-6
    return counts


def kmeans(
    x: Tensor,
    k: int,
    iters: int = 5,
    init: Literal["kmeans++", "random"] = "kmeans++",
    seed: int = 0,
    init_centers: Tensor | None = None,
    chunk_size: int | None = None,
    empty: EmptyClusters = "reseed",
    code_chunk_rows: int | None = CODE_CHUNK_ROWS,
) -> KMeansResult:
    """Lloyd k-means: ``iters`` rounds of (assign, update), then a final assignment.

    This matches the codebook's ``num_iters = 5`` schedule (METHOD §4.2): with ``init_centers``
    (the persistent codebook centres) nothing random happens at all.

    Empty clusters (``empty``):

    * ``"reseed"``: after each update, an empty cluster is re-seeded at the point farthest from
      its assigned centre (see :func:`_reseed_empty`); the next assignment then uses it.
    * ``"zero"`` (the public ``Quantize_kMeans``): every centre is ``sum / (count + guard)``
      (:func:`code_counts`), so a cluster that receives no point becomes the zero vector and is
      never re-seeded; it takes part in later assignments at the origin. The guards of clusters
      with more than 0.1 points are reset after each round and those of empty ones accumulate,
      as in the code. ``code_chunk_rows`` is the code's chunking (10,000 rows at the coarse
      level, None for one chunk as at the fine level).

    Args:
        x: ``[N, D]`` float points (N >= 1).
        k: number of clusters (>= 1).
        iters: Lloyd rounds (0 = only assign to the initial centres).
        init: seeding when ``init_centers`` is None: ``"kmeans++"`` or ``"random"`` (distinct rows).
        seed: seeds the CPU generator used for the initialisation.
        init_centers: ``[k, D]`` warm start.
        chunk_size: rows per distance chunk (memory knob).

    Returns:
        :class:`KMeansResult` with ``centers [k, D]`` (dtype of ``x``), ``labels [N]``, ``counts [k]``.
    """
    if k < 1:
        raise ConfigError(f"k-means needs k >= 1, got {k}")
    if iters < 0:
        raise ConfigError(f"k-means needs iters >= 0, got {iters}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise DataError(None, f"k-means needs a non-empty [N,D] tensor, got shape {tuple(x.shape)}")
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()
    if init_centers is not None:
        if init_centers.shape != (k, x.shape[1]):
            raise DataError(
                None, f"init_centers must be [{k},{x.shape[1]}], got {tuple(init_centers.shape)}"
            )
        centers = init_centers.detach().to(device=x.device, dtype=x.dtype).clone()
    else:
        gen = torch.Generator().manual_seed(int(seed))
        if init == "kmeans++":
            centers = kmeans_plusplus(x, k, gen)
        elif init == "random":
            centers = _random_init(x, k, gen)
        else:
            raise ConfigError(f"k-means init must be 'kmeans++' or 'random', got {init!r}")

    if empty not in ("zero", "reseed"):
        raise ConfigError(f"k-means empty-cluster rule must be 'zero' or 'reseed', got {empty!r}")
    guard = torch.full((k,), 1e-6, dtype=torch.float32, device=x.device)  # [k] code's count guard
    for _ in range(iters):
        labels, sq = assign_with_distance(x, centers, chunk_size)
        if empty == "zero":
            counts_f = code_counts(labels, k, guard, code_chunk_rows)  # [k] float32
            sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(
                0, labels, x
            )
            centers = sums / counts_f.to(x.dtype).unsqueeze(1)  # empty cluster -> 0
            guard = torch.where(counts_f > 0.1, torch.zeros_like(counts_f), counts_f)
            continue
        centers, counts = update_centers(x, labels, centers)
        if bool((counts == 0).any()) and _reseed_empty(x, labels, sq, centers, counts):
            centers, counts = update_centers(x, labels, centers)
    labels, _ = assign_with_distance(x, centers, chunk_size)
    counts = torch.bincount(labels, minlength=k)
    return KMeansResult(centers=centers, labels=labels, counts=counts)
