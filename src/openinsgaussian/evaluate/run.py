"""``openins eval RUN --protocol scannet``: score a finished run and write its metrics and plot.

ScanNet protocol (METHOD §7.1): every Gaussian gets the class of its leaf for the 19-, 15- and
10-class vocabularies (text features from the run's own language source), and is compared with
the GT label of the scene point it was initialised from. That identity (Gaussian i == point i)
holds only when stage 0 kept the initial points frozen; other runs are refused with an error.

Writes ``RUN/metrics/scannet.json`` (with the seed, config hash, package version, device,
language source and protocol name) and ``RUN/plots/scannet_per_class_iou.png``, and prints the
mIoU / mAcc table.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .. import __version__
from ..errors import ConfigError, DataError, RunError
from ..io import write_json
from .plots import plot_per_class_iou
from .scannet import evaluate_scannet

PROTOCOLS = ("scannet", "lerf")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _print_table(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("classes", "mIoU", "mAcc", "classes present"):
        table.add_column(col, justify="right")
    for name, r in result["lists"].items():
        table.add_row(name, _fmt(r["miou"]), _fmt(r["macc"]), str(len(r["per_class"])))
    Console().print(table)


def run_metadata(loaded: Any, compat: bool) -> dict[str, Any]:
    """What every metrics JSON records to be reproducible: run, scene, seed, config hash, package
    version, device, host, the language source (so an oracle result is never read as CLIP) and
    the stage-3 modes. ``loaded`` is a :class:`~openinsgaussian.train.pipeline.LoadedRun`."""
    from ..train.run_dir import config_hash

    inst, cfg = loaded.instances, loaded.config
    return {
        "run": str(loaded.run.path),
        "scene": str(loaded.scene.root),
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "package_version": __version__,
        "device": str(loaded.model.device),
        "host": platform.machine(),
        "language_source": inst.language_source,
        "language_detail": inst.header.get("language_detail"),
        "aggregation": inst.header.get("aggregation"),
        "association": inst.header.get("association"),
        "compat": compat,
    }


def run_eval(
    run: Path,
    protocol: Literal["scannet", "lerf"] = "scannet",
    compat: bool = False,
    *,
    labels: Path | None = None,
    scene_name: str | None = None,
    print_table: bool = True,
) -> dict:
    """Evaluate ``run`` with ``protocol``; returns the metrics dict also written to JSON.

    ``scannet``: per-point labels (METHOD §7.1). ``lerf``: text selection rendered to 2D masks
    against the LeRF-OVS annotations in ``labels`` (METHOD §7.2, :mod:`.lerf_run`).
    ``compat=True`` reproduces the public evaluation's quirks (ScanNet: leaves seen in fewer than
    2 views take the first class, never-assigned Gaussians inherit the last leaf; LeRF: the signed
    leaf-id test), METHOD §11.8.
    """
    from ..query.relevance import label_gaussians
    from ..query.run import text_encoder
    from ..train.pipeline import load_run

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; supported: {', '.join(PROTOCOLS)}")
    if protocol == "lerf":
        if labels is None:
            raise ConfigError("the LeRF protocol needs the annotation folder (--labels DIR)")
        from .lerf_run import run_eval_lerf

        return run_eval_lerf(run, labels, scene_name, compat, print_table=print_table)
    loaded = load_run(run)
    scene, model, inst, cfg = loaded.scene, loaded.model, loaded.instances, loaded.config
    if scene.point_labels is None:
        raise DataError(
            scene.root,
            "the ScanNet protocol needs per-point GT labels, and this scene has none",
            "it reads <scene>_vh_clean_2.labels.ply next to points3d.ply",
        )
    if not cfg.stage0.frozen_points or scene.points is None or len(model) != len(scene.points):
        raise RunError(
            f"{loaded.run.path}: the ScanNet protocol compares Gaussian i with GT point i, "
            "which needs a run trained with frozen initial points (stage0.frozen_points=true, "
            "presets scannet / "
            f"synthetic); this run has {len(model)} Gaussians for "
            f"{0 if scene.points is None else len(scene.points)} points"
        )
    if not torch.allclose(model.means.detach().cpu(), torch.from_numpy(scene.points), atol=1e-5):
        raise RunError(
            f"{loaded.run.path}: the Gaussians moved away from the scene points; the index "
            "identity "
            "of the ScanNet protocol does not hold"
        )
    if inst.num_gaussians != len(model):
        raise DataError(
            loaded.run.instances,
            f"holds leaf ids for {inst.num_gaussians} Gaussians but the model has {len(model)}",
            "re-run stage 3",
        )
    encode = text_encoder(inst.language_source, inst.dim, scene, cfg.device)
    leaf_feat = torch.from_numpy(inst.leaf_feat)
    occu = torch.from_numpy(inst.occu_count)
    leaf_ind = torch.from_numpy(inst.leaf_ind)

    def predict(names: list[str]) -> torch.Tensor:
        return label_gaussians(
            encode(names).float(), leaf_feat, occu, leaf_ind, cfg.query.min_views_label, compat
        )

    meta = {
        **run_metadata(loaded, compat),
        "min_views": cfg.query.min_views_label,
        "preset": cfg.preset,
        "gaussians_never_assigned": int((inst.leaf_ind >= inst.num_leaves).sum()),
        "leaves_matched_2plus": int((inst.occu_count >= 2).sum()),
    }
    result = evaluate_scannet(
        predict, np.asarray(scene.point_labels), model.opacities.detach().cpu(), meta=meta
    )
    plot = plot_per_class_iou(
        result,
        loaded.run.plots / "scannet_per_class_iou.png",
        title=f"{Path(scene.root).name} ({inst.language_source})",
    )
    result["plot"] = str(plot)
    write_json(loaded.run.metrics_path("scannet"), result)
    if print_table:
        _print_table(
            result,
            f"ScanNet protocol, {Path(scene.root).name} ({inst.language_source}"
            f"{', compat' if compat else ''})",
        )
        print(f"metrics: {loaded.run.metrics_path('scannet')}\nplot: {plot}")
    return result
