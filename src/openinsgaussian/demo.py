"""``openins demo``: the whole method end to end on the built-in synthetic room.

1. Generate the procedural room (``tiny`` / ``small`` / ``default`` size) in the ScanNet layout.
2. Preprocess it with ground-truth instance masks and clean oracle language features (the
   ``oracle`` source: every remaining error comes from the 3D pipeline, not from CLIP).
3. Train stages 0-3 with the ``synthetic`` pipeline preset (resumable: a second call reuses
   everything that finished).
4. Evaluate with the ScanNet protocol (19 / 15 / 10 classes) and query a few object classes of
   the room, rendering the selections.
5. Print the mIoU / mAcc table and where the renders, PLY, metrics and plot are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _demo_queries(scene: Any, limit: int = 4) -> list[str]:
    """Up to ``limit`` object classes of the room (walls and floor excluded), in instance order."""
    names: list[str] = []
    for _, (cls, _nyu) in sorted(scene.instance_classes.items()):
        if cls not in ("wall", "floor") and cls not in names:
            names.append(cls)
    return names[:limit]


def run_demo(
    out: Path = Path("outputs/demo"),
    seed: int = 0,
    preset: str = "default",
    *,
    masks: str = "ground_truth",
    overrides: dict[str, Any] | None = None,
) -> dict:
    """Run the demo into ``out``; returns ``{"scene", "run", "metrics", "queries", "seconds"}``.

    ``preset`` is the room size (tiny / small / default); training always uses the ``synthetic``
    pipeline preset, adjusted by ``overrides`` (dotted keys, e.g. for a shorter schedule).
    ``masks`` is the mask source: ``ground_truth`` (the room's instance maps) or ``classical``
    (multi-scale graph segmentation, no learned model); each source gets its own cache folder
    and run directory, so the two results can be compared side by side.
    """
    from rich.console import Console

    from .data.load import load_scene
    from .data.synthetic import PRESETS, SynthConfig, generate_room
    from .evaluate.run import run_eval
    from .query.run import run_query
    from .train.pipeline import run_pipeline

    if masks not in ("ground_truth", "classical"):
        raise ConfigError(f"unknown demo mask source {masks!r}; choose ground_truth or classical")
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown synthetic room size {preset!r}; choose one of {', '.join(PRESETS)}"
        )
    console = Console()
    out = Path(out)
    t0 = time.perf_counter()
    console.rule(f"openinsgaussian demo: synthetic room '{preset}', seed {seed}")
    scene_dir = generate_room(SynthConfig(out=out / "data", preset=preset, seed=seed))  # type: ignore[arg-type]
    t_data = time.perf_counter() - t0
    run = out / f"run_{preset}_{seed}" if masks == "ground_truth" else out / f"run_{preset}_{seed}_{masks}"
    mask_overrides: dict[str, Any] = {}
    if masks != "ground_truth":
        mask_overrides = {"inputs.masks": masks, "inputs.cache": str(scene_dir / f"language_features_{masks}")}
    run_pipeline(
        scene_dir, run, preset="synthetic", resume=True,
        **{"seed": seed, **mask_overrides, **(overrides or {})},
    )
    t_train = time.perf_counter() - t0 - t_data
    metrics = run_eval(run)
    queries = _demo_queries(load_scene(scene_dir))
    query = run_query(run, queries, views=2) if queries else {"queries": [], "out": None}
    seconds = time.perf_counter() - t0

    stages: dict[str, Any] = {}
    timing = run / "metrics" / "pipeline.json"
    if timing.is_file():
        stages = json.loads(timing.read_text()).get("stages", {})
    rows = [
        ("scene", scene_dir),
        ("run", run),
        ("Gaussians (PLY with leaf ids)", run / "exports" / "point_cloud.ply"),
        ("instances", run / "instances.npz"),
        ("metrics", run / "metrics" / "scannet.json"),
        ("per-class IoU plot", metrics.get("plot")),
        ("query renders", query.get("out")),
        ("stage renders", run / "renders"),
    ]
    console.print("[bold]where things are:[/bold]")
    for name, path in rows:  # plain lines: a table would cut long paths
        print(f"  {name}: {path}")
    lists = metrics["lists"]
    summary = ", ".join(
        f"{k}: mIoU {v['miou']:.3f} / mAcc {v['macc']:.3f}"
        for k, v in lists.items()
        if v["miou"] is not None
    )
    times = ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in stages.items() if not v.get("skipped"))
    console.print(
        f"[bold]ScanNet protocol ({metrics['language_source']} language):[/bold] {summary}"
    )
    console.print(
        f"wall time of this call {seconds:.0f}s (data {t_data:.0f}s, training {t_train:.0f}s)"
        + (f"; stages when they ran: {times}" if times else "")
    )
    print(f'next: openins query {run} "chair"   |   openins view {run}  (web viewer)')
    return {
        "scene": str(scene_dir),
        "run": str(run),
        "metrics": metrics,
        "queries": query["queries"],
        "seconds": seconds,
        "stages": stages,
    }
