"""EWA projection of 3D Gaussians to screen-space 2D Gaussians (stage A of rendering).

Plain differentiable torch, shared by the reference and the fast CPU compositor. Conventions are
those of 3DGS and gsplat: OpenCV camera axes, pixel centres at integer + 0.5, the 2D covariance
``J W Sigma W^T J^T + eps2d * I`` with the pinhole Jacobian evaluated at a mean whose x/z, y/z are
clamped to 1.3x the field of view, and a 3-sigma screen radius used for culling and for the
per-pixel box test of the compositors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Screen radii are stored as int32; anything this large already covers any image.
_MAX_RADIUS = 2**30


@dataclass
class Projection:
    """Per-Gaussian screen-space quantities for one camera."""

    means2d: Tensor  # [N,2] pixel coordinates of the projected centres (pixel centres at +0.5)
    conics: Tensor  # [N,3] inverse 2D covariance (a, b, c) meaning [[a, b], [b, c]]
    depths: Tensor  # [N] camera-space z of the centres
    radii: Tensor  # [N] int32 3-sigma screen radius in pixels, 0 for culled Gaussians
    cov2d: Tensor  # [N,3] 2D covariance (xx, xy, yy) including the eps2d low-pass


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices ``[N,3,3]`` from quaternions ``quats [N,4]`` in (w, x, y, z) order.

    The quaternions are normalised first (a zero quaternion maps to the identity).
    """
    norm = quats.norm(dim=-1, keepdim=True)  # [N,1]
    # A zero quaternion would give NaN; map it to (1, 0, 0, 0) without touching valid ones.
    zero = norm <= 1e-12
    unit = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=quats.dtype, device=quats.device)
    q = torch.where(zero, unit, quats / torch.where(zero, torch.ones_like(norm), norm))  # [N,4]
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # [N,9]
    return R.reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """Covariances ``Sigma = R S S^T R^T [N,3,3]`` from ``quats [N,4]`` and ``scales [N,3]``."""
    M = quat_to_rotmat(quats) * scales[..., None, :]  # [N,3,3] = R @ diag(s)
    return M @ M.transpose(-1, -2)


def fov_clamp_limits(K: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Limits on x/z and y/z for the Jacobian: the image extent plus 0.3x the half field of view.

    Measured from the principal point, as gsplat does; for a centred principal point this is
    3DGS's ``1.3 * tan(fov/2)`` on each side. Returns ``(x_neg, x_pos, y_neg, y_pos)`` (positive).
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x = 0.5 * width / fx
    tan_y = 0.5 * height / fy
    return (
        cx / fx + 0.3 * tan_x,
        (width - cx) / fx + 0.3 * tan_x,
        cy / fy + 0.3 * tan_y,
        (height - cy) / fy + 0.3 * tan_y,
    )


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """Project Gaussians ``means [N,3]``, ``quats [N,4]`` (wxyz), ``scales [N,3]`` (pinhole).

    ``viewmat [4,4]`` is world-to-camera (OpenCV axes), ``K [3,3]`` the intrinsics; both are cast
    to the dtype/device of ``means``. Differentiable (autograd) w.r.t. means, quats and scales.
    Culled Gaussians (radius 0): centre not strictly between ``near`` and ``far``, a non-positive
    2D determinant, or a 3-sigma box that misses the image ``[0,W] x [0,H]``. Their other outputs
    are finite but meaningless.
    """
    dtype, device = means.dtype, means.device
    viewmat = viewmat.to(device=device, dtype=dtype)
    K = K.to(device=device, dtype=dtype)
    R_cw = viewmat[:3, :3]  # [3,3] world -> camera rotation W
    t_cw = viewmat[:3, 3]  # [3]

    t = means @ R_cw.T + t_cw  # [N,3] camera-space means
    tx, ty, tz = t.unbind(-1)
    in_depth = (tz > near) & (tz < far)  # [N]
    # Division-safe depth: culled Gaussians get z = 1 so that neither values nor gradients blow up.
    z = torch.where(in_depth, tz, torch.ones_like(tz))  # [N]

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    means2d = torch.stack([fx * tx / z + cx, fy * ty / z + cy], dim=-1)  # [N,2]

    # Jacobian at the FOV-clamped mean (3DGS: avoids huge splats from points far off-screen).
    x_neg, x_pos, y_neg, y_pos = fov_clamp_limits(K, width, height)
    cx_t = z * torch.minimum(torch.maximum(tx / z, -x_neg), x_pos)  # [N]
    cy_t = z * torch.minimum(torch.maximum(ty / z, -y_neg), y_pos)  # [N]
    zeros = torch.zeros_like(z)
    J = torch.stack(
        [fx / z, zeros, -fx * cx_t / (z * z), zeros, fy / z, -fy * cy_t / (z * z)], dim=-1
    ).reshape(-1, 2, 3)  # [N,2,3]

    sigma = covariance_3d(quats, scales)  # [N,3,3] world
    JW = J @ R_cw  # [N,2,3]
    cov = JW @ sigma @ JW.transpose(-1, -2)  # [N,2,2]
    cxx = cov[:, 0, 0] + eps2d
    cxy = 0.5 * (cov[:, 0, 1] + cov[:, 1, 0])
    cyy = cov[:, 1, 1] + eps2d
    cov2d = torch.stack([cxx, cxy, cyy], dim=-1)  # [N,3]

    det = cxx * cyy - cxy * cxy  # [N]
    det_ok = det > 0
    safe_det = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([cyy / safe_det, -cxy / safe_det, cxx / safe_det], dim=-1)  # [N,3]

    with torch.no_grad():
        # 3-sigma radius along the major axis (largest eigenvalue of cov2d), as gsplat/3DGS.
        mid = 0.5 * (cxx + cyy)
        lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))  # [N]
        radius = torch.ceil(3.0 * torch.sqrt(torch.clamp(lam, min=0.0)))  # [N]
        radius = torch.clamp(radius, max=float(_MAX_RADIUS))  # keeps the int32 cast defined
        valid = in_depth & det_ok & torch.isfinite(radius)
        mx, my = means2d[:, 0], means2d[:, 1]
        on_screen = (
            (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        )
        valid = valid & on_screen & torch.isfinite(mx) & torch.isfinite(my)
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)  # [N]

    return Projection(means2d=means2d, conics=conics, depths=tz, radii=radii, cov2d=cov2d)


@torch.no_grad()
def visible_mask(means: Tensor, quats: Tensor, scales: Tensor, camera) -> Tensor:
    """``[N]`` bool: Gaussians with a non-zero screen radius in ``camera`` (a
    :class:`~openinsgaussian.data.camera.Camera`), the ``radii > 0`` visibility filter of 3DGS."""
    K, viewmat = camera.to(means.device, means.dtype)
    proj = project_gaussians(means, quats, scales, viewmat, K, camera.width, camera.height)
    return proj.radii > 0
