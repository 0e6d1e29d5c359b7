"""LeRF-OVS annotations: JSON parsing, polygon rasterisation (both modes), frame matching."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from openinsgaussian.data.lerf import (
    LERF_EVAL_FRAMES,
    LERF_QUERIES,
    LERF_SCENES,
    LerfAnnotation,
    LerfObject,
    category_masks,
    frame_index,
    match_frames,
    rasterize_polygon,
    read_annotation,
    read_lerf_labels,
)
from openinsgaussian.errors import DataError

SIZES = {"figurines": (986, 728), "teatime": (988, 730)}  # (W, H) stated by the dataset


def _pixels(mask: np.ndarray) -> set[tuple[int, int]]:
    ys, xs = np.nonzero(mask)
    return {(int(x), int(y)) for x, y in zip(xs, ys)}


def _box(x0: int, x1: int, y0: int, y1: int) -> set[tuple[int, int]]:
    """Pixels with x0 <= x <= x1 and y0 <= y <= y1."""
    return {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}


def _opencv():
    """OpenCV when importable in a version whose fillPoly the "cv2" mode reproduces (>= 4.11)."""
    cv2 = pytest.importorskip("cv2")
    version = tuple(int(v) for v in cv2.__version__.split(".")[:2])
    if version < (4, 11):
        pytest.skip(
            f"OpenCV {cv2.__version__} fills polygon edges differently (see rasterize_polygon)"
        )
    return cv2


def _perimeter(p: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(np.vstack([p, p[:1]]), axis=0), axis=1).sum())


def _write(path: Path, obj, crlf: bool = False) -> Path:
    text = json.dumps(obj, indent=4)
    path.write_bytes((text.replace("\n", "\r\n") if crlf else text).encode())
    return path


def _ann_json(name="frame_00007.jpg", objects=None, **info):
    return {
        "info": {"name": name, "width": 12, "height": 9, "depth": 3, "note": "", **info},
        "objects": objects
        if objects is not None
        else [
            {
                "category": "cup",
                "group": 1,
                "segmentation": [[1, 1], [4, 1], [4, 3], [1, 3]],
                "area": 6.0,
                "layer": 1.0,
                "bbox": [1, 1, 4, 3],
                "iscrowd": False,
                "note": "",
            },
        ],
    }


# --- real annotation files -------------------------------------------------------------------


@pytest.mark.parametrize("scene", ["figurines", "teatime"])
def test_real_labels_frames_sizes_categories(lerf_labels_dir: Path, scene: str):
    labels = read_lerf_labels(lerf_labels_dir, scene)
    assert tuple(labels) == LERF_EVAL_FRAMES[scene]
    for frame, ann in labels.items():
        assert ann.frame == frame
        assert (ann.width, ann.height) == SIZES[scene]
        assert ann.objects and set(ann.categories) <= set(LERF_QUERIES[scene])
        for o in ann.objects:
            assert o.polygon.ndim == 2 and o.polygon.shape[1] == 2 and len(o.polygon) >= 3
            assert o.area is not None and o.area > 0
    # The query list is exactly the union of the GT categories over the evaluated frames.
    assert {c for a in labels.values() for c in a.categories} == set(LERF_QUERIES[scene])


def test_real_file_details(lerf_labels_dir: Path):
    path = lerf_labels_dir / "figurines" / "frame_00041.json"
    raw = path.read_bytes()
    assert b"\r\n" in raw and b'"iscrowd": false' in raw and b'"iscrowd": 0' in raw
    ann = read_annotation(path)
    assert ann.frame == "frame_00041" and len(ann.objects) == 17
    first = ann.objects[0]
    assert first.category == "old camera"
    assert first.polygon[0].tolist() == [521.0, 109.0] and len(first.polygon) == 117
    assert first.bbox == (434.0, 109.0, 607.0, 231.0) and first.area == 12124.0


def test_real_polygon_area_vs_mask_area(lerf_labels_dir: Path):
    """Mask area vs the file's (continuous) polygon area, bounded by the perimeter edge band.

    "centers" samples pixel centres, so the error is a small fraction of the perimeter P; "cv2"
    adds the 8-connected outline, so it exceeds the area by roughly P / 2 (between the L-inf and
    the Euclidean half-perimeter). Measured on these files: centers |diff| <= 0.05 P,
    cv2 diff in [0.39 P, 0.57 P].
    """
    n = 0
    for scene in ("figurines", "teatime"):
        for ann in read_lerf_labels(lerf_labels_dir, scene).values():
            for o in ann.objects:
                per = _perimeter(o.polygon)
                c = int(rasterize_polygon(o.polygon, ann.width, ann.height, mode="centers").sum())
                v = int(rasterize_polygon(o.polygon, ann.width, ann.height, mode="cv2").sum())
                assert abs(c - o.area) <= 0.5 * per + 4  # the edge band
                assert abs(c - o.area) <= 0.1 * per + 4, (o.category, c, o.area, per)
                assert 0.3 * per - 4 <= v - o.area <= 0.7 * per + 4, (o.category, v, o.area, per)
                n += 1
    assert n == 119


def test_real_category_masks_or(lerf_labels_dir: Path):
    ann = read_lerf_labels(lerf_labels_dir, "teatime")["frame_00043"]
    counts = Counter(o.category for o in ann.objects)
    assert counts["hooves"] == 3 and counts["three cookies"] == 2
    masks = category_masks(ann)
    assert list(masks) == ann.categories
    parts = [rasterize_polygon(o.polygon, 988, 730) for o in ann.objects if o.category == "hooves"]
    assert np.array_equal(masks["hooves"], np.logical_or.reduce(parts))
    assert masks["hooves"].sum() > max(p.sum() for p in parts)
    assert all(m.shape == (730, 988) and m.dtype == bool for m in masks.values())


def test_cv2_mode_matches_opencv_on_real_files(lerf_labels_dir: Path):
    cv2 = _opencv()
    ann = read_lerf_labels(lerf_labels_dir, "figurines")["frame_00195"]
    for o in ann.objects:
        ref = np.zeros((ann.height, ann.width), np.uint8)
        cv2.fillPoly(ref, [np.int32(o.polygon)], 1)
        assert np.array_equal(ref.astype(bool), rasterize_polygon(o.polygon, ann.width, ann.height))


# --- parsing tolerance and errors ------------------------------------------------------------


def test_crlf_iscrowd_and_missing_area(tmp_path: Path):
    objs = _ann_json()["objects"] + [
        {
            "category": "cup",
            "segmentation": [[6, 6], [9, 6], [9, 8]],
            "bbox": [6, 6, 9, 8],
            "iscrowd": 0,
        },
    ]
    p = _write(tmp_path / "frame_00007.json", _ann_json(objects=objs), crlf=True)
    ann = read_annotation(p)
    assert (ann.frame, ann.width, ann.height, ann.path) == ("frame_00007", 12, 9, p)
    assert [o.area for o in ann.objects] == [6.0, None]
    assert ann.categories == ["cup"]
    assert ann.objects[1].polygon.dtype == np.float64


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("objects"), "no 'objects'"),
        (lambda d: d["info"].pop("width"), "'info' has no 'width'"),
        (lambda d: d["objects"][0].pop("category"), "has no 'category'"),
        (lambda d: d["objects"][0].pop("segmentation"), "has no 'segmentation'"),
        (lambda d: d["objects"][0].update(segmentation=[[1, 1], [4, 1]]), "degenerate: 2 point"),
        (lambda d: d["objects"][0].update(segmentation=[1, 1, 4, 1, 4, 3]), "expected [K, 2]"),
        (lambda d: d["objects"][0].update(bbox=[1, 2]), "bbox"),
        (lambda d: d["objects"][0].update(iscrowd="no"), "iscrowd"),
        (lambda d: d["info"].update(height=-3), "positive integer"),
        (lambda d: d["info"].update(name="frame_00008.jpg"), "does not match the file name"),
    ],
)
def test_malformed_annotations_name_the_file(tmp_path: Path, mutate, needle: str):
    data = _ann_json()
    mutate(data)
    p = _write(tmp_path / "frame_00007.json", data)
    with pytest.raises(DataError) as e:
        read_annotation(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_invalid_json_and_missing_file(tmp_path: Path):
    p = tmp_path / "frame_00001.json"
    p.write_text('{"info": {"width": 3,\r\n')
    with pytest.raises(DataError, match="invalid JSON at line 2") as e:
        read_annotation(p)
    assert str(p) in str(e.value)
    with pytest.raises(DataError, match="not found"):
        read_annotation(tmp_path / "frame_00002.json")


def test_read_lerf_labels_layouts(tmp_path: Path):
    scene_dir = tmp_path / "label" / "ramen"
    scene_dir.mkdir(parents=True)
    for n in (24, 6):
        _write(scene_dir / f"frame_{n:05d}.json", _ann_json(name=f"frame_{n:05d}.jpg"))
    (scene_dir / "frame_00006.jpg").write_bytes(b"")  # the photos sit beside the JSONs
    for root in (tmp_path / "label", tmp_path, scene_dir):  # label/, dataset root, flat folder
        assert list(read_lerf_labels(root, "ramen")) == ["frame_00006", "frame_00024"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no frame_\\*.json annotations for scene 'teatime'"):
        read_lerf_labels(tmp_path / "empty", "teatime")
    with pytest.raises(DataError, match="label folder not found"):
        read_lerf_labels(tmp_path / "nope", "ramen")


def test_scene_constants():
    assert LERF_SCENES == ("figurines", "ramen", "teatime", "waldo_kitchen")
    assert set(LERF_EVAL_FRAMES) == set(LERF_QUERIES) == set(LERF_SCENES)
    assert {s: len(q) for s, q in LERF_QUERIES.items()} == {
        "figurines": 21,
        "teatime": 14,
        "ramen": 14,
        "waldo_kitchen": 18,
    }
    assert {s: len(f) for s, f in LERF_EVAL_FRAMES.items()} == {
        "figurines": 4,
        "teatime": 6,
        "ramen": 7,
        "waldo_kitchen": 5,
    }
    assert LERF_EVAL_FRAMES["ramen"][0] == "frame_00006"
    assert LERF_QUERIES["waldo_kitchen"][0] == "Stainless steel pots"
    assert all(len(set(q)) == len(q) for q in LERF_QUERIES.values())


# --- rasterisation: hand-computed cases ------------------------------------------------------


def test_square_both_modes():
    sq = np.array([[1, 1], [4, 1], [4, 3], [1, 3]], float)
    assert _pixels(rasterize_polygon(sq, 8, 6, mode="centers")) == _box(1, 3, 1, 2)  # area 6
    assert _pixels(rasterize_polygon(sq, 8, 6, mode="cv2")) == _box(1, 4, 1, 3)  # + outline
    # Fractional vertices: cv2 truncates them to the square above, centers samples 0.5 offsets.
    frac = np.array([[1.9, 1.2], [4.7, 1.2], [4.7, 3.9], [1.9, 3.9]])
    assert _pixels(rasterize_polygon(frac, 8, 6, mode="cv2")) == _box(1, 4, 1, 3)
    assert _pixels(rasterize_polygon(frac, 8, 6, mode="centers")) == _box(2, 4, 1, 3)
    # Centres exactly on an edge: the left/top edge includes them, the right/bottom one not.
    half = np.array([[0.5, 0.5], [2.5, 0.5], [2.5, 2.5], [0.5, 2.5]])
    assert _pixels(rasterize_polygon(half, 4, 4, mode="centers")) == _box(0, 1, 0, 1)
    # Winding direction does not matter.
    assert np.array_equal(rasterize_polygon(sq[::-1], 8, 6), rasterize_polygon(sq, 8, 6))


def test_triangle_both_modes():
    tri = np.array([[0, 0], [4, 0], [0, 4]], float)
    # centers: x + 0.5 < 4 - (y + 0.5)  <=>  x + y <= 2
    want_c = {(x, y) for x in range(5) for y in range(5) if x + y <= 2}
    assert _pixels(rasterize_polygon(tri, 6, 6, mode="centers")) == want_c
    # cv2: every lattice point of the closed triangle (the diagonal is exact here)
    want_v = {(x, y) for x in range(5) for y in range(5) if x + y <= 4}
    assert _pixels(rasterize_polygon(tri, 6, 6, mode="cv2")) == want_v


def test_concave_u_shape():
    u = np.array([[0, 0], [6, 0], [6, 5], [4, 5], [4, 2], [2, 2], [2, 5], [0, 5]], float)
    notch = _box(2, 3, 2, 4)
    assert _pixels(rasterize_polygon(u, 8, 7, mode="centers")) == _box(0, 5, 0, 4) - notch
    # cv2: lattice points of the closed U; only x = 3, y = 3..5 lies strictly inside the notch
    assert _pixels(rasterize_polygon(u, 8, 7, mode="cv2")) == _box(0, 6, 0, 5) - _box(3, 3, 3, 5)


def test_polygons_partly_or_fully_outside_are_clipped():
    tl = np.array([[-3, -2], [3, -2], [3, 2], [-3, 2]], float)
    assert _pixels(rasterize_polygon(tl, 10, 10, mode="centers")) == _box(0, 2, 0, 1)
    assert _pixels(rasterize_polygon(tl, 10, 10, mode="cv2")) == _box(0, 3, 0, 2)
    br = np.array([[7, 7], [12, 7], [12, 12], [7, 12]], float)
    for mode in ("centers", "cv2"):
        assert _pixels(rasterize_polygon(br, 10, 10, mode=mode)) == _box(7, 9, 7, 9)
        away = np.array([[20, 20], [30, 20], [25, 28]], float)
        assert not rasterize_polygon(away, 10, 10, mode=mode).any()
        cover = np.array([[-50, -50], [80, -50], [80, 80], [-50, 80]], float)
        assert rasterize_polygon(cover, 10, 10, mode=mode).all()


def test_rasterize_rejects_bad_input():
    with pytest.raises(DataError, match="degenerate"):
        rasterize_polygon(np.zeros((2, 2)), 4, 4)
    with pytest.raises(DataError, match="expected \\[K, 2\\]"):
        rasterize_polygon(np.zeros((4, 3)), 4, 4)
    with pytest.raises(DataError, match="finite"):
        rasterize_polygon(np.array([[0, 0], [np.nan, 1], [2, 2]]), 4, 4)
    with pytest.raises(DataError, match="mode"):
        rasterize_polygon(np.zeros((3, 2)), 4, 4, mode="aa")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="positive"):
        rasterize_polygon(np.zeros((3, 2)), 0, 4)


# --- rasterisation: randomised checks against independent references -------------------------


def _even_odd_centres(p: np.ndarray, w: int, h: int) -> np.ndarray:
    """Brute-force crossing-number test at every pixel centre (PNPOLY)."""
    yc, xc = np.mgrid[0:h, 0:w] + 0.5
    inside = np.zeros((h, w), bool)
    for (xi, yi), (xj, yj) in zip(p, np.roll(p, 1, axis=0)):
        if yi == yj:
            continue
        cross = (yi > yc) != (yj > yc)
        x_at = xi + (yc - yi) * (xj - xi) / (yj - yi)
        inside ^= cross & (xc < x_at)
    return inside


def test_centers_mode_matches_brute_force_even_odd():
    rng = np.random.default_rng(0)
    for _ in range(150):  # random, mostly self-intersecting polygons, partly outside the image
        w, h = (int(v) for v in rng.integers(3, 30, size=2))
        p = rng.uniform(-8, 38, size=(int(rng.integers(3, 10)), 2))
        assert np.array_equal(
            rasterize_polygon(p, w, h, mode="centers"), _even_odd_centres(p, w, h)
        )


def _seg_dist(px, py, a, b):
    d = b - a
    t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / max(float(d @ d), 1e-12), 0, 1)
    return np.hypot(px - a[0] - t * d[0], py - a[1] - t * d[1])


def test_cv2_mode_lattice_bounds_on_random_triangles():
    """Integer triangles: every lattice point of the closed triangle is set, and nothing further
    than half a pixel (Bresenham's rounding) from it."""
    rng = np.random.default_rng(1)
    n = 0
    while n < 150:
        t = rng.integers(0, 40, size=(3, 2)).astype(float)
        area2 = (t[1, 0] - t[0, 0]) * (t[2, 1] - t[0, 1]) - (t[2, 0] - t[0, 0]) * (
            t[1, 1] - t[0, 1]
        )
        if area2 == 0:
            continue
        n += 1
        m = rasterize_polygon(t, 40, 40, mode="cv2")
        py, px = np.mgrid[0:40, 0:40].astype(float)
        s = np.sign(area2)
        crosses = [
            s * ((b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0]))
            for a, b in zip(t, np.roll(t, -1, axis=0))
        ]
        closed = np.all(np.stack(crosses) >= 0, axis=0)
        assert not (closed & ~m).any()
        dist = np.min([_seg_dist(px, py, a, b) for a, b in zip(t, np.roll(t, -1, axis=0))], axis=0)
        assert (dist[m & ~closed] <= 0.5 + 1e-9).all()


def test_cv2_mode_matches_opencv_fillpoly_random():
    cv2 = _opencv()
    rng = np.random.default_rng(2)
    for i in range(300):
        w, h = (int(v) for v in rng.integers(1, 40, size=2))
        lo, hi = (-15.0, 55.0) if i % 2 else (0.0, 40.0)
        p = rng.uniform(lo, hi, size=(int(rng.integers(3, 12)), 2))
        if i % 3 == 0:
            p = np.round(p)
        ref = np.zeros((h, w), np.uint8)
        cv2.fillPoly(ref, [np.int32(p)], 1)
        assert np.array_equal(ref.astype(bool), rasterize_polygon(p, w, h, mode="cv2")), p.tolist()


def test_category_masks_or_synthetic():
    a = LerfObject("cup", np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float), (0, 0, 2, 2), 4.0)
    b = LerfObject("cup", np.array([[4, 3], [6, 3], [6, 5], [4, 5]], float), (4, 3, 6, 5), 4.0)
    c = LerfObject("plate", np.array([[1, 1], [5, 1], [3, 4]], float), (1, 1, 5, 4), None)
    ann = LerfAnnotation("frame_00001", 8, 7, [a, b, c])
    for mode in ("centers", "cv2"):
        masks = category_masks(ann, mode=mode)
        assert list(masks) == ["cup", "plate"]
        want = rasterize_polygon(a.polygon, 8, 7, mode=mode) | rasterize_polygon(
            b.polygon, 8, 7, mode=mode
        )
        assert np.array_equal(masks["cup"], want)
    assert _pixels(category_masks(ann, mode="centers")["cup"]) == _box(0, 1, 0, 1) | _box(
        4, 5, 3, 4
    )


# --- frame names -----------------------------------------------------------------------------


def test_frame_index():
    assert frame_index("frame_00041") == 41
    assert frame_index("images/frame_00041.jpg") == 41
    assert frame_index(Path("label/figurines/frame_00105.json")) == 105
    assert frame_index("00002") == 2
    with pytest.raises(DataError, match="no trailing frame number"):
        frame_index("frame_final.jpg")


def test_match_frames(lerf_labels_dir: Path):
    labels = read_lerf_labels(lerf_labels_dir, "figurines")
    images = [f"images/frame_{i:05d}.jpg" for i in range(1, 300)]
    got = match_frames(labels, images)
    assert got == {f: f"images/{f}.jpg" for f in LERF_EVAL_FRAMES["figurines"]}
    assert match_frames(list(labels.values()), images) == got  # LerfAnnotation objects
    with pytest.raises(DataError) as e:
        match_frames(
            ["frame_00041", "frame_00105", "frame_00999"], images[:50] + ["x/frame_00041.png"]
        )
    msg = str(e.value)
    assert "2 annotated frame(s) have no image: frame_00105, frame_00999" in msg
    assert "frame_00041 (images/frame_00041.jpg, x/frame_00041.png)" in msg
