"""Full-pipeline benchmark: the ``default`` synthetic room, GT masks + clean oracle, ScanNet.

Generates the default room (60 + 10 views at 320x240, 80k surface points), builds its cache with
ground-truth instance masks and the clean ``oracle`` language source, trains stages 0-3 with the
``synthetic`` pipeline preset from scratch, evaluates with the ScanNet protocol and records the
19/15/10-class mIoU / mAcc and the wall time of every stage. Target: 19-class mIoU >= 0.85.

With oracle language the language side is perfect, so the score measures the 3D part of the
method (instance features, codebook, association, aggregation) on this scene.

Run: ``python benchmarks/bench_synthetic_pipeline.py`` (``--threads``, ``--seed``, ``--work``,
``--out``). Result: ``benchmarks/results/bench_synthetic_pipeline.json`` (atomic write).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from openinsgaussian import __version__  # noqa: E402
from openinsgaussian.data.synthetic import SynthConfig, generate_room  # noqa: E402
from openinsgaussian.evaluate.run import run_eval  # noqa: E402
from openinsgaussian.io import write_json  # noqa: E402
from openinsgaussian.render import resolve_backend  # noqa: E402
from openinsgaussian.train.pipeline import read_pipeline_config, run_pipeline  # noqa: E402
from openinsgaussian.run import RunDir, dataclass_to_dict  # noqa: E402

TARGET_MIOU19 = 0.85


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "backend": resolve_backend("auto", torch.device("cpu")),
        "load_average_at_end": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--room", default="default", choices=["tiny", "small", "default"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the preset's value)")
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_pipeline")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_synthetic_pipeline.json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    room = generate_room(
        SynthConfig(out=args.work / "data", preset=args.room, seed=args.seed, progress=False)
    )
    t_room = time.perf_counter() - t0
    shutil.rmtree(
        room / "language_features", ignore_errors=True
    )  # the cache is part of the measurement
    run = args.work / "runs" / f"synthetic_{args.room}_{args.seed}"
    shutil.rmtree(run, ignore_errors=True)
    overrides = {
        "seed": args.seed,
        "progress": False,
        **({"threads": args.threads} if args.threads else {}),
    }
    t1 = time.perf_counter()
    run_pipeline(room, run, "synthetic", **overrides)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    res = run_eval(run).metrics
    t_eval = time.perf_counter() - t2
    rd = RunDir(run)
    stages = json.loads(rd.metrics_path("pipeline").read_text())["stages"]
    s0 = json.loads(rd.metrics_path("stage0").read_text())
    s2 = json.loads(rd.metrics_path("stage2").read_text())
    s3 = json.loads(rd.metrics_path("stage3").read_text())
    lists = {
        k: {
            "miou": round(v["miou"], 4),
            "macc": round(v["macc"], 4),
            "classes_present": len(v["per_class"]),
        }
        for k, v in res["lists"].items()
    }
    miou19 = res["lists"]["scannet19"]["miou"]
    report = {
        "benchmark": "synthetic_pipeline",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "package_version": __version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "scene": {"room": args.room, "seed": args.seed, "path": str(room)},
        "language_source": res["language_source"],
        "masks": "ground_truth",
        "metrics": lists,
        "per_class_iou_19": {
            c: round(v["iou"], 4) for c, v in res["lists"]["scannet19"]["per_class"].items()
        },
        "ignored_low_opacity": res["ignored_low_opacity"],
        "points": res["points"],
        "stage0_test_psnr": round(s0["psnr"], 3),
        "leaves_used": s2["leaves_used"],
        "matched_pairs": s3["matched_pairs"],
        "wall_seconds": {
            "room": round(t_room, 1),
            **{k: v["seconds"] for k, v in stages.items()},
            "pipeline_total": round(t_train, 1),
            "eval": round(t_eval, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "target_miou19": TARGET_MIOU19,
        "meets_target": bool(miou19 >= TARGET_MIOU19),
        "machine": machine(),
        "config": dataclass_to_dict(read_pipeline_config(rd)),
    }
    write_json(args.out, report)
    print(
        f"19-class mIoU {miou19:.4f} (target {TARGET_MIOU19}); stage seconds "
        + ", ".join(f"{k} {v['seconds']:.0f}" for k, v in stages.items())
        + f"; wrote {args.out}"
    )
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
