"""The procedural room: geometry equations, the on-disk ScanNet layout, and the axis convention."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from openinsgaussian.data.scannet import read_scannet
from openinsgaussian.data.synthetic import (
    NYU40_IDS,
    Instance,
    Primitives,
    SynthConfig,
    build_layout,
    generate_room,
    inside_mask,
    intersect,
    render_view,
    sample_surface_points,
    shade,
)
from openinsgaussian.errors import ConfigError


def _tiny(out: Path, seed: int = 0, **kw) -> SynthConfig:
    return SynthConfig(out=out, preset="tiny", seed=seed, progress=False, **kw)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate_room(_tiny(tmp_path_factory.mktemp("synth")))


@pytest.fixture(scope="module")
def tiny_scene(tiny_root: Path):
    return read_scannet(tiny_root, eval_split=True)


def _digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ---- the convention test ------------------------------------------------------------------------
def _match_rate(scene, shift=(0.0, 0.0)) -> tuple[float, int, float]:
    """Among GT points visible in a view (in the image, z > 0, depth agrees with the GT depth map),
    the fraction whose pixel's GT instance is the point's own; plus the count and the median signed
    difference between the point's camera z and the GT depth at its pixel."""
    pts = scene.points.astype(np.float64)
    good = total = 0
    dz_all = []
    for f in scene.frames:
        cam = f.camera
        depth, inst = f.load_depth(), f.load_instances()
        uv, z = cam.project(pts)
        uv = uv + np.asarray(shift)
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        idx = np.nonzero((z > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height))[0]
        d = depth[v[idx], u[idx]]
        dz = np.abs(z[idx] - d)
        vis = idx[dz < 0.01 * d + 0.005]  # 1 % of depth + 5 mm (the PNG stores whole millimetres)
        same = inst[v[vis], u[vis]] == scene.point_instances[vis]
        good += int(same.sum())
        total += len(vis)
        dz_all.append((z[vis] - depth[v[vis], u[vis]])[same])
    return good / total, total, float(np.median(np.concatenate(dz_all)))


def test_gt_points_project_onto_their_own_instance(tiny_scene):
    """Poses (OpenGL c2w in json), pixel centres (+0.5), depth (camera z, mm) and instance maps agree."""
    scene = tiny_scene
    assert scene.point_instances is not None and len(scene.test_frames) == 2 and len(scene.train_frames) == 8
    rate, n_visible, median_dz = _match_rate(scene)
    assert n_visible > 2000  # most points are seen several times
    assert rate >= 0.98, f"only {rate:.2%} of visible points land on their own instance"
    assert abs(median_dz) < 0.003  # depth is camera z (a range map would read several cm too far)
    # The misses are the sub-pixel band along edges where depth is continuous (contacts, corners):
    # moving every projection by half a pixel makes them more frequent on average.
    shifted = [_match_rate(scene, s)[0] for s in ((0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5))]
    assert np.mean(shifted) < rate


def _unproject_misses(layout, frames) -> tuple[float, int]:
    """Fraction of hit pixels whose centre, lifted to 3D with the depth map, is not on the
    surface of the instance that the instance map names (1 mm tolerance); and the hit count."""
    miss = total = 0
    for f in frames:
        o, d = f.camera.rays()  # [H,W,3] through pixel centres
        depth, inst = f.load_depth(), f.load_instances()
        forward = f.camera.cam_to_world.numpy()[:3, 2]
        hit = depth > 0
        X = o[hit] + d[hit] * (depth[hit] / (d[hit] @ forward))[:, None]  # [N,3]
        ids = inst[hit]
        on_own = np.zeros(len(X), dtype=bool)
        for k in np.unique(ids):
            sel = layout.prims.instance == k
            own = Primitives(*(getattr(layout.prims, a)[sel] for a in ("kind", "center", "half", "yaw", "instance")))
            on_own[ids == k] = inside_mask(own, X[ids == k], 0.001)
        buried = inside_mask(layout.prims, X, -0.001)
        miss += int((~on_own | buried).sum())
        total += len(X)
    return miss / total, total


def test_depth_maps_lift_pixel_centres_onto_the_analytic_surface(tiny_root, tiny_scene):
    """Sub-pixel check of intrinsics and pose as read back: a half-pixel error in cx or cy moves the
    lifted points off slanted surfaces (floor, walls seen at an angle) by centimetres."""
    layout = build_layout(_tiny(tiny_root.parent))
    frac, n = _unproject_misses(layout, tiny_scene.frames)
    assert n > 25_000 and frac < 0.001


def test_written_poses_are_opengl_camera_to_world(tiny_root, tiny_scene):
    cfg = _tiny(tiny_root.parent)
    views = {v.name: v for v in build_layout(cfg).views}
    for f in tiny_scene.frames:
        np.testing.assert_allclose(f.camera.world_to_cam.numpy(), views[f.name].camera.world_to_cam.numpy(), atol=1e-9)
    data = json.loads((tiny_root / "transforms_train.json").read_text())
    assert {"w", "h", "fl_x", "fl_y", "cx", "cy", "frames"} <= set(data)
    assert data["fl_x"] == data["fl_y"] and (data["w"], data["h"]) == (64, 48)
    fov = 2 * math.degrees(math.atan(data["w"] / 2 / data["fl_x"]))
    assert 60 <= fov <= 70
    frame = data["frames"][0]
    assert frame["file_path"] == f"color/{frame['file_path'].split('/')[-1]}" and "." not in frame["file_path"]
    c2w_gl = np.array(frame["transform_matrix"])
    c2w_cv = views[frame["file_path"].split("/")[-1]].camera.cam_to_world.numpy()
    np.testing.assert_allclose(c2w_gl[:, 0], c2w_cv[:, 0], atol=1e-12)
    np.testing.assert_allclose(c2w_gl[:, 1:3], -c2w_cv[:, 1:3], atol=1e-12)
    # Test views are interleaved along the path, not copies of training views.
    train_c = np.stack([f.camera.center.numpy() for f in tiny_scene.train_frames])
    for f in tiny_scene.test_frames:
        assert np.linalg.norm(train_c - f.camera.center.numpy(), axis=1).min() > 0.05


def test_png_maps_match_the_ray_caster(tiny_root, tiny_scene):
    layout = build_layout(_tiny(tiny_root.parent))
    for f in tiny_scene.frames:
        r = render_view(layout, f.camera)
        np.testing.assert_allclose(f.load_depth(), r.depth, atol=6e-4)  # millimetre rounding
        assert (f.load_depth() > 0).mean() > 0.8
        assert np.array_equal(f.load_instances(), r.instance)
        assert np.array_equal(f.load_labels(), r.label)
        assert np.array_equal(f.load_rgb(), r.rgb)


def test_point_labels_and_colours_match_the_instances(tiny_root, tiny_scene):
    scene = tiny_scene
    table = json.loads((tiny_root / "instances.json").read_text())
    assert table["scene"] == "synth_tiny_0" and table["seed"] == 0 and table["preset"] == "tiny"
    classes = {d["id"]: (d["class"], d["nyu40"]) for d in table["instances"]}
    assert classes == scene.instance_classes
    assert [c for _, (c, _) in sorted(classes.items())][:5] == ["wall"] * 4 + ["floor"]
    assert all(NYU40_IDS[c] == n for c, n in classes.values())
    assert set(np.unique(scene.point_instances)) == set(classes)  # every instance has points
    expected = np.array([classes[int(i)][1] for i in scene.point_instances])
    assert np.array_equal(scene.point_labels, expected)
    assert (tiny_root / "synth_tiny_0_vh_clean_2.labels.ply").is_file()
    # Points carry the colour of the pixels they are seen in (same shading function).
    pts = scene.points.astype(np.float64)
    diffs = []
    for f in scene.frames:
        uv, z = f.camera.project(pts)
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        idx = np.nonzero((z > 0) & (u >= 0) & (u < 64) & (v >= 0) & (v < 48))[0]
        d, inst, rgb = f.load_depth(), f.load_instances(), f.load_rgb().astype(int)
        idx = idx[(np.abs(z[idx] - d[v[idx], u[idx]]) < 0.005) & (inst[v[idx], u[idx]] == scene.point_instances[idx])]
        diffs.append(np.abs(rgb[v[idx], u[idx]] - scene.colors[idx].astype(int)).mean(axis=1))
    diffs = np.concatenate(diffs)
    assert np.median(diffs) <= 1.0 and diffs.mean() < 4.0


def test_every_instance_is_seen_in_two_views(tiny_scene):
    counts = {i: 0 for i in tiny_scene.instance_classes}
    for f in tiny_scene.frames:
        ids, n = np.unique(f.load_instances(), return_counts=True)
        for i, c in zip(ids, n):
            if i and c >= 5:
                counts[int(i)] += 1
    assert all(c >= 2 for c in counts.values()), counts
    assert 3 <= len(counts) - 5 <= 4  # tiny: 3-4 objects besides 4 walls and the floor


def test_points_lie_on_visible_outer_surfaces(tiny_scene, tiny_root):
    layout = build_layout(_tiny(tiny_root.parent))
    Lx, Ly, Hw = layout.room
    p = tiny_scene.points.astype(np.float64)
    tol = 1e-4
    assert (p[:, 2] >= -tol).all() and (p[:, 2] <= Hw + tol).all()
    assert (p[:, 0] >= -tol).all() and (p[:, 0] <= Lx + tol).all()
    assert (p[:, 1] >= -tol).all() and (p[:, 1] <= Ly + tol).all()
    # Shrunk by 2 mm, no primitive contains any sample: none is buried in a contact or an overlap.
    assert not inside_mask(layout.prims, p, -0.002).any()


# ---- determinism and reuse ----------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_scene(tiny_root, tmp_path):
    again = generate_room(_tiny(tmp_path / "a"))
    ref, new = _digest(tiny_root), _digest(again)
    assert ref == new
    other = _digest(generate_room(_tiny(tmp_path / "b", seed=1)))
    for key in ("points3d.ply", "color/000000.png"):
        assert other[key] != ref[key]
    assert other["synth_tiny_1_vh_clean_2.labels.ply"] != ref["synth_tiny_0_vh_clean_2.labels.ply"]


def test_complete_folder_is_reused_and_repaired(tmp_path):
    root = generate_room(_tiny(tmp_path))
    stamp = root / "synth.json"
    t0 = stamp.stat().st_mtime_ns
    assert generate_room(_tiny(tmp_path)) == root
    assert stamp.stat().st_mtime_ns == t0  # nothing rewritten
    before = _digest(root)
    (root / "depth" / "000003.png").unlink()  # an incomplete folder is regenerated
    generate_room(_tiny(tmp_path))
    assert _digest(root) == before
    os.utime(stamp, ns=(0, 0))
    generate_room(_tiny(tmp_path, overwrite=True))
    assert stamp.stat().st_mtime_ns != 0 and _digest(root) == before
    with pytest.raises(ConfigError, match="another configuration"):
        generate_room(_tiny(tmp_path, n_points=500))


def test_foreign_folder_is_not_overwritten(tmp_path):
    scene = tmp_path / "synth_tiny_0"
    scene.mkdir()
    (scene / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="overwrite"):
        generate_room(_tiny(tmp_path))
    generate_room(_tiny(tmp_path, overwrite=True))
    assert (scene / "notes.txt").read_text() == "mine"  # only the generator's own files are replaced


# ---- presets and layout -------------------------------------------------------------------------
def test_default_preset_statistics_without_rendering(tmp_path):
    cfg = SynthConfig(out=tmp_path, preset="default", seed=0)
    assert (cfg.n_views, cfg.n_test_views, cfg.width, cfg.height) == (60, 10, 320, 240)
    layout = build_layout(cfg)
    assert len(layout.objects) >= 10
    assert len({o.cls for o in layout.objects}) >= 8
    assert sum(v.split == "test" for v in layout.views) == 10 and len(layout.views) == 70
    pts = sample_surface_points(layout, cfg.n_points, cfg.seed)
    assert 50_000 <= len(pts.xyz) <= 100_000 and len(pts.xyz) == cfg.n_points
    assert set(np.unique(pts.instance)) == {i.id for i in layout.instances}
    # Objects do not interpenetrate: no object's samples are inside another object.
    assert not inside_mask(layout.prims, pts.xyz, -0.002).any()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_layouts_fit_the_requested_objects(tmp_path, seed):
    for preset, lo, hi in (("tiny", 3, 4), ("small", 6, 8)):
        layout = build_layout(SynthConfig(out=tmp_path, preset=preset, seed=seed))
        assert lo <= len(layout.objects) <= hi
        Lx, Ly, _ = layout.room
        centres = np.stack([v.camera.center.numpy() for v in layout.views])
        assert (centres[:, 0] > 0).all() and (centres[:, 0] < Lx).all() and (centres[:, 1] > 0).all()
        assert not inside_mask(layout.prims, centres, 0.1).any()


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="preset"):
        SynthConfig(out=tmp_path, preset="huge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_points"):
        SynthConfig(out=tmp_path, preset="tiny", n_points=10)
    with pytest.raises(ConfigError, match="image_format"):
        SynthConfig(out=tmp_path, preset="tiny", image_format="bmp")  # type: ignore[arg-type]
    cfg = SynthConfig(out=tmp_path, preset="small", seed=3, width=100)
    assert (cfg.width, cfg.height, cfg.scene_dir) == (100, 120, tmp_path / "synth_small_3")


def test_jpg_images_are_read_back(tmp_path):
    root = generate_room(_tiny(tmp_path, n_views=2, n_test_views=0, image_format="jpg"))
    assert sorted(p.name for p in (root / "color").iterdir()) == ["000000.jpg", "000001.jpg"]
    scene = read_scannet(root, eval_split=True)
    assert scene.train_frames[0].load_rgb().shape == (48, 64, 3)


# ---- equations: ray-primitive intersection and shading ------------------------------------------
def _prims(kind: int, center, half, yaw=0.0) -> Primitives:
    return Primitives(kind=np.array([kind]), center=np.array([center], float), half=np.array([half], float),
                      yaw=np.array([yaw]), instance=np.array([1]))


def test_box_intersection_hand_computed():
    box = _prims(0, (0, 0, 0), (1, 1, 1))
    t, n = intersect(box, 0, np.array([-5.0, 0.0, 0.0]), np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    assert t[0] == pytest.approx(4.0) and np.allclose(n[0], [-1, 0, 0])
    assert np.isinf(t[1])
    # Rotated 45 degrees: the ray y = 0.3 along +x enters through the local +y face,
    # local y = (5.3 - t) / sqrt(2) = 1  ->  t = 5.3 - sqrt(2), world normal (-1, 1, 0) / sqrt(2).
    rot = _prims(0, (0, 0, 0), (1, 1, 1), yaw=math.pi / 4)
    t, n = intersect(rot, 0, np.array([-5.0, 0.3, 0.0]), np.array([[1.0, 0, 0]]))
    assert t[0] == pytest.approx(5.3 - math.sqrt(2)) and np.allclose(n[0], [-math.sqrt(0.5), math.sqrt(0.5), 0])
    # A ray starting inside does not hit.
    assert np.isinf(intersect(box, 0, np.zeros(3), np.array([[1.0, 0, 0]]))[0][0])


def test_cylinder_and_sphere_intersection_hand_computed():
    cyl = _prims(1, (0, 0, 0), (1, 1, 1))
    d = np.array([[1.0, 0, 0], [0, 0, -1.0], [1 / math.sqrt(2), 0, -1 / math.sqrt(2)]])
    t, n = intersect(cyl, 0, np.array([-5.0, 0, 0]), d[:1])
    assert t[0] == pytest.approx(4.0) and np.allclose(n[0], [-1, 0, 0])
    t, n = intersect(cyl, 0, np.array([0.5, 0, 5.0]), d[1:2])  # straight down onto the top cap
    assert t[0] == pytest.approx(4.0) and np.allclose(n[0], [0, 0, 1])
    t, n = intersect(cyl, 0, np.array([-2.5, 0, 3.0]), d[2:])  # slanted: top cap at (-0.5, 0, 1)
    assert t[0] == pytest.approx(2 * math.sqrt(2)) and np.allclose(n[0], [0, 0, 1])
    assert np.isinf(intersect(cyl, 0, np.array([-5.0, 0, 1.5]), d[:1])[0][0])  # passes above
    sph = _prims(2, (1, 2, 3), (0.5, 0.5, 0.5))
    t, n = intersect(sph, 0, np.array([1.0, 2.0, 0.0]), np.array([[0, 0, 1.0], [0, 1.0, 0]]))
    assert t[0] == pytest.approx(2.5) and np.allclose(n[0], [0, 0, -1]) and np.isinf(t[1])


def test_lambert_shading_hand_computed():
    base = np.array([0.8, 0.4, 0.2])
    inst = Instance(id=1, cls="chair", nyu40=5, base=base, accent=base, pattern="stripes", scale=0.2,
                    direction=np.array([1.0, 0, 0]), offset=np.zeros(3), origin=np.zeros(3), yaw=0.0)
    light = np.array([0.35, 0.5, 0.8]) / np.linalg.norm([0.35, 0.5, 0.8])
    up = np.array([0.0, 0, 1])
    pts = np.zeros((3, 3))
    c = shade(inst, pts, np.stack([light, -light, up]))
    np.testing.assert_allclose(c[0], base * 1.0)  # facing the light: ambient 0.45 + diffuse 0.55
    np.testing.assert_allclose(c[1], base * 0.45)  # facing away: ambient only
    np.testing.assert_allclose(c[2], base * (0.45 + 0.55 * light[2]))
    # The pattern is a function of position only: same point, same colour; stripes vary along x.
    inst.accent = base * 0.5
    xs = np.stack([np.linspace(0, 0.2, 9), np.zeros(9), np.zeros(9)], axis=1)
    col = shade(inst, xs, np.tile(up, (9, 1)))
    assert np.ptp(col[:, 0]) > 0.1
    np.testing.assert_array_equal(col, shade(inst, xs, np.tile(up, (9, 1))))
