"""CPU threading under load: one training-sized render + backward, alone and with a second copy.

Measures the median step time of a 320x240 render + backward of 80k Gaussians on the ``cpu``
backend with 2 torch threads, for OpenMP's spinning and passive wait policies, with one process
and with two processes at once (a busy machine). Writes benchmarks/results/bench_threads.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(threads: int, steps: int) -> float:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from openinsgaussian.data.camera import Camera
    from openinsgaussian.render import render

    g = torch.Generator().manual_seed(0)
    n = 80_000
    means = torch.rand(n, 3, generator=g) * 6.0 + torch.tensor([-3.0, -3.0, 2.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(-5.0, -2.5, generator=g))
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    cols = torch.rand(n, 3, generator=g)
    for t in (means, quats, scales, opac, cols):
        t.requires_grad_(True)
    cam = Camera.from_intrinsics(250.0, 250.0, 160.0, 120.0, 320, 240, np.eye(4))

    def step() -> None:
        out = render(means, quats, scales, opac, cols, cam, backend="cpu")
        (out.image.mean() + out.alpha.mean()).backward()

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run_case(policy: str, processes: int, threads: int, steps: int) -> list[float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "unset":  # unset: OpenMP's own default (the worker imports torch before the package)
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--worker", str(threads), str(steps)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(worker(int(sys.argv[2]), int(sys.argv[3])))
        return 0
    rows = []
    for policy in ("unset", "ACTIVE", "PASSIVE"):
        for processes in (1, 2):
            med = run_case(policy, processes, threads=2, steps=15)
            rows.append({"omp_wait_policy": policy, "processes": processes, "median_step_ms": [round(1000 * m, 1) for m in med]})
            print(f"{policy:8s} processes={processes}: " + ", ".join(f"{1000 * m:.1f} ms" for m in med), flush=True)
    out = {
        "benchmark": "threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_threads.py",
        "machine": {"cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
        "case": "80k Gaussians, 320x240, cpu backend, render + backward, 2 torch threads, median of 15 steps",
        "rows": rows,
    }
    from openinsgaussian.io import write_json

    write_json(HERE / "results" / "bench_threads.json", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
