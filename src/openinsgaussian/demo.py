"""``openins demo``: the whole method end to end on the built-in synthetic room.

1. Generate the procedural room (``tiny`` / ``small`` / ``default`` size) in the ScanNet layout.
2. Preprocess it with ground-truth instance masks and clean oracle language features (the
   ``oracle`` source: every remaining error comes from the 3D pipeline, not from CLIP).
3. Train stages 0-3 with the ``synthetic`` pipeline preset (resumable: a second call reuses
   everything that finished).
4. Evaluate with the ScanNet protocol (19 / 15 / 10 classes) and query a few object classes of
   the room, rendering the selections.
5. Return a :class:`DemoResult`: ``openins demo`` prints the mIoU / mAcc table and where the
   renders, PLY, metrics and plot are.

Every step goes through the library face (:mod:`openinsgaussian.api`), as a user's script would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import EvalResult, QueryReport
from .errors import ConfigError


def _demo_queries(scene: Any, limit: int = 4) -> list[str]:
    """Up to ``limit`` object classes of the room (walls and floor excluded), in instance order."""
    names: list[str] = []
    for _, (cls, _nyu) in sorted(scene.instance_classes.items()):
        if cls not in ("wall", "floor") and cls not in names:
            names.append(cls)
    return names[:limit]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    scene: Path
    run: Path
    evaluation: EvalResult
    """The ScanNet-protocol evaluation."""
    queries: QueryReport | None
    """The object queries and their renders (None when the room has no object class)."""
    outputs: dict[str, Path | None] = field(default_factory=dict)
    """Where things are: name -> path."""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What this call's training did per step: ``seconds`` and ``skipped`` (finished earlier)."""
    seconds: float = 0.0
    data_seconds: float = 0.0
    train_seconds: float = 0.0


def run_demo(
    out: Path = Path("outputs/demo"),
    seed: int = 0,
    preset: str = "default",
    *,
    masks: str = "ground_truth",
    overrides: dict[str, Any] | None = None,
) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring).

    ``preset`` is the room size (tiny / small / default); training always uses the ``synthetic``
    pipeline preset, adjusted by ``overrides`` (dotted keys, e.g. for a shorter schedule).
    ``masks`` is the mask source: ``ground_truth`` (the room's instance maps) or ``classical``
    (multi-scale graph segmentation, no learned model); each source gets its own cache folder
    and run directory, so the two results can be compared side by side.
    """
    from .api import evaluate, open_run, train
    from .data.load import load_scene
    from .data.synthetic import PRESETS, SynthConfig, generate_room

    if masks not in ("ground_truth", "classical"):
        raise ConfigError(f"unknown demo mask source {masks!r}; choose ground_truth or classical")
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown synthetic room size {preset!r}; choose one of {', '.join(PRESETS)}"
        )
    out = Path(out)
    t0 = time.perf_counter()
    scene_dir = generate_room(SynthConfig(out=out / "data", preset=preset, seed=seed))  # type: ignore[arg-type]
    t_data = time.perf_counter() - t0
    run = out / f"run_{preset}_{seed}" if masks == "ground_truth" else out / f"run_{preset}_{seed}_{masks}"
    mask_overrides: dict[str, Any] = {}
    if masks != "ground_truth":
        mask_overrides = {"inputs.masks": masks, "inputs.cache": str(scene_dir / f"language_features_{masks}")}
    trained = train(scene_dir, run, "synthetic", resume=True,
                    **{"seed": seed, **mask_overrides, **(overrides or {})})
    t_train = time.perf_counter() - t0 - t_data
    metrics = evaluate(run)
    names = _demo_queries(load_scene(scene_dir))
    report = open_run(run).query_report(names, views=2) if names else None
    outputs: dict[str, Path | None] = {
        "scene": scene_dir,
        "run": run,
        "Gaussians (PLY with leaf ids)": run / "exports" / "point_cloud.ply",
        "instances": run / "instances.npz",
        "metrics": metrics.metrics_path,
        "per-class IoU plot": metrics.plot,
        "query renders": None if report is None else report.out,
        "stage renders": run / "renders",
    }
    return DemoResult(
        scene=scene_dir, run=run, evaluation=metrics, queries=report, outputs=outputs,
        stages=trained.stages, seconds=time.perf_counter() - t0, data_seconds=t_data,
        train_seconds=t_train,
    )
