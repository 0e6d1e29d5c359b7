"""Atomic file writes: write to a temp file in the same folder, then rename.

An interrupted run therefore never leaves a half-written artifact behind, and a resumed run can
trust that every file that exists is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def safe_filename(name: str, default: str = "file") -> str:
    """``name`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (a query text
    or frame name used as a file name); ``default`` when nothing is left."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or default


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file next to ``path``; on clean exit fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f  # type: ignore[misc]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Save a uint8 [H,W] / [H,W,3] / [H,W,4] or uint16 [H,W] array; format from the suffix."""
    from PIL import Image

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix {path.suffix!r}")
    if image.dtype == np.uint16:
        if fmt != "PNG":
            raise ValueError(f"{path}: 16-bit images must be PNG")
        pil = Image.fromarray(image)
    else:
        pil = Image.fromarray(np.ascontiguousarray(image))
    with atomic_open(path, "wb") as f:
        kwargs = {"quality": 95} if fmt == "JPEG" else {}
        pil.save(f, format=fmt, **kwargs)
