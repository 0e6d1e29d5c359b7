"""Reference alpha compositing of projected Gaussians (stage B), in plain torch.

This is the readable definition every other backend is tested against: for each pixel, every
Gaussian whose 3-sigma box contains the pixel centre is blended front to back in ascending depth
(ties by index) with the 3DGS rules (alpha clamped at 0.99, contributions below 1/255 skipped,
the pixel stops before the Gaussian that would drop the transmittance below 1e-4).

Memory stays bounded: pixels are processed in square tiles, only the Gaussians whose box touches
a tile are gathered, and they are blended in depth-ordered blocks of at most ``PAIR_BUDGET``
(pixel, Gaussian) pairs carrying the transmittance from block to block. When gradients are needed
each block runs under activation checkpointing, so the autograd graph keeps only per-block inputs
and outputs and recomputes the block in the backward pass. Works on any device torch supports.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

ALPHA_MAX = 0.99  # per-Gaussian alpha clamp
ALPHA_MIN = 1.0 / 255.0  # contributions below this are skipped
T_MIN = 1e-4  # a pixel stops before the Gaussian that would bring T below this
TILE = 16  # pixels per tile side
PAIR_BUDGET = 1 << 20  # max (pixel, Gaussian) pairs held at once per block
_MARGIN = 1e-3  # pixels added to the per-tile box pre-filter


def validate_composite_inputs(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
) -> None:
    """Raise ``ValueError`` naming the argument when a compositing input has the wrong shape."""
    if means2d.ndim != 2 or means2d.shape[1] != 2:
        raise ValueError(f"means2d must have shape [N,2], got {tuple(means2d.shape)}")
    n = means2d.shape[0]
    expected = {
        "conics": (conics, (n, 3)),
        "opacities": (opacities, (n,)),
        "depths": (depths, (n,)),
        "radii": (radii, (n,)),
    }
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{name} must have shape {list(shape)} (N={n} from means2d), got {tuple(t.shape)}"
            )
    if features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"features must have shape [N,C] with N={n}, got {tuple(features.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got width={width} height={height}")


def _blend_block(
    px: Tensor,
    py: Tensor,
    gids: Tensor,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    radii_f: Tensor,
    T0: Tensor,
    done: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Blend one depth-ordered block of Gaussians ``gids [G]`` into pixels ``px, py [P]``.

    ``T0 [P]`` is the transmittance before the block, ``done [P]`` marks pixels already stopped.
    Returns ``(colour [P,C], T [P], done [P], best_w [P], best_local [P])``; the last two give the
    largest blending weight in this block and its position in ``gids`` (no gradient).
    """
    mean = means2d[gids]  # [G,2]
    a, b, c = conics[gids].unbind(-1)  # [G] each
    dx = px[:, None] - mean[None, :, 0]  # [P,G]
    dy = py[:, None] - mean[None, :, 1]  # [P,G]
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy  # [P,G]
    with torch.no_grad():
        r = radii_f[gids]  # [G]
        ok = (dx.abs() <= r) & (dy.abs() <= r) & (power <= 0) & ~done[:, None]  # [P,G]
    # exp(0) where unused keeps values and gradients finite for far-away pairs.
    raw = opacities[gids] * torch.exp(torch.where(ok, power, torch.zeros_like(power)))  # [P,G]
    alpha = torch.clamp(raw, max=ALPHA_MAX)  # zero gradient where clamped
    with torch.no_grad():
        use = ok & (alpha >= ALPHA_MIN)  # [P,G]
        a_used = torch.where(use, alpha, torch.zeros_like(alpha))
        test_T = T0[:, None] * torch.cumprod(1.0 - a_used, dim=1)  # [P,G] T after each Gaussian
        # test_T is non-increasing along the row, so the stop rule keeps exactly a prefix.
        keep = use & (test_T >= T_MIN)  # [P,G]
        stopped = (use & ~keep).any(dim=1)  # [P]
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))  # [P,G]
    trans = torch.cumprod(1.0 - alpha, dim=1)  # [P,G] (factor 1 where not composited)
    T_before = T0[:, None] * torch.cat(
        [torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1
    )  # [P,G]
    w = alpha * T_before  # [P,G] blending weights, 0 where not composited
    colour = w @ features[gids].to(w.dtype)  # [P,C]
    T = T0 * trans[:, -1]  # [P]
    with torch.no_grad():
        best_w, best_local = w.max(dim=1)  # first maximum on ties
    return colour, T, done | stopped, best_w, best_local


def composite_reference(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    return_ids: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Front-to-back alpha compositing, the render contract's stage B.

    Inputs: ``means2d [N,2]``, ``conics [N,3]`` (a, b, c), ``opacities [N]``, ``features [N,C]``,
    ``depths [N]`` (sort key only), ``radii [N]`` int (0 = skip). Returns ``image [H,W,C]``,
    ``alpha [H,W]`` and, when ``return_ids``, ``top_id [H,W]`` int64 (index of the Gaussian with
    the largest blending weight, -1 where nothing was composited). Differentiable w.r.t.
    means2d, conics, opacities and features; no background is added.
    """
    validate_composite_inputs(means2d, conics, opacities, features, depths, radii, width, height)
    width, height = int(width), int(height)
    device = means2d.device
    dtype = torch.promote_types(
        torch.promote_types(means2d.dtype, conics.dtype),
        torch.promote_types(opacities.dtype, features.dtype),
    )
    n_ch = features.shape[1]
    radii_f = radii.to(dtype)  # [N]

    # Global depth order of the visible Gaussians; stable sort breaks ties by index.
    visible = torch.nonzero(radii > 0).squeeze(1)  # [V]
    order = visible[torch.argsort(depths.detach()[visible], stable=True)]  # [V]
    m = means2d.detach()[order].to(dtype)  # [V,2]
    r = radii_f[order]  # [V]
    box_x0, box_x1, box_y0, box_y1 = m[:, 0] - r, m[:, 0] + r, m[:, 1] - r, m[:, 1] + r

    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities, features)
    )

    colours, transmittances, top_ids, pixel_index = [], [], [], []
    for y0 in range(0, height, TILE):
        y1 = min(y0 + TILE, height)
        for x0 in range(0, width, TILE):
            x1 = min(x0 + TILE, width)
            ys = torch.arange(y0, y1, device=device)
            xs = torch.arange(x0, x1, device=device)
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            pix = (yy * width + xx).reshape(-1)  # [P] raster index
            px = xx.reshape(-1).to(dtype) + 0.5  # [P] pixel centres
            py = yy.reshape(-1).to(dtype) + 0.5
            n_pix = pix.shape[0]
            # Gaussians whose box may contain a pixel centre of this tile, in depth order (a small
            # margin guards against rounding; the exact per-pixel box test is in _blend_block).
            touch = (
                (box_x1 >= x0 + 0.5 - _MARGIN)
                & (box_x0 <= x1 - 0.5 + _MARGIN)
                & (box_y1 >= y0 + 0.5 - _MARGIN)
                & (box_y0 <= y1 - 0.5 + _MARGIN)
            )
            gids_tile = order[touch]  # [G]

            colour = torch.zeros(n_pix, n_ch, dtype=dtype, device=device)  # [P,C]
            T = torch.ones(n_pix, dtype=dtype, device=device)  # [P]
            done = torch.zeros(n_pix, dtype=torch.bool, device=device)  # [P]
            best_w = torch.zeros(n_pix, dtype=dtype, device=device)  # [P]
            best_id = torch.full((n_pix,), -1, dtype=torch.int64, device=device)  # [P]
            block = max(1, PAIR_BUDGET // n_pix)
            for g0 in range(0, gids_tile.shape[0], block):
                gids = gids_tile[g0 : g0 + block]
                args = (px, py, gids, means2d, conics, opacities, features, radii_f, T, done)
                if needs_grad:
                    c_blk, T, done, w_blk, i_blk = checkpoint(
                        _blend_block, *args, use_reentrant=False
                    )
                else:
                    c_blk, T, done, w_blk, i_blk = _blend_block(*args)
                colour = colour + c_blk
                better = w_blk > best_w
                best_w = torch.where(better, w_blk, best_w)
                best_id = torch.where(better, gids[i_blk], best_id)
                if bool(done.all()):
                    break
            colours.append(colour)
            transmittances.append(T)
            top_ids.append(best_id)
            pixel_index.append(pix)

    inverse = torch.argsort(torch.cat(pixel_index))  # tile order -> raster order
    image = torch.cat(colours)[inverse].reshape(height, width, n_ch)  # [H,W,C]
    alpha = (1.0 - torch.cat(transmittances))[inverse].reshape(height, width)  # [H,W]
    top_id = torch.cat(top_ids)[inverse].reshape(height, width) if return_ids else None  # [H,W]
    return image, alpha, top_id
