"""The one rendering entry point: Gaussians + camera -> image/features, alpha, depth, ids.

``render`` validates its inputs, projects the Gaussians (``projection.py``), turns SH into colours
when asked (``sh.py``), appends camera depth as one more channel so that a single compositing call
also yields the expected depth, and dispatches compositing to a backend:

- ``"reference"``: plain torch (``reference.py``), any device, the definition the others match;
- ``"cpu"``: the compiled CPU compositor (``cpu_fast.py``); falls back to the reference with a
  one-time warning when it cannot be built or loaded;
- ``"gsplat"``: gsplat's CUDA rasterizer (``gsplat_backend.py``) for the whole pipeline;
- ``"auto"``: gsplat for CUDA inputs when it loads, otherwise the CPU compositor, otherwise the
  reference (one-time warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..data.camera import Camera
from ..errors import BackendError
from .projection import project_gaussians
from .reference import composite_reference
from .sh import MAX_SH_DEGREE, num_sh_bases, sh_colors

Backend = Literal["auto", "reference", "cpu", "gsplat"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "cpu", "gsplat")

CompositeFn = Callable[..., tuple[Tensor, Tensor, Tensor | None]]

_warned: set[str] = set()


@dataclass
class RenderOutput:
    """What one camera sees of a set of Gaussians."""

    image: Tensor  # [C,H,W] composited channels plus (1 - alpha) * background
    alpha: Tensor  # [1,H,W] accumulated opacity
    depth: Tensor  # [1,H,W] expected depth sum_i w_i z_i / alpha, 0 where alpha == 0
    radii: Tensor  # [N] int32 screen radius in pixels, 0 for culled Gaussians
    means2d: Tensor  # [N,2] projected centres; .grad is filled by backward (densification)
    top_id: Tensor | None  # [H,W] int64 index of the largest-weight Gaussian, -1 where none


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _cpu_compositor() -> tuple[CompositeFn | None, str]:
    """The compiled CPU compositor, or ``(None, reason)`` when it cannot be used."""
    try:
        from .cpu_fast import composite_cpu, cpu_backend_available
    except Exception as exc:  # missing module or a failing build at import time
        return None, f"the fast CPU compositor could not be imported ({type(exc).__name__}: {exc})"
    try:
        available = bool(cpu_backend_available())
    except Exception as exc:
        return None, f"the fast CPU compositor failed to build ({type(exc).__name__}: {exc})"
    if not available:
        return None, "the fast CPU compositor is not available on this machine"
    return composite_cpu, ""


def _gsplat_ok() -> tuple[bool, str]:
    from .gsplat_backend import gsplat_status

    return gsplat_status()


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will actually run: ``"reference"``, ``"cpu"`` or ``"gsplat"``.

    Raises :class:`BackendError` for an explicit ``"gsplat"`` that cannot run, or ``"cpu"`` on
    non-CPU tensors; warns once when ``"cpu"``/``"auto"`` fall back to the reference.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return "reference"
    if backend == "gsplat":
        if device.type != "cuda":
            raise BackendError(
                f"backend='gsplat' needs CUDA tensors, got tensors on {device}; "
                "use backend='cpu' or 'reference' on the CPU"
            )
        ok, reason = _gsplat_ok()
        if not ok:
            raise BackendError(f"backend='gsplat' is unavailable: {reason}")
        return "gsplat"
    if backend == "cpu" and device.type != "cpu":
        raise BackendError(f"backend='cpu' needs CPU tensors, got tensors on {device}")
    if device.type == "cuda":  # auto on CUDA
        ok, reason = _gsplat_ok()
        if ok:
            return "gsplat"
        _warn_once(
            "auto-cuda", f"gsplat unavailable ({reason}); rendering with the slow reference backend"
        )
        return "reference"
    if device.type != "cpu":
        return "reference"
    fn, reason = _cpu_compositor()
    if fn is None:
        _warn_once("cpu", f"{reason}; rendering with the slow reference backend")
        return "reference"
    return "cpu"


def _check_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: Camera,
    sh_degree: int | None,
    background: Tensor | None,
) -> tuple[Tensor, int]:
    """Validate shapes/devices; returns ``opacities`` as ``[N]`` and the output channel count."""
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be an openinsgaussian Camera, got {type(camera).__name__}")
    if not isinstance(means, Tensor) or means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(
            f"means must be a tensor of shape [N,3], got {getattr(means, 'shape', type(means))}"
        )
    if not means.is_floating_point():
        raise ValueError(f"means must be floating point, got {means.dtype}")
    n = means.shape[0]
    for name, t, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3))):
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{name} must have shape {list(shape)} (N={n} from means), got {tuple(t.shape)}"
            )
    if opacities.shape == (n, 1):
        opacities = opacities[:, 0]
    if tuple(opacities.shape) != (n,):
        raise ValueError(
            f"opacities must have shape [{n}] (or [{n},1]), got {tuple(opacities.shape)}"
        )
    if sh_degree is None:
        if colors.ndim != 2 or colors.shape[0] != n or colors.shape[1] < 1:
            raise ValueError(
                f"colors must have shape [N,C] with N={n} when sh_degree is None, "
                f"got {tuple(colors.shape)}"
            )
        channels = colors.shape[1]
    else:
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be None or in 0..{MAX_SH_DEGREE}, got {sh_degree}")
        k = num_sh_bases(sh_degree)
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < k:
            raise ValueError(
                f"colors must be SH coefficients of shape [N,K,3] with N={n} and K >= {k} "
                f"for sh_degree={sh_degree}, got {tuple(colors.shape)}"
            )
        channels = 3
    if background is not None and tuple(background.shape) != (channels,):
        raise ValueError(
            f"background must have shape [{channels}] (one value per channel), "
            f"got {tuple(background.shape)}"
        )
    for name, t in (
        ("quats", quats),
        ("scales", scales),
        ("opacities", opacities),
        ("colors", colors),
    ):
        if t.device != means.device:
            raise ValueError(f"{name} is on {t.device} but means is on {means.device}")
    return opacities, channels


def render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: Camera,
    *,
    sh_degree: int | None = None,
    background: Tensor | None = None,
    backend: Backend = "auto",
    return_ids: bool = False,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> RenderOutput:
    """Render Gaussians for one camera.

    ``means [N,3]`` world positions, ``quats [N,4]`` (w, x, y, z; normalised inside), ``scales
    [N,3]`` and ``opacities [N]`` already activated, ``colors`` either features ``[N,C]`` or, with
    ``sh_degree`` set, SH coefficients ``[N,K,3]`` (colour ``clamp_min(sh + 0.5, 0)``). The image
    is ``composite + (1 - alpha) * background``. Gradients reach all Gaussian parameters, and
    ``means2d.grad`` holds the screen-space gradient after ``backward``.
    """
    opacities, channels = _check_inputs(
        means, quats, scales, opacities, colors, camera, sh_degree, background
    )
    chosen = resolve_backend(backend, means.device)
    if chosen == "gsplat":
        from .gsplat_backend import render_gsplat

        return render_gsplat(
            means,
            quats,
            scales,
            opacities,
            colors,
            camera,
            sh_degree=sh_degree,
            background=background,
            return_ids=return_ids,
            near=near,
            far=far,
            eps2d=eps2d,
        )

    width, height = camera.width, camera.height
    K, viewmat = camera.to(means.device, means.dtype)
    proj = project_gaussians(
        means, quats, scales, viewmat, K, width, height, near=near, far=far, eps2d=eps2d
    )
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    if sh_degree is None:
        feats = colors  # [N,C]
    else:
        feats = sh_colors(sh_degree, colors, means, camera.center)  # [N,3]
    feats = torch.cat([feats.to(means.dtype), proj.depths[:, None]], dim=1)  # [N,C+1]

    composite: CompositeFn = composite_reference
    if chosen == "cpu":
        fn, reason = _cpu_compositor()
        if fn is None:  # raced with a failing build: keep the promise of a working render
            _warn_once("cpu", f"{reason}; rendering with the slow reference backend")
        else:
            composite = fn
    args = (proj.means2d, proj.conics, opacities, feats, proj.depths, proj.radii, width, height, return_ids)
    try:
        out, acc, top_id = composite(*args)  # [H,W,C+1], [H,W], [H,W]|None
    except BackendError as exc:
        if composite is composite_reference:
            raise
        _warn_once(
            "cpu-run",
            f"the fast CPU compositor failed ({exc}); rendering with the reference backend",
        )
        out, acc, top_id = composite_reference(*args)

    image = out[..., :channels].permute(2, 0, 1)  # [C,H,W]
    alpha = acc[None]  # [1,H,W]
    covered = alpha > 0
    depth = torch.where(
        covered,
        out[..., channels][None] / torch.where(covered, alpha, torch.ones_like(alpha)),
        torch.zeros_like(alpha),
    )  # [1,H,W]
    if background is not None:
        bg = background.to(device=image.device, dtype=image.dtype)
        image = image + (1.0 - alpha) * bg[:, None, None]
    return RenderOutput(
        image=image, alpha=alpha, depth=depth, radii=proj.radii, means2d=proj.means2d, top_id=top_id
    )
