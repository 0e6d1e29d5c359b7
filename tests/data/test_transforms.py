import json
import math

import numpy as np
import pytest

from openinsgaussian.data.camera import Distortion
from openinsgaussian.data.ply import write_points
from openinsgaussian.data.transforms import read_transforms
from openinsgaussian.errors import DataError
from openinsgaussian.io import save_image

W, H = 8, 6


def _c2w_gl(eye) -> list[list[float]]:
    """OpenGL camera-to-world at ``eye`` with identity rotation (looking down world -z)."""
    m = np.eye(4)
    m[:3, 3] = eye
    return m.tolist()


def _rgb(value: int, size=(W, H)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def _write_json(path, meta):
    path.write_text(json.dumps(meta))


def _blender_scene(root, *, rgba=True):
    """train: r_0 (RGB), r_1 (RGBA, half transparent); test: r_0 (a different file, same stem)."""
    save_image(root / "train" / "r_0.png", _rgb(200))
    img = np.zeros((H, W, 4), np.uint8)
    img[..., 0] = 255
    img[..., 3] = 128 if rgba else 255
    save_image(root / "train" / "r_1.png", img if rgba else img[..., :3])
    save_image(root / "test" / "r_0.png", _rgb(10))
    angle = 2 * math.atan(0.5 * W / 10.0)  # fx = 10
    _write_json(root / "transforms_train.json", {"camera_angle_x": angle, "frames": [
        {"file_path": "./train/r_0", "transform_matrix": _c2w_gl([0, 0, 4])},
        {"file_path": "./train/r_1", "transform_matrix": _c2w_gl([1, 0, 4])},
    ]})
    _write_json(root / "transforms_test.json", {"camera_angle_x": angle, "frames": [
        {"file_path": "./test/r_0", "transform_matrix": _c2w_gl([0, 1, 4])},
    ]})


def test_camera_angle_x_split_naming_and_opengl_pose(tmp_path):
    _blender_scene(tmp_path)
    scene = read_transforms(tmp_path)
    assert scene.source == "blender" and scene.points is None
    # Two files share the stem r_0, so frames are named by their relative path.
    assert [f.name for f in scene.train_frames] == ["train/r_0", "train/r_1"]
    assert [f.name for f in scene.test_frames] == ["test/r_0"]
    cam = scene.train_frames[0].camera
    assert (cam.width, cam.height) == (W, H)  # size read from the PNG header
    np.testing.assert_allclose([cam.fx, cam.fy, cam.cx, cam.cy], [10.0, 10.0, W / 2, H / 2])
    # Camera at z = 4 looking down -z: the origin is 4 in front, at the principal point.
    uv, z = cam.project(np.array([[0.0, 0.0, 0.0], [0.4, 0.2, 0.0]]))
    np.testing.assert_allclose(uv, [[W / 2, H / 2], [W / 2 + 1.0, H / 2 - 0.5]], atol=1e-12)
    np.testing.assert_allclose(z, [4.0, 4.0])
    np.testing.assert_allclose(scene.test_frames[0].camera.center.numpy(), [0, 1, 4])


def test_rgba_composited_on_background_and_downscale(tmp_path):
    _blender_scene(tmp_path)
    white = read_transforms(tmp_path)
    black = read_transforms(tmp_path, background=(0.0, 0.0, 0.0))
    a = 128 / 255
    expected_white = np.round([255, 255 * (1 - a), 255 * (1 - a)])
    np.testing.assert_array_equal(white.train_frames[1].load_rgb()[0, 0], expected_white)
    np.testing.assert_array_equal(black.train_frames[1].load_rgb()[0, 0], [128, 0, 0])
    assert white.train_frames[0].load_rgba_alpha() is None
    half = read_transforms(tmp_path, downscale=2.0)
    cam = half.train_frames[0].camera
    assert (cam.width, cam.height) == (W // 2, H // 2)
    np.testing.assert_allclose([cam.fx, cam.cx, cam.cy], [5.0, W / 4, H / 4])
    assert half.train_frames[1].load_rgb().shape == (H // 2, W // 2, 3)


def test_no_eval_split_merges_test_into_train(tmp_path):
    _blender_scene(tmp_path)
    scene = read_transforms(tmp_path, eval_split=False)
    assert len(scene.train_frames) == 3 and scene.test_frames == []


def test_fl_x_variant_per_frame_intrinsics_and_missing_image(tmp_path):
    for i in range(10):
        save_image(tmp_path / "images" / f"frame_{i:05d}.jpg", _rgb(20 * i, (16, 12)))
    frames = [{"file_path": f"images/frame_{i:05d}.jpg", "transform_matrix": _c2w_gl([i, 0, 4])} for i in range(10)]
    frames[3].update(fl_x=30.0, fl_y=31.0, cx=7.0, cy=5.0)  # per-frame override
    frames.append({"file_path": "images/frame_00099.jpg", "transform_matrix": _c2w_gl([0, 0, 1])})
    _write_json(tmp_path / "transforms.json", {"fl_x": 20.0, "w": 16, "h": 12, "frames": frames[::-1]})
    with pytest.warns(UserWarning, match="frame_00099"):
        scene = read_transforms(tmp_path)
    assert any("frame_00099" in p for p in scene.problems)
    # Single transforms.json: sorted by path, indices 0 and 8 held out.
    assert [f.name for f in scene.test_frames] == ["frame_00000", "frame_00008"]
    assert len(scene.train_frames) == 8
    cams = {f.name: f.camera for f in scene.frames}
    np.testing.assert_allclose([cams["frame_00001"].fx, cams["frame_00001"].fy, cams["frame_00001"].cx,
                                cams["frame_00001"].cy], [20.0, 20.0, 8.0, 6.0])
    np.testing.assert_allclose([cams["frame_00003"].fx, cams["frame_00003"].fy, cams["frame_00003"].cx,
                                cams["frame_00003"].cy], [30.0, 31.0, 7.0, 5.0])


def test_nerfstudio_distortion_points_and_image_size_mismatch(tmp_path):
    save_image(tmp_path / "images" / "a.png", _rgb(1, (16, 12)))
    save_image(tmp_path / "images" / "b.png", _rgb(2, (16, 12)))
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(20, 3)).astype(np.float32)
    write_points(tmp_path / "sparse_pc.ply", xyz, rng.integers(0, 256, (20, 3)))
    _write_json(tmp_path / "transforms.json", {
        # The json describes 32x24 images, the files are 16x12: intrinsics follow the files.
        "fl_x": 40.0, "fl_y": 44.0, "cx": 16.0, "cy": 12.0, "w": 32, "h": 24,
        "camera_model": "OPENCV", "k1": 0.1, "k2": -0.01, "p1": 0.001, "p2": 0.002,
        "ply_file_path": "sparse_pc.ply",
        "frames": [{"file_path": "images/a.png", "transform_matrix": _c2w_gl([0, 0, 3])},
                   {"file_path": "images/b.png", "transform_matrix": _c2w_gl([0, 0, 2]),
                    "camera_model": "OPENCV_FISHEYE", "k1": 0.2, "k2": 0.0, "k3": 0.0, "k4": 0.05}],
    })
    scene = read_transforms(tmp_path, eval_split=False)
    a, b = (f.camera for f in scene.train_frames)
    assert (a.width, a.height) == (16, 12)
    np.testing.assert_allclose([a.fx, a.fy, a.cx, a.cy], [20.0, 22.0, 8.0, 6.0])
    assert a.distortion == Distortion("opencv", (0.1, -0.01, 0.001, 0.002, 0.0, 0.0, 0.0, 0.0))
    assert b.distortion == Distortion("fisheye", (0.2, 0.0, 0.0, 0.05))
    np.testing.assert_array_equal(scene.points, xyz)
    assert scene.colors.shape == (20, 3)


def test_broken_folders_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no transforms file found"):
        read_transforms(tmp_path)
    _blender_scene(tmp_path)
    meta = json.loads((tmp_path / "transforms_train.json").read_text())

    meta["frames"][1]["transform_matrix"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    _write_json(tmp_path / "transforms_train.json", meta)
    with pytest.raises(DataError, match=r"frame 1: transform_matrix has shape \[3, 3\]") as e:
        read_transforms(tmp_path)
    assert "transforms_train.json" in str(e.value)

    meta["frames"][1]["transform_matrix"] = [["a", 0, 0, 0]] * 4
    _write_json(tmp_path / "transforms_train.json", meta)
    with pytest.raises(DataError, match="frame 1: transform_matrix is not a numeric"):
        read_transforms(tmp_path)

    (tmp_path / "transforms_train.json").write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON") as e:
        read_transforms(tmp_path)
    assert "transforms_train.json" in str(e.value)

    _write_json(tmp_path / "transforms_train.json", {"frames": [{"file_path": "./train/r_0",
                                                                 "transform_matrix": _c2w_gl([0, 0, 1])}]})
    with pytest.raises(DataError, match="frame 0: no focal length"):
        read_transforms(tmp_path)


def test_unreadable_image_names_the_file_when_loading(tmp_path):
    _blender_scene(tmp_path)
    noise = np.random.default_rng(0).integers(0, 256, (H, W, 3)).astype(np.uint8)
    save_image(tmp_path / "train" / "r_0.png", noise)
    data = (tmp_path / "train" / "r_0.png").read_bytes()
    (tmp_path / "train" / "r_0.png").write_bytes(data[: len(data) * 2 // 3])  # header intact, pixels cut
    scene = read_transforms(tmp_path)
    with pytest.raises(DataError, match="cannot decode image") as e:
        scene.train_frames[0].load_rgb()
    assert "r_0.png" in str(e.value)


def test_lego_origin_projects_onto_the_object(lego_dir):
    scene = read_transforms(lego_dir)
    assert len(scene.train_frames) == 100 and len(scene.test_frames) > 0
    for frame in scene.frames:
        cam = frame.camera
        uv, z = cam.project(np.zeros((1, 3)))
        u, v = int(np.floor(uv[0, 0])), int(np.floor(uv[0, 1]))
        assert z[0] > 0, frame.name
        assert 0 <= u < cam.width and 0 <= v < cam.height, (frame.name, uv)
        alpha = frame.load_rgba_alpha()
        assert alpha is not None and alpha[v, u] > 0, (frame.name, u, v)
