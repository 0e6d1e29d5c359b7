"""A synthetic room written in the LeRF-OVS layout: hull / area hand cases, the COLMAP scene reads
back with the room's cameras, images and GT maps, and the annotations cover every visible object."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from openinsgaussian.data.lerf import category_masks, rasterize_polygon, read_lerf_labels
from openinsgaussian.data.load import detect_format, load_scene
from openinsgaussian.data.scannet import read_scannet
from openinsgaussian.data.synthetic import SynthConfig, generate_room
from openinsgaussian.data.synthetic_lerf import (
    LerfLayoutConfig,
    convex_hull,
    mask_polygon,
    polygon_area,
    write_lerf_layout,
)
from openinsgaussian.errors import ConfigError, DataError


def test_convex_hull_drops_interior_and_collinear_points():
    pts = [(0, 0), (2, 0), (4, 0), (4, 3), (0, 3), (2, 1), (1, 2), (0, 3)]
    hull = convex_hull(np.array(pts))
    assert sorted(map(tuple, hull.tolist())) == [(0, 0), (0, 3), (4, 0), (4, 3)]
    # consistent orientation: positive signed area in (x right, y down) image axes
    x, y = hull[:, 0].astype(float), hull[:, 1].astype(float)
    assert np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0
    assert convex_hull(np.array([(1, 1), (1, 1)])).tolist() == [[1, 1]]


def test_polygon_area_hand_cases():
    assert polygon_area(np.array([(0, 0), (4, 0), (4, 3), (0, 3)])) == 12.0
    assert polygon_area(np.array([(0, 0), (3, 0), (0, 4)])) == 6.0  # 3-4-5 triangle
    assert polygon_area(np.array([(0, 0), (1, 1)])) == 0.0


def test_mask_polygon_rasterises_to_a_superset_of_the_mask():
    h, w = 20, 24
    yy, xx = np.mgrid[:h, :w]
    rect = (xx >= 3) & (xx <= 17) & (yy >= 5) & (yy <= 12)
    assert mask_polygon(rect).tolist() == [[3, 5], [17, 5], [17, 12], [3, 12]]
    assert (rasterize_polygon(mask_polygon(rect), w, h) == rect).all()  # exact for a box
    disc = (xx - 11.3) ** 2 + (yy - 9.6) ** 2 <= 36.0
    # L shape, notch x 11..17, y 5..8 removed: the hull edge (10,5)-(17,9) encloses 9 notch lattice
    # points (x = 11..15: 3, 2, 2, 1, 1) and cv2's outline of that edge 3 more
    ell = rect & ~((xx > 10) & (yy < 9))
    for mask, extra in ((disc, 2), (ell, 12)):
        poly = mask_polygon(mask)
        got = rasterize_polygon(poly, w, h)  # cv2.fillPoly rules
        assert (got | ~mask).all()  # contains every pixel of the mask
        # disc: cv2's 8-connected outline of a slanted edge takes 2 lattice points off the disc
        assert int((got & ~mask).sum()) == extra
    assert mask_polygon(np.zeros((4, 4), bool)).shape == (0, 2)


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    return generate_room(
        SynthConfig(out=tmp_path_factory.mktemp("rooms"), preset="tiny", seed=0, progress=False)
    )


def test_room_in_lerf_layout_reads_back_with_the_same_cameras_images_and_gt(room, tmp_path):
    dest = write_lerf_layout(room, tmp_path / "lerf_ovs", progress=False)
    assert dest == tmp_path / "lerf_ovs" / room.name
    assert detect_format(dest) == "colmap"
    scene = load_scene(dest)
    src = read_scannet(room)
    before = sorted(src.train_frames + src.test_frames, key=lambda f: f.name)
    after = sorted(scene.train_frames + scene.test_frames, key=lambda f: f.name)
    assert [f.name for f in after] == [f"frame_{i:05d}" for i in range(1, len(before) + 1)]
    # COLMAP split: every 8th image by name is held out
    assert [f.name for f in scene.test_frames] == ["frame_00001", "frame_00009"]
    for a, b in zip(before, after):
        np.testing.assert_allclose(b.camera.world_to_cam, a.camera.world_to_cam, atol=1e-6)
        assert (b.camera.width, b.camera.height) == (a.camera.width, a.camera.height)
        assert (b.camera.fx, b.camera.cx) == pytest.approx((a.camera.fx, a.camera.cx))
        assert (b.load_rgb() == a.load_rgb()).all()
        assert (b.load_instances() == a.load_instances()).all()
        assert (b.load_labels() == a.load_labels()).all()
    assert scene.instance_classes == src.instance_classes
    np.testing.assert_allclose(scene.points, src.points, atol=1e-6)
    assert (scene.colors == src.colors).all()


def test_annotations_cover_every_visible_object(room, tmp_path):
    cfg = LerfLayoutConfig(label_frames=3)
    dest = write_lerf_layout(room, tmp_path, scene="kitchen", cfg=cfg, progress=False)
    labels = read_lerf_labels(tmp_path / "label", "kitchen")
    assert list(labels) == ["frame_00001", "frame_00005", "frame_00010"]  # evenly spaced
    scene = load_scene(dest)
    frames = {f.name: f for f in scene.train_frames + scene.test_frames}
    classes = scene.instance_classes
    for name, ann in labels.items():
        raw = json.loads((tmp_path / "label" / "kitchen" / f"{name}.json").read_text())
        assert raw["info"]["name"] == frames[name].image_path.name
        inst = frames[name].load_instances()
        h, w = inst.shape
        assert (ann.width, ann.height) == (w, h)
        visible = {
            classes[i][0] for i, n in zip(*np.unique(inst, return_counts=True))
            if i > 0 and classes[i][0] not in ("wall", "floor")
            and n >= cfg.min_area_fraction * h * w
        }
        assert set(ann.categories) == visible and visible
        for cat, mask in category_masks(ann).items():
            ids = [i for i, (c, _) in classes.items() if c == cat]
            seen = np.isin(inst, ids)
            assert not (seen & ~mask).any(), (name, cat)  # polygons contain the visible pixels
        for obj, o in zip(ann.objects, raw["objects"]):
            assert o["area"] == pytest.approx(polygon_area(np.array(o["segmentation"])))
            x1, y1, x2, y2 = o["bbox"]
            seg = np.array(o["segmentation"])
            assert (x1, y1) == tuple(seg.min(axis=0)) and (x2, y2) == tuple(seg.max(axis=0))


def test_layout_is_idempotent_and_refuses_other_folders(room, tmp_path):
    dest = write_lerf_layout(room, tmp_path, progress=False)
    stamp = dest / "lerf_layout.json"
    t0 = stamp.stat().st_mtime_ns
    assert write_lerf_layout(room, tmp_path, progress=False) == dest
    assert stamp.stat().st_mtime_ns == t0  # complete and unchanged: kept
    write_lerf_layout(room, tmp_path, cfg=LerfLayoutConfig(label_frames=2), progress=False)
    assert len(read_lerf_labels(tmp_path / "label", room.name)) == 2  # stale labels removed
    # a file missing from a stamped output is noticed and the output is rewritten
    shutil.rmtree(tmp_path / "label" / room.name)
    write_lerf_layout(room, tmp_path, cfg=LerfLayoutConfig(label_frames=2), progress=False)
    assert len(read_lerf_labels(tmp_path / "label", room.name)) == 2
    (dest / "images" / "frame_00003.png").unlink()
    write_lerf_layout(room, tmp_path, cfg=LerfLayoutConfig(label_frames=2), progress=False)
    assert (dest / "images" / "frame_00003.png").is_file()
    t1 = stamp.stat().st_mtime_ns
    write_lerf_layout(room, tmp_path, cfg=LerfLayoutConfig(label_frames=2), progress=False,
                      overwrite=True)
    assert stamp.stat().st_mtime_ns != t1  # overwrite rewrites a complete output
    with pytest.raises(DataError, match="not a synthetic room"):
        write_lerf_layout(tmp_path / "label", tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="label_frames"):
        LerfLayoutConfig(label_frames=0)
