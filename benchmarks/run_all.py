"""Run every benchmark in this folder (``make bench``), one subprocess each, and report failures.

Benchmarks write their JSON into benchmarks/results/ and their table rows into benchmarks/README.md.
Pass benchmark names (file stems without ``bench_``) to run a subset: ``python benchmarks/run_all.py render``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py")) + sorted(HERE.glob("ablate_*.py")) + sorted(HERE.glob("check_*.py"))
    if argv:
        wanted = set(argv)
        scripts = [s for s in scripts if s.stem.removeprefix("bench_").removeprefix("ablate_").removeprefix("check_") in wanted or s.stem in wanted]
    failed: list[str] = []
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"=== {script.name}: exit {rc} after {time.perf_counter() - t0:.1f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    print(f"all {len(scripts)} benchmark(s) finished; results in {HERE / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
