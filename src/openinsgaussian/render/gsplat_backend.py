"""gsplat (CUDA) backend: one ``gsplat.rasterization`` call renders all channels plus depth.

Mapping to gsplat 1.5: one camera (``viewmats[None]``, ``Ks[None]``), ``packed=False``,
``rasterize_mode="classic"``, ``render_mode="RGB+ED"`` (our feature channels, then the expected
depth), SH evaluated by gsplat when ``sh_degree`` is set. Inputs are cast to float32, which is all
gsplat's kernels take; gradients flow back to the caller's dtype.

Known differences from the reference compositor (``benchmarks/check_gsplat_parity.py`` reports
their size on a given scene): gsplat clamps alpha at 0.999 (not 0.99) and stops a pixel when
T <= 1e-4 (not < 1e-4); a Gaussian reaches every pixel of the 16x16 tiles its per-axis,
opacity-aware box (3.33 sigma per axis) overlaps instead of exactly its 3-sigma box; its radii are
per axis (we report the larger one) and it culls Gaussians with opacity < 1/255.

``means2d``: gsplat's projected centres have shape ``[1,N,2]``; the returned ``[N,2]`` view gets
``.grad`` filled from a hook on gsplat's tensor, so densification reads it as for other backends.

``top_id``: a second, gradient-free pass with ``gsplat.rasterize_to_indices_in_range`` over the
same tile intersections lists every composited (Gaussian, pixel) pair front to back in gsplat's
own order; the blending weights ``alpha * T`` follow from a per-pixel cumulative sum of
``log(1 - alpha)``, and the first maximum per pixel is kept. Memory grows with the number of
composited pairs (two int64 ids each), whereas a one-hot id channel per Gaussian would multiply
the rendered channels by N.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from ..data.camera import Camera
from ..errors import BackendError
from .api import RenderOutput

GSPLAT_ALPHA_MAX = 0.999  # gsplat's per-Gaussian alpha clamp (RasterizeToPixels3DGSFwd.cu)


@functools.lru_cache(maxsize=1)
def gsplat_status() -> tuple[bool, str]:
    """``(available, reason)``: gsplat imports, CUDA is present and its CUDA extension loads.

    Loading the extension may JIT-compile it on first use (gsplat's own behaviour).
    """
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    try:
        import gsplat  # noqa: F401
    except ImportError as exc:
        return False, f"gsplat is not installed ({exc}); install the package's 'gpu' extra"
    try:
        from gsplat.cuda._backend import _C
    except Exception as exc:  # compile or load failure inside gsplat
        return False, f"gsplat's CUDA extension failed to load: {exc}"
    if _C is None:
        return (
            False,
            "gsplat's CUDA extension is not built and no CUDA toolkit was found to build it",
        )
    return True, ""


def gsplat_available() -> bool:
    """True when :func:`render_gsplat` can run."""
    return gsplat_status()[0]


def _unbatched_with_grad(batched: Tensor) -> Tensor:
    """``batched[0]`` (``[1,N,2]`` -> ``[N,2]``) whose ``.grad`` accumulates ``batched``'s gradient.

    The view is not on gsplat's autograd path, so ``retain_grad`` on it would never fire; a hook on
    the batched tensor copies the gradient over, with the accumulate-or-set semantics of a leaf.
    """
    view = batched[0]
    if batched.requires_grad:

        def copy_grad(grad: Tensor) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reading .grad of a non-leaf warns when unset
                current = view.grad
            view.grad = grad[0].detach().clone() if current is None else current + grad[0]

        batched.register_hook(copy_grad)
    return view


@torch.no_grad()
def top_ids_from_pairs(
    gs_ids: Tensor,  # [M] Gaussian of each composited pair
    pix_ids: Tensor,  # [M] raster pixel index; pixel-major, front to back within a pixel
    means2d: Tensor,  # [N,2]
    conics: Tensor,  # [N,3]
    opacities: Tensor,  # [N]
    width: int,
    height: int,
    alpha_max: float = GSPLAT_ALPHA_MAX,
) -> Tensor:
    """``[H,W]`` int64: per pixel, the Gaussian of largest weight ``alpha * T`` among its pairs.

    ``T`` before a pair is the product of ``1 - alpha`` over the earlier pairs of the same pixel,
    evaluated as a segmented cumulative sum of ``log(1 - alpha)`` in float64. First maximum wins;
    pixels without pairs get -1.
    """
    device = means2d.device
    n_pix = width * height
    top = torch.full((n_pix,), -1, dtype=torch.int64, device=device)
    m = gs_ids.numel()
    if m == 0:
        return top.reshape(height, width)
    xy = means2d[gs_ids].double()  # [M,2]
    a, b, c = conics[gs_ids].double().unbind(-1)  # [M]
    px = (pix_ids % width).double() + 0.5
    py = torch.div(pix_ids, width, rounding_mode="floor").double() + 0.5
    dx, dy = px - xy[:, 0], py - xy[:, 1]
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = torch.clamp(opacities[gs_ids].double() * torch.exp(power), max=alpha_max)  # [M]
    log_keep = torch.log1p(-alpha)  # [M]
    csum = torch.cumsum(log_keep, 0)  # [M]
    idx = torch.arange(m, device=device)
    starts = torch.ones(m, dtype=torch.bool, device=device)
    starts[1:] = pix_ids[1:] != pix_ids[:-1]
    first = torch.cummax(
        torch.where(starts, idx, torch.zeros_like(idx)), 0
    ).values  # [M] segment start
    excl = csum - log_keep - (csum[first] - log_keep[first])  # sum of log(1-a) over earlier pairs
    w = alpha * torch.exp(excl)  # [M] blending weights
    best = torch.full((n_pix,), -1.0, dtype=w.dtype, device=device)
    best.scatter_reduce_(0, pix_ids, w, reduce="amax")
    is_best = w == best[pix_ids]
    first_best = torch.full((n_pix,), m, dtype=torch.int64, device=device)
    first_best.scatter_reduce_(0, pix_ids[is_best], idx[is_best], reduce="amin")
    hit = first_best < m
    top[hit] = gs_ids[first_best[hit]]
    return top.reshape(height, width)


@torch.no_grad()
def top_ids_from_gsplat(info: dict, width: int, height: int) -> Tensor:
    """``[H,W]`` int64 index of the Gaussian with the largest blending weight (-1 where none).

    Lists gsplat's composited (Gaussian, pixel) pairs with ``gsplat.rasterize_to_indices_in_range``
    over the tile intersections in ``info`` (a one-camera, ``packed=False`` rasterization result),
    so the ids follow gsplat's own compositing, then reduces them with :func:`top_ids_from_pairs`.
    """
    import gsplat

    means2d = info["means2d"].detach().float().contiguous()  # [1,N,2]
    conics = info["conics"].detach().float().contiguous()  # [1,N,3]
    opac = info["opacities"].detach().float().contiguous()  # [1,N]
    trans = torch.ones(1, height, width, dtype=torch.float32, device=means2d.device)
    gs_ids, pix_ids, _ = gsplat.rasterize_to_indices_in_range(
        0,
        2**31 - 1,
        trans,
        means2d,
        conics,
        opac,
        width,
        height,
        info["tile_size"],
        info["isect_offsets"],
        info["flatten_ids"],
    )  # [M], [M]: pixel-major, front to back within a pixel
    return top_ids_from_pairs(gs_ids, pix_ids, means2d[0], conics[0], opac[0], width, height)


def rasterization_arguments(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: Camera,
    *,
    sh_degree: int | None,
    background: Tensor | None,
    near: float,
    far: float,
    eps2d: float,
) -> tuple[tuple, dict]:
    """Positional and keyword arguments of the one ``gsplat.rasterization`` call (float32, C=1)."""
    f32 = torch.float32
    K, viewmat = camera.to(means.device, f32)
    bg = (
        None if background is None else background.to(device=means.device, dtype=f32)[None]
    )  # [1,C]
    args = (
        means.to(f32),
        quats.to(f32),
        scales.to(f32),
        opacities.to(f32),
        colors.to(f32),
        viewmat[None],
        K[None],
        camera.width,
        camera.height,
    )
    kwargs = dict(
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        sh_degree=sh_degree,
        backgrounds=bg,
        render_mode="RGB+ED",
        packed=False,
        rasterize_mode="classic",
    )
    return args, kwargs


def output_from_rasterization(
    render_colors: Tensor,  # [1,H,W,C+1] channels, then expected depth
    render_alphas: Tensor,  # [1,H,W,1]
    info: dict,
    dtype: torch.dtype,
) -> RenderOutput:
    """One camera's ``gsplat.rasterization`` result as a :class:`RenderOutput` (without ids)."""
    image = render_colors[0, :, :, :-1].permute(2, 0, 1).to(dtype)  # [C,H,W]
    depth = render_colors[0, :, :, -1][None].to(dtype)  # [1,H,W]
    alpha = render_alphas[0].permute(2, 0, 1).to(dtype)  # [1,H,W]
    radii = info["radii"]
    if radii.ndim == 3:  # [1,N,2] per-axis radii (gsplat >= 1.5)
        radii = radii.max(dim=-1).values
    radii = radii[0].to(torch.int32)  # [N]
    means2d = _unbatched_with_grad(info["means2d"])  # [N,2]
    return RenderOutput(
        image=image, alpha=alpha, depth=depth, radii=radii, means2d=means2d, top_id=None
    )


def render_gsplat(
    means: Tensor,  # [N,3]
    quats: Tensor,  # [N,4]
    scales: Tensor,  # [N,3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N,C] or [N,K,3]
    camera: Camera,
    *,
    sh_degree: int | None,
    background: Tensor | None,  # [C]
    return_ids: bool,
    near: float,
    far: float,
    eps2d: float,
) -> RenderOutput:
    """Render through ``gsplat.rasterization``; :func:`openinsgaussian.render.render` validates."""
    ok, reason = gsplat_status()
    if not ok:
        raise BackendError(f"backend='gsplat' is unavailable: {reason}")
    if means.device.type != "cuda":
        raise BackendError(f"backend='gsplat' needs CUDA tensors, got means on {means.device}")
    import gsplat

    args, kwargs = rasterization_arguments(
        means,
        quats,
        scales,
        opacities,
        colors,
        camera,
        sh_degree=sh_degree,
        background=background,
        near=near,
        far=far,
        eps2d=eps2d,
    )
    render_colors, render_alphas, info = gsplat.rasterization(*args, **kwargs)
    out = output_from_rasterization(render_colors, render_alphas, info, means.dtype)
    if return_ids:
        out.top_id = top_ids_from_gsplat(info, camera.width, camera.height)
    return out
