import numpy as np
import pytest

from openinsgaussian.data.camera import Camera, Distortion


def _look_at_cam(eye, target, f=50.0, w=64, h=48):
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], 1)
    c2w[:3, 3] = eye
    return Camera.from_intrinsics(f, f, w / 2, h / 2, w, h, np.linalg.inv(c2w))


def test_opengl_camera_looking_down_minus_z_projects_to_principal_point():
    cam = Camera.from_opengl_c2w(np.eye(4), 100, 100, 32, 24, 64, 48)
    uv, z = cam.project(np.array([[0.0, 0.0, -2.0], [0.2, 0.1, -2.0]]))
    np.testing.assert_allclose(uv[0], [32, 24])
    np.testing.assert_allclose(z, [2, 2])
    # OpenGL +y (up) must land above the centre (smaller v) and +x to the right.
    np.testing.assert_allclose(uv[1], [32 + 100 * 0.1, 24 - 100 * 0.05])


def test_rays_hit_projection_of_their_pixel_centre():
    cam = _look_at_cam([3, 1, 1], [0, 0, 0.5])
    o, d = cam.rays()
    pts = o[5, 7] + 2.5 * d[5, 7]
    uv, z = cam.project(pts[None])
    np.testing.assert_allclose(uv[0], [7.5, 5.5], atol=1e-9)
    assert z[0] > 0
    np.testing.assert_allclose(cam.center.numpy(), [3, 1, 1], atol=1e-12)


def test_scaled_keeps_pixel_centre_alignment():
    cam = _look_at_cam([3, 1, 1], [0, 0, 0.5], w=64, h=48)
    half = cam.scaled(2)
    assert (half.width, half.height) == (32, 24)
    p = np.array([[0.1, -0.2, 0.4]])
    uv, _ = cam.project(p)
    uv2, _ = half.project(p)
    np.testing.assert_allclose(uv2, uv / 2, atol=1e-9)


def test_distortion_identity_and_radial():
    cam = _look_at_cam([3, 1, 1], [0, 0, 0.5])
    p = np.array([[0.3, 0.2, 0.9]])
    uv0, _ = cam.project(p)
    cam.distortion = Distortion("opencv", (0.0,) * 8)
    np.testing.assert_allclose(cam.project(p)[0], uv0)
    cam.distortion = Distortion("opencv", (0.1, 0, 0, 0, 0, 0, 0, 0))
    xn = (uv0 - [cam.cx, cam.cy]) / [cam.fx, cam.fy]
    r2 = (xn**2).sum()
    np.testing.assert_allclose(cam.project(p)[0][0], [cam.cx, cam.cy] + xn[0] * (1 + 0.1 * r2) * [cam.fx, cam.fy])


def test_invalid_size_rejected():
    with pytest.raises(ValueError):
        Camera.from_intrinsics(1, 1, 0, 0, 0, 10, np.eye(4))


def test_zero_coefficient_fisheye_is_not_a_pinhole():
    cam = _look_at_cam([3, 1, 1], [0, 0, 0.5])
    p = np.array([[0.3, 0.2, 0.9]])
    pinhole_uv, _ = cam.project(p)
    cam.distortion = Distortion("fisheye", (0.0, 0.0, 0.0, 0.0))
    assert not cam.distortion.is_identity()
    fish_uv, _ = cam.project(p)
    xn = (pinhole_uv[0] - [cam.cx, cam.cy]) / [cam.fx, cam.fy]
    r = np.linalg.norm(xn)
    np.testing.assert_allclose(fish_uv[0], [cam.cx, cam.cy] + xn * np.arctan(r) / r * [cam.fx, cam.fy])
