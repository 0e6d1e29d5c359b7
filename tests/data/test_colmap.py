import math

import numpy as np
import pytest

from openinsgaussian.data.camera import Distortion
from openinsgaussian.data.colmap import (ColmapCamera, ColmapImage, ColmapModel, ColmapPoints,
                                         qvec_to_rotmat, read_colmap, read_colmap_model,
                                         rotmat_to_qvec,
                                         write_colmap_model)
from openinsgaussian.errors import DataError
from openinsgaussian.io import save_image

W, H = 16, 12
# (model, params) with distinct values so a wrong parameter order shows.
CAMERAS = [
    ("SIMPLE_PINHOLE", (20.0, 8.0, 6.0)),
    ("PINHOLE", (100.0, 120.0, 50.0, 40.0)),
    ("SIMPLE_RADIAL", (20.0, 8.0, 6.0, 0.01)),
    ("RADIAL", (20.0, 8.0, 6.0, 0.01, -0.002)),
    ("OPENCV", (21.0, 22.0, 8.5, 6.5, 0.1, -0.02, 0.001, -0.003)),
    ("FULL_OPENCV", (21.0, 22.0, 8.5, 6.5, 0.1, -0.02, 0.001, -0.003, 0.004, 0.05, -0.006, 0.007)),
    ("OPENCV_FISHEYE", (21.0, 22.0, 8.5, 6.5, 0.1, -0.02, 0.003, -0.004)),
    ("SIMPLE_RADIAL_FISHEYE", (20.0, 8.0, 6.0, 0.03)),
    ("RADIAL_FISHEYE", (20.0, 8.0, 6.0, 0.03, -0.001)),
]
EXPECTED_DISTORTION = {
    "SIMPLE_PINHOLE": None,
    "PINHOLE": None,
    "SIMPLE_RADIAL": Distortion("opencv", (0.01, 0, 0, 0, 0, 0, 0, 0)),
    "RADIAL": Distortion("opencv", (0.01, -0.002, 0, 0, 0, 0, 0, 0)),
    "OPENCV": Distortion("opencv", (0.1, -0.02, 0.001, -0.003, 0, 0, 0, 0)),
    "FULL_OPENCV": Distortion("opencv", (0.1, -0.02, 0.001, -0.003, 0.004, 0.05, -0.006, 0.007)),
    "OPENCV_FISHEYE": Distortion("fisheye", (0.1, -0.02, 0.003, -0.004)),
    "SIMPLE_RADIAL_FISHEYE": Distortion("fisheye", (0.03, 0, 0, 0)),
    "RADIAL_FISHEYE": Distortion("fisheye", (0.03, -0.001, 0, 0)),
}


def _quat(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def _model(n_images: int = 10) -> ColmapModel:
    rng = np.random.default_rng(0)
    cams = {i + 1: ColmapCamera(i + 1, m, W, H, p) for i, (m, p) in enumerate(CAMERAS)}
    images = {}
    for k in range(n_images):
        image_id = 100 + k
        npts = 0 if k == 3 else 4
        images[image_id] = ColmapImage(
            image_id, _quat(rng.normal(size=3), rng.uniform(0, 3)), rng.normal(size=3),
            camera_id=1 + k % len(CAMERAS), name=f"img_{9 - k:03d}.png",  # ids not in name order
            xys=rng.uniform(0, 16, (npts, 2)), point3d_ids=np.array([1, -1, 7, 2][:npts], np.int64))
    pts = ColmapPoints(xyz=rng.normal(size=(5, 3)), rgb=rng.integers(0, 256, (5, 3)).astype(np.uint8),
                       error=rng.uniform(0, 2, 5), ids=np.array([1, 2, 7, 9, 11], np.int64),
                       track_lengths=np.array([2, 0, 1, 3, 1]),
                       tracks=np.array([[100, 0], [101, 0], [102, 2], [100, 3], [104, 1], [105, 2], [109, 0]],
                                       np.int32))
    return ColmapModel(cams, images, pts)


def _assert_models_equal(a: ColmapModel, b: ColmapModel) -> None:
    assert a.cameras == b.cameras
    assert list(a.images) == list(b.images)
    for k in a.images:
        x, y = a.images[k], b.images[k]
        assert (x.id, x.camera_id, x.name) == (y.id, y.camera_id, y.name)
        for f in ("qvec", "tvec", "xys", "point3d_ids"):
            assert np.array_equal(getattr(x, f), getattr(y, f)), f
    for f in ("xyz", "rgb", "error", "ids", "track_lengths", "tracks"):
        assert np.array_equal(getattr(a.points3d, f), getattr(b.points3d, f)), f
    assert a.points3d.rgb.dtype == np.uint8


def test_text_binary_text_round_trip_is_exact(tmp_path):
    model = _model()
    write_colmap_model(model, tmp_path / "t1", binary=False)
    from_text = read_colmap_model(tmp_path / "t1")
    _assert_models_equal(model, from_text)
    write_colmap_model(from_text, tmp_path / "b", binary=True)
    from_bin = read_colmap_model(tmp_path / "b")
    _assert_models_equal(model, from_bin)
    write_colmap_model(from_bin, tmp_path / "t2", binary=False)
    for name in ("cameras.txt", "images.txt", "points3D.txt"):
        assert (tmp_path / "t1" / name).read_bytes() == (tmp_path / "t2" / name).read_bytes(), name
    # The image with no observations keeps its (empty) second line.
    assert "\n\n" in (tmp_path / "t1" / "images.txt").read_text()


def test_qvec_convention_against_hand_projection(tmp_path):
    # 90 degrees about z: R = [[0,-1,0],[1,0,0],[0,0,1]], t = (0.1, -0.2, 3).
    q = np.array([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    np.testing.assert_allclose(qvec_to_rotmat(q), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    model = ColmapModel(
        {1: ColmapCamera(1, "PINHOLE", 100, 80, (100.0, 120.0, 50.0, 40.0))},
        {1: ColmapImage(1, q, np.array([0.1, -0.2, 3.0]), 1, "a.png")},
        ColmapPoints(np.array([[0.5, 0.2, 1.0]]), np.array([[1, 2, 3]], np.uint8), np.zeros(1), np.array([1])))
    write_colmap_model(model, tmp_path / "sparse" / "0", binary=True)
    save_image(tmp_path / "images" / "a.png", np.zeros((80, 100, 3), np.uint8))
    scene = read_colmap(tmp_path, eval_split=False)
    cam = scene.train_frames[0].camera
    # R X = (-0.2, 0.5, 1.0); + t = (-0.1, 0.3, 4.0); u = 100 * -0.1/4 + 50, v = 120 * 0.3/4 + 40.
    uv, z = cam.project(scene.points)
    np.testing.assert_allclose(uv[0], [47.5, 49.0], atol=1e-5)
    np.testing.assert_allclose(z, [4.0], atol=1e-6)
    np.testing.assert_allclose(cam.center.numpy(), -qvec_to_rotmat(q).T @ [0.1, -0.2, 3.0], atol=1e-12)
    assert scene.colors.tolist() == [[1, 2, 3]]


def _write_scene(root, model, *, skip=(), size=(W, H), folder="images"):
    write_colmap_model(model, root / "sparse" / "0", binary=True)
    for im in model.images.values():
        if im.name not in skip:
            save_image(root / folder / im.name, np.full((size[1], size[0], 3), 128, np.uint8))


def test_read_colmap_split_distortion_and_missing_images(tmp_path):
    model = _model()
    _write_scene(tmp_path, model, skip={"img_004.png"})
    (tmp_path / "language_features").mkdir()
    np.save(tmp_path / "language_features" / "img_002_s.npy", np.zeros((4, 2, 2)))
    np.save(tmp_path / "language_features" / "img_002_f.npy", np.zeros((1, 8)))
    with pytest.warns(UserWarning, match="img_004.png"):
        scene = read_colmap(tmp_path)
    assert scene.source == "colmap"
    # Sorted names img_000..img_009: indices 0 and 8 are test; img_004 (index 4) is missing.
    assert [f.name for f in scene.test_frames] == ["img_000", "img_008"]
    assert [f.name for f in scene.train_frames] == [f"img_{i:03d}" for i in (1, 2, 3, 5, 6, 7, 9)]
    assert any("img_004.png" in p for p in scene.problems)
    by_name = {im.name: im for im in model.images.values()}
    for f in scene.frames:
        im = by_name[f.name + ".png"]
        cam_model = model.cameras[im.camera_id].model
        assert f.camera.distortion == EXPECTED_DISTORTION[cam_model], cam_model
        np.testing.assert_allclose(f.camera.world_to_cam.numpy()[:3, :3], qvec_to_rotmat(im.qvec))
        np.testing.assert_allclose(f.camera.world_to_cam.numpy()[:3, 3], im.tvec)
        assert (f.camera.width, f.camera.height) == (W, H)
    f2 = next(f for f in scene.frames if f.name == "img_002")
    assert f2.masks_path.name == "img_002_s.npy" and f2.features_path.name == "img_002_f.npy"
    assert scene.train_frames[0].masks_path is None
    assert scene.points.shape == (5, 3) and scene.points.dtype == np.float32


def test_read_colmap_camera_follows_image_size_and_downscale(tmp_path):
    model = ColmapModel({1: ColmapCamera(1, "PINHOLE", 32, 24, (40.0, 44.0, 16.0, 12.0))},
                        {i: ColmapImage(i, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, f"{i}.png") for i in range(3)},
                        ColmapPoints(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0),
                                     np.zeros(0, np.int64)))
    _write_scene(tmp_path, model, size=(16, 12), folder="images_2")
    scene = read_colmap(tmp_path, images_dir="images_2", eval_split=False)
    cam = scene.train_frames[0].camera
    assert (cam.width, cam.height) == (16, 12)
    np.testing.assert_allclose([cam.fx, cam.fy, cam.cx, cam.cy], [20.0, 22.0, 8.0, 6.0])
    assert len(scene.train_frames) == 3 and scene.test_frames == []
    assert scene.points is None and any("no 3D points" in p for p in scene.problems)
    cam = read_colmap(tmp_path, images_dir="images_2", downscale=2.0).train_frames[0].camera
    assert (cam.width, cam.height) == (8, 6)
    np.testing.assert_allclose([cam.fx, cam.cx], [10.0, 4.0])
    with pytest.raises(DataError, match="image folder not found"):
        read_colmap(tmp_path)


def test_unsupported_model_and_broken_files_name_the_problem(tmp_path):
    model = _model(n_images=2)
    model.cameras[1] = ColmapCamera(1, "FOV", W, H, (20.0, 20.0, 8.0, 6.0, 0.5))
    _write_scene(tmp_path, model)
    with pytest.raises(DataError, match="FOV") as e:
        read_colmap(tmp_path)
    assert "images.bin" in str(e.value)

    data = (tmp_path / "sparse" / "0" / "points3D.bin").read_bytes()
    (tmp_path / "sparse" / "0" / "points3D.bin").write_bytes(data[:-5])
    with pytest.raises(DataError, match="truncated") as e:
        read_colmap_model(tmp_path / "sparse" / "0")
    assert "points3D.bin" in str(e.value)

    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "cameras.txt").write_text("# c\n1 PINHOLE 16 12 20 20 8\n")
    with pytest.raises(DataError, match="PINHOLE takes 4 parameters") as e:
        read_colmap_model(tmp_path / "txt")
    assert "cameras.txt" in str(e.value)

    with pytest.raises(DataError, match="no COLMAP model found"):
        read_colmap(tmp_path / "txt" / "nothing")


@pytest.mark.parametrize("seed", range(6))
def test_rotmat_to_qvec_inverts_qvec_to_rotmat(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    q = q / np.linalg.norm(q) * (1 if q[0] >= 0 else -1)  # the canonical sign: w >= 0
    np.testing.assert_allclose(rotmat_to_qvec(qvec_to_rotmat(q)), q, atol=1e-12)


def test_rotmat_to_qvec_hand_cases():
    # identity; 90 degrees about z: q = (cos 45, 0, 0, sin 45); 180 degrees about x: w = 0
    np.testing.assert_allclose(rotmat_to_qvec(np.eye(3)), [1, 0, 0, 0], atol=1e-15)
    rz = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    s = math.sqrt(0.5)
    np.testing.assert_allclose(rotmat_to_qvec(rz), [s, 0, 0, s], atol=1e-15)
    q = rotmat_to_qvec(np.diag([1.0, -1.0, -1.0]))
    assert abs(q[0]) < 1e-15 and abs(abs(q[1]) - 1) < 1e-15
    with pytest.raises(ValueError, match="3x3"):
        rotmat_to_qvec(np.eye(4))
    with pytest.raises(ValueError, match="not a rotation"):
        rotmat_to_qvec(np.diag([1.0, 1.0, -1.0]))  # a reflection
    with pytest.raises(ValueError, match="not a rotation"):
        rotmat_to_qvec(2.0 * np.eye(3))


def test_read_colmap_attaches_optional_gt_maps_and_instance_classes(tmp_path):
    cam = ColmapCamera(1, "PINHOLE", W, H, (20.0, 20.0, 8.0, 6.0))
    images = {i: ColmapImage(i, np.array([1.0, 0, 0, 0]), np.array([0.0, 0, 2.0 + i]), 1,
                             f"frame_{i:05d}.png") for i in (1, 2)}
    write_colmap_model(ColmapModel({1: cam}, images, ColmapPoints(
        np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0), np.zeros(0, np.int64))),
        tmp_path / "sparse" / "0")
    for i in (1, 2):
        save_image(tmp_path / "images" / f"frame_{i:05d}.png", np.zeros((H, W, 3), np.uint8))
    save_image(tmp_path / "instance-filt" / "frame_00002.png", np.full((H, W), 3, np.uint16))
    (tmp_path / "instances.json").write_text('{"instances": [{"id": 3, "class": "sink", "nyu40": 34}]}')
    scene = read_colmap(tmp_path, eval_split=False)
    by = {f.name: f for f in scene.train_frames}
    assert by["frame_00001"].instance_path is None and by["frame_00001"].label_path is None
    assert by["frame_00002"].instance_path == tmp_path / "instance-filt" / "frame_00002.png"
    assert (by["frame_00002"].load_instances() == 3).all()
    assert scene.instance_classes == {3: ("sink", 34)}
    # a foreign instances.json is reported, not fatal: the ground truth is optional here
    (tmp_path / "instances.json").write_text('{"objects": []}')
    with pytest.warns(UserWarning, match="instance classes ignored"):
        scene = read_colmap(tmp_path, eval_split=False)
    assert scene.instance_classes == {} and len(scene.train_frames) == 2
    assert any("instances.json" in p for p in scene.problems)
