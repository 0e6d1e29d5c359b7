"""``openins eval RUN --protocol scannet``: score a finished run and write its metrics and plot.

ScanNet protocol (METHOD §7.1): every Gaussian gets the class of its leaf for the 19-, 15- and
10-class vocabularies (text features from the run's own language source), and is compared with
the GT label of the scene point it was initialised from. That identity (Gaussian i == point i)
holds only when stage 0 kept the initial points frozen; other runs are refused with an error.

Writes ``RUN/metrics/scannet.json`` (with the seed, config hash, package version, device,
language source, text side (prompt template, text-features file) and protocol name) and
``RUN/plots/scannet_per_class_iou.png``, and returns an :class:`~.result.EvalResult`.

With ``text_features=FILE`` (an OpenGaussian ``text_features.json``) the class names are looked
up in the file: by exact key, else by the key naming the same class
(:func:`~openinsgaussian.data.classes.canonical_class_name`: ``"shower curtain"`` is the public
files' ``"showercurtain"``); the mapping is recorded in the metrics.
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
from .result import EvalResult
from .scannet import evaluate_scannet

PROTOCOLS = ("scannet", "lerf")


def run_metadata(loaded: Any, compat: bool, text_side: Any = None) -> dict[str, Any]:
    """What every metrics JSON records to be reproducible: run, scene, seed, config hash, package
    version, device, host, the language source (so an oracle result is never read as CLIP), the
    text side (prompt template, text-features file) and the stage-3 modes. ``loaded`` is a
    :class:`~openinsgaussian.train.finished.LoadedRun`, ``text_side`` a
    :class:`~openinsgaussian.query.text.TextSide`."""
    from ..run.serialize import config_hash

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
        **(text_side.describe() if text_side is not None else {}),
    }


def file_keys(names: list[str], keys: list[str]) -> dict[str, str]:
    """``{class name: key}`` of a text-features file for the ScanNet class names: the exact key,
    else the one key with the same canonical name (``"shower curtain"`` -> ``"showercurtain"``);
    names without a key map to themselves (looking them up then names the file and the name)."""
    from ..data.classes import canonical_class_name

    by_canon: dict[str, list[str]] = {}
    for k in keys:
        by_canon.setdefault(canonical_class_name(k), []).append(k)
    out = {}
    keyset = set(keys)
    for n in names:
        hits = by_canon.get(canonical_class_name(n), [])
        out[n] = n if n in keyset else hits[0] if len(hits) == 1 else n
    return out


def run_eval(
    run: Path,
    protocol: Literal["scannet", "lerf"] = "scannet",
    compat: bool = False,
    *,
    labels: Path | None = None,
    scene_name: str | None = None,
    prompt_template: str | None = None,
    text_features: Path | None = None,
) -> EvalResult:
    """Evaluate ``run`` with ``protocol``; the metrics are also written to ``RUN/metrics/``.

    ``scannet``: per-point labels (METHOD §7.1). ``lerf``: text selection rendered to 2D masks
    against the LeRF-OVS annotations in ``labels`` (METHOD §7.2, :mod:`.lerf_run`).
    ``compat=True`` reproduces the public evaluation's quirks (ScanNet: leaves seen in fewer than
    2 views take the first class, never-assigned Gaussians inherit the last leaf; LeRF: the signed
    leaf-id test), METHOD §11.8. ``prompt_template`` replaces the run's (``query.prompt_template``)
    for a CLIP text side; ``text_features`` scores with an OpenGaussian ``text_features.json``
    as is. Both protocols always take the best leaf (no found test).
    """
    from ..query.relevance import label_gaussians
    from ..query.text import FileTextSide, text_side
    from ..train.finished import load_run

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; supported: {', '.join(PROTOCOLS)}")
    if protocol == "lerf":
        if labels is None:
            raise ConfigError("the LeRF protocol needs the annotation folder (--labels DIR)")
        from .lerf_run import run_eval_lerf

        return run_eval_lerf(run, labels, scene_name, compat, prompt_template=prompt_template,
                             text_features=text_features)
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
    side = text_side(
        inst.language_source, inst.dim, scene=scene, device=cfg.device,
        prompt_template=prompt_template or cfg.query.prompt_template, text_features=text_features,
    )
    leaf_feat = torch.from_numpy(inst.leaf_feat)
    occu = torch.from_numpy(inst.occu_count)
    leaf_ind = torch.from_numpy(inst.leaf_ind)
    keys: dict[str, str] = {}

    def predict(names: list[str]) -> torch.Tensor:
        if isinstance(side, FileTextSide):
            mapping = file_keys(names, side.keys)
            keys.update(mapping)
            names = [mapping[n] for n in names]
        return label_gaussians(
            side.encode(names).float(), leaf_feat, occu, leaf_ind, cfg.query.min_views_label,
            compat,
        )

    meta = {
        **run_metadata(loaded, compat, side),
        "min_views": cfg.query.min_views_label,
        "preset": cfg.preset,
        "gaussians_never_assigned": int((inst.leaf_ind >= inst.num_leaves).sum()),
        "leaves_matched_2plus": int((inst.occu_count >= 2).sum()),
    }
    result = evaluate_scannet(
        predict, np.asarray(scene.point_labels), model.opacities.detach().cpu(), meta=meta
    )
    if keys:
        result["text_feature_keys"] = keys
    plot = plot_per_class_iou(
        result,
        loaded.run.plots / "scannet_per_class_iou.png",
        title=f"{Path(scene.root).name} ({inst.language_source})",
    )
    result["plot"] = str(plot)
    metrics = loaded.run.metrics_path("scannet")
    write_json(metrics, result)
    return EvalResult(
        protocol="scannet",
        run=loaded.run.path,
        scene=Path(scene.root).name,
        metrics_path=metrics,
        language_source=inst.language_source,
        compat=compat,
        summary={
            name: {"miou": r["miou"], "macc": r["macc"], "classes_present": len(r["per_class"])}
            for name, r in result["lists"].items()
        },
        metrics=result,
        plot=plot,
    )
