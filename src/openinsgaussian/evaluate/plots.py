"""Metric plots as PNG files (matplotlib Agg canvas, no global backend switch, atomic write)."""

from __future__ import annotations

import io as _io
from collections.abc import Mapping
from pathlib import Path

from ..errors import DataError
from ..io import write_bytes


def _panels(result: Mapping) -> list[tuple[str, Mapping]]:
    """``(title, list result)`` pairs from an :func:`evaluate_scannet` result or a single list."""
    if "lists" in result:
        return [(name, r) for name, r in result["lists"].items()]
    if "per_class" in result:
        return [(str(result.get("name", "")), result)]
    raise DataError(
        None, "result has neither 'lists' nor 'per_class'", "pass the output of evaluate_scannet"
    )


def plot_per_class_iou(result: Mapping, path: str | Path, title: str | None = None) -> Path:
    """Bar chart of the per-class IoU of every class list (one panel each), mIoU in the titles.

    Args:
        result: :func:`openinsgaussian.evaluate.scannet.evaluate_scannet` output (or one entry of
            its ``"lists"``).
        path: output ``.png``.
        title: figure title (e.g. the scene name).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(result)
    path = Path(path)
    fig = Figure(
        figsize=(
            max(6.0, 0.45 * max((len(p["per_class"]) for _, p in panels), default=1) + 2),
            2.8 * len(panels) + 0.6,
        )
    )
    FigureCanvasAgg(fig)
    for i, (name, r) in enumerate(panels, start=1):
        ax = fig.add_subplot(len(panels), 1, i)
        classes = list(r["per_class"].keys())
        ious = [float(r["per_class"][c]["iou"]) for c in classes]
        ax.bar(range(len(classes)), ious, color="#4477aa")
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels([str(c) for c in classes], rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("IoU")
        miou = r.get("miou")
        macc = r.get("macc")
        head = f"{name}  mIoU {miou:.3f}" if miou is not None else f"{name}  (no GT class present)"
        if macc is not None:
            head += f"  mAcc {macc:.3f}"
        ax.set_title(head, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())
    return path
