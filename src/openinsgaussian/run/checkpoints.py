"""Atomic training checkpoints with everything needed to resume bit-for-bit.

A checkpoint is one ``torch.save`` dict written through :func:`openinsgaussian.io.save_torch`
(temp file + fsync + rename), so a file named ``step_XXXXXX.pt`` is always complete. Loading tries
the newest first and falls back to older ones if a file cannot be read (e.g. copied in truncated).
Payloads hold only tensors and plain Python data and load with ``weights_only=True``.

Every stage stores its model as ``payload["model"]`` (``GaussianModel.state_dict()``), so
:func:`latest_model_state` can find the newest model of a run whatever stage wrote it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import RunError
from ..io import save_torch
from .directory import STAGES, RunDir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


def list_checkpoints(run: RunDir, stage: str) -> list[tuple[int, Path]]:
    """``(step, path)`` of a stage's checkpoints, oldest first."""
    folder = run.stage_checkpoints(stage)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def save_checkpoint(run: RunDir, stage: str, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
    """Write ``payload`` as the checkpoint of ``step`` atomically; keep only the newest ``keep``."""
    path = run.checkpoint_path(stage, step)
    save_torch(path, {"format": FORMAT_VERSION, "stage": stage, "step": int(step), **payload})
    if keep > 0:
        for _, old in list_checkpoints(run, stage)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load one checkpoint file (weights only); :class:`RunError` if unreadable."""
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/IO failure means "not usable"
        raise RunError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or "step" not in data:
        found = data.get("format") if isinstance(data, dict) else "?"
        raise RunError(f"{path}: not a checkpoint of this version (format {found}, expected {FORMAT_VERSION})")
    return data


def load_latest_checkpoint(run: RunDir, stage: str,
                           map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The newest readable checkpoint of ``stage``, or None when there is none."""
    for _step, path in reversed(list_checkpoints(run, stage)):
        try:
            return load_checkpoint(path, map_location)
        except RunError as e:
            log.warning("skipping unreadable checkpoint (%s)", e)
    return None


def latest_model_state(run: RunDir, map_location: torch.device | str = "cpu") -> tuple[str, dict[str, Any]]:
    """``(stage, payload)`` of the newest checkpoint of the latest stage that has one."""
    for stage in reversed(STAGES):
        ck = load_latest_checkpoint(run, stage, map_location)
        if ck is not None and "model" in ck:
            return stage, ck
    raise RunError(f"{run.path}: no checkpoint with a model found under {run.checkpoints}")


# ---- random number generators -------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Global torch CPU/CUDA RNG states plus named generators' states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    saved = state.get("generators", {})
    for k, g in (generators or {}).items():
        if k not in saved:
            raise RunError(f"checkpoint has no state for random generator '{k}'")
        g.set_state(saved[k].cpu())
