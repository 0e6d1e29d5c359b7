"""Pinhole camera in OpenCV axes (x right, y down, z forward), with optional lens distortion.

Every reader converts its own convention (OpenGL/Blender camera-to-world, COLMAP qvec/tvec) to this
one exactly once, so the rest of the code never thinks about axes. Pixel centres sit at integer
+ 0.5: the centre of the top-left pixel is (0.5, 0.5), as in 3DGS and gsplat.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

# OpenGL/Blender camera axes (x right, y up, z backward) -> OpenCV (x right, y down, z forward).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Distortion:
    """Lens distortion kept from the source data (COLMAP radial/OpenCV models).

    ``model`` "opencv": ``coeffs`` = (k1, k2, p1, p2, k3, k4, k5, k6), OpenCV's order, zeros padded.
    ``model`` "fisheye": ``coeffs`` = (k1, k2, k3, k4) of the OpenCV fisheye model.
    """

    model: Literal["opencv", "fisheye"]
    coeffs: tuple[float, ...]

    def is_identity(self) -> bool:
        """True when projecting with this model equals the ideal pinhole (never for fisheye,
        whose equidistant mapping bends rays even with zero coefficients)."""
        return self.model == "opencv" and all(c == 0.0 for c in self.coeffs)

    def apply(self, xn: np.ndarray) -> np.ndarray:
        """Distort normalised image coordinates ``xn [N,2]`` (x/z, y/z)."""
        x, y = xn[:, 0], xn[:, 1]
        if self.model == "opencv":
            k1, k2, p1, p2, k3, k4, k5, k6 = (list(self.coeffs) + [0.0] * 8)[:8]
            r2 = x * x + y * y
            radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
            xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            return np.stack([xd, yd], axis=-1)
        k1, k2, k3, k4 = (list(self.coeffs) + [0.0] * 4)[:4]
        r = np.sqrt(x * x + y * y)
        theta = np.arctan(r)
        th2 = theta * theta
        theta_d = theta * (1 + k1 * th2 + k2 * th2**2 + k3 * th2**3 + k4 * th2**4)
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return np.stack([x * scale, y * scale], axis=-1)


@dataclass
class Camera:
    """Intrinsics ``K [3,3]``, extrinsics ``world_to_cam [4,4]`` (OpenCV axes), image size.

    Stored as float64 CPU tensors; consumers cast to their own dtype/device.
    """

    K: torch.Tensor  # [3,3]
    world_to_cam: torch.Tensor  # [4,4]
    width: int
    height: int
    distortion: Distortion | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.K = torch.as_tensor(np.asarray(self.K, dtype=np.float64)).reshape(3, 3).clone()
        self.world_to_cam = (
            torch.as_tensor(np.asarray(self.world_to_cam, dtype=np.float64)).reshape(4, 4).clone()
        )
        self.width = int(self.width)
        self.height = int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera {self.name!r}: image size must be positive, got {self.width}x{self.height}")

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_intrinsics(
        cls,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        width: int,
        height: int,
        world_to_cam: np.ndarray | torch.Tensor,
        distortion: Distortion | None = None,
        name: str = "",
    ) -> Camera:
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
        return cls(K=torch.from_numpy(K), world_to_cam=torch.as_tensor(np.asarray(world_to_cam, dtype=np.float64)),
                   width=width, height=height, distortion=distortion, name=name)

    @classmethod
    def from_opengl_c2w(cls, c2w_gl: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                        width: int, height: int, name: str = "") -> Camera:
        """From a camera-to-world matrix in OpenGL/Blender axes (NeRF ``transform_matrix``)."""
        c2w_cv = np.asarray(c2w_gl, dtype=np.float64) @ GL_TO_CV
        return cls.from_intrinsics(fx, fy, cx, cy, width, height, np.linalg.inv(c2w_cv), name=name)

    # ---- accessors ----------------------------------------------------------------------------
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def cam_to_world(self) -> torch.Tensor:
        """``[4,4]`` camera-to-world, OpenCV axes."""
        return torch.linalg.inv(self.world_to_cam)

    @property
    def center(self) -> torch.Tensor:
        """Camera centre in world coordinates ``[3]``."""
        R = self.world_to_cam[:3, :3]
        t = self.world_to_cam[:3, 3]
        return -R.T @ t

    @property
    def fov_x(self) -> float:
        return 2.0 * float(np.arctan(self.width / (2.0 * self.fx)))

    @property
    def fov_y(self) -> float:
        return 2.0 * float(np.arctan(self.height / (2.0 * self.fy)))

    # ---- geometry -----------------------------------------------------------------------------
    def world_to_camera_points(self, points: np.ndarray | torch.Tensor) -> np.ndarray:
        """``points [N,3]`` world -> ``[N,3]`` camera coordinates (OpenCV axes)."""
        p = np.asarray(points, dtype=np.float64)
        w2c = self.world_to_cam.numpy()
        return p @ w2c[:3, :3].T + w2c[:3, 3]

    def project(self, points: np.ndarray | torch.Tensor, apply_distortion: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Project world ``points [N,3]`` to pixel coordinates ``uv [N,2]`` and depth ``z [N]``.

        Pixel (u, v) lies in the pixel with integer index (floor(u), floor(v)); z <= 0 is behind.
        """
        pc = self.world_to_camera_points(points)
        z = pc[:, 2]
        safe_z = np.where(np.abs(z) < 1e-12, 1e-12, z)
        xn = pc[:, :2] / safe_z[:, None]
        if apply_distortion and self.distortion is not None and not self.distortion.is_identity():
            xn = self.distortion.apply(xn)
        K = self.K.numpy()
        uv = np.stack([K[0, 0] * xn[:, 0] + K[0, 1] * xn[:, 1] + K[0, 2], K[1, 1] * xn[:, 1] + K[1, 2]], axis=-1)
        return uv, z

    def rays(self, through_lens: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """World-space ray origins and unit directions through every pixel centre, ``[H,W,3]`` each.

        Rays of the ideal pinhole, unless ``through_lens`` and the camera has a distortion: then
        each pixel's ray is the one the lens maps onto it (OpenCV's inverse of the model).
        """
        u, v = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        K = self.K.numpy()
        if through_lens and self.distortion is not None and not self.distortion.is_identity():
            from .undistort import undistort_points

            xn = undistort_points(self, np.stack([u.ravel(), v.ravel()], axis=1))  # [H*W, 2]
            x, y = xn[:, 0].reshape(u.shape), xn[:, 1].reshape(u.shape)
        else:
            y = (v - K[1, 2]) / K[1, 1]
            x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
        d_cam = np.stack([x, y, np.ones_like(x)], axis=-1)
        c2w = self.cam_to_world.numpy()
        d = d_cam @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = np.broadcast_to(c2w[:3, 3], d.shape).copy()
        return o, d

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image downscaled by ``factor`` (size rounded to whole pixels).

        Intrinsics scale by the exact ratio of new to old size on each axis, which keeps pixel
        centres at +0.5 aligned with the resized image.
        """
        if factor <= 0:
            raise ValueError(f"downscale factor must be positive, got {factor}")
        new_w = max(1, int(round(self.width / factor)))
        new_h = max(1, int(round(self.height / factor)))
        return self.resized(new_w, new_h)

    def resized(self, width: int, height: int) -> Camera:
        """The same camera for an image resampled to ``width x height``."""
        sx = width / self.width
        sy = height / self.height
        K = self.K.clone()
        K[0, :] *= sx
        K[1, :] *= sy
        return replace(self, K=K, width=width, height=height)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K [3,3], world_to_cam [4,4])`` on ``device`` in ``dtype``, for renderers."""
        return self.K.to(device=device, dtype=dtype), self.world_to_cam.to(device=device, dtype=dtype)
