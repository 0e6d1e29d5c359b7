"""ScanNet scenes in the OpenGaussian layout (METHOD §10.1), real or synthetic.

``transforms_train/test.json`` (OpenGL camera-to-world, ``fl_x, fl_y, cx, cy, w, h``), the mesh
vertices ``points3d.ply`` as the initial point cloud, and the GT of the ScanNet protocol: per-vertex
NYU40 labels from ``<scene>_vh_clean_2.labels.ply`` (same vertex order) and, when present, the 2D
export maps ``depth/``, ``instance-filt/``, ``label-filt/`` per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .ply import read_ply, read_points
from .scene import Frame, Scene
from .transforms import (attach_language_features, find_transforms_files, load_json, make_frames,
                         read_split)

LABELS_GLOB = "*_vh_clean_2.labels.ply"
#: ScanNet's label table: raw label ids of the 2D exports (``label-filt/``) -> NYU40 ids.
LABEL_TSV = "scannetv2-labels.combined.tsv"
# Frame attribute -> folder of the ScanNet 2D export holding ``<name>.png``.
GT_MAP_FOLDERS = {"depth_path": "depth", "instance_path": "instance-filt", "label_path": "label-filt"}


def read_scannet(root: str | Path, *, downscale: float = 1.0,
                 background: tuple[float, float, float] = (0.0, 0.0, 0.0), eval_split: bool = True,
                 holdout_every: int = 8) -> Scene:
    """A :class:`Scene` from an OpenGaussian-style ScanNet folder.

    Frames with a non-finite pose (ScanNet marks failed tracking with -inf) are dropped with a
    warning. Without ``eval_split`` the test frames join training (duplicates of training images are
    not added twice) and the test set is empty. ``holdout_every`` only applies to a folder with a
    single ``transforms.json``.
    """
    root = Path(root)
    found = find_transforms_files(root)
    if found is None:
        raise DataError(root, "no transforms_train.json (or transforms.json) found",
                        "a ScanNet scene in the OpenGaussian layout holds transforms_train.json, "
                        "transforms_test.json and points3d.ply")
    problems: list[str] = []
    train, test, _ = read_split(found, downscale=downscale, eval_split=eval_split,
                                holdout_every=holdout_every, problems=problems)
    train_frames, test_frames = make_frames(train, test, eval_split=eval_split, background=background)
    lut = find_label_lut(root, problems)
    for f in train_frames + test_frames:
        attach_language_features(f, root)
        attach_gt_maps(f, root)
        if f.label_path is not None:
            f.label_lut = lut

    points_path = root / "points3d.ply"
    if not points_path.is_file():
        raise DataError(points_path, "point cloud not found",
                        "ScanNet scenes need points3d.ply (the mesh vertices) as the initial point cloud")
    points, colors, _ = read_points(points_path)
    labels, instances = read_point_labels(root, len(points), points_path, problems)
    return Scene(root=root, source="scannet", train_frames=train_frames, test_frames=test_frames,
                 points=points, colors=colors, point_labels=labels, point_instances=instances,
                 instance_classes=read_instance_classes(root / "instances.json"), problems=problems)


def attach_gt_maps(frame: Frame, root: Path) -> None:
    """Set ``depth_path``/``instance_path``/``label_path`` for the maps that exist for this frame."""
    for attr, folder in GT_MAP_FOLDERS.items():
        p = root / folder / f"{frame.name}.png"
        setattr(frame, attr, p if p.is_file() else None)


def read_label_tsv(path: Path) -> np.ndarray:
    """``[K]`` int64 lookup table raw ScanNet label id -> NYU40 id (0 where unlisted) from
    ``scannetv2-labels.combined.tsv`` (tab-separated, header row with ``id`` and ``nyu40id``)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as e:
        raise DataError(path, f"cannot read the label table: {e}") from None
    if not rows or "id" not in rows[0] or "nyu40id" not in rows[0]:
        raise DataError(path, "expected a tab-separated table with columns 'id' and 'nyu40id'",
                        "use ScanNet's scannetv2-labels.combined.tsv")
    pairs = []
    for i, r in enumerate(rows, start=2):
        try:
            pairs.append((int(r["id"]), int(r["nyu40id"] or 0)))
        except (TypeError, ValueError):
            raise DataError(path, f"line {i}: 'id' and 'nyu40id' must be integers") from None
    lut = np.zeros(max(k for k, _ in pairs) + 1, dtype=np.int64)
    for k, v in pairs:
        lut[k] = v
    return lut


def find_label_lut(root: Path, problems: list[str]) -> np.ndarray | None:
    """The raw-id -> NYU40 table when ``scannetv2-labels.combined.tsv`` is in the scene folder or
    its parent (the layout of a ScanNet download). Without it, label maps are read as NYU40 ids,
    which is what the synthetic rooms write; real ScanNet ``label-filt/`` maps hold raw ids."""
    for cand in (root / LABEL_TSV, root.parent / LABEL_TSV):
        if cand.is_file():
            return read_label_tsv(cand)
    if (root / "label-filt").is_dir() and not (root / "synth.json").is_file():
        problems.append(
            f"{root / 'label-filt'}: read as NYU40 ids; put {LABEL_TSV} in {root} or its parent "
            "if these are raw ScanNet label ids"
        )
    return None


def read_point_labels(root: Path, n_points: int, points_path: Path,
                      problems: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(labels [P] int64 NYU40, instances [P] int64 | None)`` from the labels PLY, or ``(None, None)``."""
    found = sorted(root.glob(LABELS_GLOB))
    if not found:
        return None, None
    path = found[0]
    if len(found) > 1:
        problems.append(f"{root}: several {LABELS_GLOB} files, using {path.name}")
    vertex = read_ply(path)
    if "label" not in vertex:
        raise DataError(path, f"labels PLY has no vertex property 'label' (has: {', '.join(vertex)})")
    n = len(vertex["label"])
    if n != n_points:
        raise DataError(path, f"labels PLY has {n} vertices but {points_path} has {n_points}",
                        "both must list the same mesh vertices in the same order")
    labels = vertex["label"].astype(np.int64)
    instances = vertex["instance"].astype(np.int64) if "instance" in vertex else None
    return labels, instances


def read_instance_classes(path: Path) -> dict[int, tuple[str, int]]:
    """``{instance id: (class name, NYU40 id)}`` from ``instances.json``; empty when the file is absent.

    Format: ``{"instances": [{"id": 1, "class": "chair", "nyu40": 5}, ...]}``.
    """
    if not path.is_file():
        return {}
    items = load_json(path).get("instances")
    if not isinstance(items, list):
        raise DataError(path, "expected {'instances': [{'id': ..., 'class': ..., 'nyu40': ...}, ...]}")
    out: dict[int, tuple[str, int]] = {}
    for i, item in enumerate(items):
        try:
            out[int(item["id"])] = (str(item["class"]), int(item["nyu40"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(path, f"instances[{i}] needs integer 'id', string 'class' and integer 'nyu40'") from None
    return out
