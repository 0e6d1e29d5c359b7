from pathlib import Path

import numpy as np
import pytest

from openinsgaussian.data.camera import Camera, Distortion
from openinsgaussian.data.scene import Frame, Scene
from openinsgaussian.errors import DataError


def _frame(name, distortion=None, x=0.0):
    w2c = np.eye(4)
    w2c[0, 3] = x
    cam = Camera.from_intrinsics(50, 50, 16, 12, 32, 24, w2c, distortion=distortion)
    return Frame(name=name, camera=cam, image_path=Path(f"{name}.png"))


def test_distorted_cameras_are_reported_as_a_problem():
    with pytest.warns(UserWarning, match="undistort"):
        scene = Scene(Path("s"), "colmap", [_frame("a", Distortion("opencv", (0.1,) + (0.0,) * 7))], [])
    assert any("pinhole" in p for p in scene.problems)


def test_scene_summary_bounds_and_extent():
    pts = np.array([[0, 0, 0], [1, 2, 3]], np.float32)
    scene = Scene(Path("s"), "scannet", [_frame("a", x=0.0), _frame("b", x=2.0)], [], points=pts,
                  colors=np.zeros((2, 3), np.uint8), point_labels=np.array([1, 2]))
    s = scene.summary()
    assert s["points"] == 2 and s["label_counts"] == {1: 1, 2: 1} and s["problems"] == []
    np.testing.assert_allclose(s["bounds_max"], [1, 2, 3])
    assert scene.camera_extent() == pytest.approx(1.1 * 1.0)


def test_scene_rejects_label_count_mismatch_and_empty_training_set():
    with pytest.raises(DataError, match="point_labels"):
        Scene(Path("s"), "scannet", [_frame("a")], [], points=np.zeros((3, 3)), point_labels=np.zeros(2))
    with pytest.raises(DataError, match="no usable training frames"):
        Scene(Path("s"), "scannet", [], [])
