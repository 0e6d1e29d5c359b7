"""The typed result of ``openins eval`` / :func:`openinsgaussian.evaluate` (both protocols)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EvalResult:
    """One run evaluated with one protocol; the full metrics are also in ``metrics_path``."""

    protocol: str
    """``scannet`` (per-point mIoU / mAcc) or ``lerf`` (rendered-mask IoU, mAcc@k)."""
    run: Path
    """The run directory."""
    scene: str
    """Scene name (the LeRF query list's name, else the scene folder's)."""
    metrics_path: Path
    """``RUN/metrics/<protocol>.json``."""
    language_source: str
    """The run's language source (``oracle`` or ``clip:...``)."""
    compat: bool
    """The public evaluation's quirks were reproduced."""
    summary: dict[str, dict[str, float | int | None]]
    """ScanNet: class list -> ``miou``, ``macc``, ``classes_present``; LeRF: query (and
    ``scene``) -> ``miou``, ``macc@0.25``, ``macc@0.5``, ``pairs``, ``n_gaussians``."""
    metrics: dict[str, Any] = field(repr=False)
    """Everything written to ``metrics_path`` (per-class IoUs, provenance, text side)."""
    plot: Path | None = None
    """ScanNet: the per-class IoU plot."""
    overlays: Path | None = None
    """LeRF: the folder of prediction / GT overlays."""

    def to_json(self) -> dict[str, Any]:
        """The metrics JSON (the file's content)."""
        return self.metrics


__all__ = ["EvalResult"]
