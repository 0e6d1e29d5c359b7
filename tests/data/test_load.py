import json

import numpy as np
import pytest

from openinsgaussian.data.colmap import (ColmapCamera, ColmapImage, ColmapModel, ColmapPoints,
                                         write_colmap_model)
from openinsgaussian.data.load import detect_format, load_scene
from openinsgaussian.data.ply import write_points
from openinsgaussian.errors import DataError
from openinsgaussian.io import save_image

W, H = 8, 6


def _transforms(root):
    save_image(root / "images" / "a.png", np.zeros((H, W, 3), np.uint8))
    frame = {"file_path": "images/a", "transform_matrix": np.eye(4).tolist()}
    (root / "transforms_train.json").write_text(json.dumps({"fl_x": 10.0, "frames": [frame]}))


def _scannet(root):
    _transforms(root)
    write_points(root / "points3d.ply", np.zeros((3, 3)), np.zeros((3, 3), np.uint8))


def _colmap(root, binary):
    model = ColmapModel({1: ColmapCamera(1, "SIMPLE_PINHOLE", W, H, (10.0, 4.0, 3.0))},
                        {1: ColmapImage(1, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, "a.png")},
                        ColmapPoints(np.ones((2, 3)), np.zeros((2, 3), np.uint8), np.zeros(2), np.arange(2)))
    write_colmap_model(model, root / "sparse" / ("0" if binary else ""), binary=binary)
    save_image(root / "images" / "a.png", np.zeros((H, W, 3), np.uint8))


@pytest.mark.parametrize(("kind", "build", "background"), [
    ("transforms", _transforms, (1.0, 1.0, 1.0)),
    ("scannet", _scannet, (0.0, 0.0, 0.0)),
    ("colmap", lambda r: _colmap(r, True), (0.0, 0.0, 0.0)),
    ("colmap", lambda r: _colmap(r, False), (0.0, 0.0, 0.0)),
])
def test_autodetect_and_default_background(tmp_path, kind, build, background):
    build(tmp_path)
    assert detect_format(tmp_path) == kind
    scene = load_scene(tmp_path, eval_split=False)
    assert scene.source == {"transforms": "blender"}.get(kind, kind)
    assert scene.train_frames[0].background == background
    grey = load_scene(tmp_path, background=(0.5, 0.5, 0.5), eval_split=False)
    assert grey.train_frames[0].background == (0.5, 0.5, 0.5)


def test_explicit_format_and_json_path(tmp_path):
    _scannet(tmp_path)
    assert load_scene(tmp_path, format="transforms").source == "blender"
    assert load_scene(tmp_path / "transforms_train.json").source == "scannet"
    cam = load_scene(tmp_path, downscale=2.0).train_frames[0].camera
    assert (cam.width, cam.height) == (W // 2, H // 2)
    with pytest.raises(DataError, match="unknown scene format 'nerf'"):
        load_scene(tmp_path, format="nerf")


def test_unrecognised_folder_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError) as e:
        load_scene(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg
    for needle in ("transforms_train.json", "points3d.ply", "sparse/0/cameras.bin", "transforms.json"):
        assert needle in msg
    with pytest.raises(DataError, match="scene folder not found"):
        detect_format(tmp_path / "nope")
