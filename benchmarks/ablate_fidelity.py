"""Reproduction switches, one at a time, on the synthetic suite: what each fix changes.

The ``scannet`` / ``lerf`` presets reproduce the public code's behaviour where it changes results
(README "Presets"); each behaviour we would fix is a named switch. This script measures every
switch on the three rooms of ``openins benchmark synthetic`` (small/0, small/1, default/0) with
ground-truth and classical masks, ``synthetic`` schedule, oracle language:

* ``reproduction``: the public code's behaviour everywhere (the reproduction presets' switches,
  ``stage3.association = per_leaf``);
* one variant per fix, alone on top of ``reproduction`` (see :data:`VARIANTS`);
* ``all_fixes``: every fix together.

Work is shared where it provably cannot differ: stage 0 is trained once per room (masks play no
part in it); a variant reuses the stage-1 / stage-2 outputs of an earlier variant when its training
inputs (hashed mask maps and language features) and the configs of those stages are equal. Each
run is scored with the ScanNet protocol (19 / 15 / 10 classes); the table reports the 19-class
mIoU / mAcc, live coarse clusters and leaves after stage 2, matched (leaf, view) pairs and the
stage-3 time. The query clean-up rule (``query.outlier_rule``) only acts in the LeRF protocol;
``--lerf`` adds the LeRF-layout ``default`` room (lerf preset switches on the synthetic schedule)
scored with both rules on one trained run.

Run: ``python benchmarks/ablate_fidelity.py`` (``--work``, ``--out``, ``--rooms``, ``--lerf``).
Resumable: finished runs are kept in ``--work`` and reused. Result:
``benchmarks/results/ablate_fidelity.json`` and ``.md`` (atomic writes).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from openinsgaussian import __version__  # noqa: E402
from openinsgaussian.data.load import load_scene  # noqa: E402
from openinsgaussian.data.synthetic import SynthConfig, generate_room  # noqa: E402
from openinsgaussian.evaluate.run import run_eval  # noqa: E402
from openinsgaussian.io import write_json, write_text  # noqa: E402
from openinsgaussian.train.inputs import load_training_inputs  # noqa: E402
from openinsgaussian.train.pipeline import (  # noqa: E402
    STAGES,
    apply_overrides,
    pipeline_preset,
    resolve_config,
    run_pipeline,
)
from openinsgaussian.run import RunDir, dataclass_to_dict  # noqa: E402
from openinsgaussian.train.stage0 import prepare_frames  # noqa: E402

#: The public code's behaviour, set explicitly (the reproduction presets' values).
REPRODUCTION: dict[str, Any] = {
    "inputs.paint_order": "sam",
    "inputs.mask_resize": "stride",
    "stage1.keep_empty_masks": True,
    "stage2.occurrence_gate": True,
    "stage2.codebook.empty_clusters": "zero",
    "stage3.association": "per_leaf",
    "stage3.pseudo": "recompute",
    "stage3.occurrence_gate": True,
}

#: Each fix alone (dotted overrides on top of :data:`REPRODUCTION`).
VARIANTS: dict[str, dict[str, Any]] = {
    "reproduction": {},
    "empty_clusters=reseed": {"stage2.codebook.empty_clusters": "reseed"},
    "association=one_pass": {"stage3.association": "one_pass"},
    "pseudo=fine_stage": {"stage3.pseudo": "fine_stage"},
    "occurrence_gate=off": {"stage2.occurrence_gate": False, "stage3.occurrence_gate": False},
    "paint_order=area": {"inputs.paint_order": "area"},
    "keep_empty_masks=off": {"stage1.keep_empty_masks": False},
    "mask_resize=centre": {"inputs.mask_resize": "centre"},
}
VARIANTS["all_fixes"] = {k: v for ov in VARIANTS.values() for k, v in ov.items()}

ROOMS = (("small", 0), ("small", 1), ("default", 0))
MASKS = ("ground_truth", "classical")


def _slug(name: str) -> str:
    return name.replace("=", "-")


def _inputs_hash(inputs: Any) -> str:
    """sha256 over every view's mask map and language features (what stage 1-3 train on)."""
    h = hashlib.sha256()
    for v in inputs.views:
        h.update(v.name.encode())
        h.update(v.mask_ids.to(torch.int32).numpy().tobytes())
        h.update(v.lang.numpy().tobytes())
    return h.hexdigest()


def _copy_stage(src: RunDir, dst: RunDir, stage: str) -> None:
    """Hard-link (copy where links fail) a finished stage's outputs into another run folder."""
    items = [src.stage_checkpoints(stage), src.metrics_path(stage)]
    if stage == "stage0":
        items.append(src.ply)
    if stage == "stage2":
        items.append(src.path / "codebook.npz")
    if stage == "stage3":
        items.append(src.instances)
    for item in items:
        if not item.exists():
            continue
        target = dst.path / item.relative_to(src.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.is_dir():
            if not target.exists():
                shutil.copytree(item, target, copy_function=_link)
        elif not target.exists():
            _link(str(item), str(target))


def _link(a: str, b: str) -> None:
    try:
        os.link(a, b)
    except OSError:
        shutil.copy2(a, b)


def _load_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _run_variant(data: Path, run: Path, cfg: Any, donors: dict[str, Path]) -> dict:
    """Train (sharing donated stages) and evaluate one variant; returns its table row."""
    rd = RunDir(run)
    shared: dict[str, str] = {}
    for stage, src in donors.items():
        if src != run:
            _copy_stage(RunDir(src), rd, stage)
            shared[stage] = src.name
    t0 = time.perf_counter()
    run_pipeline(data, run, config=cfg, resume=True)
    train_s = time.perf_counter() - t0
    metrics = run_eval(run).metrics
    s2 = _load_json(rd.metrics_path("stage2"))
    s3 = _load_json(rd.metrics_path("stage3"))
    row = {
        "scores": {
            name: {"miou": r["miou"], "macc": r["macc"]} for name, r in metrics["lists"].items()
        },
        "coarse_used": s2.get("coarse_used"),
        "leaves_used": s2.get("leaves_used"),
        "empty_clusters": s2.get("empty_clusters"),
        "fine_steps_without_loss": s2.get("fine_steps_without_loss"),
        "matched_pairs": s3.get("matched_pairs"),
        "root_view_pairs_gated": s3.get("root_view_pairs_gated"),
        "stage3_seconds": round(s3.get("pseudo_seconds", 0) + s3.get("association_seconds", 0), 3),
        "association_seconds": s3.get("association_seconds"),
        "train_seconds_this_call": round(train_s, 1),
        "shared_stages": shared,
    }
    return row


def _variant_config(base: Any, overrides: dict[str, Any], cache: Path | None) -> Any:
    ov = {**REPRODUCTION, **overrides}
    if cache is not None:
        ov["inputs.cache"] = str(cache)
    return resolve_config(apply_overrides(base, ov))


def _stage_keys(cfg: Any, inputs_hash: str) -> dict[str, str]:
    """Sharing key of every stage: its inputs and the configs of all stages up to it."""
    d = dataclass_to_dict(cfg)
    keys, acc = {}, []
    for stage in STAGES:
        acc.append(d[stage])
        payload = [inputs_hash if stage != "stage0" else "", acc, d["seed"], d["backend"]]
        keys[stage] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return keys


def _metric(row: dict, key: str, sub: str) -> float | None:
    v = row["scores"].get(key, {})
    return v.get(sub) if isinstance(v, dict) else None


def _markdown(result: dict) -> str:
    lines = [
        "# Reproduction switches on the synthetic suite",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}, package {result['package_version']}, {result['machine']}",
        f"- wall time: {result['wall_seconds']:.0f} s",
        "- ScanNet protocol, 19 classes, mean over "
        f"{len(result['rooms'])} rooms; oracle language, `synthetic` schedule",
        "",
    ]
    for masks in MASKS:
        lines += [
            f"## Masks: {masks}",
            "",
            "| variant | mIoU | mAcc | Δ mIoU vs reproduction | coarse used | leaves used "
            "| matched pairs | stage 3 (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = result["summary"][masks]
        ref = rows.get("reproduction", {}).get("miou")
        for name, s in rows.items():
            delta = "" if ref is None or s["miou"] is None else f"{100 * (s['miou'] - ref):+.2f}"
            lines.append(
                f"| {name} | {_pct(s['miou'])} | {_pct(s['macc'])} | {delta} | "
                f"{s['coarse_used']:.1f} | {s['leaves_used']:.1f} | {s['matched_pairs']:.0f} | "
                f"{s['stage3_seconds']:.1f} |"
            )
        lines.append("")
    if result.get("lerf"):
        lines += ["## LeRF protocol: query clean-up rule (one trained run)", "",
                  "| outlier_rule | mIoU | mAcc@0.25 |", "|---|---|---|"]
        for rule, m in result["lerf"].items():
            lines.append(f"| {rule} | {_pct(m.get('miou'))} | {_pct(m.get('macc@0.25'))} |")
        lines.append("")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _summarise(rows: dict) -> dict:
    out: dict[str, dict[str, dict]] = {}
    for masks in MASKS:
        out[masks] = {}
        for name in VARIANTS:
            rs = [r[name] for key, r in rows.items() if key.endswith(masks) and name in r]
            if not rs:
                continue

            def mean(f: Any) -> float | None:
                vals = [f(r) for r in rs]
                vals = [v for v in vals if v is not None]
                return sum(vals) / len(vals) if vals else None

            out[masks][name] = {
                "miou": mean(lambda r: _metric(r, "scannet19", "miou")),
                "macc": mean(lambda r: _metric(r, "scannet19", "macc")),
                "coarse_used": mean(lambda r: r["coarse_used"]),
                "leaves_used": mean(lambda r: r["leaves_used"]),
                "matched_pairs": mean(lambda r: r["matched_pairs"]),
                "stage3_seconds": mean(lambda r: r["stage3_seconds"]),
                "rooms": len(rs),
            }
    return out


def _lerf_rules(work: Path, progress: bool) -> dict:
    """Train the LeRF-layout default room once (``lerf`` preset on the synthetic schedule, as
    ``bench_lerf_synthetic.py``), then score it with both query clean-up rules."""
    from bench_lerf_synthetic import synthetic_schedule

    from openinsgaussian.data.synthetic_lerf import LerfLayoutConfig, write_lerf_layout

    room = generate_room(SynthConfig(out=work / "data", preset="default", seed=0, progress=progress))
    root = work / "data_lerf"
    scene = write_lerf_layout(room, root, cfg=LerfLayoutConfig(label_frames=6), progress=progress)
    ov = {**synthetic_schedule(), "inputs.masks": "ground_truth", "inputs.language": "oracle"}
    cfg = resolve_config(
        replace(apply_overrides(pipeline_preset("lerf"), ov), progress=progress)
    )
    first = work / "runs" / "lerf_default_0" / "all_distances"
    run_pipeline(scene, first, config=cfg, resume=True)
    out = {}
    for rule in ("all_distances", "per_point"):
        run = first.parent / rule
        if run != first and not (run / "instances.npz").is_file():
            shutil.copytree(first, run, dirs_exist_ok=True, copy_function=_link)
        if run != first:  # only the query section differs (it is read at evaluation time)
            rd = RunDir(run)
            section = rd.read_config()["pipeline"]
            section["query"] = dataclass_to_dict(replace(cfg.query, outlier_rule=rule))
            rd.write_config_section("pipeline", section)
        m = run_eval(run, "lerf", labels=root / "label", scene_name=scene.name).metrics
        out[rule] = {k: m.get(k) for k in ("miou", "macc@0.25", "macc@0.5", "pairs")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "ablate_fidelity")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ablate_fidelity.json")
    ap.add_argument("--rooms", default="small:0,small:1,default:0")
    ap.add_argument("--masks", default=",".join(MASKS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--lerf", action="store_true", help="also the LeRF clean-up rule comparison")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    rooms = [(r.split(":")[0], int(r.split(":")[1])) for r in args.rooms.split(",")]
    masks_list = args.masks.split(",")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    t_start = time.perf_counter()
    rows: dict[str, dict[str, dict]] = {}
    if args.out.is_file():  # resume: keep rows already measured
        rows = json.loads(args.out.read_text()).get("rows", {})

    def save(final: bool = False) -> dict:
        result = {
            "command": "python benchmarks/ablate_fidelity.py " + " ".join(argv or sys.argv[1:]),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}",
            "loadavg_start": load0,
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "rooms": [f"{r}/{s}" for r, s in rooms],
            "variants": {n: {**REPRODUCTION, **VARIANTS[n]} for n in names},
            "rows": rows,
            "summary": _summarise(rows),
            "lerf": lerf_result,
        }
        write_json(args.out, result)
        if final:
            write_text(args.out.with_suffix(".md"), _markdown(result))
        return result

    load0 = os.getloadavg()
    lerf_result: dict = {}
    base = replace(pipeline_preset("synthetic"), progress=args.progress)
    for room, seed in rooms:
        scene_dir = generate_room(
            SynthConfig(out=args.work / "data", preset=room, seed=seed, progress=args.progress)
        )
        scene = load_scene(scene_dir)
        stage0_run: Path | None = None
        for masks in masks_list:
            key = f"synth_{room}_{seed}_{masks}"
            done = rows.setdefault(key, {})
            donors: dict[str, dict[str, Path]] = {}  # stage -> sharing key -> run folder
            input_hashes: dict[str, str] = {}  # inputs config -> hash of the loaded inputs
            for name in names:
                ov = dict(VARIANTS[name])
                ov["inputs.masks"] = masks
                order = {**REPRODUCTION, **ov}["inputs.paint_order"]
                cache = scene_dir / f"language_features_{masks}_{order}"  # one per paint order
                cfg = _variant_config(base, ov, cache)
                ikey = json.dumps(dataclass_to_dict(cfg.inputs), sort_keys=True)
                if ikey not in input_hashes:  # load (or build) each distinct input set once
                    frames = prepare_frames(scene.train_frames, cfg.stage0)
                    inputs = load_training_inputs(
                        scene, frames, cfg.inputs, cfg.seed, args.progress
                    )
                    input_hashes[ikey] = _inputs_hash(inputs)
                    del inputs
                keys = _stage_keys(cfg, input_hashes[ikey])
                run = args.work / "runs" / key / _slug(name)
                use: dict[str, Path] = {}
                for stage in STAGES:
                    if stage == "stage0" and stage0_run is not None:
                        use[stage] = stage0_run
                    elif keys[stage] in donors.get(stage, {}):
                        use[stage] = donors[stage][keys[stage]]
                    else:
                        break
                if name not in done:
                    print(f"{key} / {name}: sharing {sorted(use)}", flush=True)
                    row = _run_variant(scene_dir, run, cfg, use)
                    row["inputs_hash"] = keys["stage1"][:12]
                    done[name] = row
                    m = _metric(row, "scannet19", "miou")
                    print(
                        f"  19-class mIoU {_pct(m)}  leaves {row['leaves_used']}  "
                        f"pairs {row['matched_pairs']}  stage3 {row['stage3_seconds']} s",
                        flush=True,
                    )
                    save()
                for stage in STAGES:
                    donors.setdefault(stage, {}).setdefault(keys[stage], run)
                stage0_run = stage0_run or run
    if args.lerf:
        lerf_result = _lerf_rules(args.work, args.progress)
    res = save(final=True)
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
