"""Aggregation / association ablation on the ``default`` synthetic room with corrupted views.

Stages 0-2 are trained once (GT masks; language plays no part there), reusing the run of
``bench_synthetic_pipeline.py`` when it exists. Stage 3 is then re-run on the same masks with
oracle language features in which a fraction of the *views* is corrupted (every mask of such a
view gets the vector of another class of the room; default 30 %), for every combination of

* aggregation: ``mean`` (OpenGaussian) and ``attention`` (OpenInsGaussian), and
* association: ``one_pass`` (one render with top-contributor ids per view) and ``per_leaf``
  (every leaf rendered alone, as the public code),

plus the same four runs on clean features for reference. Each is scored with the ScanNet protocol
(19 / 15 / 10 classes); the association time of both modes is recorded and their ratio reported.

Run: ``python benchmarks/ablate_aggregation.py`` (``--corrupt 0.3``, ``--run``, ``--work``,
``--out``). Result: ``benchmarks/results/ablate_aggregation.json`` (atomic write).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from openinsgaussian import __version__  # noqa: E402
from openinsgaussian.data.load import load_scene  # noqa: E402
from openinsgaussian.data.synthetic import SynthConfig, generate_room  # noqa: E402
from openinsgaussian.evaluate.run import run_eval  # noqa: E402
from openinsgaussian.io import write_json  # noqa: E402
from openinsgaussian.perception.oracle import OracleLanguage  # noqa: E402
from openinsgaussian.render import resolve_backend  # noqa: E402
from openinsgaussian.train.inputs import load_training_inputs, relabel_inputs  # noqa: E402
from openinsgaussian.train.pipeline import (  # noqa: E402  # noqa: E402
    load_stage_model,
    read_pipeline_config,
    run_pipeline,
    stage_done,
)
from openinsgaussian.run import RunDir  # noqa: E402
from openinsgaussian.train.stage0 import prepare_frames  # noqa: E402
from openinsgaussian.train.stage2 import CODEBOOK_FILE, load_codebook  # noqa: E402
from openinsgaussian.train.stage3 import train_stage3  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--corrupt", type=float, default=0.3, help="fraction of views with wrong language features"
    )
    ap.add_argument("--room", default="default", choices=["tiny", "small", "default"])
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_pipeline")
    ap.add_argument(
        "--run",
        type=Path,
        default=None,
        help="a trained run to reuse (default: the pipeline bench's)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ablate_aggregation.json")
    args = ap.parse_args(argv)

    room = generate_room(
        SynthConfig(out=args.work / "data", preset=args.room, seed=args.seed, progress=False)
    )
    run = args.run or args.work / "runs" / f"synthetic_{args.room}_{args.seed}"
    rd = RunDir(run)
    t0 = time.perf_counter()
    if rd.config_path.is_file():
        run_pipeline(room, run, "synthetic", resume=True, stages=["stage0", "stage1", "stage2"])
    else:
        run_pipeline(
            room,
            run,
            "synthetic",
            stages=["stage0", "stage1", "stage2"],
            seed=args.seed,
            progress=False,
        )
    t_train = time.perf_counter() - t0
    cfg = read_pipeline_config(rd)
    for s in ("stage0", "stage1", "stage2"):
        assert stage_done(rd, s, cfg), s
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    scene = load_scene(room)
    frames = prepare_frames(scene.train_frames, cfg.stage0)
    clean = load_training_inputs(scene, frames, cfg.inputs, cfg.seed, progress=False)
    oracle = OracleLanguage(
        scene, dim=clean.dim, view_corrupt_fraction=args.corrupt, seed=args.seed
    )
    corrupted = relabel_inputs(clean, oracle, progress=False)
    bad_views = [f.name for f in frames if oracle.is_view_corrupted(f.name)]
    model = load_stage_model(rd, "stage2")
    cb = load_codebook(rd.path / CODEBOOK_FILE, cfg.stage2.codebook)

    rows = []
    for label, inputs in (("clean", clean), (f"corrupt_{args.corrupt:g}", corrupted)):
        for association in ("one_pass", "per_leaf"):
            for aggregation in ("mean", "attention"):
                s3 = replace(
                    cfg.stage3, association=association, aggregation=aggregation, progress=False
                )
                train_stage3(
                    model,
                    cb,
                    inputs,
                    rd.path,
                    s3,
                    backend=cfg.backend,
                    seed=cfg.seed,
                    stage2=cfg.stage2,
                )
                m3 = json.loads(rd.metrics_path("stage3").read_text())
                res = run_eval(run).metrics
                row = {
                    "features": label,
                    "association": association,
                    "aggregation": aggregation,
                    "language": inputs.language_detail.get("description", inputs.language_source),
                    **{f"miou_{k[7:]}": round(v["miou"], 4) for k, v in res["lists"].items()},
                    **{f"macc_{k[7:]}": round(v["macc"], 4) for k, v in res["lists"].items()},
                    "association_seconds": m3["association_seconds"],
                    "matched_pairs": m3["matched_pairs"],
                }
                rows.append(row)
                print(
                    f"{label:>12} {association:>8} {aggregation:>9}: mIoU19 {row['miou_19']:.4f} "
                    f"mAcc19 {row['macc_19']:.4f}  association {row['association_seconds']:.1f}s",
                    flush=True,
                )
    # leave the run as the pipeline made it: clean features, the configured stage 3
    train_stage3(
        model,
        cb,
        clean,
        rd.path,
        replace(cfg.stage3, progress=False),
        backend=cfg.backend,
        seed=cfg.seed,
        stage2=cfg.stage2,
    )
    run_eval(run).metrics

    def pick(feat: str, assoc: str, agg: str) -> dict:
        return next(
            r
            for r in rows
            if r["features"] == feat and r["association"] == assoc and r["aggregation"] == agg
        )

    bad = f"corrupt_{args.corrupt:g}"
    t_one = np.mean([r["association_seconds"] for r in rows if r["association"] == "one_pass"])
    t_per = np.mean([r["association_seconds"] for r in rows if r["association"] == "per_leaf"])
    summary = {
        "corrupted_views": len(bad_views),
        "views": len(frames),
        "attention_minus_mean_miou19_corrupt_one_pass": round(
            pick(bad, "one_pass", "attention")["miou_19"]
            - pick(bad, "one_pass", "mean")["miou_19"],
            4,
        ),
        "attention_minus_mean_miou19_corrupt_per_leaf": round(
            pick(bad, "per_leaf", "attention")["miou_19"]
            - pick(bad, "per_leaf", "mean")["miou_19"],
            4,
        ),
        "one_pass_minus_per_leaf_miou19_corrupt_attention": round(
            pick(bad, "one_pass", "attention")["miou_19"]
            - pick(bad, "per_leaf", "attention")["miou_19"],
            4,
        ),
        "association_seconds_one_pass_mean": round(float(t_one), 2),
        "association_seconds_per_leaf_mean": round(float(t_per), 2),
        "per_leaf_over_one_pass_time": round(float(t_per / t_one), 2),
    }
    report = {
        "benchmark": "ablate_aggregation",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "package_version": __version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "scene": {"room": args.room, "seed": args.seed, "path": str(room)},
        "run": str(run),
        "corrupt_fraction": args.corrupt,
        "corrupted_view_names": bad_views,
        "stages_0_2_seconds": round(t_train, 1),
        "rows": rows,
        "summary": summary,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "backend": resolve_backend("auto", torch.device("cpu")),
            "load_average_at_end": list(os.getloadavg()),
        },
    }
    write_json(args.out, report)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
