"""Adaptive density control of 3DGS (clone / split / prune / opacity reset) as one strategy object.

The strategy works on the model's parameter dict and a dict of per-parameter Adam optimisers (one
optimiser per parameter, as gsplat's ``DefaultStrategy``), so every per-Gaussian tensor, including
the 6-d instance feature, is cloned, split and pruned by the same row operation, and the Adam
moments stay row-aligned with their parameters. The same code runs for every render backend.

Gradient statistic. 3DGS thresholds the norm of the gradient of the loss w.r.t. the projected
centre in normalised device coordinates (its rasteriser's backward multiplies the pixel gradient by
``0.5 * W`` and ``0.5 * H``, since ``px = ((ndc + 1) * W - 1) / 2``). Our renderers give the
gradient w.r.t. pixel coordinates (``RenderOutput.means2d.grad``), so we scale x by ``0.5 * W`` and y
by ``0.5 * H`` before taking the norm, exactly as gsplat does; the 3DGS threshold 2e-4 then applies
unchanged. The statistic is averaged over the steps in which the Gaussian was visible (radius > 0).

Screen-size pruning. In the 3DGS code the running maximum screen radius is zeroed by the clone/split
step just before the pruning test reads it, so screen-size pruning never fires there (graphdeco
issue #123). Here the maximum is kept until the densification step has pruned, so the 20 px rule
acts as described in the paper; ``max_screen_size = 0`` reproduces the code's behaviour.

Step numbers are 1-based (step 1 is the first optimisation step), as in 3DGS's ``iteration``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError


@dataclass
class DensifyConfig:
    """Adaptive density control (3DGS defaults, METHOD §9 LeRF row)."""

    enabled: bool = True
    """Clone/split/prune and reset opacities; off for frozen-point scenes (ScanNet)."""
    start: int = 500
    """Densify only after this step (3DGS ``densify_from_iter``)."""
    stop: int = 15_000
    """Stop collecting statistics and densifying at this step (3DGS ``densify_until_iter``)."""
    interval: int = 100
    """Densify every this many steps."""
    grad_threshold: float = 2e-4
    """Mean NDC gradient norm of the 2D centre above which a Gaussian is cloned or split."""
    percent_dense: float = 0.01
    """Gaussians with max scale <= percent_dense * extent are cloned, larger ones split."""
    split_samples: int = 2
    """Number of Gaussians a split one becomes."""
    split_scale_div: float = 1.6
    """Scale divisor of the split children (3DGS: 0.8 * split_samples)."""
    min_opacity: float = 0.005
    """Prune Gaussians whose opacity falls below this."""
    max_screen_size: float = 20.0
    """Prune Gaussians whose screen radius exceeded this many pixels since the last densification
    (after ``screen_size_after``); 0 disables it (what the 3DGS code effectively does)."""
    max_world_size: float = 0.1
    """Prune Gaussians whose largest scale exceeds this fraction of the scene extent (after
    ``screen_size_after``)."""
    screen_size_after: int = 3000
    """Size-based pruning starts after this step (3DGS: the opacity-reset interval)."""
    opacity_reset_every: int = 3000
    """Reset every opacity to at most ``opacity_reset_value`` every this many steps (0: never)."""
    opacity_reset_value: float = 0.01
    """Opacity cap applied by the reset."""
    reset_at_start: bool = False
    """Also reset opacities at step ``start`` (3DGS does this for white-background scenes)."""


def _replace_rows(
    params: dict[str, nn.Parameter],
    optimizers: dict[str, torch.optim.Optimizer],
    param_fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[str, Tensor], Tensor],
) -> None:
    """Swap every parameter for ``param_fn(name, old)`` and every per-row Adam tensor for
    ``state_fn(key, old)``; the optimisers are re-pointed to the new parameter objects."""
    for name in list(params.keys()):
        old = params[name]
        new = nn.Parameter(param_fn(name, old.data), requires_grad=old.requires_grad)
        opt = optimizers.get(name)
        if opt is not None:
            for group in opt.param_groups:
                for i, p in enumerate(group["params"]):
                    if p is not old:
                        continue
                    st = opt.state.pop(p, None)
                    if st is not None:
                        opt.state[new] = {
                            k: state_fn(k, v) if isinstance(v, Tensor) and v.ndim > 0 and v.shape[:1] == old.shape[:1]
                            else v
                            for k, v in st.items()
                        }
                    group["params"][i] = new
        params[name] = new


def remove_rows(params: dict[str, nn.Parameter], optimizers: dict[str, torch.optim.Optimizer], mask: Tensor) -> None:
    """Drop Gaussians where ``mask [N]`` is True (order of the rest kept)."""
    keep = ~mask
    _replace_rows(params, optimizers, lambda _n, p: p[keep], lambda _k, v: v[keep])


def append_rows(params: dict[str, nn.Parameter], optimizers: dict[str, torch.optim.Optimizer],
                new: dict[str, Tensor]) -> None:
    """Append Gaussians ``new[name] [M,...]`` at the end; their Adam moments start at zero."""
    m = next(iter(new.values())).shape[0]

    def pfn(name: str, p: Tensor) -> Tensor:
        return torch.cat([p, new[name].to(p.dtype)], dim=0)

    def sfn(_k: str, v: Tensor) -> Tensor:
        return torch.cat([v, torch.zeros((m, *v.shape[1:]), dtype=v.dtype, device=v.device)], dim=0)

    _replace_rows(params, optimizers, pfn, sfn)


def reset_opacities(params: dict[str, nn.Parameter], optimizers: dict[str, torch.optim.Optimizer],
                    value: float) -> None:
    """Cap every opacity at ``value`` and zero the opacity's Adam moments (3DGS ``reset_opacity``)."""
    cap = float(torch.logit(torch.tensor(value, dtype=torch.float64)))
    sub = {"opacities": params["opacities"]}
    _replace_rows(sub, optimizers, lambda _n, p: p.clamp_max(cap), lambda _k, v: torch.zeros_like(v))
    params["opacities"] = sub["opacities"]


class DensifyStrategy:
    """Accumulates screen-space statistics and clones / splits / prunes on schedule.

    Usage per step (``out`` is the ``RenderOutput`` of the step's view)::

        strategy.step_pre_backward(out)          # keep out.means2d.grad
        loss.backward(); optimizer steps
        strategy.step_post_backward(params, optimizers, step, out, width, height)
    """

    def __init__(self, cfg: DensifyConfig, scene_extent: float, generator: torch.Generator | None = None) -> None:
        if cfg.split_samples < 1 or cfg.split_scale_div <= 0:
            raise ConfigError("densify.split_samples must be >= 1 and densify.split_scale_div > 0")
        if cfg.interval <= 0:
            raise ConfigError(f"densify.interval must be positive, got {cfg.interval}")
        if not 0.0 < cfg.opacity_reset_value < 1.0:
            raise ConfigError(f"densify.opacity_reset_value must lie in (0,1), got {cfg.opacity_reset_value}")
        self.cfg = cfg
        self.extent = float(scene_extent)
        self.generator = generator
        self.grad2d: Tensor | None = None  # [N] summed NDC gradient norms
        self.count: Tensor | None = None  # [N] number of steps visible
        self.max_radii: Tensor | None = None  # [N] max screen radius (px) since the last densification

    # ---- statistics ---------------------------------------------------------------------------
    def step_pre_backward(self, out: Any) -> None:
        """Ask autograd to keep the gradient of the (non-leaf) projected centres."""
        if self.cfg.enabled and out.means2d.requires_grad:
            out.means2d.retain_grad()

    def _ensure_state(self, n: int, device: torch.device) -> None:
        if self.grad2d is None or self.grad2d.shape[0] != n:
            self.grad2d = torch.zeros(n, device=device)
            self.count = torch.zeros(n, device=device)
            self.max_radii = torch.zeros(n, device=device)

    @torch.no_grad()
    def update_state(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
        """Add one view's statistics: ``means2d_grad [N,2]`` (pixel units), ``radii [N]``."""
        n = radii.shape[0]
        self._ensure_state(n, radii.device)
        assert self.grad2d is not None and self.count is not None and self.max_radii is not None
        vis = radii > 0  # [N]
        g = means2d_grad[vis].to(torch.float32)  # [M,2]
        g = g * torch.tensor([0.5 * width, 0.5 * height], device=g.device)
        self.grad2d[vis] += g.norm(dim=-1)
        self.count[vis] += 1.0
        self.max_radii[vis] = torch.maximum(self.max_radii[vis], radii[vis].to(torch.float32))

    def reset_state(self, n: int, device: torch.device) -> None:
        self.grad2d = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        self.max_radii = torch.zeros(n, device=device)

    # ---- the schedule -------------------------------------------------------------------------
    def step_post_backward(
        self,
        params: dict[str, nn.Parameter],
        optimizers: dict[str, torch.optim.Optimizer],
        step: int,
        out: Any,
        width: int,
        height: int,
    ) -> dict[str, int]:
        """Update statistics with this step's view, then densify / reset if the schedule says so.

        Returns counts ``{"cloned", "split", "pruned", "reset"}`` (zeros when nothing happened).
        """
        cfg = self.cfg
        info = {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
        if not cfg.enabled or step >= cfg.stop:
            return info
        grad = out.means2d.grad
        if grad is not None:
            self.update_state(grad.detach(), out.radii.detach(), width, height)
        if step > cfg.start and step % cfg.interval == 0:
            info.update(self.densify(params, optimizers, step))
        if (cfg.opacity_reset_every > 0 and step % cfg.opacity_reset_every == 0) or (
            cfg.reset_at_start and step == cfg.start
        ):
            reset_opacities(params, optimizers, cfg.opacity_reset_value)
            info["reset"] = 1
        return info

    @torch.no_grad()
    def densify(self, params: dict[str, nn.Parameter], optimizers: dict[str, torch.optim.Optimizer],
                step: int) -> dict[str, int]:
        """One clone + split + prune pass from the accumulated statistics (then zero them)."""
        cfg = self.cfg
        n = params["means"].shape[0]
        device = params["means"].device
        self._ensure_state(n, device)
        assert self.grad2d is not None and self.count is not None and self.max_radii is not None
        grads = self.grad2d / self.count.clamp_min(1.0)  # [N]
        max_scale = torch.exp(params["scales"]).max(dim=-1).values  # [N]
        high = grads >= cfg.grad_threshold
        small = max_scale <= cfg.percent_dense * self.extent
        is_clone = high & small
        is_split = high & ~small
        n_clone, n_split = int(is_clone.sum()), int(is_split.sum())

        radii = self.max_radii  # [N] follows the rows through clone / split below
        # Clone: exact copies appended at the end (3DGS densify_and_clone).
        if n_clone:
            append_rows(params, optimizers, {k: p.data[is_clone] for k, p in params.items()})
            radii = torch.cat([radii, radii.new_zeros(n_clone)])
        # Split: k children sampled from the parent's Gaussian, scales / 1.6, parents removed.
        if n_split:
            n_children = n_split * cfg.split_samples
            is_split = torch.cat([is_split, is_split.new_zeros(n_clone)])  # clones are never split
            append_rows(params, optimizers, self._split_children(params, is_split))
            parents = torch.cat([is_split, is_split.new_zeros(n_children)])
            remove_rows(params, optimizers, parents)
            radii = torch.cat([radii, radii.new_zeros(n_children)])[~parents]

        # Prune: transparent, and (late enough) too large on screen or in the world.
        opac = torch.sigmoid(params["opacities"])  # [N']
        prune = opac < cfg.min_opacity
        if step > cfg.screen_size_after:
            if cfg.max_screen_size > 0:
                prune |= radii > cfg.max_screen_size
            if cfg.max_world_size > 0:
                prune |= torch.exp(params["scales"]).max(dim=-1).values > cfg.max_world_size * self.extent
        n_prune = int(prune.sum())
        if n_prune:
            remove_rows(params, optimizers, prune)
        self.reset_state(params["means"].shape[0], device)
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune}

    def _split_children(self, params: dict[str, nn.Parameter], mask: Tensor) -> dict[str, Tensor]:
        """Children of the masked Gaussians: positions ~ N(mean, R diag(s^2) R^T), scales / div."""
        from ..render.projection import quat_to_rotmat

        k = self.cfg.split_samples
        scales = torch.exp(params["scales"].data[mask])  # [S,3]
        quats = params["quats"].data[mask]  # [S,4]
        means = params["means"].data[mask]  # [S,3]
        std = scales.repeat(k, 1)  # [S*k,3]
        noise = torch.randn(std.shape, generator=self.generator, device=std.device, dtype=std.dtype)
        local = noise * std  # [S*k,3]
        rot = quat_to_rotmat(quats).repeat(k, 1, 1)  # [S*k,3,3]
        children: dict[str, Tensor] = {}
        for name, p in params.items():
            src = p.data[mask]
            children[name] = src.repeat(k, *([1] * (src.ndim - 1)))
        children["means"] = (rot @ local[..., None])[..., 0] + means.repeat(k, 1)
        children["scales"] = torch.log(scales / self.cfg.split_scale_div).repeat(k, 1)
        return children

    # ---- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "grad2d": None if self.grad2d is None else self.grad2d.clone(),
            "count": None if self.count is None else self.count.clone(),
            "max_radii": None if self.max_radii is None else self.max_radii.clone(),
            "extent": self.extent,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.grad2d = state["grad2d"]
        self.count = state["count"]
        self.max_radii = state["max_radii"]
        self.extent = float(state["extent"])
