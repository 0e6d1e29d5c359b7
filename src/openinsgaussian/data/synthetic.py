"""Procedurally generated indoor room: the built-in scene and the test bed.

A room (floor, four walls, no ceiling) is furnished with objects built from three primitives:
yaw-rotated boxes, vertical cylinders and spheres. Every object, wall and the floor is one instance
with a class from the ScanNet 19-class list (NYU40 ids). Views are rendered by exact analytic ray
casting (independent of the Gaussian rasterizer) and the surface is sampled into a coloured point
cloud. Pixels and points get their colour from the same function of (position, normal, instance),
so a Gaussian model initialised from the points can reproduce the images.

The scene is written in the OpenGaussian ScanNet layout (METHOD §10.1), plus ScanNet-style 2D GT
maps, so the ScanNet reader and the ScanNet evaluation serve it unchanged::

    <out>/<scene>/color/000000.png             RGB
    <out>/<scene>/depth/000000.png             uint16 millimetres, 0 = no hit
    <out>/<scene>/instance-filt/000000.png     uint16 instance id, 0 = none
    <out>/<scene>/label-filt/000000.png        uint16 NYU40 id, 0 = none
    <out>/<scene>/transforms_{train,test}.json w,h,fl_x,fl_y,cx,cy + frames (OpenGL c2w)
    <out>/<scene>/points3d.ply                 x,y,z,red,green,blue
    <out>/<scene>/<scene>_vh_clean_2.labels.ply  the same vertices + label (NYU40) + instance
    <out>/<scene>/instances.json               instance id -> class, NYU40 id
    <out>/<scene>/synth.json                   generation stamp, written last

World axes: z up, floor at z = 0, room interior [0, Lx] x [0, Ly].
"""

from __future__ import annotations

import colorsys
import itertools
import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError
from ..io import save_image, write_json
from .camera import GL_TO_CV, Camera, Distortion
from .ply import write_ply

GENERATOR_VERSION = 1  # bump when the output of a given config changes

# ScanNet 19 evaluation classes and their NYU40 ids (METHOD §7.1).
NYU40_IDS: dict[str, int] = {
    "wall": 1, "floor": 2, "cabinet": 3, "bed": 4, "chair": 5, "sofa": 6, "table": 7, "door": 8,
    "window": 9, "bookshelf": 10, "picture": 11, "counter": 12, "desk": 14, "curtain": 16,
    "refrigerator": 24, "shower curtain": 28, "toilet": 33, "sink": 34, "bathtub": 36,
}
OBJECT_CLASSES: tuple[str, ...] = tuple(c for c in NYU40_IDS if c not in ("wall", "floor"))
# Classes that may appear more than once in a room (the rest appear at most once while unused
# classes remain).
_REPEATABLE = ("chair", "picture", "cabinet", "table", "chair")  # chairs twice as likely

# Per-preset values of the preset-driven SynthConfig fields, plus the nominal room size (Lx, Ly).
PRESETS: dict[str, dict] = {
    "tiny": dict(n_views=8, n_test_views=2, width=64, height=48, n_points=4000, n_objects=4,
                 image_format="png", room=(4.0, 3.5)),
    "small": dict(n_views=24, n_test_views=4, width=160, height=120, n_points=20000, n_objects=7,
                  image_format="png", room=(5.0, 4.2)),
    "default": dict(n_views=60, n_test_views=10, width=320, height=240, n_points=80000, n_objects=12,
                    image_format="png", room=(6.5, 5.5)),
}

_LIGHT = np.array([0.35, 0.5, 0.8]) / np.linalg.norm([0.35, 0.5, 0.8])  # towards the light
_AMBIENT = 0.45
_DIFFUSE = 0.55
_WALL_T = 0.1  # wall thickness (outside the interior)
_FLOOR_T = 0.05  # floor slab thickness (below z = 0)
_KIND = {"box": 0, "cylinder": 1, "sphere": 2}
_MAPS = ("color", "depth", "instance-filt", "label-filt")
_FRAME_RE = re.compile(r"^\d{6}\.(png|jpg)$")


# ---- configuration ------------------------------------------------------------------------------
@dataclass
class SynthConfig:
    """What room to generate and where.

    Fields left at None take the preset's value when the config is created (so after
    ``dataclasses.replace(cfg, preset=...)`` the earlier preset's values stay; build a new config).
    """

    out: Path
    """Parent folder; the scene is written to OUT/synth_<preset>_<seed>."""
    preset: Literal["tiny", "small", "default"] = "default"
    """Size: tiny (unit tests, 8+2 views at 64x48), small (24+4 at 160x120), default (60+10 at 320x240)."""
    seed: int = 0
    """Random seed of the layout, textures, cameras and point samples; same seed, same bytes."""
    n_views: int | None = None
    """Training views (None: 8 / 24 / 60 for tiny / small / default)."""
    n_test_views: int | None = None
    """Test views, interleaved along the same camera path (None: 2 / 4 / 10)."""
    width: int | None = None
    """Image width in pixels (None: 64 / 160 / 320)."""
    height: int | None = None
    """Image height in pixels (None: 48 / 120 / 240)."""
    n_points: int | None = None
    """Surface points in points3d.ply and the labels PLY (None: 4000 / 20000 / 80000)."""
    n_objects: int | None = None
    """Furniture objects besides walls and floor (None: 4 / 7 / 12)."""
    image_format: Literal["png", "jpg"] | None = None
    """Colour image format (None: png, lossless)."""
    fov_deg: float = 65.0
    """Horizontal field of view of the pinhole cameras, degrees (fx = fy)."""
    distortion: tuple[float, float, float, float] | None = None
    """Lens distortion (OpenCV k1, k2, p1, p2) of every camera; None: ideal pinhole. Images and
    GT maps are ray-cast through the lens and transforms*.json records the coefficients
    (camera_model OPENCV): a distorted capture with known coefficients."""
    overwrite: bool = False
    """Regenerate even when a complete scene for this config is already there."""
    progress: bool = True
    """Show a progress bar over the rendered views."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown synthetic preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        self.out = Path(self.out)
        for key, value in PRESETS[self.preset].items():
            if key != "room" and getattr(self, key) is None:
                setattr(self, key, value)
        checks = {"n_views": 1, "n_test_views": 0, "width": 8, "height": 8, "n_points": 100, "n_objects": 1}
        for key, lo in checks.items():
            value = getattr(self, key)
            if not isinstance(value, int) or value < lo:
                raise ConfigError(f"SynthConfig.{key} must be an integer >= {lo}, got {value!r}")
        if self.n_objects > 30:
            raise ConfigError(f"SynthConfig.n_objects must be <= 30 (more do not fit), got {self.n_objects}")
        if self.image_format not in ("png", "jpg"):
            raise ConfigError(f"SynthConfig.image_format must be 'png' or 'jpg', got {self.image_format!r}")
        if not 20.0 <= self.fov_deg <= 120.0:
            raise ConfigError(f"SynthConfig.fov_deg must be within [20, 120], got {self.fov_deg}")
        if self.distortion is not None:
            if len(self.distortion) != 4 or not all(math.isfinite(float(c)) for c in self.distortion):
                raise ConfigError(f"SynthConfig.distortion must be 4 finite numbers (k1, k2, p1, p2), "
                                  f"got {self.distortion!r}")
            self.distortion = tuple(float(c) for c in self.distortion)  # type: ignore[assignment]

    def lens(self) -> Distortion | None:
        """The cameras' :class:`~openinsgaussian.data.camera.Distortion` (None: pinhole)."""
        if self.distortion is None:
            return None
        k1, k2, p1, p2 = self.distortion
        return Distortion("opencv", (k1, k2, p1, p2, 0.0, 0.0, 0.0, 0.0))

    @property
    def scene_name(self) -> str:
        return f"synth_{self.preset}_{self.seed}"

    @property
    def scene_dir(self) -> Path:
        return self.out / self.scene_name

    def stamp(self) -> dict:
        """The values that determine the output bytes (everything but where and how to run)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("out", "overwrite", "progress")}
        if self.distortion is None:
            del d["distortion"]  # stamps of pinhole rooms stay those of earlier versions
        else:
            d["distortion"] = [float(c) for c in self.distortion]
        d["generator_version"] = GENERATOR_VERSION
        return d


# ---- scene description --------------------------------------------------------------------------
@dataclass
class Instance:
    """One object instance: class, and the parameters of its surface colour function."""

    id: int
    cls: str
    nyu40: int
    base: np.ndarray  # [3] albedo in [0,1]
    accent: np.ndarray  # [3] albedo of the pattern's second tone
    pattern: Literal["stripes", "checker", "noise"]
    scale: float  # pattern period, metres
    direction: np.ndarray  # [3] unit, stripe direction (object frame)
    offset: np.ndarray  # [3] pattern phase (object frame)
    origin: np.ndarray  # [3] object frame origin (world)
    yaw: float  # object frame rotation about z


@dataclass
class Primitives:
    """All primitives of the room as flat arrays (index p)."""

    kind: np.ndarray  # [P] int: 0 box, 1 vertical cylinder, 2 sphere
    center: np.ndarray  # [P,3] world
    half: np.ndarray  # [P,3] box half extents; cylinder (r, r, half height); sphere (r, r, r)
    yaw: np.ndarray  # [P] rotation about z (boxes)
    instance: np.ndarray  # [P] int instance id

    def __len__(self) -> int:
        return len(self.kind)

    def rotations(self) -> np.ndarray:
        """``[P,3,3]`` local-to-world rotations."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        R = np.zeros((len(self), 3, 3))
        R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1.0
        return R

    def corners(self) -> np.ndarray:
        """``[P,8,3]`` world corners of each primitive's oriented bounding box."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        local = signs[None] * self.half[:, None, :]  # [P,8,3]
        return np.einsum("pij,pkj->pki", self.rotations(), local) + self.center[:, None, :]


@dataclass
class View:
    """One camera of the path; ``split`` is "train" or "test"."""

    name: str
    camera: Camera
    split: Literal["train", "test"]


@dataclass
class Layout:
    """Everything about the room except pixels and points: geometry, classes, colours, cameras."""

    name: str
    room: tuple[float, float, float]  # (Lx, Ly, wall height)
    instances: list[Instance]
    prims: Primitives
    views: list[View]

    @property
    def objects(self) -> list[Instance]:
        """Furniture instances (not walls or floor)."""
        return [i for i in self.instances if i.cls not in ("wall", "floor")]

    def instance_table(self) -> list[dict]:
        return [{"id": i.id, "class": i.cls, "nyu40": i.nyu40} for i in self.instances]


# ---- object templates ---------------------------------------------------------------------------
@dataclass
class _Part:
    kind: str
    center: tuple[float, float, float]  # object frame
    half: tuple[float, float, float]


def _bx(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> _Part:
    return _Part("box", ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), ((x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2))


def _cy(x: float, y: float, z0: float, z1: float, r: float) -> _Part:
    return _Part("cylinder", (x, y, (z0 + z1) / 2), (r, r, (z1 - z0) / 2))


def _sp(x: float, y: float, z: float, r: float) -> _Part:
    return _Part("sphere", (x, y, z), (r, r, r))


@dataclass
class _Template:
    """An object in its own frame: x along its width, +y its front, z up, origin on the floor.

    ``keepout`` = (x0, x1, y0, y1, z0, z1) is the space no other object may enter (the object's
    footprint plus any clearance, e.g. in front of a door). Wall objects have their back at y = -hd.
    """

    cls: str
    parts: list[_Part]
    hd: float  # half depth of the footprint (y)
    mount: Literal["free", "wall"]
    keepout: tuple[float, float, float, float, float, float]


def _template(cls: str, rng: np.random.Generator) -> _Template:
    """Random dimensions (metres) and parts of one object of class ``cls``; w, d = half width, depth."""
    u = rng.uniform
    legs = [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    if cls == "table":
        w, d, H = u(0.45, 0.75), u(0.3, 0.45), u(0.70, 0.78)
        if u() < 0.3:  # round table on a central column with a foot
            w = d = u(0.4, 0.55)
            parts = [_cy(0, 0, H - 0.04, H, w), _cy(0, 0, 0.0, H - 0.04, 0.06), _cy(0, 0, 0.0, 0.03, 0.25)]
        else:
            parts = [_bx(-w, w, -d, d, H - 0.04, H)]
            parts += [_cy(sx * (w - 0.07), sy * (d - 0.07), 0.0, H - 0.04, 0.03) for sx, sy in legs]
        return _Template(cls, parts, d, "free", (-w, w, -d, d, 0.0, H))
    if cls == "chair":
        w, hs = u(0.21, 0.25), u(0.43, 0.47)  # half seat size, seat height
        hb = hs + u(0.4, 0.5)  # top of the back
        parts = [_bx(-w, w, -w, w, hs - 0.05, hs), _bx(-w, w, -w, -w + 0.05, hs, hb)]
        for sx, sy in legs:
            x, y = sx * (w - 0.02), sy * (w - 0.02)
            parts.append(_bx(x - 0.02, x + 0.02, y - 0.02, y + 0.02, 0.0, hs - 0.05))
        return _Template(cls, parts, w, "free", (-w, w, -w, w, 0.0, hb))
    if cls == "bed":
        w, d, hh = u(0.65, 0.85), u(0.95, 1.05), u(0.9, 1.1)
        parts = [_bx(-w, w, -d, d, 0.0, 0.3),  # frame
                 _bx(-w + 0.03, w - 0.03, -d + 0.06, d - 0.03, 0.3, 0.52),  # mattress
                 _bx(-w, w, -d, -d + 0.06, 0.0, hh),  # headboard
                 _sp(-w / 2, -d + 0.3, 0.56, 0.16), _sp(w / 2, -d + 0.3, 0.56, 0.16)]  # pillows
        return _Template(cls, parts, d, "wall", (-w, w, -d, d + 0.3, 0.0, hh))
    if cls == "sofa":
        w, d, a = u(0.8, 1.05), u(0.4, 0.48), 0.18  # a: arm width
        parts = [_bx(-w + a, w - a, -d + 0.2, d, 0.0, 0.42), _bx(-w, w, -d, -d + 0.2, 0.0, 0.85),
                 _bx(-w, -w + a, -d + 0.2, d, 0.0, 0.6), _bx(w - a, w, -d + 0.2, d, 0.0, 0.6)]
        mount = "wall" if u() < 0.6 else "free"
        return _Template(cls, parts, d, mount, (-w, w, -d, d + 0.2, 0.0, 0.85))
    if cls == "cabinet":
        w, d, H = u(0.3, 0.6), u(0.2, 0.3), u(0.7, 1.2)
        parts = [_bx(-w, w, -d, d - 0.02, 0.0, H - 0.03), _bx(-w - 0.01, w + 0.01, -d, d, H - 0.03, H),
                 _sp(-0.08, d - 0.01, H - 0.15, 0.025), _sp(0.08, d - 0.01, H - 0.15, 0.025)]  # knobs
        return _Template(cls, parts, d, "wall", (-w - 0.01, w + 0.01, -d, d + 0.3, 0.0, H))
    if cls == "bookshelf":
        w, d, H, t = u(0.4, 0.6), u(0.15, 0.18), u(1.6, 2.0), 0.025
        parts = [_bx(-w, -w + t, -d, d, 0.0, H), _bx(w - t, w, -d, d, 0.0, H),  # sides
                 _bx(-w + t, w - t, -d, -d + 0.015, 0.0, H)]  # back
        step = (H - t) / 4
        parts += [_bx(-w + t, w - t, -d + 0.015, d, k * step, k * step + t) for k in range(5)]  # shelves
        for k in range(3):  # a block of books on each of the lower shelves
            z, x0 = k * step + t, -w + t + u(0.0, 0.6) * w
            parts.append(_bx(x0, x0 + u(0.4, 0.7) * w, -d + 0.03, d - u(0.03, 0.08), z, z + u(0.18, 0.28)))
        return _Template(cls, parts, d, "wall", (-w, w, -d, d + 0.3, 0.0, H))
    if cls == "desk":
        w, d, H = u(0.55, 0.75), u(0.3, 0.35), u(0.72, 0.76)
        parts = [_bx(-w, w, -d, d, H - 0.03, H), _bx(-w, -w + 0.4, -d, d - 0.02, 0.0, H - 0.03),  # top, drawers
                 _bx(w - 0.04, w, -d + 0.02, d - 0.02, 0.0, H - 0.03)]  # side panel
        mount = "wall" if u() < 0.6 else "free"
        return _Template(cls, parts, d, mount, (-w, w, -d, d + 0.3, 0.0, H))
    if cls == "door":
        w, H, d = u(0.4, 0.48), u(2.0, 2.1), 0.02
        parts = [_bx(-w, w, -d, d, 0.0, H), _sp(w - 0.1, d + 0.03, 1.0, 0.03)]
        return _Template(cls, parts, d, "wall", (-w - 0.05, w + 0.05, -d, d + 0.9, 0.0, H + 0.05))  # swing space
    if cls == "window":
        w, H, z0, d = u(0.4, 0.7), u(0.9, 1.2), u(0.9, 1.0), 0.015
        parts = [_bx(-w, w, -d, d, z0, z0 + H), _bx(-w - 0.05, w + 0.05, -d, 0.1, z0 - 0.04, z0)]  # pane, sill
        return _Template(cls, parts, d, "wall", (-w - 0.1, w + 0.1, -d, 0.25, z0 - 0.1, z0 + H + 0.1))
    if cls == "picture":
        w, h, zc, d = u(0.2, 0.45), u(0.15, 0.35), u(1.5, 1.7), 0.015
        parts = [_bx(-w, w, -d, d, zc - h, zc + h)]
        return _Template(cls, parts, d, "wall", (-w - 0.1, w + 0.1, -d, 0.2, zc - h - 0.1, zc + h + 0.1))
    if cls == "counter":
        w, d, H = u(0.7, 1.1), u(0.28, 0.32), u(0.88, 0.92)
        parts = [_bx(-w, w, -d, d - 0.04, 0.0, H - 0.04), _bx(-w, w, -d, d, H - 0.04, H)]  # base, top
        return _Template(cls, parts, d, "wall", (-w, w, -d, d + 0.4, 0.0, H))
    if cls == "curtain":
        w, z1, d = u(0.4, 0.7), u(2.2, 2.4), 0.03
        parts = [_bx(-w, w, -d, d, 0.1, z1)]
        return _Template(cls, parts, d, "wall", (-w - 0.05, w + 0.05, -d, 0.4, 0.0, z1))
    if cls == "refrigerator":
        w, d, H = u(0.3, 0.4), u(0.33, 0.38), u(1.7, 1.9)
        parts = [_bx(-w, w, -d, d, 0.0, H), _bx(w - 0.1, w - 0.07, d, d + 0.04, H - 0.8, H - 0.2)]  # body, handle
        return _Template(cls, parts, d, "wall", (-w, w, -d, d + 0.5, 0.0, H))
    if cls == "shower curtain":  # hangs at the front edge of a shower area kept free against the wall
        w, d = u(0.4, 0.55), u(0.38, 0.45)
        parts = [_bx(-w, w, d - 0.02, d, 0.15, 2.0)]
        return _Template(cls, parts, d, "wall", (-w, w, -d, d + 0.3, 0.0, 2.0))
    if cls == "toilet":
        parts = [_bx(-0.2, 0.2, -0.3, -0.1, 0.0, 0.8), _cy(0, 0.08, 0.0, 0.38, 0.19), _cy(0, 0.08, 0.38, 0.41, 0.2)]
        return _Template(cls, parts, 0.3, "wall", (-0.3, 0.3, -0.3, 0.6, 0.0, 0.8))  # tank, bowl, lid
    if cls == "sink":
        w, d = u(0.25, 0.3), u(0.2, 0.24)
        parts = [_cy(0, 0.0, 0.0, 0.74, 0.07), _bx(-w, w, -d, d, 0.74, 0.88), _cy(0, -d + 0.05, 0.88, 1.0, 0.02)]
        return _Template(cls, parts, d, "wall", (-w, w, -d, d + 0.4, 0.0, 1.0))  # pedestal, basin, tap
    if cls == "bathtub":
        w, d, H, t = u(0.75, 0.85), u(0.35, 0.4), u(0.5, 0.55), 0.07
        parts = [_bx(-w, w, -d, d, 0.0, 0.1), _bx(-w, w, -d, -d + t, 0.1, H), _bx(-w, w, d - t, d, 0.1, H),
                 _bx(-w, -w + t, -d + t, d - t, 0.1, H), _bx(w - t, w, -d + t, d - t, 0.1, H)]
        return _Template(cls, parts, d, "wall", (-w, w, -d, d + 0.4, 0.0, H))
    raise ValueError(f"no template for class {cls!r}")


# ---- layout -------------------------------------------------------------------------------------
def _rot2(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


@dataclass
class _Keepout:
    center: np.ndarray  # [2] world
    half: np.ndarray  # [2]
    yaw: float
    z: tuple[float, float]

    def corners(self) -> np.ndarray:  # [4,2]
        s = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * self.half
        return s @ _rot2(self.yaw).T + self.center

    def overlaps(self, other: _Keepout, margin: float) -> bool:
        if self.z[1] <= other.z[0] or other.z[1] <= self.z[0]:
            return False
        Ra, Rb = _rot2(self.yaw), _rot2(other.yaw)
        ha, hb = self.half + margin / 2, other.half + margin / 2
        delta = other.center - self.center
        for axis in (Ra[:, 0], Ra[:, 1], Rb[:, 0], Rb[:, 1]):
            ra = ha[0] * abs(Ra[:, 0] @ axis) + ha[1] * abs(Ra[:, 1] @ axis)
            rb = hb[0] * abs(Rb[:, 0] @ axis) + hb[1] * abs(Rb[:, 1] @ axis)
            if abs(delta @ axis) > ra + rb:
                return False
        return True


def _pick_classes(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` classes: mostly distinct (about 80 %), the rest repeats of common furniture."""
    order = [OBJECT_CLASSES[i] for i in rng.permutation(len(OBJECT_CLASSES))]
    n_distinct = min(len(order), max(1, n - n // 5))
    classes = order[:n_distinct]
    while len(classes) < n:
        classes.append(_REPEATABLE[int(rng.integers(len(_REPEATABLE)))])
    return classes + order[n_distinct:]  # the tail serves as substitutes when a class does not fit


def _place(tpl: _Template, room: tuple[float, float], placed: list[_Keepout], rng: np.random.Generator,
           attempts: int = 200) -> tuple[np.ndarray, float, _Keepout] | None:
    """Rejection-sample an origin and yaw so the keepout stays inside the room and clear of others."""
    Lx, Ly = room
    x0, x1, y0, y1, z0, z1 = tpl.keepout
    # Walls: (point at s along the wall, inward normal, wall length).
    walls = [(lambda s: np.array([s, 0.0]), np.array([0.0, 1.0]), Lx),
             (lambda s: np.array([Lx, s]), np.array([-1.0, 0.0]), Ly),
             (lambda s: np.array([Lx - s, Ly]), np.array([0.0, -1.0]), Lx),
             (lambda s: np.array([0.0, Ly - s]), np.array([1.0, 0.0]), Ly)]
    lengths = np.array([w[2] for w in walls])
    for _ in range(attempts):
        if tpl.mount == "wall":
            k = int(rng.choice(4, p=lengths / lengths.sum()))
            at, n, length = walls[k]
            hw = max(-x0, x1)
            if length < 2 * hw:
                continue
            s = rng.uniform(hw, length - hw)
            yaw = math.atan2(-n[0], n[1])
            origin = at(s) + n * tpl.hd
        else:
            yaw = rng.uniform(0.0, 2 * math.pi)
            origin = np.array([rng.uniform(0.0, Lx), rng.uniform(0.0, Ly)])
        R = _rot2(yaw)
        centre = origin + R @ np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        ko = _Keepout(centre, np.array([(x1 - x0) / 2, (y1 - y0) / 2]), yaw, (z0, z1))
        c = ko.corners()
        if c.min() < -1e-6 or (c[:, 0] > Lx + 1e-6).any() or (c[:, 1] > Ly + 1e-6).any():
            continue
        margin = 0.25 if tpl.mount == "free" else 0.05
        if any(ko.overlaps(o, margin) for o in placed):
            continue
        return origin, yaw, ko
    return None


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _make_instance(iid: int, cls: str, origin: np.ndarray, yaw: float, rng: np.random.Generator) -> Instance:
    hue = (0.13 + 0.618034 * iid + rng.uniform(-0.05, 0.05)) % 1.0
    if cls == "wall":
        base = _hsv(hue, rng.uniform(0.12, 0.25), rng.uniform(0.78, 0.88))
    elif cls == "floor":
        base = _hsv(hue, rng.uniform(0.3, 0.45), rng.uniform(0.5, 0.6))
    else:
        base = _hsv(hue, rng.uniform(0.45, 0.8), rng.uniform(0.6, 0.92))
    accent = base * rng.uniform(0.5, 0.7) + rng.uniform(0.0, 0.08)
    pattern = ("stripes", "checker", "noise")[int(rng.integers(3))]
    d = rng.normal(size=3)
    return Instance(id=iid, cls=cls, nyu40=NYU40_IDS[cls], base=base, accent=np.clip(accent, 0, 1), pattern=pattern,
                    scale=float(rng.uniform(0.12, 0.35)), direction=d / np.linalg.norm(d),
                    offset=rng.uniform(0.0, 1.0, size=3), origin=np.array([origin[0], origin[1], 0.0]), yaw=float(yaw))


def build_layout(cfg: SynthConfig) -> Layout:
    """Room geometry, instances (classes, colours) and the camera path for ``cfg``; no rendering.

    Deterministic in ``cfg.seed``. Cheap (milliseconds), so it also serves statistics tests.
    """
    rng = np.random.default_rng([cfg.seed, 0])
    nominal = PRESETS[cfg.preset]["room"]
    Lx, Ly = (float(v * rng.uniform(0.95, 1.05)) for v in nominal)
    # More objects than the preset needs a larger room: grow the area with the object count.
    grow = math.sqrt(max(1.0, cfg.n_objects / PRESETS[cfg.preset]["n_objects"]))
    Lx, Ly = Lx * grow, Ly * grow
    Hw = float(rng.uniform(2.6, 2.8))

    parts_world: list[tuple[str, np.ndarray, np.ndarray, float, int]] = []  # kind, center, half, yaw, instance
    instances: list[Instance] = []
    # Walls 1-4 (south, east, north, west) as boxes outside the interior; floor 5 as a slab below z = 0.
    T, F = _WALL_T, _FLOOR_T
    wall_boxes = [((Lx / 2, -T / 2), (Lx / 2 + T, T / 2)), ((Lx + T / 2, Ly / 2), (T / 2, Ly / 2 + T)),
                  ((Lx / 2, Ly + T / 2), (Lx / 2 + T, T / 2)), ((-T / 2, Ly / 2), (T / 2, Ly / 2 + T))]
    for (cx, cy), (hx, hy) in wall_boxes:
        inst = _make_instance(len(instances) + 1, "wall", np.zeros(2), 0.0, rng)
        instances.append(inst)
        parts_world.append(("box", np.array([cx, cy, (Hw - F) / 2]), np.array([hx, hy, (Hw + F) / 2]), 0.0, inst.id))
    floor = _make_instance(len(instances) + 1, "floor", np.zeros(2), 0.0, rng)
    instances.append(floor)
    parts_world.append(("box", np.array([Lx / 2, Ly / 2, -F / 2]), np.array([Lx / 2, Ly / 2, F / 2]), 0.0, floor.id))

    placed: list[_Keepout] = []
    candidates = _pick_classes(cfg.n_objects, rng)
    templates = [_template(c, rng) for c in candidates]
    wanted = templates[:cfg.n_objects]
    spare = templates[cfg.n_objects:]
    # Large footprints first: they are the hardest to fit.
    wanted.sort(key=lambda t: -(t.keepout[1] - t.keepout[0]) * (t.keepout[3] - t.keepout[2]))
    queue = list(wanted)
    n_placed, n_failed = 0, 0
    while queue and n_placed < cfg.n_objects:
        tpl = queue.pop(0)
        res = _place(tpl, (Lx, Ly), placed, rng)
        if res is None:  # substitute an unused class, else a small repeatable one
            n_failed += 1
            if spare:
                queue.append(spare.pop(0))
            elif n_failed <= 3 * cfg.n_objects:
                queue.append(_template(_REPEATABLE[int(rng.integers(len(_REPEATABLE)))], rng))
            continue
        origin, yaw, ko = res
        placed.append(ko)
        inst = _make_instance(len(instances) + 1, tpl.cls, origin, yaw, rng)
        instances.append(inst)
        R = _rot2(yaw)
        for part in tpl.parts:
            c = np.array(part.center)
            cw = np.array([*(origin + R @ c[:2]), c[2]])
            parts_world.append((part.kind, cw, np.array(part.half), yaw if part.kind == "box" else 0.0, inst.id))
        n_placed += 1
    if n_placed < cfg.n_objects:
        raise ConfigError(f"only {n_placed} of {cfg.n_objects} objects fit in the synthetic room; ask for fewer")

    prims = Primitives(kind=np.array([_KIND[p[0]] for p in parts_world]), center=np.stack([p[1] for p in parts_world]),
                       half=np.stack([p[2] for p in parts_world]), yaw=np.array([p[3] for p in parts_world]),
                       instance=np.array([p[4] for p in parts_world]))
    name = cfg.scene_name
    layout = Layout(name=name, room=(Lx, Ly, Hw), instances=instances, prims=prims, views=[])
    layout.views = _camera_path(cfg, layout, rng)
    return layout


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[4,4]`` camera-to-world in OpenCV axes (x right, y down, z forward), world z up."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def _inside_any(prims: Primitives, p: np.ndarray, margin: float) -> bool:
    return bool(inside_mask(prims, p[None], margin).any())


def _focal(cfg: SynthConfig) -> float:
    """fx = fy in pixels for the configured horizontal field of view."""
    return cfg.width / 2 / math.tan(math.radians(cfg.fov_deg) / 2)


def _camera_path(cfg: SynthConfig, layout: Layout, rng: np.random.Generator) -> list[View]:
    """An orbit at varying radius and height, each view aimed at the least-seen far-enough object."""
    Lx, Ly, Hw = layout.room
    n_total = cfg.n_views + cfg.n_test_views
    test_idx = {int((j + 0.5) * n_total / cfg.n_test_views) for j in range(cfg.n_test_views)}
    m = min(1.0, 0.3 * min(Lx, Ly))  # stay this far from the walls
    a, b = Lx / 2 - m, Ly / 2 - m
    centre = np.array([Lx / 2, Ly / 2])
    objs = layout.objects
    obj_centres = []
    for inst in objs:
        sel = layout.prims.instance == inst.id
        corners = layout.prims.corners()[sel].reshape(-1, 3)
        obj_centres.append((corners.min(0) + corners.max(0)) / 2)
    used = np.zeros(len(objs))
    min_dist = min(1.8, 0.35 * min(Lx, Ly))  # aim at objects at least this far away (horizontally)
    turns = 1 if n_total <= 12 else 2
    phase = rng.uniform(0, 2 * math.pi)
    fx = _focal(cfg)
    views: list[View] = []
    for i in range(n_total):
        frac = i / n_total
        for _attempt in range(50):
            th = phase + 2 * math.pi * turns * frac + rng.uniform(-0.15, 0.15)
            rho = 0.75 + 0.25 * math.sin(3 * th + phase) + rng.uniform(-0.1, 0.1)
            h = min(Hw - 0.3, 1.75 + 0.5 * math.sin(2 * math.pi * 2.3 * frac + phase) + rng.uniform(-0.1, 0.1))
            eye = np.array([centre[0] + a * rho * math.cos(th), centre[1] + b * rho * math.sin(th), h])
            if not _inside_any(layout.prims, eye, 0.3):
                break
        if objs:
            dist = np.array([np.linalg.norm(c[:2] - eye[:2]) for c in obj_centres])
            ok = dist >= min_dist
            score = used + (~ok) * 1e6 + rng.uniform(0, 0.01, len(objs))
            k = int(np.argmin(score)) if ok.any() else int(np.argmax(dist))
            used[k] += 1
            target = obj_centres[k] + rng.uniform(-0.1, 0.1, size=3)
        else:
            target = np.array([centre[0], centre[1], 0.5])
        if np.linalg.norm((target - eye)[:2]) < 0.3:  # avoid looking straight down
            target[:2] = eye[:2] + 0.5 * (centre - eye[:2]) / max(np.linalg.norm(centre - eye[:2]), 1e-6)
        c2w = _look_at(eye, target)
        name = f"{i:06d}"
        cam = Camera.from_intrinsics(fx, fx, cfg.width / 2, cfg.height / 2, cfg.width, cfg.height,
                                     np.linalg.inv(c2w), name=name)
        views.append(View(name, cam, "test" if i in test_idx else "train"))
    return views


# ---- geometry: inside tests and ray casting -----------------------------------------------------
def _to_local(prims: Primitives, p: int, pts: np.ndarray) -> np.ndarray:
    """World ``pts [N,3]`` into primitive ``p``'s frame (centred, yaw removed)."""
    c, s = math.cos(prims.yaw[p]), math.sin(prims.yaw[p])
    q = pts - prims.center[p]
    return np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], axis=1)


def inside_mask(prims: Primitives, pts: np.ndarray, margin: float, skip: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` bool: ``pts [N,3]`` inside any primitive grown by ``margin`` (negative shrinks).

    ``skip [N]`` names a primitive to ignore per point (the one a surface sample was drawn on).
    """
    out = np.zeros(len(pts), dtype=bool)
    for p in range(len(prims)):
        q = _to_local(prims, p, pts)
        h = prims.half[p] + margin
        if prims.kind[p] == 0:
            inside = (np.abs(q) <= h).all(axis=1)
        elif prims.kind[p] == 1:
            inside = (q[:, 0] ** 2 + q[:, 1] ** 2 <= h[0] ** 2) & (np.abs(q[:, 2]) <= h[2])
        else:
            inside = (q**2).sum(axis=1) <= h[0] ** 2
        if skip is not None:
            inside &= skip != p
        out |= inside
    return out


def _hit_distance(prims: Primitives, p: int, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                  dz: np.ndarray) -> np.ndarray:
    """Ray parameter ``t [M]`` of the nearest entry into primitive ``p`` (inf where missed).

    Rays are ``origin [3] + t * (dx, dy, dz)`` with direction components ``[M]`` each. Rays that
    start inside the primitive miss it.
    """
    eps = 1e-9
    kind, h = prims.kind[p], prims.half[p]
    o = _to_local(prims, p, origin[None])[0]  # [3]
    if prims.yaw[p] != 0.0:
        c, s = math.cos(prims.yaw[p]), math.sin(prims.yaw[p])
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    if kind == 0:  # slab test
        t_in = np.full(len(dx), -np.inf)
        t_out = np.full(len(dx), np.inf)
        for da, oa, ha in ((dx, o[0], h[0]), (dy, o[1], h[1]), (dz, o[2], h[2])):
            inv = 1.0 / np.where(np.abs(da) < 1e-15, 1e-15, da)
            t1, t2 = (-ha - oa) * inv, (ha - oa) * inv
            np.maximum(t_in, np.minimum(t1, t2), out=t_in)
            np.minimum(t_out, np.maximum(t1, t2), out=t_out)
        return np.where((t_in <= t_out) & (t_in > eps), t_in, np.inf)
    if kind == 1:  # vertical cylinder: side, then the caps
        r, hz = h[0], h[2]
        a = dx * dx + dy * dy
        b = 2 * (o[0] * dx + o[1] * dy)
        cc = o[0] ** 2 + o[1] ** 2 - r * r
        disc = b * b - 4 * a * cc
        ok = (a > 1e-15) & (disc >= 0)
        t = np.full(len(dx), np.inf)
        t[ok] = (-b[ok] - np.sqrt(disc[ok])) / (2 * a[ok])
        t[~(ok & (t > eps) & (np.abs(o[2] + t * dz) <= hz))] = np.inf
        for zc, sgn in ((hz, 1.0), (-hz, -1.0)):
            if sgn * o[2] <= hz:
                continue  # origin not beyond this cap
            with np.errstate(divide="ignore", invalid="ignore"):
                tc = (zc - o[2]) / dz
                px, py = o[0] + tc * dx, o[1] + tc * dy
            cap = (sgn * dz < 0) & (tc > eps) & (px * px + py * py <= r * r) & (tc < t)
            t[cap] = tc[cap]
        return t
    r = h[0]  # sphere
    bb = dx * o[0] + dy * o[1] + dz * o[2]
    cc = o @ o - r * r
    disc = bb * bb - cc
    t = np.full(len(dx), np.inf)
    if cc <= 0:
        return t
    ok = disc >= 0
    t[ok] = -bb[ok] - np.sqrt(disc[ok])
    t[t <= eps] = np.inf
    return t


def surface_normals(prims: Primitives, p: int, pts: np.ndarray) -> np.ndarray:
    """Outward unit normals ``[N,3]`` of primitive ``p`` at points ``pts [N,3]`` on its surface.

    For boxes and cylinder rims the nearest face wins.
    """
    q = _to_local(prims, p, pts)
    h = prims.half[p]
    n = np.zeros_like(q)
    rows = np.arange(len(q))
    if prims.kind[p] == 0:
        axis = np.argmin(h - np.abs(q), axis=1)
        n[rows, axis] = np.where(q[rows, axis] >= 0, 1.0, -1.0)
    elif prims.kind[p] == 1:
        rad = np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2)
        cap = h[2] - np.abs(q[:, 2]) < h[0] - rad
        n[:, 0] = np.where(cap, 0.0, q[:, 0] / np.maximum(rad, 1e-12))
        n[:, 1] = np.where(cap, 0.0, q[:, 1] / np.maximum(rad, 1e-12))
        n[:, 2] = np.where(cap, np.sign(q[:, 2]), 0.0)
    else:
        n = q / h[0]
    c, s = math.cos(prims.yaw[p]), math.sin(prims.yaw[p])
    return np.stack([c * n[:, 0] - s * n[:, 1], s * n[:, 0] + c * n[:, 1], n[:, 2]], axis=1)


def intersect(prims: Primitives, p: int, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest entry of rays ``origin [3] + t * dirs [M,3]`` into primitive ``p``.

    Returns ``t [M]`` (inf where missed; rays starting inside a primitive miss it) and the outward
    unit normal at the hit ``[M,3]`` (zeros where missed).
    """
    t = _hit_distance(prims, p, origin, dirs[:, 0], dirs[:, 1], dirs[:, 2])
    n = np.zeros((len(t), 3))
    hit = np.isfinite(t)
    n[hit] = surface_normals(prims, p, origin + t[hit, None] * dirs[hit])
    return t, n


def _screen_rect(corners: np.ndarray, cam: Camera) -> tuple[int, int, int, int] | None:
    """Pixel block ``(v0, v1, u0, u1)`` containing the projection of a convex box, or None if unseen."""
    W, H = cam.width, cam.height
    pc = cam.world_to_camera_points(corners)
    if pc[:, 2].max() <= 0:
        return None
    if pc[:, 2].min() <= 1e-6:  # straddles the camera plane: no tight bound
        return 0, H, 0, W
    if cam.distortion is not None and not cam.distortion.is_identity():
        return 0, H, 0, W  # a lens bends the box's edges: no tight bound from its corners
    uv, _ = cam.project(corners, apply_distortion=False)
    u0, v0 = np.floor(uv.min(axis=0) - 1).astype(int)
    u1, v1 = np.ceil(uv.max(axis=0) + 1).astype(int)
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, W), min(v1, H)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


# ---- appearance ---------------------------------------------------------------------------------
_HASH = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _hash01(ijk: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice points ``[N,3]`` -> deterministic pseudo-random values in [0, 1) ``[N]``."""
    u = ijk.astype(np.int64).view(np.uint64)
    x = (u[:, 0] * _HASH[0]) ^ (u[:, 1] * _HASH[1]) ^ (u[:, 2] * _HASH[2]) ^ np.uint64(seed * 7919 + 1)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _value_noise(q: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at ``q [N,3]`` (lattice spacing 1)."""
    i0 = np.floor(q)
    f = q - i0
    w = f * f * (3.0 - 2.0 * f)
    i0 = i0.astype(np.int64)
    acc = np.zeros(len(q))
    for corner in itertools.product((0, 1), repeat=3):  # trilinear blend of the 8 lattice corners
        wt = np.prod([w[:, a] if corner[a] else 1.0 - w[:, a] for a in range(3)], axis=0)
        acc += wt * _hash01(i0 + np.array(corner), seed)
    return acc


def shade(inst: Instance, pts: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Colour ``[N,3]`` in [0,1] of surface points ``pts [N,3]`` with outward ``normals [N,3]``.

    Albedo = base/accent mix by a 3D pattern in the object's frame (so it is view-independent),
    times Lambert shading with one directional light plus ambient. Pixels and points both use it.
    """
    c, s = math.cos(inst.yaw), math.sin(inst.yaw)
    q = pts - inst.origin
    local = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], axis=1)
    local = local / inst.scale + inst.offset
    if inst.pattern == "stripes":
        m = 0.5 + 0.5 * np.sin(2 * math.pi * (local @ inst.direction))
    elif inst.pattern == "checker":
        m = (np.floor(local).astype(np.int64).sum(axis=1) % 2).astype(np.float64)
    else:
        m = 0.65 * _value_noise(local, inst.id) + 0.35 * _value_noise(2.03 * local + 17.1, inst.id + 101)
    albedo = inst.base * (1 - m[:, None]) + inst.accent * m[:, None]
    light = _AMBIENT + _DIFFUSE * np.clip(normals @ _LIGHT, 0.0, 1.0)
    return np.clip(albedo * light[:, None], 0.0, 1.0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


# ---- rendering ----------------------------------------------------------------------------------
@dataclass
class ViewRender:
    """Ray-cast outputs of one view, one value per pixel centre."""

    rgb: np.ndarray  # [H,W,3] uint8
    depth: np.ndarray  # [H,W] float64 camera z in metres, 0 = no hit
    instance: np.ndarray  # [H,W] uint16, 0 = none
    label: np.ndarray  # [H,W] uint16 NYU40, 0 = none


def render_view(layout: Layout, cam: Camera) -> ViewRender:
    """Ray-cast every pixel centre of ``cam`` against all primitives and keep the nearest hit."""
    H, W = cam.height, cam.width
    o, d = cam.rays(through_lens=True)  # [H,W,3] each
    origin = o[0, 0]
    prims = layout.prims
    corners = prims.corners()
    t_best = np.full((H, W), np.inf)
    p_best = np.full((H, W), -1, dtype=np.int64)
    for p in range(len(prims)):
        rect = _screen_rect(corners[p], cam)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        block = d[v0:v1, u0:u1]
        t = _hit_distance(prims, p, origin, block[..., 0].ravel(), block[..., 1].ravel(), block[..., 2].ravel())
        tb = t_best[v0:v1, u0:u1]
        closer = t.reshape(tb.shape) < tb
        tb[closer] = t[closer.ravel()]
        p_best[v0:v1, u0:u1][closer] = p
    hit = p_best >= 0
    forward = cam.cam_to_world.numpy()[:3, 2]
    depth = np.where(hit, t_best * (d @ forward), 0.0)
    inst_of_prim = np.append(prims.instance, 0)
    inst_map = inst_of_prim[p_best]  # p_best = -1 picks the trailing 0
    by_id = {i.id: i for i in layout.instances}
    label_of = np.zeros(max(by_id) + 1, dtype=np.int64)
    for i in layout.instances:
        label_of[i.id] = i.nyu40
    pts = origin + np.where(hit, t_best, 0.0)[..., None] * d  # [H,W,3]
    normals = np.zeros((H, W, 3))
    for p in np.unique(p_best[hit]):
        sel = p_best == p
        normals[sel] = surface_normals(prims, int(p), pts[sel])
    rgb = np.zeros((H, W, 3))
    for iid in np.unique(inst_map[hit]):
        sel = inst_map == iid
        rgb[sel] = shade(by_id[int(iid)], pts[sel], normals[sel])
    return ViewRender(rgb=_to_uint8(rgb), depth=depth, instance=inst_map.astype(np.uint16),
                      label=label_of[inst_map].astype(np.uint16))


# ---- surface points -----------------------------------------------------------------------------
@dataclass
class SurfacePoints:
    """Uniform samples of the visible outer surface."""

    xyz: np.ndarray  # [N,3] float64 world
    normal: np.ndarray  # [N,3] outward unit normals
    rgb: np.ndarray  # [N,3] uint8
    instance: np.ndarray  # [N] int64
    label: np.ndarray  # [N] int64 NYU40


def _sample_prim(prims: Primitives, p: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``m`` area-uniform samples on primitive ``p``'s surface: world points and normals ``[m,3]``."""
    kind, h = prims.kind[p], prims.half[p]
    if kind == 0:
        areas = np.repeat([h[1] * h[2], h[0] * h[2], h[0] * h[1]], 2)
        face = rng.choice(6, size=m, p=areas / areas.sum())
        axis, sign = face // 2, (face % 2) * 2.0 - 1.0
        q = rng.uniform(-1.0, 1.0, size=(m, 3)) * h
        q[np.arange(m), axis] = sign * h[axis]
        n = np.zeros((m, 3))
        n[np.arange(m), axis] = sign
    elif kind == 1:
        r, hz = h[0], h[2]
        areas = np.array([2 * math.pi * r * 2 * hz, math.pi * r * r, math.pi * r * r])
        part = rng.choice(3, size=m, p=areas / areas.sum())
        phi = rng.uniform(0, 2 * math.pi, size=m)
        rad = np.where(part == 0, r, r * np.sqrt(rng.uniform(0, 1, size=m)))
        z = np.where(part == 0, rng.uniform(-hz, hz, size=m), np.where(part == 1, hz, -hz))
        q = np.stack([rad * np.cos(phi), rad * np.sin(phi), z], axis=1)
        n = np.where((part == 0)[:, None], np.stack([np.cos(phi), np.sin(phi), np.zeros(m)], axis=1),
                     np.stack([np.zeros(m), np.zeros(m), np.where(part == 1, 1.0, -1.0)], axis=1))
    else:
        v = rng.normal(size=(m, 3))
        n = v / np.linalg.norm(v, axis=1, keepdims=True)
        q = n * h[0]
    c, s = math.cos(prims.yaw[p]), math.sin(prims.yaw[p])
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return q @ R.T + prims.center[p], n @ R.T


def _prim_areas(prims: Primitives) -> np.ndarray:
    h = prims.half
    box = 8 * (h[:, 0] * h[:, 1] + h[:, 1] * h[:, 2] + h[:, 0] * h[:, 2])
    cyl = 2 * math.pi * h[:, 0] * 2 * h[:, 2] + 2 * math.pi * h[:, 0] ** 2
    sph = 4 * math.pi * h[:, 0] ** 2
    return np.select([prims.kind == 0, prims.kind == 1], [box, cyl], sph)


def sample_surface_points(layout: Layout, n: int, seed: int) -> SurfacePoints:
    """``n`` area-uniform samples on the outer surfaces that can be seen from inside the room.

    Samples inside another primitive (contact faces, overlaps) or outside the room interior (wall
    backs, below the floor) are rejected; the survivors are uniform on the rest of the surface.
    """
    rng = np.random.default_rng([seed, 1])
    prims = layout.prims
    Lx, Ly, Hw = layout.room
    areas = _prim_areas(prims)
    keep_xyz, keep_n, keep_p = [], [], []
    n_kept, n_drawn, n_acc = 0, 0, 0
    while n_kept < n:
        # Draw enough for the remaining count at the acceptance rate seen so far.
        rate = max(n_acc / n_drawn, 0.05) if n_drawn else 0.7
        m_total = int((n - n_kept) / rate * 1.15) + 64
        counts = rng.multinomial(m_total, areas / areas.sum())
        for p in np.nonzero(counts)[0]:
            xyz, nrm = _sample_prim(prims, int(p), int(counts[p]), rng)
            pid = np.full(len(xyz), p)
            eps = 1e-6
            room_ok = ((xyz[:, 0] >= -eps) & (xyz[:, 0] <= Lx + eps) & (xyz[:, 1] >= -eps) & (xyz[:, 1] <= Ly + eps)
                       & (xyz[:, 2] >= -eps) & (xyz[:, 2] <= Hw + eps))
            ok = room_ok & ~inside_mask(prims, xyz, 1e-5, skip=pid)
            keep_xyz.append(xyz[ok])
            keep_n.append(nrm[ok])
            keep_p.append(pid[ok])
            n_kept += int(ok.sum())
            n_acc += int(ok.sum())
        n_drawn += m_total
    xyz, nrm, pid = np.concatenate(keep_xyz), np.concatenate(keep_n), np.concatenate(keep_p)
    pick = np.sort(rng.choice(len(xyz), size=n, replace=False))
    xyz, nrm, pid = xyz[pick], nrm[pick], pid[pick]
    inst = prims.instance[pid]
    by_id = {i.id: i for i in layout.instances}
    rgb = np.zeros((n, 3))
    for iid in np.unique(inst):
        sel = inst == iid
        rgb[sel] = shade(by_id[int(iid)], xyz[sel], nrm[sel])
    label = np.array([by_id[int(i)].nyu40 for i in inst], dtype=np.int64)
    return SurfacePoints(xyz=xyz, normal=nrm, rgb=_to_uint8(rgb), instance=inst.astype(np.int64), label=label)


# ---- writing ------------------------------------------------------------------------------------
def _transforms(cfg: SynthConfig, views: list[View]) -> dict:
    fx = _focal(cfg)
    frames = []
    for v in views:
        c2w_gl = v.camera.cam_to_world.numpy() @ GL_TO_CV  # OpenCV -> OpenGL: negate columns 1 and 2
        frames.append({"file_path": f"color/{v.name}", "transform_matrix": [[float(x) for x in row] for row in c2w_gl]})
    out = {"w": cfg.width, "h": cfg.height, "fl_x": fx, "fl_y": fx, "cx": cfg.width / 2, "cy": cfg.height / 2,
           "frames": frames}
    if cfg.distortion is not None:
        k1, k2, p1, p2 = cfg.distortion
        out.update(camera_model="OPENCV", k1=k1, k2=k2, p1=p1, p2=p2)
    return out


def _expected_files(cfg: SynthConfig, views: list[View]) -> list[str]:
    files = ["transforms_train.json", "transforms_test.json", "points3d.ply", f"{cfg.scene_name}_vh_clean_2.labels.ply",
             "instances.json"]
    for v in views:
        files += [f"color/{v.name}.{cfg.image_format}", f"depth/{v.name}.png", f"instance-filt/{v.name}.png",
                  f"label-filt/{v.name}.png"]
    return files


def _is_complete(root: Path, stamp: dict) -> bool:
    try:
        old = json.loads((root / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    return (old.get("complete") is True and old.get("config") == stamp["config"]
            and all((root / f).is_file() for f in old.get("files", [])))


def _clear_outputs(root: Path) -> None:
    """Remove what an earlier generation wrote (and only that), so no stale frame survives."""
    for sub in _MAPS:
        folder = root / sub
        if folder.is_dir():
            for f in folder.iterdir():
                if _FRAME_RE.match(f.name):
                    f.unlink()
    for f in root.glob("*_vh_clean_2.labels.ply"):
        f.unlink()
    for name in ("transforms_train.json", "transforms_test.json", "points3d.ply", "instances.json", "synth.json"):
        (root / name).unlink(missing_ok=True)


def generate_room(cfg: SynthConfig) -> Path:
    """Generate (or reuse) the room for ``cfg`` and return its scene folder ``cfg.out / cfg.scene_name``.

    Deterministic: the same config writes the same bytes. A folder holding a complete scene for the
    same config is reused as is unless ``cfg.overwrite``; ``synth.json`` is written last, so an
    interrupted generation is redone on the next call.
    """
    root = cfg.scene_dir
    stamp = {"config": cfg.stamp()}
    if not cfg.overwrite and _is_complete(root, stamp):
        return root
    if root.is_dir() and any(root.iterdir()):
        old_cfg = None
        try:
            old_cfg = json.loads((root / "synth.json").read_text()).get("config")
        except (OSError, ValueError):
            pass
        if old_cfg is None and not cfg.overwrite:
            raise ConfigError(f"{root}: folder exists and holds no synthetic scene stamp (synth.json); "
                              "choose another --out or pass --overwrite to write the scene into it")
        if old_cfg is not None and old_cfg != stamp["config"] and not cfg.overwrite:
            raise ConfigError(f"{root}: holds a synthetic scene generated with another configuration; "
                              "pass --overwrite to replace it or choose another --out")
        _clear_outputs(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "synth.json", {**stamp, "complete": False})

    layout = build_layout(cfg)
    for v in tqdm(layout.views, desc=f"{cfg.scene_name}: ray casting", unit="view", disable=not cfg.progress):
        r = render_view(layout, replace(v.camera, distortion=cfg.lens()))
        save_image(root / "color" / f"{v.name}.{cfg.image_format}", r.rgb)
        save_image(root / "depth" / f"{v.name}.png", np.clip(np.round(r.depth * 1000.0), 0, 65535).astype(np.uint16))
        save_image(root / "instance-filt" / f"{v.name}.png", r.instance)
        save_image(root / "label-filt" / f"{v.name}.png", r.label)
    write_json(root / "transforms_train.json", _transforms(cfg, [v for v in layout.views if v.split == "train"]))
    write_json(root / "transforms_test.json", _transforms(cfg, [v for v in layout.views if v.split == "test"]))

    pts = sample_surface_points(layout, cfg.n_points, cfg.seed)
    xyz = pts.xyz.astype(np.float32)
    vertex = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
              "red": pts.rgb[:, 0], "green": pts.rgb[:, 1], "blue": pts.rgb[:, 2]}
    write_ply(root / "points3d.ply", vertex)
    write_ply(root / f"{cfg.scene_name}_vh_clean_2.labels.ply",
              {**vertex, "label": pts.label.astype(np.uint16), "instance": pts.instance.astype(np.uint16)})
    write_json(root / "instances.json", {"scene": cfg.scene_name, "seed": cfg.seed, "preset": cfg.preset,
                                         "instances": layout.instance_table()})
    write_json(root / "synth.json", {**stamp, "complete": True, "files": _expected_files(cfg, layout.views)})
    return root


__all__ = [
    "NYU40_IDS", "OBJECT_CLASSES", "PRESETS", "Instance", "Layout", "Primitives", "SurfacePoints", "SynthConfig",
    "View", "ViewRender", "build_layout", "generate_room", "inside_mask", "intersect", "render_view",
    "sample_surface_points", "shade", "surface_normals",
]
