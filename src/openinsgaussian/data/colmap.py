"""COLMAP sparse models (binary and text) and the COLMAP scene reader.

COLMAP stores each image's world-to-camera pose as a unit quaternion ``qvec = (w, x, y, z)`` and a
translation ``tvec``, already in OpenCV axes, and intrinsics as one of its camera models. The model
is read into plain dataclasses (exactly, so text <-> binary round trips are lossless) and
:func:`read_colmap` turns it into a :class:`Scene`, holding out every 8th image (by name) for test.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import atomic_open
from .camera import Camera, Distortion
from .images import image_size
from .scannet import attach_gt_maps, read_instance_classes
from .scene import Frame, Scene
from .transforms import attach_language_features, report_missing

# model name -> (COLMAP model id, number of parameters)
CAMERA_MODELS: dict[str, tuple[int, int]] = {
    "SIMPLE_PINHOLE": (0, 3),
    "PINHOLE": (1, 4),
    "SIMPLE_RADIAL": (2, 4),
    "RADIAL": (3, 5),
    "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8),
    "FULL_OPENCV": (6, 12),
    "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5),
    "THIN_PRISM_FISHEYE": (10, 12),
    "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16),
}
_MODEL_BY_ID = {mid: name for name, (mid, _) in CAMERA_MODELS.items()}
# Models that Camera can represent (pinhole plus OpenCV-style or fisheye distortion).
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV",
                    "OPENCV_FISHEYE", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE")


@dataclass
class ColmapCamera:
    id: int
    model: str  # COLMAP model name, e.g. "PINHOLE"
    width: int
    height: int
    params: tuple[float, ...]  # in COLMAP's order for ``model``

    def intrinsics(self) -> tuple[float, float, float, float, Distortion | None]:
        """``(fx, fy, cx, cy, distortion)``; DataError-free only for :data:`SUPPORTED_MODELS`."""
        p = self.params
        m = self.model
        if m in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"):
            fx = fy = p[0]
            cx, cy = p[1], p[2]
            rest = p[3:]
        elif m in ("PINHOLE", "OPENCV", "FULL_OPENCV", "OPENCV_FISHEYE"):
            fx, fy, cx, cy = p[:4]
            rest = p[4:]
        else:
            raise ValueError(m)
        dist: Distortion | None
        if m in ("SIMPLE_PINHOLE", "PINHOLE"):
            dist = None
        elif m in ("SIMPLE_RADIAL", "RADIAL"):
            dist = Distortion("opencv", _pad(rest, 8))
        elif m == "OPENCV":  # k1, k2, p1, p2
            dist = Distortion("opencv", _pad(rest, 8))
        elif m == "FULL_OPENCV":  # k1, k2, p1, p2, k3, k4, k5, k6
            dist = Distortion("opencv", tuple(rest))
        else:  # fisheye family: theta_d = theta (1 + k1 theta^2 + k2 theta^4 + ...)
            dist = Distortion("fisheye", _pad(rest, 4))
        if dist is not None and dist.model == "opencv" and dist.is_identity():
            dist = None  # an undistorted OpenCV model is a plain pinhole
        return float(fx), float(fy), float(cx), float(cy), dist


def _pad(values: Sequence[float], n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in values) + (0.0,) * (n - len(values))


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] float64 (w, x, y, z), world-to-camera rotation
    tvec: np.ndarray  # [3] float64, world-to-camera translation
    camera_id: int
    name: str  # path relative to the image folder
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [K,2] float64 keypoints
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # [K] (-1 = none)

    def world_to_cam(self) -> np.ndarray:
        """``[4,4]`` world-to-camera in OpenCV axes: ``[R(qvec) | tvec]``."""
        m = np.eye(4)
        m[:3, :3] = qvec_to_rotmat(self.qvec)
        m[:3, 3] = self.tvec
        return m


@dataclass
class ColmapPoints:
    xyz: np.ndarray  # [P,3] float64
    rgb: np.ndarray  # [P,3] uint8
    error: np.ndarray  # [P] float64 reprojection error
    ids: np.ndarray  # [P] int64 point3D ids
    track_lengths: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # [P]
    # [sum(track_lengths), 2] int32 rows of (image_id, point2D_idx), point after point
    tracks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))

    def __post_init__(self) -> None:
        if len(self.track_lengths) == 0 and len(self.ids):  # no tracks given: every track empty
            self.track_lengths = np.zeros(len(self.ids), np.int64)


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points3d: ColmapPoints


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Rotation ``[3,3]`` of the unit quaternion ``(w, x, y, z)`` (normalised first)."""
    q = np.asarray(qvec, dtype=np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotmat_to_qvec(rot: np.ndarray, atol: float = 1e-6) -> np.ndarray:
    """Unit quaternion ``[4]`` ``(w, x, y, z)`` with ``w >= 0`` of a rotation ``[3,3]``.

    Shepperd's method: of ``4w^2 = 1 + tr R`` and ``4x^2 = 1 + 2 R_xx - tr R`` (same for y, z)
    take the largest, which is at least 1 (no cancellation), and get the other three components
    from the off-diagonal sums and differences. Raises ``ValueError`` for a matrix that is not a
    rotation (orthonormal with determinant +1, to ``atol``).
    """
    r = np.asarray(rot, dtype=np.float64)
    if r.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got shape {r.shape}")
    if not (np.allclose(r @ r.T, np.eye(3), atol=atol) and np.linalg.det(r) > 0):
        raise ValueError("not a rotation matrix (it must be orthonormal with determinant +1)")
    tr = float(np.trace(r))
    four_sq = [1.0 + tr, 1.0 + 2 * r[0, 0] - tr, 1.0 + 2 * r[1, 1] - tr, 1.0 + 2 * r[2, 2] - tr]
    i = int(np.argmax(four_sq))
    big = np.sqrt(four_sq[i]) / 2.0  # the largest |component|, >= 1/2
    d = 4.0 * big
    if i == 0:
        q = [big, (r[2, 1] - r[1, 2]) / d, (r[0, 2] - r[2, 0]) / d, (r[1, 0] - r[0, 1]) / d]
    elif i == 1:
        q = [(r[2, 1] - r[1, 2]) / d, big, (r[0, 1] + r[1, 0]) / d, (r[0, 2] + r[2, 0]) / d]
    elif i == 2:
        q = [(r[0, 2] - r[2, 0]) / d, (r[0, 1] + r[1, 0]) / d, big, (r[1, 2] + r[2, 1]) / d]
    else:
        q = [(r[1, 0] - r[0, 1]) / d, (r[0, 2] + r[2, 0]) / d, (r[1, 2] + r[2, 1]) / d, big]
    out = np.asarray(q) / np.linalg.norm(q)
    return -out if out[0] < 0 else out


# ---- binary -------------------------------------------------------------------------------------
class _Reader:
    """Cursor over the bytes of one binary model file, with truncation checks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = _read_bytes(path)
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.truncated()
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def array(self, dtype: np.dtype | str, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        if self.pos + dt.itemsize * count > len(self.data):
            raise self.truncated()
        out = np.frombuffer(self.data, dt, count, self.pos).copy()
        self.pos += dt.itemsize * count
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise self.truncated()
        s = self.data[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return s

    def truncated(self) -> DataError:
        return DataError(self.path, f"truncated COLMAP binary file (ran out of data at byte {self.pos})",
                         "re-export the model with COLMAP's model_converter")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "COLMAP model file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read COLMAP model file ({e.strerror or e})") from None


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    (n,) = r.take("<Q")
    cams = {}
    for _ in range(n):
        cam_id, model_id, w, h = r.take("<iiQQ")
        if model_id not in _MODEL_BY_ID:
            raise DataError(path, f"camera {cam_id} has unknown COLMAP camera model id {model_id}")
        model = _MODEL_BY_ID[model_id]
        params = r.take(f"<{CAMERA_MODELS[model][1]}d")
        cams[cam_id] = ColmapCamera(cam_id, model, w, h, tuple(params))
    return cams


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    (n,) = r.take("<Q")
    images = {}
    pt_dt = np.dtype([("xy", "<f8", (2,)), ("id", "<i8")])
    for _ in range(n):
        vals = r.take("<i7di")
        name = r.cstring()
        (k,) = r.take("<Q")
        pts = r.array(pt_dt, k)
        images[vals[0]] = ColmapImage(vals[0], np.array(vals[1:5]), np.array(vals[5:8]), vals[8], name,
                                      pts["xy"].astype(np.float64), pts["id"].astype(np.int64))
    return images


_POINT_HEAD = np.dtype([("id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)), ("error", "<f8"),
                        ("track_len", "<u8")])  # 51 bytes, packed


def _read_points_bin(path: Path) -> ColmapPoints:
    r = _Reader(path)
    (n,) = r.take("<Q")
    data = r.data
    # Walk the variable-length records once for their offsets, then gather them with numpy.
    offsets = np.empty(n, np.int64)
    pos = r.pos
    hsize = _POINT_HEAD.itemsize
    unpack = struct.Struct("<Q").unpack_from
    end = len(data)
    for i in range(n):
        if pos + hsize > end:
            r.pos = pos
            raise r.truncated()
        offsets[i] = pos
        pos += hsize + 8 * unpack(data, pos + hsize - 8)[0]
    if pos > end:
        r.pos = end
        raise r.truncated()
    buf = np.frombuffer(data, np.uint8)
    heads = buf[offsets[:, None] + np.arange(hsize)].view(_POINT_HEAD).reshape(n)  # [P]
    lengths = heads["track_len"].astype(np.int64)
    first = np.cumsum(lengths) - lengths  # index of each point's first track entry
    starts = np.repeat(offsets + hsize, lengths) + 8 * (np.arange(lengths.sum()) - np.repeat(first, lengths))
    tracks = buf[starts[:, None] + np.arange(8)].view("<i4").reshape(-1, 2).astype(np.int32)
    return ColmapPoints(heads["xyz"].astype(np.float64).reshape(n, 3), heads["rgb"].astype(np.uint8).reshape(n, 3),
                        heads["error"].astype(np.float64), heads["id"].astype(np.int64), lengths, tracks)


def _write_cameras_bin(path: Path, cams: dict[int, ColmapCamera]) -> None:
    parts = [struct.pack("<Q", len(cams))]
    for c in cams.values():
        mid, npar = _model_info(path, c)
        parts.append(struct.pack(f"<iiQQ{npar}d", c.id, mid, c.width, c.height, *c.params))
    _write(path, b"".join(parts))


def _write_images_bin(path: Path, images: dict[int, ColmapImage]) -> None:
    parts = [struct.pack("<Q", len(images))]
    pt_dt = np.dtype([("xy", "<f8", (2,)), ("id", "<i8")])
    for im in images.values():
        pose = (*np.asarray(im.qvec, float), *np.asarray(im.tvec, float))
        parts.append(struct.pack("<i7di", im.id, *pose, im.camera_id))
        parts.append(im.name.encode("utf-8") + b"\x00")
        pts = np.empty(len(im.point3d_ids), pt_dt)
        pts["xy"] = np.asarray(im.xys).reshape(-1, 2)
        pts["id"] = im.point3d_ids
        parts.append(struct.pack("<Q", len(pts)) + pts.tobytes())
    _write(path, b"".join(parts))


def _write_points_bin(path: Path, pts: ColmapPoints) -> None:
    n = len(pts.ids)
    heads = np.empty(n, _POINT_HEAD)
    heads["id"], heads["xyz"], heads["rgb"] = pts.ids, pts.xyz, pts.rgb
    heads["error"], heads["track_len"] = pts.error, pts.track_lengths
    tracks = np.asarray(pts.tracks, "<i4").reshape(-1, 2)
    splits = np.cumsum(pts.track_lengths)[:-1]
    parts = [struct.pack("<Q", n)]
    for head, track in zip(heads, np.split(tracks, splits) if n else []):
        parts.append(head.tobytes())
        parts.append(track.tobytes())
    _write(path, b"".join(parts))


def _model_info(path: Path, c: ColmapCamera) -> tuple[int, int]:
    if c.model not in CAMERA_MODELS:
        raise DataError(path, f"camera {c.id}: unknown COLMAP camera model {c.model!r}")
    mid, npar = CAMERA_MODELS[c.model]
    if len(c.params) != npar:
        raise DataError(path, f"camera {c.id}: model {c.model} takes {npar} parameters, got {len(c.params)}")
    return mid, npar


def _write(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


# ---- text ---------------------------------------------------------------------------------------
def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for every non-comment line; empty lines are kept (images.txt needs them)."""
    try:
        text = _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(path, "COLMAP text file is not UTF-8") from None
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), start=1) if not ln.lstrip().startswith("#")]


def _bad_line(path: Path, lineno: int, what: str) -> DataError:
    return DataError(path, f"line {lineno}: cannot parse {what}")


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for lineno, line in _text_lines(path):
        if not line:
            continue
        parts = line.split()
        try:
            cam_id, model, w, h = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
            params = tuple(float(p) for p in parts[4:])
        except (IndexError, ValueError):
            raise _bad_line(path, lineno, "camera (expected: CAMERA_ID MODEL WIDTH HEIGHT PARAMS...)") from None
        if model in CAMERA_MODELS and len(params) != CAMERA_MODELS[model][1]:
            raise DataError(path, f"line {lineno}: model {model} takes {CAMERA_MODELS[model][1]} parameters, "
                            f"got {len(params)}")
        cams[cam_id] = ColmapCamera(cam_id, model, w, h, params)
    return cams


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    images = {}
    lines = _text_lines(path)
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        if not line:
            i += 1
            continue
        parts = line.split()
        try:
            image_id = int(parts[0])
            qt = np.array([float(v) for v in parts[1:8]])
            cam_id = int(parts[8])
            name = " ".join(parts[9:])
            if len(qt) != 7 or not name:
                raise ValueError
        except (IndexError, ValueError):
            raise _bad_line(path, lineno, "image (expected: IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME)") from None
        pts_line = lines[i + 1][1] if i + 1 < len(lines) else ""
        try:
            vals = pts_line.split()
            if len(vals) % 3:
                raise ValueError
            arr = np.array(vals, dtype=object).reshape(-1, 3)
            xys = arr[:, :2].astype(np.float64)
            ids = arr[:, 2].astype(np.int64)
        except ValueError:
            raise _bad_line(path, lineno + 1, "points2D (expected: X Y POINT3D_ID ...)") from None
        images[image_id] = ColmapImage(image_id, qt[:4], qt[4:], cam_id, name, xys, ids)
        i += 2
    return images


def _read_points_txt(path: Path) -> ColmapPoints:
    ids, xyz, rgb, err, lengths, tracks = [], [], [], [], [], []
    for lineno, line in _text_lines(path):
        if not line:
            continue
        parts = line.split()
        try:
            ids.append(int(parts[0]))
            xyz.append([float(v) for v in parts[1:4]])
            rgb.append([int(v) for v in parts[4:7]])
            err.append(float(parts[7]))
            track = [int(v) for v in parts[8:]]
            if len(track) % 2 or len(xyz[-1]) != 3 or len(rgb[-1]) != 3:
                raise ValueError
        except (IndexError, ValueError):
            raise _bad_line(path, lineno, "point (expected: POINT3D_ID X Y Z R G B ERROR TRACK...)") from None
        lengths.append(len(track) // 2)
        tracks.extend(track)
    return ColmapPoints(np.array(xyz, np.float64).reshape(-1, 3), np.array(rgb, np.uint8).reshape(-1, 3),
                        np.array(err, np.float64), np.array(ids, np.int64), np.array(lengths, np.int64),
                        np.array(tracks, np.int32).reshape(-1, 2))


def _r(v: float) -> str:
    return repr(float(v))  # shortest decimal that reads back to the same double


def _write_cameras_txt(path: Path, cams: dict[int, ColmapCamera]) -> None:
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]", f"# Number of cameras: {len(cams)}"]
    for c in cams.values():
        _model_info(path, c)
        lines.append(" ".join([str(c.id), c.model, str(c.width), str(c.height), *map(_r, c.params)]))
    _write(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _write_images_txt(path: Path, images: dict[int, ColmapImage]) -> None:
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(images)}"]
    for im in images.values():
        lines.append(" ".join([str(im.id), *map(_r, im.qvec), *map(_r, im.tvec), str(im.camera_id), im.name]))
        xys = np.asarray(im.xys).reshape(-1, 2)
        lines.append(" ".join(f"{_r(x)} {_r(y)} {int(i)}" for (x, y), i in zip(xys, im.point3d_ids)))
    _write(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _write_points_txt(path: Path, pts: ColmapPoints) -> None:
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(pts.ids)}"]
    tracks = np.asarray(pts.tracks).reshape(-1, 2)
    start = 0
    for i in range(len(pts.ids)):
        n = int(pts.track_lengths[i])
        track = " ".join(f"{a} {b}" for a, b in tracks[start:start + n].tolist())
        start += n
        row = [str(int(pts.ids[i])), *map(_r, pts.xyz[i]), *map(str, pts.rgb[i].tolist()), _r(pts.error[i])]
        lines.append(" ".join(row) + (" " + track if track else ""))
    _write(path, ("\n".join(lines) + "\n").encode("utf-8"))


# ---- model API ----------------------------------------------------------------------------------
def find_sparse_dir(root: Path) -> Path | None:
    """``root/sparse/0`` or ``root/sparse`` (or ``root`` itself) when it holds ``cameras.bin|txt``."""
    for cand in (root / "sparse" / "0", root / "sparse", root):
        if (cand / "cameras.bin").is_file() or (cand / "cameras.txt").is_file():
            return cand
    return None


def read_colmap_model(sparse_dir: str | Path) -> ColmapModel:
    """Read ``cameras``, ``images`` and ``points3D`` from ``sparse_dir`` (``.bin`` preferred over ``.txt``)."""
    d = Path(sparse_dir)
    if (d / "cameras.bin").is_file():
        ext = ".bin"
    elif (d / "cameras.txt").is_file():
        ext = ".txt"
    else:
        raise DataError(d, "no COLMAP model here (looked for cameras.bin and cameras.txt)",
                        "point to the folder holding cameras/images/points3D, usually sparse/0")
    if ext == ".bin":
        cams = _read_cameras_bin(d / "cameras.bin")
        images = _read_images_bin(d / "images.bin")
        pts_path = d / "points3D.bin"
        points = _read_points_bin(pts_path) if pts_path.is_file() else _empty_points()
    else:
        cams = _read_cameras_txt(d / "cameras.txt")
        images = _read_images_txt(d / "images.txt")
        pts_path = d / "points3D.txt"
        points = _read_points_txt(pts_path) if pts_path.is_file() else _empty_points()
    return ColmapModel(cams, images, points)


def _empty_points() -> ColmapPoints:
    return ColmapPoints(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0), np.zeros(0, np.int64))


def write_colmap_model(model: ColmapModel, sparse_dir: str | Path, binary: bool = True) -> None:
    """Write the model as ``{cameras,images,points3D}.bin`` or ``.txt`` into ``sparse_dir`` (atomically)."""
    d = Path(sparse_dir)
    if binary:
        _write_cameras_bin(d / "cameras.bin", model.cameras)
        _write_images_bin(d / "images.bin", model.images)
        _write_points_bin(d / "points3D.bin", model.points3d)
    else:
        _write_cameras_txt(d / "cameras.txt", model.cameras)
        _write_images_txt(d / "images.txt", model.images)
        _write_points_txt(d / "points3D.txt", model.points3d)


def colmap_camera(cam: ColmapCamera, image: ColmapImage, source: Path) -> Camera:
    """Our :class:`Camera` for one registered image (OpenCV axes, COLMAP's pixel size)."""
    if cam.model not in SUPPORTED_MODELS:
        raise DataError(source, f"camera {cam.id} uses COLMAP model {cam.model}, which is not supported",
                        f"undistort the images (colmap image_undistorter) or use one of {', '.join(SUPPORTED_MODELS)}")
    fx, fy, cx, cy, dist = cam.intrinsics()
    return Camera.from_intrinsics(fx, fy, cx, cy, cam.width, cam.height, image.world_to_cam(),
                                  distortion=dist, name=Path(image.name).with_suffix("").as_posix())


# ---- scene reader -------------------------------------------------------------------------------
def read_colmap(root: str | Path, *, images_dir: str = "images", downscale: float = 1.0,
                holdout_every: int = 8, eval_split: bool = True,
                background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Scene:
    """A :class:`Scene` from a COLMAP project folder (``sparse/0`` + ``images/``).

    Images are sorted by name; with ``eval_split`` the images at sorted index ``i % holdout_every == 0``
    are the test set (3DGS ``--eval``). The index counts every registered image, so the split does not
    shift when some files are missing; missing files are skipped and reported in ``scene.problems``.
    The camera follows the image file's actual size (e.g. a downscaled ``images_2`` folder), then
    ``downscale``. Optional ground truth is attached when present, as in the ScanNet layout:
    ``instance-filt/``, ``label-filt/``, ``depth/`` maps named ``<image stem>.png`` and
    ``instances.json`` (a synthetic room written with :mod:`.synthetic_lerf` has them).
    """
    root = Path(root)
    sparse = find_sparse_dir(root)
    if sparse is None:
        raise DataError(root, "no COLMAP model found (looked for sparse/0/cameras.bin|txt and sparse/cameras.bin|txt)")
    model = read_colmap_model(sparse)
    img_dir = root / images_dir
    if not img_dir.is_dir():
        raise DataError(img_dir, "image folder not found", "pass images_dir= (e.g. 'images_2') for another folder")
    if downscale <= 0:
        raise DataError(root, f"downscale must be positive, got {downscale}")
    if holdout_every < 1:
        raise DataError(root, f"holdout_every must be at least 1, got {holdout_every}")

    images_file = sparse / ("images.bin" if (sparse / "images.bin").is_file() else "images.txt")
    problems: list[str] = []
    missing: list[str] = []
    train: list[Frame] = []
    test: list[Frame] = []
    for index, image in enumerate(sorted(model.images.values(), key=lambda im: im.name)):
        if image.camera_id not in model.cameras:
            raise DataError(images_file, f"image {image.name!r} refers to camera {image.camera_id}, "
                            "which is not in the cameras file")
        path = img_dir / image.name
        if not path.is_file():
            missing.append(image.name)
            continue
        cam = colmap_camera(model.cameras[image.camera_id], image, images_file)
        w, h = image_size(path)
        if (w, h) != (cam.width, cam.height):
            if abs(w / h - cam.width / cam.height) > 0.01 * cam.width / cam.height:
                note = (f"{img_dir}: images of size {w}x{h} have another aspect ratio than COLMAP camera "
                        f"{image.camera_id} ({cam.width}x{cam.height}); intrinsics were scaled per axis")
                if note not in problems:
                    problems.append(note)
            cam = cam.resized(w, h)
        if downscale != 1.0:
            cam = cam.scaled(downscale)
        frame = Frame(name=cam.name, camera=cam, image_path=path, background=tuple(background))
        attach_language_features(frame, root)
        attach_gt_maps(frame, root)  # optional 2D GT maps (e.g. a synthetic room in this layout)
        (test if eval_split and index % holdout_every == 0 else train).append(frame)
    if missing:
        report_missing(problems, img_dir, missing, images_file)

    xyz = model.points3d.xyz
    points = colors = None
    if len(xyz):
        points, colors = xyz.astype(np.float32), model.points3d.rgb
    else:
        problems.append(f"{sparse}: no 3D points in the COLMAP model; the initial point cloud is empty")
    try:
        classes = read_instance_classes(root / "instances.json")
    except DataError as e:  # optional ground truth: a foreign instances.json must not block loading
        classes = {}
        problems.append(f"{e}; instance classes ignored")
        warnings.warn(problems[-1], stacklevel=2)
    return Scene(root=root, source="colmap", train_frames=train, test_frames=test, points=points,
                 colors=colors, instance_classes=classes, problems=problems)
