"""LeRF-protocol benchmark on a synthetic room written in the LeRF-OVS layout (no downloads).

Generates a synthetic room, writes it as a COLMAP scene with LangSplat-style polygon annotations
(``openinsgaussian.data.synthetic_lerf``), and runs ``openins benchmark lerf`` on it: the ``lerf``
preset (SAM level 3, k2 10, pos_weight 0.5, densification, the query-time scale / outlier filter,
min 5 views per selected leaf), with ground-truth masks and the clean ``oracle`` language source,
on the ``synthetic`` preset's schedule length (the published 70k steps take hours on a CPU). The
score therefore measures the 3D selection and rendering path of the LeRF protocol, not CLIP.

Run: ``python benchmarks/bench_lerf_synthetic.py`` (``--room``, ``--seed``, ``--threads``,
``--work``). Result: ``benchmarks/results/bench_lerf_synthetic.json`` (+ the runner's
``benchmark.md`` copied to ``benchmarks/results/bench_lerf_synthetic.md``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from openinsgaussian.data.synthetic import SynthConfig, generate_room  # noqa: E402
from openinsgaussian.data.synthetic_lerf import LerfLayoutConfig, write_lerf_layout  # noqa: E402
from openinsgaussian.evaluate.benchmark import run_benchmark  # noqa: E402
from openinsgaussian.io import write_json, write_text  # noqa: E402
from openinsgaussian.train.pipeline import pipeline_preset  # noqa: E402
from openinsgaussian.run import dataclass_to_dict  # noqa: E402

#: Schedule fields taken from the ``synthetic`` preset (lengths, cadences, the stage-1 lr that
#: short schedules need, and k1, which the fine-stage length is sized for); every other value is
#: the ``lerf`` preset's.
SCHEDULE_KEYS = (
    "stage0.iterations",
    "stage0.checkpoint_every",
    "stage1.iterations",
    "stage1.lr",
    "stage1.hard_pairs_after",
    "stage1.checkpoint_every",
    "stage2.coarse_iterations",
    "stage2.fine_iterations",
    "stage2.checkpoint_every",
    "stage2.codebook.k1",
    "stage2.codebook.coarse_every",
    "stage2.codebook.fine_every",
    "stage2.codebook.root_every",
)


def synthetic_schedule() -> dict[str, Any]:
    """Dotted overrides: the ``synthetic`` preset's values of :data:`SCHEDULE_KEYS`."""
    cfg = dataclass_to_dict(pipeline_preset("synthetic"))
    out = {}
    for key in SCHEDULE_KEYS:
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--room", default="default", choices=["tiny", "small", "default"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--label-frames", type=int, default=6)
    ap.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_lerf_synthetic")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_lerf_synthetic.json")
    args = ap.parse_args(argv)

    room = generate_room(SynthConfig(out=args.work / "rooms", preset=args.room, seed=args.seed))
    root = args.work / "lerf_ovs"
    write_lerf_layout(room, root, cfg=LerfLayoutConfig(label_frames=args.label_frames))
    overrides = {
        **synthetic_schedule(),
        "inputs.masks": "ground_truth",
        "inputs.language": "oracle",
        "threads": args.threads,
    }
    result = run_benchmark(
        "lerf", root, args.work / "bench", scenes=[room.name], seed=args.seed,
        overrides=overrides,
        command=shlex.join(["python", "benchmarks/bench_lerf_synthetic.py",
                            *(sys.argv[1:] if argv is None else argv)]),
    )
    write_json(args.out, result)
    write_text(args.out.with_suffix(".md"), (args.work / "bench" / "benchmark.md").read_text())
    m = result["scenes"][0]["metrics"]
    print(f"{room.name}: mIoU {m['miou']:.4f}, mAcc@0.25 {m['macc@0.25']:.4f}, "
          f"mAcc@0.5 {m['macc@0.5']:.4f} over {m['pairs']} pairs; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
