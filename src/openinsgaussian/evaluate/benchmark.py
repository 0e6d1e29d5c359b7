"""``openins benchmark scannet|lerf|synthetic``: train and score every scene of a benchmark.

For each scene: (synthetic: generate the room) ->
:func:`~openinsgaussian.train.pipeline.run_pipeline` (preprocessing when the cache is missing,
then stages 0-3, resumable per stage) -> the dataset's protocol: ScanNet (METHOD §7.1, 19 / 15 /
10-class mIoU / mAcc, :func:`~openinsgaussian.evaluate.run.run_eval`) or LeRF-OVS (METHOD §7.2,
mIoU / mAcc@0.25 / mAcc@0.5, :func:`~openinsgaussian.evaluate.lerf_run.run_eval_lerf`). The
dataset figure is the unweighted mean over the scenes that finished.

* ``scannet``: the 10 scenes of METHOD §7.1 under ``root`` (OpenGaussian layout, METHOD §10.1),
  trained with the ``scannet`` pipeline preset; the report puts the published OpenGaussian and
  OpenInsGaussian numbers (:mod:`.published`) beside the measured ones.
* ``lerf``: the 4 LeRF-OVS scenes (:data:`~openinsgaussian.data.lerf.LERF_SCENES`) under ``root``
  (COLMAP layout with LangSplat's ``label/<scene>/`` annotations, METHOD §10.2), trained with the
  ``lerf`` preset and its per-scene exceptions (teatime, ramen); the report follows METHOD §8.2
  with the published LangSplat / LEGaussians / OpenGaussian / OpenInsGaussian rows
  (:mod:`.benchmark_lerf`).
* ``synthetic``: the fixed :data:`SYNTHETIC_SUITE` of procedural rooms, each trained with
  ground-truth masks and with classical (graph-segmentation) masks, both with the oracle language
  source, using the ``synthetic`` preset.

Resumable: a scene whose ``metrics/<protocol>.json`` is newer than its ``instances.npz`` and was
computed with the config this call would run (same config hash; LeRF: same annotation files) is
read back, not re-run; otherwise
``run_pipeline(resume=True)`` skips finished stages. A failing scene is recorded in
``benchmark.json`` and the next one runs; at the end :class:`BenchmarkFailed` is raised when any
scene failed (after both reports are written).

Outputs: ``OUT/benchmark.json`` and ``OUT/benchmark.md`` (written atomically after every scene),
``OUT/runs/<run name>/`` (the runs) and, for synthetic, ``OUT/data/`` (the rooms).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..data.lerf import find_label_folder
from ..errors import ConfigError, DataError, RunError
from ..io import write_json, write_text
from . import benchmark_lerf
from .published import (
    OIG_SCANNET_PER_SCENE,
    SCANNET_PUBLISHED,
    TAB6_SOURCE,
)
from .scannet import mean_over_scenes

Dataset = Literal["scannet", "lerf", "synthetic"]
DATASETS: tuple[str, ...] = ("scannet", "lerf", "synthetic")
#: Pipeline preset and evaluation protocol of every benchmark dataset.
PRESET = {"scannet": "scannet", "lerf": "lerf", "synthetic": "synthetic"}
PROTOCOL = {"scannet": "scannet", "lerf": "lerf", "synthetic": "scannet"}

#: The 10 ScanNet v2 scenes of the OpenGaussian / OpenInsGaussian evaluation (METHOD §7.1).
SCANNET_SCENES: tuple[str, ...] = (
    "scene0000_00",
    "scene0062_00",
    "scene0070_00",
    "scene0097_00",
    "scene0140_00",
    "scene0200_00",
    "scene0347_00",
    "scene0400_00",
    "scene0590_00",
    "scene0645_00",
)

#: Files every ScanNet scene folder must hold (METHOD §10.1); the labels PLY is matched by glob.
SCANNET_REQUIRED = ("transforms_train.json", "transforms_test.json", "points3d.ply")
SCANNET_LABELS_GLOB = "*_vh_clean_2.labels.ply"

LIST_NAMES = ("scannet19", "scannet15", "scannet10")
LIST_TITLES = {"scannet19": "19 classes", "scannet15": "15 classes", "scannet10": "10 classes"}
MASK_SOURCES = ("ground_truth", "classical")


@dataclass(frozen=True)
class SynthEntry:
    """One scene of the synthetic suite: a procedural room trained with one mask source."""

    room: Literal["tiny", "small", "default"]
    """Room size preset of :class:`~openinsgaussian.data.synthetic.SynthConfig`."""
    seed: int
    """Room seed (layout, textures, cameras)."""
    masks: Literal["ground_truth", "classical"]
    """Mask source of the preprocessing cache."""

    @property
    def scene(self) -> str:
        """Scene folder name written by ``generate_room``."""
        return f"synth_{self.room}_{self.seed}"

    @property
    def name(self) -> str:
        """Run name and row key: ``synth_<room>_<seed>_<masks>``."""
        return f"{self.scene}_{self.masks}"


#: The synthetic benchmark: two ``small`` rooms and one ``default`` room, each with ground-truth
#: and classical masks (6 runs). Sized from a measured ``small`` room (ground-truth masks, 48 s
#: of training on the 2-core CPU) and the ``default`` room of
#: benchmarks/results/bench_synthetic_pipeline.json (173 s) to finish in about 10-15 minutes on a
#: 2-core CPU; the measured total of a full run is in benchmarks/results/benchmark_synthetic/.
SYNTHETIC_SUITE: tuple[SynthEntry, ...] = tuple(
    SynthEntry(room, seed, masks)  # type: ignore[arg-type]
    for room, seed in (("small", 0), ("small", 1), ("default", 0))
    for masks in MASK_SOURCES
)

#: ``fast=True``: a smoke-test schedule (dotted overrides applied on top of the preset). It keeps
#: the stage-2 constraints (fine_iterations 80 >= k1 8 x root_every 10; root_every 10 >=
#: fine_every 5) and works on the 8-view ``tiny`` room: k2 4 and k2_min_gaussians 20 suit rooms of
#: a few thousand points. stage1.lr 1e-2: at the published 1e-3, 150 steps leave the random
#: initial instance features nearly unseparated (see ``pipeline_preset``). Metrics of fast runs
#: are smoke-test numbers, not benchmark results.
FAST_OVERRIDES: dict[str, Any] = {
    "stage0.iterations": 200,
    "stage1.iterations": 150,
    "stage1.hard_pairs_after": 40,
    "stage1.lr": 1e-2,
    "stage2.coarse_iterations": 40,
    "stage2.fine_iterations": 80,
    "stage2.codebook.k1": 8,
    "stage2.codebook.k2": 4,
    "stage2.codebook.coarse_every": 20,
    "stage2.codebook.fine_every": 5,
    "stage2.codebook.root_every": 10,
    "stage2.k2_min_gaussians": 20,
}


class BenchmarkFailed(RunError):
    """At least one scene failed; ``result`` is the full benchmark dict (also in benchmark.json)."""

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class _Job:
    """One scene to run: where its data and run folder are and how to train it."""

    name: str  # row key / run folder name
    scene: str  # scene folder name
    masks: str  # mask source (recorded)
    data: Path  # scene folder (synthetic: written on demand)
    run: Path
    synth: SynthEntry | None = None
    labels: Path | None = None  # LeRF: folder holding label/<scene>/ (or <scene>/) annotations


# ---- helpers -----------------------------------------------------------------------------------
def _machine() -> dict:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def _check_scannet_root(root: Path, scenes: list[str], restricted: bool) -> None:
    """Unrestricted, every scene of METHOD §7.1 must be there: list what is missing."""
    if not root.is_dir():
        raise DataError(
            root,
            "ScanNet root folder not found",
            "expected ROOT/<scene>/transforms_train.json, transforms_test.json, points3d.ply and "
            f"<scene>_vh_clean_2.labels.ply for the scenes {', '.join(scenes)}",
        )
    if restricted:
        return  # missing scenes then fail one by one and are recorded
    problems = []
    for s in scenes:
        d = root / s
        missing = [f for f in SCANNET_REQUIRED if not (d / f).is_file()]
        if d.is_dir() and not any(d.glob(SCANNET_LABELS_GLOB)):
            missing.append(f"{s}_vh_clean_2.labels.ply")
        if not d.is_dir():
            problems.append(f"{s}/ (folder missing)")
        elif missing:
            problems.append(f"{s}/ lacks {', '.join(missing)}")
    if problems:
        raise DataError(
            root,
            f"{len(problems)} of {len(scenes)} ScanNet scenes are missing or incomplete: "
            + "; ".join(problems),
            "each scene needs ROOT/<scene>/transforms_train.json, transforms_test.json, "
            "points3d.ply, <scene>_vh_clean_2.labels.ply and color/ (METHOD §10.1); run a "
            "subset with --scenes",
        )


def _command_line() -> str:
    """This process's command line, e.g. ``openins benchmark synthetic --fast``."""
    if not sys.argv or sys.argv[0] in ("", "-", "-c"):
        return "python -c ..."  # the code of -c is not kept in sys.argv
    argv0 = Path(sys.argv[0]).name
    prefix = ["python"] if argv0.endswith(".py") else []
    return shlex.join([*prefix, argv0, *sys.argv[1:]])


def _metrics_fresh(job: _Job, protocol: str, preset: str, overrides: dict) -> dict | None:
    """``metrics/<protocol>.json`` when it is newer than ``instances.npz``, was computed with the
    config this job would run (same hash: seed, every stage, query settings), without the compat
    switch, and (LeRF) against the same annotations."""
    from ..train.pipeline import compose_config
    from ..run.directory import RunDir
    from ..run.serialize import config_hash

    run = job.run
    metrics, inst = run / "metrics" / f"{protocol}.json", run / "instances.npz"
    if not (metrics.is_file() and inst.is_file()):
        return None
    if metrics.stat().st_mtime < inst.stat().st_mtime:
        return None
    try:
        data = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return None
    try:
        cfg, saved = compose_config(RunDir(run), job.data, preset, True, None, overrides)
    except (ConfigError, DataError, OSError, ValueError):
        return None  # run_pipeline reports the problem
    if saved is None or data.get("config_hash") != config_hash(cfg) or data.get("compat"):
        return None
    if protocol == "lerf":
        assert job.labels is not None
        return data if benchmark_lerf.metrics_match(data, job.scene, job.labels) else None
    return data if "lists" in data else None


def _stage_seconds(run: Path) -> dict[str, float]:
    """Wall time of every stage when it ran (``metrics/pipeline.json``)."""
    path = run / "metrics" / "pipeline.json"
    try:
        stages = json.loads(path.read_text()).get("stages", {})
    except (OSError, ValueError):
        return {}
    return {k: v["seconds"] for k, v in stages.items() if not v.get("skipped")}


def _summary(metrics: Mapping, protocol: str = "scannet") -> dict:
    """The reported numbers of one scene: mIoU / mAcc / classes present per class list (ScanNet),
    mIoU / mAcc@0.25 / mAcc@0.5 (LeRF)."""
    if protocol == "lerf":
        return benchmark_lerf.summary(metrics)
    return {
        n: {
            "miou": metrics["lists"][n]["miou"],
            "macc": metrics["lists"][n]["macc"],
            "classes_present": len(metrics["lists"][n].get("per_class", {})),
        }
        for n in LIST_NAMES
        if n in metrics.get("lists", {})
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.2f}"


def _cells(scores: Mapping[str, Any]) -> list[str]:
    """Six table cells (19 / 15 / 10 classes, mIoU then mAcc) from dicts or (mIoU, mAcc) tuples."""
    out = []
    for n in LIST_NAMES:
        s = scores.get(n)
        if s is None:
            out += ["-", "-"]
        elif isinstance(s, Mapping):
            out += [_pct(s.get("miou")), _pct(s.get("macc"))]
        else:
            out += [_pct(s[0]), _pct(s[1])]
    return out


def _table(rows: list[tuple[str, list[str]]]) -> str:
    head = "| Scene | " + " | ".join(
        f"{LIST_TITLES[n]} {m}" for n in LIST_NAMES for m in ("mIoU", "mAcc")
    )
    lines = [head + " |", "|---" * 7 + "|"]
    lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in rows]
    return "\n".join(lines)


def _markdown(result: dict) -> str:
    """The report in the published table format (percentages, 2 decimals)."""
    ds = result["dataset"]
    lines = [
        f"# Benchmark: {ds}",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- package version: {result['package_version']}, seed {result['seed']}, "
        f"preset `{result['preset']}`"
        + (" (fast smoke schedule, not benchmark numbers)" if result["fast"] else ""),
        f"- machine: {result['machine']['cpu_count']}-core {result['machine']['processor']} "
        f"CPU{', GPU ' + result['machine']['gpu'] if result['machine'].get('gpu') else ''}, "
        f"torch {result['machine']['torch']}, {result['machine']['platform']}",
        f"- wall time: {result['wall_seconds']:.0f} s for this call",
        f"- language sources: {', '.join(result['language_sources']) or '-'}; mask sources: "
        f"{', '.join(result['mask_sources'])}",
    ]
    if ds == "lerf":
        lines.append(
            "- metrics: LeRF-OVS protocol (METHOD §7.2: text selection in 3D rendered from every "
            "annotated camera, alpha > 0.7 vs the polygons), mIoU / mAcc@0.25 / mAcc@0.5 in "
            "percent; Mean = unweighted mean over the scenes that finished"
        )
    else:
        lines.append(
            "- metrics: ScanNet protocol (METHOD §7.1), mIoU / mAcc in percent; Mean = unweighted "
            "mean over the scenes that finished"
        )
    if ds != "synthetic":
        why = []
        if "oracle" in result["language_sources"]:
            why.append("the oracle language source (clean per-class features from GT labels, "
                       "no CLIP)")
        other = [m for m in result["mask_sources"] if m != "sam"]
        if other:
            why.append(f"{' and '.join(other)} masks instead of SAM")
        if why:
            lines.append(f"- **these runs used {'; '.join(why)}**: not comparable with the "
                         "published rows")
    if ds == "synthetic":
        lines.append(
            "- **synthetic results use the oracle language source** (clean per-class language "
            "features, no CLIP): they measure the 3D pipeline, and are not comparable with "
            "published ScanNet numbers"
        )
    lines.append("")
    groups = result["mask_sources"] if ds == "synthetic" else [None]
    if ds == "lerf":
        lines += benchmark_lerf.tables(result)
        groups = []
    for masks in groups:
        scenes = [s for s in result["scenes"] if masks is None or s["masks"] == masks]
        rows: list[tuple[str, list[str]]] = []
        for s in scenes:
            if s["status"] == "ok":
                rows.append((s["scene"], _cells(s["metrics"])))
            else:
                rows.append((f"{s['scene']} (failed: {s['error']['type']})", ["-"] * 6))
            if ds == "scannet" and s["scene"] in OIG_SCANNET_PER_SCENE:
                rows.append(
                    (
                        f"{s['scene']} OpenInsGaussian (published, {TAB6_SOURCE})",
                        _cells(OIG_SCANNET_PER_SCENE[s["scene"]]),
                    )
                )
        key = "mean" if masks is None else f"mean_{masks}"
        mean = result.get(key)
        n_ok = mean["scenes"] if mean else 0
        rows.append(
            (
                f"**Mean** (ours, {n_ok} of {len(scenes)} scenes)",
                _cells(mean["lists"]) if mean else ["-"] * 6,
            )
        )
        if ds == "scannet":
            for method in ("OpenGaussian", "OpenInsGaussian"):
                p = SCANNET_PUBLISHED[method]
                rows.append(
                    (f"{method} (published, {p.source}; 10 scenes)", _cells(p.scores))
                )
        if masks is not None:
            lines += [f"## Mask source: {masks}", ""]
        lines += [_table(rows), ""]
    failed = [s for s in result["scenes"] if s["status"] != "ok"]
    if failed:
        lines += ["## Failed scenes", ""]
        lines += [f"- {s['scene']}: {s['error']['type']}: {s['error']['message']}" for s in failed]
        lines.append("")
    lines += ["## Wall time per scene", ""]
    lines += ["| Scene | this call (s) | stages when they ran (s) |", "|---|---|---|"]
    for s in result["scenes"]:
        st = ", ".join(f"{k} {v:.0f}" for k, v in s.get("stage_seconds", {}).items())
        lines.append(f"| {s['name']} | {s['seconds']:.0f} | {st or '-'} |")
    return "\n".join(lines) + "\n"


def _jobs(
    dataset: str,
    root: Path | None,
    out: Path,
    scenes: list[str] | None,
    fast: bool,
    masks: str,
    labels: Path | None = None,
) -> list[_Job]:
    """The scenes to run; ``masks`` is the planned mask source of ScanNet / LeRF runs."""
    suffix = "_fast" if fast else ""  # fast and full runs never share a run folder
    if dataset == "lerf":
        if root is None:
            raise ConfigError(
                "the lerf benchmark needs --root: the folder holding the scene folders and label/"
            )
        root = Path(root)
        label_root = Path(labels) if labels is not None else root / "label"
        names = list(scenes) if scenes else list(benchmark_lerf.BENCHMARK_SCENES)
        benchmark_lerf.check_lerf_root(root, label_root, names, restricted=scenes is not None)
        return [
            _Job(
                name=s, scene=s, masks=masks, data=root / s, run=out / "runs" / f"{s}{suffix}",
                labels=label_root,
            )
            for s in names
        ]
    if dataset == "scannet":
        if root is None:
            raise ConfigError(
                "the scannet benchmark needs --root: the folder holding the scene folders"
            )
        root = Path(root)
        names = list(scenes) if scenes else list(SCANNET_SCENES)
        _check_scannet_root(root, names, restricted=scenes is not None)
        return [
            _Job(name=s, scene=s, masks=masks, data=root / s, run=out / "runs" / f"{s}{suffix}")
            for s in names
        ]
    data_root = Path(root) if root is not None else out / "data"
    entries = list(SYNTHETIC_SUITE)
    if scenes:
        known = {e.name for e in entries} | {e.scene for e in entries}
        unknown = [s for s in scenes if s not in known]
        if unknown:
            raise ConfigError(
                f"unknown synthetic benchmark scenes {unknown}; choose from "
                f"{sorted(known)}"
            )
        entries = [e for e in entries if e.name in scenes or e.scene in scenes]
    return [
        _Job(
            name=e.name,
            scene=e.scene,
            masks=e.masks,
            data=data_root / e.scene,
            run=out / "runs" / f"{e.name}{suffix}",
            synth=e,
        )
        for e in entries
    ]


def _train_and_eval(
    job: _Job, preset: str, protocol: str, seed: int, overrides: dict, progress: bool
) -> tuple[dict, bool]:
    """(metrics, reused) of one scene: generate (synthetic), train (resumable), evaluate."""
    from ..train.pipeline import run_pipeline
    from .run import run_eval

    ov: dict[str, Any] = {"seed": seed}
    if not (job.run / "config.yml").is_file():
        ov["progress"] = progress  # a started run keeps its saved setting
    if job.synth is not None and job.masks != "ground_truth":
        cache = job.data / f"language_features_{job.masks}"  # one cache per mask source
        ov |= {"inputs.masks": job.masks, "inputs.cache": str(cache)}
    ov |= overrides
    fresh = _metrics_fresh(job, protocol, preset, ov)
    if fresh is not None:
        return fresh, True
    if job.synth is not None:
        from ..data.synthetic import SynthConfig, generate_room

        generate_room(
            SynthConfig(
                out=job.data.parent, preset=job.synth.room, seed=job.synth.seed, progress=progress
            )
        )
    elif not job.data.is_dir():
        raise DataError(
            job.data,
            "scene folder not found",
            "expected images/ and sparse/0/ in it (METHOD §10.2)"
            if protocol == "lerf"
            else "expected transforms_train.json, transforms_test.json, points3d.ply and "
            "<scene>_vh_clean_2.labels.ply in it (METHOD §10.1)",
        )
    if protocol == "lerf" and job.labels is not None:
        # fail before training when the annotations are missing (a restricted run skips the check)
        if find_label_folder(job.labels, job.scene) is None:
            raise DataError(
                job.labels, f"no LeRF annotations for scene {job.scene!r}",
                f"expected {job.labels / job.scene}/frame_*.json (LangSplat's label/ folder)",
            )
    run_pipeline(job.data, job.run, preset=preset, resume=True, **ov)
    if protocol == "lerf":
        return (
            run_eval(job.run, "lerf", labels=job.labels, scene_name=job.scene).metrics,
            False,
        )
    return run_eval(job.run).metrics, False


# ---- the runner --------------------------------------------------------------------------------
def run_benchmark(
    dataset: Dataset,
    root: Path | None,
    out: Path,
    scenes: list[str] | None = None,
    fast: bool = False,
    seed: int = 0,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    command: str | None = None,
    raise_on_failure: bool = True,
    labels: Path | None = None,
) -> dict:
    """Train and evaluate every scene of ``dataset``; write ``out/benchmark.json`` and ``.md``.

    Args:
        dataset: ``scannet`` (the 10 scenes of METHOD §7.1 under ``root``, preset ``scannet``),
            ``lerf`` (the 4 LeRF-OVS scenes under ``root``, preset ``lerf``) or ``synthetic``
            (:data:`SYNTHETIC_SUITE`, preset ``synthetic``, oracle language).
        root: scannet / lerf: folder holding ``<scene>/`` folders (required; for lerf also
            ``label/<scene>/``). synthetic: where the rooms are generated (None: ``out/data``).
        out: output folder (runs under ``out/runs``).
        scenes: run only these scenes (scannet / lerf: scene folder names, which need not be
            among the published ones; synthetic: room names ``synth_small_0`` or run names
            ``synth_small_0_classical``). Without it, scannet and lerf require every scene of the
            protocol and list the missing ones before anything runs.
        fast: smoke-test schedule (:data:`FAST_OVERRIDES`), in run folders ``<name>_fast``.
        seed: training seed of every run.
        overrides: extra dotted config overrides applied last (e.g. ``{"threads": 1}``, or
            ``{"inputs.masks": "ground_truth", "inputs.language": "oracle"}`` for ScanNet-layout
            scenes without SAM / CLIP).
        progress: show per-stage progress bars of the pipeline (the per-scene report is always
            printed).
        command: command line recorded in the report (None: this process's ``sys.argv``).
        raise_on_failure: raise :class:`BenchmarkFailed` at the end when a scene failed.
        labels: lerf: the annotations folder (LangSplat's ``label/``); None: ``root/label``.

    Returns:
        The dict written to ``benchmark.json``.
    """
    from rich.console import Console

    from ..train.pipeline import pipeline_preset, read_pipeline_config, scene_overrides
    from ..run.directory import RunDir

    if dataset not in DATASETS:
        raise ConfigError(
            f"unknown benchmark dataset {dataset!r}; choose one of {', '.join(DATASETS)}"
        )
    if labels is not None and dataset != "lerf":
        raise ConfigError("labels (--labels) applies to the lerf benchmark only")
    out = Path(out)
    console = Console()
    preset, protocol = PRESET[dataset], PROTOCOL[dataset]
    extra = {**(FAST_OVERRIDES if fast else {}), **dict(overrides or {})}
    planned = str(extra.get("inputs.masks", pipeline_preset(preset).inputs.masks))
    jobs = _jobs(dataset, root, out, scenes, fast, planned, labels)
    if dataset != "synthetic" and not fast:
        import torch

        if not torch.cuda.is_available():
            pc = pipeline_preset(preset)
            steps = (
                pc.stage0.iterations + pc.stage1.iterations + pc.stage2.coarse_iterations
                + pc.stage2.fine_iterations
            )
            console.print(
                f"[yellow]no CUDA GPU found:[/yellow] the published {dataset} schedule "
                f"({steps:,} steps per scene, SAM and CLIP on every image) takes many hours per "
                "scene on a CPU; --fast runs a short smoke schedule"
            )
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = _command_line()
    result: dict[str, Any] = {
        "benchmark": f"openins-benchmark-{dataset}",
        "dataset": dataset,
        "root": None if root is None else str(root),
        "labels": str(jobs[0].labels) if jobs and jobs[0].labels is not None else None,
        "protocol": protocol,
        "out": str(out),
        "preset": preset,
        "fast": fast,
        "overrides": extra,
        "seed": seed,
        "package_version": __version__,
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "mask_sources": [],
        "language_sources": [],
        "scenes": [],
        "wall_seconds": 0.0,
    }
    t_all = time.perf_counter()

    def save() -> None:
        ok = [s for s in result["scenes"] if s["status"] == "ok"]
        result["mask_sources"] = sorted(
            {s["masks"] for s in result["scenes"]} | {j.masks for j in jobs},
            key=lambda m: (MASK_SOURCES.index(m) if m in MASK_SOURCES else len(MASK_SOURCES), m),
        )
        result["language_sources"] = sorted(
            {s["language_source"] for s in ok if s.get("language_source")}
        )
        if protocol == "lerf":
            result["mean"] = benchmark_lerf.mean(ok)
        else:
            result["mean"] = (
                mean_over_scenes([{"lists": s["metrics"]} for s in ok]) if ok else None
            )
        if dataset == "synthetic":
            for m in result["mask_sources"]:
                sub = [{"lists": s["metrics"]} for s in ok if s["masks"] == m]
                result[f"mean_{m}"] = mean_over_scenes(sub) if sub else None
        result["failed"] = [s["name"] for s in result["scenes"] if s["status"] != "ok"]
        result["wall_seconds"] = round(time.perf_counter() - t_all, 1)
        write_json(out / "benchmark.json", result)
        write_text(out / "benchmark.md", _markdown(result))

    for i, job in enumerate(jobs, 1):
        console.rule(f"[bold]benchmark {dataset}[/bold] [{i}/{len(jobs)}] {job.name}")
        t0 = time.perf_counter()
        entry: dict[str, Any] = {
            "name": job.name,
            "scene": job.scene,
            "masks": job.masks,
            "data": str(job.data),
            "run": str(job.run),
        }
        entry["scene_overrides"] = scene_overrides(preset, Path(os.path.abspath(job.data)).name)
        try:
            metrics, reused = _train_and_eval(job, preset, protocol, seed, extra, progress)
            entry |= {
                "status": "ok",
                "masks": read_pipeline_config(RunDir(job.run)).inputs.masks,
                "reused": reused,
                "language_source": metrics.get("language_source"),
                "config_hash": metrics.get("config_hash"),
                "metrics": _summary(metrics, protocol),
            }
            if protocol == "lerf":
                m = entry["metrics"]
                msg = (
                    f"mIoU {_pct(m.get('miou'))}, mAcc@0.25 {_pct(m.get('macc@0.25'))}, "
                    f"mAcc@0.5 {_pct(m.get('macc@0.5'))} ({m.get('pairs')} pairs)"
                )
            else:
                msg = "mIoU / mAcc " + ", ".join(
                    f"{n}: {_pct(v['miou'])} / {_pct(v['macc'])}"
                    for n, v in entry["metrics"].items()
                )
            tag = " (reused)" if reused else ""
            console.print(f"[green]ok[/green] {job.name}{tag}: {msg}")
        except Exception as e:  # one scene's failure must not stop the others
            entry |= {
                "status": "failed",
                "error": {
                    "type": type(e).__name__,
                    "message": str(e),
                    "traceback": traceback.format_exc(limit=-6),
                },
            }
            console.print(f"[red]failed[/red] {job.name}: {type(e).__name__}: {e}")
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        entry["stage_seconds"] = _stage_seconds(job.run)
        result["scenes"].append(entry)
        save()
        elapsed = time.perf_counter() - t_all
        console.print(f"{i}/{len(jobs)} scenes done, {elapsed:.0f} s elapsed")
    save()
    console.print(f"report: {out / 'benchmark.md'}\nresults: {out / 'benchmark.json'}")
    if result["failed"] and raise_on_failure:
        raise BenchmarkFailed(
            f"{len(result['failed'])} of {len(jobs)} scenes failed "
            f"({', '.join(result['failed'])}); "
            f"errors are in {out / 'benchmark.json'}",
            result,
        )
    return result


__all__ = [
    "DATASETS",
    "FAST_OVERRIDES",
    "SCANNET_SCENES",
    "SYNTHETIC_SUITE",
    "BenchmarkFailed",
    "SynthEntry",
    "run_benchmark",
]
