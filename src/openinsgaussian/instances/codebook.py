"""Two-level instance codebook (METHOD §4.2): coarse k-means on ``[f, w·xyz]``, fine k-means on
``f`` inside each coarse cluster, and straight-through quantisation.

The state is a handful of tensors held by :class:`TwoLevelCodebook`; every method is plain torch
(no rendering, no I/O), so a training loop calls it once per iteration and saves
:meth:`TwoLevelCodebook.state_dict` in its checkpoint.

Centre updates. The paper describes a per-step centre update. The public code calls an
``update_centers`` on the other iterations that computes the new means but never stores them, so
its centres only move at the re-assignment steps (coarse every 200 iterations, fine every 50).
``CodebookConfig.update_centers_each_step = False`` (default) reproduces the code;
``True`` gives the paper's behaviour (means of the current members, ids unchanged, every step).

Empty clusters. The public ``Quantize_kMeans`` divides every cluster sum by ``count + 1e-6``, so a
cluster that receives no point collapses to the zero vector and is never re-seeded; at the fine
level the initial leaf centres are distinct Gaussians of the *whole scene*, so many of a root's
slots start far from its Gaussians and die at once, and the unused slots ``k2_r .. k2-1`` of the
active root are zeroed too. ``CodebookConfig.empty_clusters = "zero"`` (default) reproduces that;
``"reseed"`` moves an empty cluster onto the farthest point instead, which keeps about twice as
many live leaves (METHOD §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .kmeans import CODE_CHUNK_ROWS, kmeans, update_centers


@dataclass
class CodebookConfig:
    """Two-level codebook settings (defaults: ScanNet; LeRF uses k2=10, pos_weight=0.5)."""

    k1: int = 64
    """Coarse clusters (LeRF teatime: 32)."""
    k2: int = 5
    """Maximum fine clusters per coarse cluster (ScanNet 5, LeRF 10)."""
    pos_weight: float = 1.0
    """Weight w of xyz in the 9-d coarse clustering vector [f, w*xyz] (LeRF 0.5, teatime 0.1)."""
    kmeans_iters: int = 5
    """Lloyd iterations per re-assignment."""
    coarse_every: int = 200
    """Coarse re-assignment cadence: when iteration % coarse_every == 1 (and at the stage start)."""
    fine_every: int = 50
    """Fine re-assignment cadence: when iteration % fine_every == 1 (and at the stage start)."""
    root_every: int = 300
    """The active coarse cluster of the fine stage advances every root_every iterations."""
    update_centers_each_step: bool = False
    """True: the paper's per-step centre update; False: the public code (centres move only when
    re-assigning)."""
    empty_clusters: Literal["zero", "reseed"] = "zero"
    """Empty k-means clusters (both levels): "zero" = the public code (the centre becomes the zero
    vector and stays, unused fine slots of the active root are zeroed); "reseed" = move it onto
    the farthest point."""
    seed: int = 0
    """Seeds the random choice of initial centres."""

    def __post_init__(self) -> None:
        if self.empty_clusters not in ("zero", "reseed"):
            raise ConfigError(
                f"codebook empty_clusters must be 'zero' or 'reseed', got {self.empty_clusters!r}"
            )
        for name in ("k1", "k2", "kmeans_iters", "coarse_every", "fine_every", "root_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"codebook {name} must be >= 1, got {getattr(self, name)}")

    @property
    def num_leaves(self) -> int:
        """k1*k2 leaf slots; the id k1*k2 is the "never assigned" sentinel."""
        return self.k1 * self.k2


def coarse_features(f: Tensor, xyz: Tensor, pos_weight: float) -> Tensor:
    """9-d coarse clustering vector ``[f, w·xyz]`` (both detached): ``[N, 6], [N, 3] -> [N, 9]``."""
    if f.dim() != 2 or xyz.shape != (f.shape[0], 3):
        raise DataError(
            None,
            f"coarse_features needs f [N,6] and xyz [N,3], got {tuple(f.shape)} and {tuple(xyz.shape)}",
        )
    return torch.cat([f.detach(), pos_weight * xyz.detach().to(f.dtype)], dim=1)


def should_reassign(iteration: int, start: int, every: int) -> bool:
    """True on the first iteration of a stage (``start + 1``) and whenever ``iteration % every == 1``."""
    return iteration == start + 1 or iteration % every == 1


def active_root(iteration: int, start: int, k1: int, every: int = 300) -> int:
    """Coarse cluster trained at ``iteration`` of the fine stage (which begins at ``start + 1``).

    Root 0 for iterations ``start+1 .. start+every-1``, then it advances by one every ``every``
    iterations and wraps around after ``k1 - 1``.
    """
    return ((iteration - start) // every) % k1


def adaptive_k2(counts: Tensor, k2: int) -> Tensor:
    """Leaves per coarse cluster: ``min(max(1, n_c) + 1, k2)``.

    Args:
        counts: ``[k1]`` n_c, the maximum over views of the objects counted in cluster c (see
            :func:`openinsgaussian.instances.pseudo.count_cluster_objects`; 0 if never visible).
        k2: the configured maximum.

    Returns:
        ``[k1]`` int64, at least ``min(2, k2)``.
    """
    return (counts.to(torch.long).clamp(min=1) + 1).clamp(max=k2)


def quantize_st(f: Tensor, centers: Tensor, ids: Tensor) -> Tensor:
    """Straight-through quantisation: forward value ``centers[ids][:, :6]``, gradient to ``f``.

    ``f [N, 6], centers [K, >=6], ids [N] -> f + stopgrad(c[ids][:, :6] - f)  [N, 6]``.
    """
    c = centers[ids][:, : f.shape[1]].to(f.dtype)  # [N, 6]
    return f + (c - f).detach()


class TwoLevelCodebook:
    """Coarse and fine codebooks of one scene, driven by the stage-2 training loop.

    Typical use::

        cb = TwoLevelCodebook(cfg)
        # stage 2.1, every iteration in (start_root, start_leaf]:
        cb.coarse_step(f, xyz, iteration, start_root); f_q = cb.quantize_coarse(f)
        # at the start of stage 2.2, once:
        cb.init_fine(f, object_counts)
        # stage 2.2, every iteration in (start_leaf, end]:
        root = cb.fine_step(f, iteration, start_leaf); f_q = cb.quantize_fine(f)

    ``f`` is the raw (un-normalised) ``[N, 6]`` instance feature parameter; ``xyz`` ``[N, 3]``.
    """

    def __init__(self, cfg: CodebookConfig | None = None) -> None:
        self.cfg = cfg or CodebookConfig()
        self.coarse_centers: Tensor | None = None  # [k1, 9]
        self.coarse_ids: Tensor | None = None  # [N] in [0, k1)
        self.leaf_centers: Tensor | None = None  # [k1*k2 + 1, 6]
        self.leaf_ids: Tensor | None = None  # [N] in [0, k1*k2]; k1*k2 = never assigned
        self.leaf_k: Tensor | None = None  # [k1] adaptive number of leaves per root
        # [V, k1] bool: coarse cluster c counted as present in training view v by the adaptive-k2
        # pass (the public code's ``bClusterOccur``); None when that pass did not run.
        self.occurrence: Tensor | None = None

    # ---- coarse level ----------------------------------------------------------------------
    def _generator(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.cfg.seed) * 1000003 + offset)

    def coarse_step(self, f: Tensor, xyz: Tensor, iteration: int, start: int) -> Tensor:
        """One coarse-stage iteration; returns the coarse ids ``[N]``.

        Centres are drawn once from k1 random Gaussians (first call) and persist. On re-assign
        iterations (:func:`should_reassign` with ``coarse_every``) run ``kmeans_iters`` Lloyd
        rounds from them; otherwise keep the ids (and, with ``update_centers_each_step``,
        refresh the centres as the means of the current members).
        """
        cfg = self.cfg
        x = coarse_features(f, xyz, cfg.pos_weight)  # [N, 9]
        if self.coarse_centers is None:
            n = x.shape[0]
            g = self._generator(1)
            pick = torch.randperm(n, generator=g)[: min(cfg.k1, n)]
            if cfg.k1 > n:
                pick = torch.cat([pick, torch.randint(n, (cfg.k1 - n,), generator=g)])
            self.coarse_centers = x[pick.to(x.device)].clone()
        if self.coarse_ids is not None and self.coarse_ids.shape[0] != x.shape[0]:
            raise DataError(
                None,
                f"codebook holds ids for {self.coarse_ids.shape[0]} Gaussians, got {x.shape[0]}",
            )
        if self.coarse_ids is None or should_reassign(iteration, start, cfg.coarse_every):
            res = kmeans(
                x,
                cfg.k1,
                iters=cfg.kmeans_iters,
                init_centers=self.coarse_centers,
                empty=cfg.empty_clusters,
                code_chunk_rows=CODE_CHUNK_ROWS,
            )
            self.coarse_centers, self.coarse_ids = res.centers, res.labels
        elif cfg.update_centers_each_step:
            self.coarse_centers, _ = update_centers(x, self.coarse_ids, self.coarse_centers)
        return self.coarse_ids

    def quantize_coarse(self, f: Tensor) -> Tensor:
        """``[N, 6]`` straight-through coarse-quantised features (first 6 dims of the centres)."""
        if self.coarse_centers is None or self.coarse_ids is None:
            raise ConfigError("coarse codebook is empty: call coarse_step first")
        return quantize_st(f, self.coarse_centers, self.coarse_ids)

    # ---- fine level ------------------------------------------------------------------------
    def init_fine(
        self,
        f: Tensor,
        object_counts: Tensor | None = None,
        occurrence: Tensor | None = None,
    ) -> Tensor:
        """Start the fine stage: adaptive k2 per root, leaf centres from distinct random Gaussians
        of the whole scene (as the code's ``randperm``), every leaf id set to the sentinel k1*k2.
        Returns the ``[k1]`` leaves per root.

        Args:
            f: ``[N, 6]`` raw features.
            object_counts: ``[k1]`` n_c from the pseudo-label pass, or None for a fixed k2.
            occurrence: ``[V, k1]`` bool presence of each coarse cluster per training view (the
                adaptive-k2 pass), kept for the occurrence gates of the fine stage and stage 3.
        """
        cfg = self.cfg
        if self.coarse_ids is None:
            raise ConfigError(
                "fine codebook needs the coarse ids: run the coarse stage (or load its state) first"
            )
        if object_counts is None:
            self.leaf_k = torch.full((cfg.k1,), cfg.k2, dtype=torch.long)
        else:
            if object_counts.shape != (cfg.k1,):
                raise DataError(
                    None, f"object_counts must be [{cfg.k1}], got {tuple(object_counts.shape)}"
                )
            self.leaf_k = adaptive_k2(object_counts.cpu(), cfg.k2)
        if occurrence is not None:
            if occurrence.dim() != 2 or occurrence.shape[1] != cfg.k1:
                raise DataError(
                    None, f"occurrence must be [V, {cfg.k1}], got {tuple(occurrence.shape)}"
                )
            self.occurrence = occurrence.to(torch.bool).cpu()
        n = f.shape[0]
        g = self._generator(2)
        pick = torch.randperm(n, generator=g)[: cfg.num_leaves + 1]
        if pick.numel() < cfg.num_leaves + 1:  # fewer Gaussians than slots: repeat some
            extra = torch.randint(n, (cfg.num_leaves + 1 - pick.numel(),), generator=g)
            pick = torch.cat([pick, extra])
        self.leaf_centers = f.detach()[pick.to(f.device)].clone()  # [k1*k2+1, 6]
        self.leaf_ids = torch.full((n,), cfg.num_leaves, dtype=torch.long, device=f.device)
        return self.leaf_k

    def fine_step(self, f: Tensor, iteration: int, start: int) -> int:
        """One fine-stage iteration; returns the active root r.

        On re-assign iterations run k-means with ``leaf_k[r]`` clusters on the raw features of
        the Gaussians of root r, warm-started from slots ``r*k2 .. r*k2 + leaf_k[r] - 1``, and
        write ids ``r*k2 + j``. Other roots keep their ids. A root without Gaussians is skipped.
        """
        cfg = self.cfg
        if (
            self.leaf_centers is None
            or self.leaf_ids is None
            or self.leaf_k is None
            or self.coarse_ids is None
        ):
            raise ConfigError("fine codebook is not initialised: call init_fine first")
        r = active_root(iteration, start, cfg.k1, cfg.root_every)
        members = (self.coarse_ids == r).nonzero().flatten()  # [n_r]
        k = int(self.leaf_k[r])
        lo = r * cfg.k2
        reassign = should_reassign(iteration, start, cfg.fine_every)
        zero = cfg.empty_clusters == "zero"
        if members.numel() == 0:
            if reassign and zero:  # the code's k-means on no point: every slot of r becomes 0
                self.leaf_centers[lo : lo + cfg.k2] = 0.0
            return r
        x = f.detach()[members]  # [n_r, 6]
        if reassign:
            res = kmeans(
                x,
                k,
                iters=cfg.kmeans_iters,
                init_centers=self.leaf_centers[lo : lo + k],
                empty=cfg.empty_clusters,
                code_chunk_rows=None,  # the fine level runs on all members at once
            )
            self.leaf_centers[lo : lo + k] = res.centers.to(self.leaf_centers.dtype)
            if zero:  # the code averages all k2 slots; the unused ones get 0 / (0 + 1e-6) = 0
                self.leaf_centers[lo + k : lo + cfg.k2] = 0.0
            self.leaf_ids[members] = lo + res.labels
        elif cfg.update_centers_each_step:
            local = self.leaf_ids[members] - lo  # [n_r]
            assigned = (local >= 0) & (local < k)
            if bool(assigned.any()):
                new, _ = update_centers(
                    x[assigned], local[assigned], self.leaf_centers[lo : lo + k]
                )
                self.leaf_centers[lo : lo + k] = new
        return r

    def quantize_fine(self, f: Tensor) -> Tensor:
        """``[N, 6]`` straight-through leaf-quantised features (the sentinel uses the last row)."""
        if self.leaf_centers is None or self.leaf_ids is None:
            raise ConfigError("fine codebook is not initialised: call init_fine first")
        return quantize_st(f, self.leaf_centers, self.leaf_ids)

    # ---- persistence (tensors only; the caller writes them) ---------------------------------
    def state_dict(self) -> dict[str, Tensor | None]:
        """Tensors to checkpoint (None for a level not reached yet)."""
        return {
            "coarse_centers": self.coarse_centers,
            "coarse_ids": self.coarse_ids,
            "leaf_centers": self.leaf_centers,
            "leaf_ids": self.leaf_ids,
            "leaf_k": self.leaf_k,
            "occurrence": self.occurrence,
        }

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        """Restore :meth:`state_dict` output; checks the shapes against the config."""
        cfg = self.cfg
        expect = {
            "coarse_centers": (cfg.k1, None),
            "leaf_centers": (cfg.num_leaves + 1, 6),
            "leaf_k": (cfg.k1,),
        }
        for key, shape in expect.items():
            t = state.get(key)
            if t is not None and (
                t.shape[0] != shape[0]
                or (len(shape) > 1 and shape[1] is not None and t.shape[1] != shape[1])
            ):
                raise DataError(
                    None,
                    f"codebook state {key} has shape {tuple(t.shape)}, config expects {shape}",
                    "the checkpoint was made with different k1/k2",
                )
        self.coarse_centers = state.get("coarse_centers")
        self.coarse_ids = state.get("coarse_ids")
        self.leaf_centers = state.get("leaf_centers")
        self.leaf_ids = state.get("leaf_ids")
        self.leaf_k = state.get("leaf_k")
        occ = state.get("occurrence")
        if occ is not None and (occ.dim() != 2 or occ.shape[1] != cfg.k1):
            raise DataError(None, f"codebook state occurrence has shape {tuple(occ.shape)}")
        self.occurrence = None if occ is None else occ.to(torch.bool).cpu()
