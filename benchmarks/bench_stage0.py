"""Stage-0 benchmark: held-out PSNR / SSIM and wall time of photometric 3DGS training on the CPU.

Two scenes:

- ``synthetic``: the ``default`` procedural room (60 + 10 views at 320x240, 80k surface points),
  frozen points as on ScanNet (preset ``synthetic``); target >= 28 dB on the test views.
- ``lego``: NeRF-synthetic lego from ``../shared/data/nerf_synthetic_lego_400`` at 200x200
  (downscale 2 of 400x400), random initialisation, densification, white background (preset
  ``blender`` with a shortened schedule); target >= 25 dB on the 25 test views.

Both have a 20-minute budget on 2 CPU cores. Wall time covers everything ``train_stage0`` does
(image loading, training, PLY export, evaluation, renders). Results go atomically to
``benchmarks/results/bench_stage0.json``.

Run: ``python benchmarks/bench_stage0.py`` (``--scenes synthetic`` / ``lego`` for one,
``--synthetic-iterations`` / ``--lego-iterations`` to change the schedules).
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
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from openinsgaussian import __version__  # noqa: E402
from openinsgaussian.data.load import load_scene  # noqa: E402
from openinsgaussian.data.synthetic import SynthConfig, generate_room  # noqa: E402
from openinsgaussian.io import write_json  # noqa: E402
from openinsgaussian.render import resolve_backend  # noqa: E402
from openinsgaussian.run import apply_overrides, dataclass_to_dict  # noqa: E402
from openinsgaussian.train.stage0 import stage0_preset, train_stage0  # noqa: E402

SHARED = Path(os.environ.get("OIG_SHARED_DATA", REPO.parent / "shared" / "data"))
BUDGET_S = 20 * 60


def lego_overrides(iterations: int, random_points: int) -> dict[str, Any]:
    """The blender preset on a shortened schedule: densify from 500 to half-way, every 100."""
    return {
        "iterations": iterations,
        "downscale": 2.0,
        "random_points": random_points,
        "densify.start": 500,
        "densify.stop": iterations // 2,
        "densify.opacity_reset_every": 3000,
        "densify.screen_size_after": 3000,
        "checkpoint_every": max(iterations // 4, 1),
    }


def run_one(name: str, data: Path, run: Path, preset: str, overrides: dict[str, Any], target: float) -> dict[str, Any]:
    if run.exists():
        shutil.rmtree(run)
    cfg = apply_overrides(stage0_preset(preset), overrides)
    t0 = time.perf_counter()
    scene = load_scene(data)
    model = train_stage0(scene, run, cfg)
    wall = time.perf_counter() - t0
    m = json.loads((run / "metrics" / "stage0.json").read_text())
    res = {
        "scene": name,
        "data": str(data),
        "preset": preset,
        "overrides": overrides,
        "resolution": [scene.train_frames[0].camera.width / cfg.downscale,
                       scene.train_frames[0].camera.height / cfg.downscale],
        "train_views": len(scene.train_frames),
        "eval_split": m["split"],
        "eval_views": m["n_views"],
        "psnr": round(m["psnr"], 3),
        "ssim": round(m["ssim"], 4),
        "n_gaussians": len(model),
        "iterations": cfg.iterations,
        "train_seconds": m["train_seconds"],
        "wall_seconds": round(wall, 1),
        "target_psnr": target,
        "meets_target": bool(m["psnr"] >= target and wall <= BUDGET_S),
        "config": dataclass_to_dict(cfg),
    }
    print(f"{name}: PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f}, {res['n_gaussians']} Gaussians, "
          f"{cfg.iterations} steps, {wall:.0f} s wall", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", nargs="+", default=["synthetic", "lego"], choices=["synthetic", "lego"])
    ap.add_argument("--synthetic-iterations", type=int, default=3000)
    ap.add_argument("--lego-iterations", type=int, default=5000)
    ap.add_argument("--lego-random-points", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_stage0")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_stage0.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    results = []
    if "synthetic" in args.scenes:
        room = generate_room(SynthConfig(out=args.work / "data", preset="default", seed=0, progress=False))
        results.append(run_one("synthetic-default", room, args.work / "runs" / "synthetic", "synthetic",
                               {"iterations": args.synthetic_iterations}, 28.0))
    if "lego" in args.scenes:
        lego = SHARED / "nerf_synthetic_lego_400"
        if not (lego / "transforms_train.json").is_file():
            print(f"lego skipped: {lego} not found", flush=True)
        else:
            results.append(run_one("lego-200", lego, args.work / "runs" / "lego", "blender",
                                   lego_overrides(args.lego_iterations, args.lego_random_points), 25.0))

    report = {
        "benchmark": "stage0",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "package_version": __version__,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "backend": resolve_backend("auto", torch.device("cpu")),
            "load_average_at_end": list(os.getloadavg()),
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "results": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if all(r["meets_target"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
