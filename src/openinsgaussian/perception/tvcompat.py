"""Make ``import torchvision`` work when its compiled ops library cannot be loaded.

open_clip, timm and segment-anything import torchvision. A torchvision wheel built for another
platform (e.g. a CUDA build on a CPU-only machine) installs fine, but its compiled ``_C`` library
fails to load. torchvision then still imports its Python side, whose ``_meta_registrations``
module registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally;
without those operator schemas the import dies with "operator torchvision::nms does not exist".

:func:`ensure_torchvision_ops` detects that case *without importing torchvision*: it loads the
``_C`` library exactly the way ``torchvision.extension`` would (same file lookup, same
``torch.ops.load_library`` call). Only if that fails does it define the two schemas, give
``nms`` a pure-torch kernel (greedy NMS, same rule as torchvision's CPU kernel), import
torchvision, and let ``torchvision.ops.boxes`` call that kernel. Every other compiled op
(roi_align, deform_conv2d, ...) stays unavailable and keeps torchvision's own error.

On a normal install the library loads, nothing is registered and the function returns False.
Set ``OIG_DISABLE_TV_COMPAT=1`` to skip the whole mechanism.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
from pathlib import Path

import torch

_LOCK = threading.Lock()
_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops
_DECIDED: bool | None = None  # None = not yet decided; True = fallback active; False = not needed


def _op_exists(name: str) -> bool:
    """True when the schema ``torchvision::<name>`` is registered (never raises)."""
    try:
        torch._C._get_schema(f"torchvision::{name}", "")
        return True
    except Exception:
        return False


def _extension_path(pkg_dir: Path) -> Path | None:
    """The ``_C`` library file torchvision would load (mirrors ``_get_extension_path``)."""
    if os.name == "nt":  # torchvision registers its folder on the DLL search path first
        try:
            os.add_dll_directory(str(pkg_dir))
        except (OSError, AttributeError):
            pass
    finder = importlib.machinery.FileFinder(
        str(pkg_dir),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    )
    spec = finder.find_spec("_C")
    return Path(spec.origin) if spec is not None and spec.origin else None


def torchvision_ops_status() -> str:
    """Why the fallback is or is not needed: "absent", "imported", "loaded" or "broken".

    "absent": torchvision is not installed; "imported": it was imported already (nothing can be
    changed any more, and a successful import means the schemas exist); "loaded": its compiled
    ops library loads; "broken": the library is missing or fails to load.
    """
    if "torchvision" in sys.modules:
        return "imported"
    if _op_exists("nms"):
        return "loaded"
    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    lib = _extension_path(Path(next(iter(spec.submodule_search_locations))))
    if lib is None:
        return "broken"
    try:
        torch.ops.load_library(str(lib))
    except (OSError, ImportError, RuntimeError):
        return "broken"
    return "loaded" if _op_exists("nms") else "broken"


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on ``boxes [N,4]`` (x1,y1,x2,y2) and ``scores [N]``; kept indices ``[K]`` int64.

    Same rule as torchvision's kernel: visit boxes by descending score, keep a box unless a kept
    box overlaps it with IoU > ``iou_threshold``; areas are (x2-x1)*(y2-y1).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    b = boxes.detach().to(torch.float64 if boxes.dtype == torch.float64 else torch.float32)
    order = torch.argsort(scores.detach(), descending=True, stable=True)
    b = b[order]  # [N,4]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # [N]
    n = b.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool, device=b.device)
    block = 2048
    keep: list[int] = []
    # Overlaps are computed in row blocks [block, N] so memory stays O(block * N).
    for start in range(0, n, block):
        stop = min(start + block, n)
        lt = torch.maximum(b[start:stop, None, :2], b[None, :, :2])  # [B,N,2]
        rb = torch.minimum(b[start:stop, None, 2:], b[None, :, 2:])  # [B,N,2]
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]  # [B,N]
        iou = inter / (area[start:stop, None] + area[None, :] - inter)  # [B,N]
        over = (iou > iou_threshold).cpu().numpy()
        sup = suppressed.cpu().numpy().copy()
        for r in range(stop - start):
            i = start + r
            if sup[i]:
                continue
            keep.append(i)
            row = over[r]
            row[: i + 1] = False
            sup |= row
        suppressed = torch.from_numpy(sup).to(b.device)
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def _register() -> None:
    global _LIBRARY
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", nms_reference, "CompositeExplicitAutograd")
    _LIBRARY = lib


def _patch_torchvision() -> None:
    """Import torchvision (now importable) and let its box ops call the registered nms."""
    import torchvision  # noqa: F401  (import succeeds because the schemas exist now)
    import torchvision.ops.boxes as boxes

    def _nms_only_check() -> None:
        return None

    # ``nms`` guards itself with ``_assert_has_ops``, which reports the failed ``_C`` load; the
    # nms kernel exists now. Other ops keep the original guard in their own modules.
    boxes._assert_has_ops = _nms_only_check  # type: ignore[attr-defined]


def ensure_torchvision_ops() -> bool:
    """Register a pure-torch ``torchvision::nms`` if (and only if) torchvision's ops cannot load.

    Must run before torchvision is first imported. Returns True when the fallback is active
    (now or from an earlier call), False when it is not needed (ops load, torchvision already
    imported, torchvision absent, or ``OIG_DISABLE_TV_COMPAT=1``). Idempotent and thread-safe.
    """
    global _DECIDED
    with _LOCK:
        if _DECIDED is not None:
            return _DECIDED
        if os.environ.get("OIG_DISABLE_TV_COMPAT", "") not in ("", "0"):
            _DECIDED = False
            return False
        if torchvision_ops_status() != "broken":
            _DECIDED = False
            return False
        _register()
        _patch_torchvision()
        _DECIDED = True
        return True


def import_open_clip():
    """``import open_clip`` after :func:`ensure_torchvision_ops`; clear error when missing."""
    from ..errors import ModelLoadError

    ensure_torchvision_ops()
    try:
        import open_clip
    except ImportError as e:
        raise ModelLoadError(
            f"open_clip is not installed ({e}); install the models extra: "
            "pip install 'openinsgaussian[models]'"
        ) from None
    return open_clip


def import_segment_anything():
    """``import segment_anything`` after :func:`ensure_torchvision_ops`; clear error if missing."""
    from ..errors import ModelLoadError

    ensure_torchvision_ops()
    try:
        import segment_anything
        import segment_anything.automatic_mask_generator  # noqa: F401
    except ImportError as e:
        raise ModelLoadError(
            f"segment-anything is not installed ({e}); install the models extra: "
            "pip install 'openinsgaussian[models]'"
        ) from None
    return segment_anything
