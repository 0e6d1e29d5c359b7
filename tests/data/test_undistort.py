"""Lens undistortion: pixel-centre conversion, OpenCV / fisheye geometry, GT maps, the cache."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from openinsgaussian.data.camera import Camera, Distortion
from openinsgaussian.data.images import load_uint16
from openinsgaussian.data.load import load_scene
from openinsgaussian.data.scene import Frame, Scene
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.data.undistort import (
    META,
    _k_from_cv,
    _k_to_cv,
    is_distorted,
    pinhole_camera,
    undistort_points,
    undistort_scene,
    undistortion_maps,
)
from openinsgaussian.io import save_image

cv2 = pytest.importorskip("cv2")

LENS = (-0.2, 0.03, 0.001, -0.0005)


def _cam(distortion=None, w=64, h=48):
    return Camera.from_intrinsics(50.0, 52.0, 32.3, 23.8, w, h, np.eye(4), distortion=distortion)


def test_k_pixel_centre_conversion_by_hand():
    K = np.array([[50.0, 0, 32.0], [0, 52.0, 24.0], [0, 0, 1]])
    cv = _k_to_cv(K)
    assert cv[0, 2] == 31.5 and cv[1, 2] == 23.5 and cv[0, 0] == 50.0 and cv[1, 1] == 52.0
    np.testing.assert_array_equal(_k_from_cv(cv), K)
    # a point on the optical axis lands at our (cx, cy) = OpenCV's (cx - 0.5, cy - 0.5)
    uv, _ = cv2.projectPoints(np.array([[0.0, 0.0, 2.0]]), np.zeros(3), np.zeros(3), cv, None)
    np.testing.assert_allclose(uv.reshape(2) + 0.5, [32.0, 24.0])


def test_pinhole_camera_is_left_alone(tmp_path):
    cam = _cam()
    assert not is_distorted(cam) and pinhole_camera(cam) is cam
    np.testing.assert_allclose(undistort_points(cam, np.array([[32.3 + 50.0, 23.8]])), [[1.0, 0.0]])
    scene = Scene(tmp_path, "transforms", [Frame("a", cam, tmp_path / "a.png")], [])
    assert undistort_scene(scene, progress=False) is scene
    assert not (tmp_path / "undistorted").exists()


def _project_distorted(cam: Camera, X: np.ndarray) -> np.ndarray:
    """Our-convention pixels of camera-frame points ``X [N, 3]`` through the camera's lens."""
    d = cam.distortion
    K = _k_to_cv(cam.K.numpy())
    if d.model == "fisheye":
        uv, _ = cv2.fisheye.projectPoints(X.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K,
                                          np.asarray(d.coeffs, np.float64))
    else:
        uv, _ = cv2.projectPoints(X, np.zeros(3), np.zeros(3), K, np.asarray(d.coeffs, np.float64))
    return uv.reshape(-1, 2) + 0.5


@pytest.mark.parametrize("lens", [Distortion("opencv", LENS + (0.0,) * 4),
                                  Distortion("fisheye", (0.1, -0.02, 0.004, 0.0))])
def test_point_lands_where_new_pinhole_projects_it(lens):
    cam = _cam(lens)
    pin = pinhole_camera(cam)
    assert pin.distortion is None and (pin.width, pin.height) == (cam.width, cam.height)
    rng = np.random.default_rng(0)
    X = np.c_[rng.uniform(-0.35, 0.35, (50, 2)), np.full(50, 1.0)] * rng.uniform(1, 3, (50, 1))
    uv_d = _project_distorted(cam, X)  # [50, 2] in the distorted image
    Kp = pin.K.numpy()
    uv_p = (X[:, :2] / X[:, 2:]) * np.diag(Kp)[:2] + Kp[:2, 2]  # [50, 2] where the pinhole sees it
    inside = (uv_p > 1).all(1) & (uv_p < [cam.width - 2, cam.height - 2]).all(1)
    assert inside.sum() > 20
    # the undistortion maps sample the distorted image at the point's distorted pixel
    mx, my = undistortion_maps(cam, pin)
    p = uv_p[inside] - 0.5  # OpenCV pixel coords in the pinhole image
    sx = cv2.remap(mx, p[:, 0:1].astype(np.float32), p[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)
    sy = cv2.remap(my, p[:, 0:1].astype(np.float32), p[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)
    got = np.c_[sx.ravel(), sy.ravel()] + 0.5
    assert np.abs(got - uv_d[inside]).max() < 0.1
    # and undistort_points inverts the lens
    xn = undistort_points(cam, uv_d)
    np.testing.assert_allclose(xn, X[:, :2] / X[:, 2:], atol=1e-6)


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    cfg = SynthConfig(out=tmp_path_factory.mktemp("undist"), preset="tiny", seed=0, progress=False,
                      n_views=3, n_test_views=1, distortion=LENS)
    return generate_room(cfg)


def _copy(room: Path, tmp_path: Path) -> Path:
    dst = tmp_path / room.name
    shutil.copytree(room, dst, ignore=shutil.ignore_patterns("undistorted"))
    return dst


def test_gt_id_maps_stay_ids_and_files_are_pinhole(room, tmp_path):
    root = _copy(room, tmp_path)
    with pytest.warns(UserWarning, match="lens distortion"):
        dist = load_scene(root, undistort=False, progress=False)
    und = load_scene(root, undistort=True, progress=False)
    assert und.images_undistorted and not any(is_distorted(f.camera) for f in und.frames)
    assert not any(p.startswith("cameras carry lens distortion") for p in und.problems)
    for a, b in zip(dist.frames, und.frames):
        assert b.image_path.parent == root / "undistorted" / "color"
        for kind in ("instance", "label"):
            src, out = getattr(a, f"{kind}_path"), getattr(b, f"{kind}_path")
            if src is None:
                continue
            size = (a.camera.width, a.camera.height)
            ids_in = set(np.unique(load_uint16(src, size)).tolist())
            ids_out = set(np.unique(load_uint16(out, size)).tolist())
            assert ids_out <= ids_in | {0}, kind  # no blended ids
        assert b.load_rgb().shape == (a.camera.height, a.camera.width, 3)


def test_undistort_false_keeps_distorted_images_and_intrinsics(room, tmp_path):
    root = _copy(room, tmp_path)
    with pytest.warns(UserWarning):
        scene = load_scene(root, undistort=False, progress=False)
    assert scene.images_undistorted is False
    f = scene.frames[0]
    assert is_distorted(f.camera) and f.camera.distortion.coeffs[:4] == LENS
    assert f.image_path.parent.name != "undistorted" and not (root / "undistorted").exists()


def test_cache_is_reused_redone_and_resumed(room, tmp_path, monkeypatch):
    import openinsgaussian.data.undistort as U

    root = _copy(room, tmp_path)
    calls: list[str] = []
    real = U._remap_frame
    monkeypatch.setattr(U, "_remap_frame", lambda f, p, paths: (calls.append(f.name), real(f, p, paths)))
    first = load_scene(root, undistort=True, progress=False)
    names = sorted(f.name for f in first.frames)
    assert sorted(calls) == names
    calls.clear()
    load_scene(root, undistort=True, progress=False)
    assert calls == []  # second call does no work
    # a changed source image is redone
    with pytest.warns(UserWarning, match="lens distortion"):
        src = load_scene(root, undistort=False, progress=False).frames[0]
    rgb = src.load_rgb().copy()
    rgb[0, 0] = 255 - rgb[0, 0]
    save_image(src.image_path, rgb)
    os.utime(src.image_path, ns=(1, 1))
    load_scene(root, undistort=True, progress=False)
    assert calls == [src.name]
    # an interrupted run (meta lists only some frames, one output missing) completes
    calls.clear()
    meta_path = root / "undistorted" / META
    meta = json.loads(meta_path.read_text())
    dropped = names[1]
    del meta["frames"][dropped]
    meta_path.write_text(json.dumps(meta))
    (root / "undistorted" / "color" / f"{names[2]}.png").unlink()
    done = load_scene(root, undistort=True, progress=False)
    assert sorted(calls) == sorted([dropped, names[2]])
    assert set(json.loads(meta_path.read_text())["frames"]) == set(names)
    assert all(f.image_path.is_file() for f in done.frames)
    assert not list((root / "undistorted").rglob("*.tmp*"))


def test_info_prints_the_coefficients(room, capsys):
    from openinsgaussian.cli import main

    with pytest.warns(UserWarning):
        assert main(["info", str(room)]) == 0
    out = capsys.readouterr().out
    assert "opencv" in out and "-0.2" in out and "0.03" in out and "undistort" in out


def test_training_on_undistorted_capture_recovers_pinhole_quality(tmp_path):
    """Acceptance: a room captured through a known lens and undistorted on load trains as well as
    the same room captured with an ideal pinhole; training on the distorted images is worse.

    Every model is scored on the same held-out views: the undistorted test cameras (new pinhole K),
    with ground truth ray-cast through those pinhole cameras (no resampling blur in the target)."""
    import dataclasses

    import torch

    from openinsgaussian.data.synthetic import build_layout, render_view
    from openinsgaussian.train.photometric import psnr
    from openinsgaussian.train.stage0 import stage0_preset, train_stage0

    kw = dict(preset="tiny", seed=0, progress=False, n_views=8, n_test_views=2)
    lens_cfg = SynthConfig(out=tmp_path / "lens", distortion=(-0.3, 0.0, 0.0, 0.0), **kw)
    pin_cfg = SynthConfig(out=tmp_path / "pin", **kw)
    lens_root, pin_root = generate_room(lens_cfg), generate_room(pin_cfg)
    und = load_scene(lens_root, undistort=True, progress=False)
    with pytest.warns(UserWarning, match="lens distortion"):
        dist = load_scene(lens_root, undistort=False, progress=False)
    pin = load_scene(pin_root, progress=False)
    layout = build_layout(pin_cfg)
    targets = [(f.camera, render_view(layout, f.camera).rgb) for f in und.test_frames]
    cfg = dataclasses.replace(stage0_preset("synthetic"), iterations=300, eval=False,
                              save_renders=False, progress=False, checkpoint_every=10_000,
                              device="cpu")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = {}
        for name, scene in (("undistorted", und), ("pinhole", pin), ("distorted", dist)):
            model = train_stage0(scene, tmp_path / f"run_{name}", cfg)
            vals = []
            for cam, rgb in targets:
                with torch.no_grad():
                    img = model.render(cam, backend=cfg.backend).image.clamp(0, 1)  # [3, H, W]
                gt = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
                vals.append(float(psnr(img, gt)))
            scores[name] = sum(vals) / len(vals)
    finally:
        torch.set_num_threads(old)
    print("held-out PSNR on the undistorted views:", scores)
    assert scores["undistorted"] >= scores["pinhole"] - 0.5, scores
    assert scores["distorted"] < scores["undistorted"] - 1.0, scores
