import json
import struct

import numpy as np
import pytest

from openinsgaussian.data.ply import write_points
from openinsgaussian.data.scannet import read_scannet
from openinsgaussian.errors import DataError
from openinsgaussian.io import save_image

W, H = 16, 12
N_POINTS = 6


def _pose(x: float) -> list[list[float]]:
    m = np.eye(4)
    m[:3, 3] = [x, 0.0, 3.0]
    return m.tolist()


def _labels_ply(path, labels, instances=None):
    """A ScanNet-like labels mesh: vertices (x, y, z, label[, instance]) then a face list."""
    n = len(labels)
    props = "property float x\nproperty float y\nproperty float z\nproperty ushort label\n"
    if instances is not None:
        props += "property ushort instance\n"
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n{props}"
              "element face 1\nproperty list uchar int vertex_indices\nend_header\n").encode()
    rows = b"".join(struct.pack("<fffH", 0, 0, 0, labels[i])
                    + (struct.pack("<H", instances[i]) if instances is not None else b"") for i in range(n))
    path.write_bytes(header + rows + struct.pack("<B3i", 3, 0, 1, 2))


def _scannet(root, *, n_labels=N_POINTS):
    names = ["000000", "000020", "000040", "000060"]
    for i, n in enumerate(names):
        save_image(root / "color" / f"{n}.jpg", np.full((H, W, 3), 40 * i, np.uint8))
    bad = _pose(0)
    bad[1][3] = float("nan")
    frames = [{"file_path": f"color/{n}", "transform_matrix": _pose(i)} for i, n in enumerate(names)]
    frames[2]["transform_matrix"] = bad
    frames[1].update(fl_x=25.0, fl_y=26.0, cx=7.5, cy=5.5)
    meta = {"w": W, "h": H, "fl_x": 20.0, "fl_y": 21.0, "cx": 8.0, "cy": 6.0}
    # json.dumps writes NaN as the bare token NaN, as Python-written ScanNet exports do.
    (root / "transforms_train.json").write_text(json.dumps({**meta, "frames": frames[:3]}))
    (root / "transforms_test.json").write_text(json.dumps({**meta, "frames": [frames[0], frames[3]]}))
    rng = np.random.default_rng(0)
    write_points(root / "points3d.ply", rng.normal(size=(N_POINTS, 3)), rng.integers(0, 256, (N_POINTS, 3)),
                 nx=np.zeros(N_POINTS, np.float32))
    extra = n_labels - N_POINTS
    _labels_ply(root / "scene0000_00_vh_clean_2.labels.ply", [1, 2, 5, 5, 0, 40][:n_labels] + [3] * extra,
                [1, 1, 2, 2, 0, 3][:n_labels] + [0] * extra)
    (root / "instances.json").write_text(json.dumps({"instances": [
        {"id": 1, "class": "wall", "nyu40": 1}, {"id": 2, "class": "chair", "nyu40": 5}]}))
    save_image(root / "depth" / "000000.png", np.full((H, W), 1500, np.uint16))
    save_image(root / "instance-filt" / "000000.png", np.full((H, W), 2, np.uint16))
    save_image(root / "label-filt" / "000000.png", np.full((H, W), 5, np.uint16))
    (root / "language_features").mkdir(exist_ok=True)
    np.save(root / "language_features" / "000020_s.npy", np.zeros((4, H, W), np.int16))
    np.save(root / "language_features" / "000020_f.npy", np.zeros((2, 8), np.float16))


def test_read_scannet_layout(tmp_path):
    _scannet(tmp_path)
    with pytest.warns(UserWarning, match="non-finite transform_matrix"):
        scene = read_scannet(tmp_path)
    assert scene.source == "scannet"
    assert [f.name for f in scene.train_frames] == ["000000", "000020"]  # 000040 has a NaN pose
    assert [f.name for f in scene.test_frames] == ["000000", "000060"]
    assert any("000040" in p for p in scene.problems)
    f0, f1 = scene.train_frames
    np.testing.assert_allclose([f0.camera.fx, f0.camera.fy, f0.camera.cx, f0.camera.cy], [20, 21, 8, 6])
    np.testing.assert_allclose([f1.camera.fx, f1.camera.fy, f1.camera.cx, f1.camera.cy], [25, 26, 7.5, 5.5])
    assert f0.background == (0.0, 0.0, 0.0)
    # Per-view GT maps and the SAM/CLIP cache are attached where they exist.
    np.testing.assert_allclose(f0.load_depth(), 1.5)
    assert (f0.load_instances() == 2).all() and (f0.load_labels() == 5).all()
    assert f1.depth_path is None and f1.load_labels() is None
    assert f1.masks_path.name == "000020_s.npy" and f1.features_path.name == "000020_f.npy"
    assert f0.masks_path is None
    # Point cloud and its GT.
    assert scene.points.shape == (N_POINTS, 3) and scene.colors.dtype == np.uint8
    assert scene.point_labels.tolist() == [1, 2, 5, 5, 0, 40] and scene.point_labels.dtype == np.int64
    assert scene.point_instances.tolist() == [1, 1, 2, 2, 0, 3]
    assert scene.instance_classes == {1: ("wall", 1), 2: ("chair", 5)}


def test_no_eval_split_has_no_test_frames_and_no_duplicates(tmp_path):
    _scannet(tmp_path)
    with pytest.warns(UserWarning):
        scene = read_scannet(tmp_path, eval_split=False, downscale=2.0)
    assert scene.test_frames == []
    assert [f.name for f in scene.train_frames] == ["000000", "000020", "000060"]
    cam = scene.train_frames[0].camera
    assert (cam.width, cam.height) == (W // 2, H // 2)
    assert scene.train_frames[0].load_labels().shape == (H // 2, W // 2)


def test_label_count_mismatch_names_both_files(tmp_path):
    _scannet(tmp_path, n_labels=N_POINTS + 2)
    with pytest.warns(UserWarning), pytest.raises(DataError) as e:
        read_scannet(tmp_path)
    msg = str(e.value)
    assert "scene0000_00_vh_clean_2.labels.ply" in msg and "points3d.ply" in msg
    assert f"{N_POINTS + 2} vertices" in msg and f"has {N_POINTS}" in msg


def test_broken_scannet_folders(tmp_path):
    with pytest.raises(DataError, match="no transforms_train.json"):
        read_scannet(tmp_path)
    _scannet(tmp_path)
    (tmp_path / "points3d.ply").unlink()
    with pytest.warns(UserWarning), pytest.raises(DataError, match="point cloud not found") as e:
        read_scannet(tmp_path)
    assert "points3d.ply" in str(e.value)
    _scannet(tmp_path)
    (tmp_path / "instances.json").write_text(json.dumps({"instances": [{"id": "x"}]}))
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"instances\[0\]") as e:
        read_scannet(tmp_path)
    assert "instances.json" in str(e.value)


def test_raw_scannet_label_ids_are_mapped_through_the_label_table(tmp_path):
    from openinsgaussian.data.scannet import LABEL_TSV, read_label_tsv
    from openinsgaussian.data.synthetic import SynthConfig, generate_room

    room = generate_room(SynthConfig(out=tmp_path, preset="tiny", seed=0, progress=False))
    raw = read_scannet(room).train_frames[0].load_labels()  # the room writes NYU40 ids
    assert read_scannet(room).problems == []  # a synthetic room's maps are NYU40: no warning
    (room / "synth.json").rename(room / "synth.json.bak")
    assert any(LABEL_TSV in p for p in read_scannet(room).problems)  # real-looking: warn
    # ScanNet's table lists raw ids with their NYU40 id; unlisted ids map to 0
    present = [int(v) for v in np.unique(raw) if v > 0]
    table = {present[0]: 7, present[1]: 0}  # the first present id -> table; the second: none
    rows = ["id\traw_category\tcategory\tcount\tnyu40id"]
    rows += [f"{k}\tthing\tthing\t1\t{v}" for k, v in table.items()] + ["999\tx\tx\t1\t3"]
    (tmp_path / LABEL_TSV).write_text("\n".join(rows) + "\n")  # the scene folder's parent
    mapped = read_scannet(room).train_frames[0].load_labels()
    expected = np.zeros_like(raw)
    expected[raw == present[0]] = 7
    np.testing.assert_array_equal(mapped, expected)
    assert read_label_tsv(tmp_path / LABEL_TSV)[999] == 3
    (tmp_path / LABEL_TSV).write_text("id,nyu40id\n1,2\n")  # not tab-separated
    with pytest.raises(DataError, match="'id' and 'nyu40id'"):
        read_scannet(room)
