"""Real spherical harmonics up to degree 3, with the constants and sign conventions of 3DGS.

Coefficients are stored per Gaussian as ``[N,K,3]`` with ``K >= (degree+1)^2``; band ``l`` uses
entries ``l^2 .. (l+1)^2 - 1``. The DC term maps to colour as ``rgb = C0 * sh + 0.5``.
"""

from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)

MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of coefficients ``(degree+1)^2`` used by ``degree``."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values ``[N,(degree+1)^2]`` at unit directions ``dirs [N,3]``."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2.0 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
        if degree >= 3:
            out += [
                C3[0] * y * (3.0 * xx - yy),
                C3[1] * xy * z,
                C3[2] * y * (4.0 * zz - xx - yy),
                C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                C3[4] * x * (4.0 * zz - xx - yy),
                C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3.0 * yy),
            ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate SH ``coeffs [N,K,3]`` at unit ``dirs [N,3]`` -> ``[N,3]`` (raw, without the +0.5).

    ``dirs`` are the normalised vectors from the camera centre to each Gaussian mean. Colours as
    3DGS uses them are ``clamp_min(eval_sh(...) + 0.5, 0)`` (see :func:`sh_colors`).
    """
    k = num_sh_bases(degree)
    if coeffs.ndim != 3 or coeffs.shape[-1] != 3 or coeffs.shape[1] < k:
        raise ValueError(
            f"SH coefficients must have shape [N,K,3] with K >= {k} for degree {degree}, "
            f"got {tuple(coeffs.shape)}"
        )
    if dirs.shape != (coeffs.shape[0], 3):
        raise ValueError(f"dirs must have shape [{coeffs.shape[0]},3], got {tuple(dirs.shape)}")
    basis = sh_basis(degree, dirs)  # [N,k]
    return (basis[:, :, None] * coeffs[:, :k, :]).sum(dim=1)  # [N,3]


def sh_colors(degree: int, coeffs: Tensor, means: Tensor, camera_center: Tensor) -> Tensor:
    """View-dependent RGB ``[N,3]`` of Gaussians at ``means [N,3]`` seen from ``camera_center [3]``.

    3DGS convention: ``clamp_min(eval_sh + 0.5, 0)``; no upper clamp.
    """
    d = means - camera_center.to(device=means.device, dtype=means.dtype)  # [N,3]
    norm = d.norm(dim=-1, keepdim=True)
    dirs = d / torch.clamp(norm, min=1e-12)  # [N,3]
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient(s) that reproduce ``rgb`` (any shape): ``(rgb - 0.5) / C0``."""
    return (rgb - 0.5) / C0


def sh_to_rgb(sh: Tensor) -> Tensor:
    """Colour of DC coefficient(s) ``sh`` (any shape): ``sh * C0 + 0.5``."""
    return sh * C0 + 0.5
