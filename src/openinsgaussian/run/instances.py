"""``instances.npz``: the stage-3 result of a run (leaf ids, leaf language features, codebooks).

One NumPy archive, written atomically, loadable without pickle::

    leaf_ind        [N]        int64   leaf id per Gaussian, k1*k2 = never assigned
    coarse_ind      [N]        int64   coarse id per Gaussian
    leaf_feat       [L, D]     float32 aggregated language feature per leaf (L = k1*k2)
    leaf_score      [L]        float32 mean association score over matched views
    occu_count      [L]        int64   number of views the leaf was matched in
    leaf_centers    [L+1, 6]   float32 fine codebook centres (last row: the sentinel slot)
    coarse_centers  [k1, 9]    float32 coarse codebook centres ([f, w*xyz])
    leaf_k          [k1]       int64   leaves used per coarse cluster (adaptive k2)
    match_info      [L, V, 3]  float32 (mask index, score, matched) per leaf and view
    header          []         str     JSON: language source, aggregation, association, k1, k2, ...

The first four arrays carry OpenGaussian's ``cluster_lang.npz`` names, so tools written for
that file read ours. The header says where the language features come from (``oracle`` or
``clip:<model>:<weights>...``), so an oracle result is never mistaken for a CLIP one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io import save_npz

FORMAT = "openinsgaussian-instances"
FORMAT_VERSION = 1
HEADER_KEYS = ("language_source", "aggregation", "association", "package_version", "seed")


@dataclass
class Instances:
    """The content of ``instances.npz`` (numpy arrays; shapes in the module docstring)."""

    leaf_ind: np.ndarray  # [N] int64
    coarse_ind: np.ndarray  # [N] int64
    leaf_feat: np.ndarray  # [L, D] float32
    leaf_score: np.ndarray  # [L] float32
    occu_count: np.ndarray  # [L] int64
    leaf_centers: np.ndarray  # [L+1, 6] float32
    coarse_centers: np.ndarray  # [k1, 9] float32
    leaf_k: np.ndarray  # [k1] int64
    k1: int
    k2: int
    header: dict[str, Any] = field(default_factory=dict)
    match_info: np.ndarray | None = None  # [L, V, 3] float32

    @property
    def num_leaves(self) -> int:
        return self.k1 * self.k2

    @property
    def num_gaussians(self) -> int:
        return int(self.leaf_ind.shape[0])

    @property
    def dim(self) -> int:
        return int(self.leaf_feat.shape[1])

    @property
    def language_source(self) -> str:
        return str(self.header.get("language_source", "unknown"))

    def validate(self, path: Path | None = None) -> None:
        """Check shapes and id ranges; :class:`DataError` naming ``path`` on the first problem."""
        L = self.num_leaves
        n = self.num_gaussians
        checks: list[tuple[str, tuple[int, ...], tuple[int | None, ...]]] = [
            ("leaf_ind", self.leaf_ind.shape, (n,)),
            ("coarse_ind", self.coarse_ind.shape, (n,)),
            ("leaf_feat", self.leaf_feat.shape, (L, None)),
            ("leaf_score", self.leaf_score.shape, (L,)),
            ("occu_count", self.occu_count.shape, (L,)),
            ("leaf_centers", self.leaf_centers.shape, (L + 1, 6)),
            ("coarse_centers", self.coarse_centers.shape, (self.k1, None)),
            ("leaf_k", self.leaf_k.shape, (self.k1,)),
        ]
        for name, got, want in checks:
            if len(got) != len(want) or any(
                w is not None and g != w for g, w in zip(got, want, strict=False)
            ):
                shown = tuple("*" if w is None else w for w in want)
                raise DataError(
                    path, f"{name} has shape {got}, expected {shown} (k1={self.k1}, k2={self.k2})"
                )
        if n and (int(self.leaf_ind.min()) < 0 or int(self.leaf_ind.max()) > L):
            raise DataError(
                path,
                f"leaf_ind must lie in 0..{L}, found {self.leaf_ind.min()}..{self.leaf_ind.max()}",
            )
        if n and (int(self.coarse_ind.min()) < 0 or int(self.coarse_ind.max()) >= self.k1):
            raise DataError(path, f"coarse_ind must lie in 0..{self.k1 - 1}")
        if self.match_info is not None and (
            self.match_info.ndim != 3
            or self.match_info.shape[0] != L
            or self.match_info.shape[2] != 3
        ):
            raise DataError(
                path, f"match_info has shape {self.match_info.shape}, expected ({L}, V, 3)"
            )
        missing = [k for k in HEADER_KEYS if k not in self.header]
        if missing:
            raise DataError(path, f"header lacks {missing}")


def save_instances(path: str | Path, inst: Instances) -> Path:
    """Validate and write ``inst`` atomically to ``path``; returns the path."""
    path = Path(path)
    inst.validate(path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **inst.header,
        "k1": int(inst.k1),
        "k2": int(inst.k2),
        "num_gaussians": inst.num_gaussians,
        "num_leaves": inst.num_leaves,
        "dim": inst.dim,
    }
    arrays: dict[str, np.ndarray] = {
        "leaf_ind": np.asarray(inst.leaf_ind, dtype=np.int64),
        "coarse_ind": np.asarray(inst.coarse_ind, dtype=np.int64),
        "leaf_feat": np.asarray(inst.leaf_feat, dtype=np.float32),
        "leaf_score": np.asarray(inst.leaf_score, dtype=np.float32),
        "occu_count": np.asarray(inst.occu_count, dtype=np.int64),
        "leaf_centers": np.asarray(inst.leaf_centers, dtype=np.float32),
        "coarse_centers": np.asarray(inst.coarse_centers, dtype=np.float32),
        "leaf_k": np.asarray(inst.leaf_k, dtype=np.int64),
        "k1": np.asarray(inst.k1, dtype=np.int64),
        "k2": np.asarray(inst.k2, dtype=np.int64),
        "header": np.asarray(json.dumps(header, sort_keys=True)),
    }
    if inst.match_info is not None:
        arrays["match_info"] = np.asarray(inst.match_info, dtype=np.float32)
    save_npz(path, **arrays)
    return path


_REQUIRED = (
    "leaf_ind",
    "coarse_ind",
    "leaf_feat",
    "leaf_score",
    "occu_count",
    "leaf_centers",
    "coarse_centers",
    "leaf_k",
    "k1",
    "k2",
    "header",
)


def load_instances(path: str | Path) -> Instances:
    """Read and validate ``instances.npz``; :class:`DataError` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path,
            "instances file not found",
            "run the pipeline through stage 3 first (openins train)",
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            missing = [k for k in _REQUIRED if k not in files]
            if missing:
                raise DataError(path, f"not an instances file of this version: missing {missing}")
            data = {k: z[k] for k in files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot read instances file ({e})", "re-run stage 3") from None
    try:
        header = json.loads(str(data["header"]))
    except ValueError as e:
        raise DataError(path, f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(path, "header does not name the instances format")
    if int(header.get("format_version", -1)) != FORMAT_VERSION:
        raise DataError(
            path,
            f"instances format version {header.get('format_version')} is not {FORMAT_VERSION}",
            "re-run stage 3 with this version",
        )
    inst = Instances(
        leaf_ind=data["leaf_ind"].astype(np.int64),
        coarse_ind=data["coarse_ind"].astype(np.int64),
        leaf_feat=data["leaf_feat"].astype(np.float32),
        leaf_score=data["leaf_score"].astype(np.float32),
        occu_count=data["occu_count"].astype(np.int64),
        leaf_centers=data["leaf_centers"].astype(np.float32),
        coarse_centers=data["coarse_centers"].astype(np.float32),
        leaf_k=data["leaf_k"].astype(np.int64),
        k1=int(data["k1"]),
        k2=int(data["k2"]),
        header=header,
        match_info=data.get("match_info"),
    )
    inst.validate(path)
    return inst
