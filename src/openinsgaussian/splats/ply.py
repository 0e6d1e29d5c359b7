"""Gaussian PLY files in the Inria / gsplat layout, plus our per-Gaussian extras.

Column order (binary little endian, float32 unless noted):
``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3`` as the 3DGS viewers
expect, where ``f_rest`` is channel-major (``f_rest_{c*(K-1)+k}`` is channel ``c`` of SH
coefficient ``k+1``), ``opacity`` is the logit, ``scale_*`` the log-scales and ``rot_*`` the
quaternion (w, x, y, z). Then ``ins_feat_0..5`` and, when given, ``instance_id`` / ``leaf_id`` (int32).
The normals are zero. Byte-level I/O is :mod:`openinsgaussian.data.ply`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.ply import read_ply, write_ply
from ..errors import DataError
from .gaussians import GaussianModel, num_sh_bases

log = logging.getLogger(__name__)

_OG_INS_NAMES = ("ins_feat_r", "ins_feat_g", "ins_feat_b", "ins_feat_r2", "ins_feat_g2", "ins_feat_b2")


@dataclass
class PlyWriteResult:
    """What :func:`save_gaussians_ply` wrote."""

    path: Path
    written: int  # rows written
    dropped: int  # rows dropped because some value was NaN/Inf
    kept: np.ndarray  # [N] bool, which input rows were written


def gaussians_to_columns(model: GaussianModel, instance_id: np.ndarray | None = None,
                         leaf_id: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The model as ordered PLY columns ``{name: [N]}`` (all rows, finite or not)."""
    p = {k: v.detach().cpu() for k, v in model.params.items()}
    n = len(model)
    f32 = np.float32
    cols: dict[str, np.ndarray] = {}
    xyz = p["means"].numpy().astype(f32)
    for i, a in enumerate("xyz"):
        cols[a] = xyz[:, i]
    for a in ("nx", "ny", "nz"):
        cols[a] = np.zeros(n, dtype=f32)
    dc = p["sh0"].transpose(1, 2).reshape(n, 3).numpy().astype(f32)  # [N,3]
    for i in range(dc.shape[1]):
        cols[f"f_dc_{i}"] = dc[:, i]
    rest = p["shN"].transpose(1, 2).reshape(n, 3 * p["shN"].shape[1]).numpy().astype(f32)  # [N,3*(K-1)], channel-major
    for i in range(rest.shape[1]):
        cols[f"f_rest_{i}"] = rest[:, i]
    cols["opacity"] = p["opacities"].numpy().astype(f32)
    sc = p["scales"].numpy().astype(f32)
    for i in range(3):
        cols[f"scale_{i}"] = sc[:, i]
    q = p["quats"].numpy().astype(f32)
    for i in range(4):
        cols[f"rot_{i}"] = q[:, i]
    feat = p["ins_feat"].numpy().astype(f32)
    for i in range(feat.shape[1]):
        cols[f"ins_feat_{i}"] = feat[:, i]
    for name, ids in (("instance_id", instance_id), ("leaf_id", leaf_id)):
        if ids is not None:
            ids = np.asarray(ids)
            if ids.shape != (n,) or ids.dtype.kind not in "iu":
                raise DataError(None, f"{name} must be an integer array of shape ({n},), got {ids.dtype} {ids.shape}")
            cols[name] = ids.astype(np.int32)
    return cols


def save_gaussians_ply(path: str | Path, model: GaussianModel, *, instance_id: np.ndarray | None = None,
                       leaf_id: np.ndarray | None = None) -> PlyWriteResult:
    """Write ``model`` (atomically); rows with any non-finite float are dropped and counted."""
    path = Path(path)
    cols = gaussians_to_columns(model, instance_id=instance_id, leaf_id=leaf_id)
    n = len(model)
    finite = np.ones(n, dtype=bool)
    for a in cols.values():
        if a.dtype.kind == "f":
            finite &= np.isfinite(a)
    dropped = int(n - finite.sum())
    if dropped:
        log.warning("%s: dropped %d of %d Gaussians with NaN/Inf values", path, dropped, n)
        cols = {k: v[finite] for k, v in cols.items()}
    write_ply(path, cols, binary=True)
    return PlyWriteResult(path=path, written=int(finite.sum()), dropped=dropped, kept=finite)


def load_gaussians_ply(path: str | Path, *, seed: int = 0,
                       device: torch.device | str = "cpu") -> tuple[GaussianModel, dict[str, np.ndarray]]:
    """Read a Gaussian PLY (ours, Inria 3DGS or OpenGaussian) -> ``(model, extras)``.

    The SH degree follows the number of ``f_rest_*`` columns. Instance features come from
    ``ins_feat_0..`` (or OpenGaussian's ``ins_feat_r,g,b,r2,g2,b2``); a file without them (plain
    3DGS) gets U[0,1) features seeded by ``seed``. ``extras`` holds ``instance_id`` / ``leaf_id``
    when present.
    """
    path = Path(path)
    v = read_ply(path)
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", *(f"scale_{i}" for i in range(3)),
                *(f"rot_{i}" for i in range(4))]
    missing = [k for k in required if k not in v]
    if missing:
        raise DataError(path, f"not a Gaussian PLY: missing properties {missing}",
                        "expected the 3DGS layout (x y z f_dc_* f_rest_* opacity scale_* rot_*)")
    n = len(v["x"])
    n_rest = sum(1 for k in v if k.startswith("f_rest_"))
    degree = next((d for d in range(0, 5) if 3 * (num_sh_bases(d) - 1) == n_rest), None)
    if degree is None:
        raise DataError(path, f"{n_rest} f_rest_* columns do not match any SH degree 0..4")

    def stack(names: list[str]) -> torch.Tensor:
        if not names:
            return torch.zeros(n, 0)
        try:
            arr = np.stack([np.asarray(v[k], dtype=np.float32) for k in names], axis=1)
        except KeyError as e:
            raise DataError(path, f"missing property {e.args[0]}") from None
        return torch.from_numpy(np.ascontiguousarray(arr))

    kr = num_sh_bases(degree) - 1
    if any(k.startswith("ins_feat_") and k[9:].isdigit() for k in v):
        d = sum(1 for k in v if k.startswith("ins_feat_") and k[9:].isdigit())
        ins = stack([f"ins_feat_{i}" for i in range(d)])
    elif all(k in v for k in _OG_INS_NAMES):
        ins = stack(list(_OG_INS_NAMES))
    else:
        ins = torch.rand(n, 6, generator=torch.Generator().manual_seed(seed))
    params = {
        "means": stack(["x", "y", "z"]),  # [N,3]
        "sh0": stack([f"f_dc_{i}" for i in range(3)])[:, None, :],  # [N,1,3]
        "shN": stack([f"f_rest_{i}" for i in range(3 * kr)]).reshape(n, 3, kr).transpose(1, 2).contiguous(),
        "opacities": torch.from_numpy(np.asarray(v["opacity"], dtype=np.float32).copy()),  # [N]
        "scales": stack([f"scale_{i}" for i in range(3)]),  # [N,3]
        "quats": stack([f"rot_{i}" for i in range(4)]),  # [N,4]
        "ins_feat": ins,  # [N,D]
    }
    model = GaussianModel({k: t.to(device) for k, t in params.items()}, sh_degree=degree)
    extras = {k: np.asarray(v[k]).astype(np.int64) for k in ("instance_id", "leaf_id") if k in v}
    return model, extras
