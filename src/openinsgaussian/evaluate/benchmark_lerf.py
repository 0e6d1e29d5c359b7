"""The LeRF-OVS part of ``openins benchmark``: scene checks, per-scene summary, mean and report.

:func:`~openinsgaussian.evaluate.benchmark.run_benchmark` runs every scene of
:data:`~openinsgaussian.data.lerf.LERF_SCENES` (COLMAP layout, METHOD §10.2) with the ``lerf``
preset (per-scene exceptions of METHOD §9 applied by the scene name) and scores it with
:func:`~openinsgaussian.evaluate.lerf_run.run_eval_lerf`; this module holds what differs from the
ScanNet protocol: what a scene folder must hold, which numbers are reported, and the report in the
published format of METHOD §8.2 (mIoU / mAcc@0.25 per scene and mean, plus mAcc@0.5), with the
published rows of :data:`~openinsgaussian.evaluate.published.LERF_PUBLISHED` beside ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.colmap import find_sparse_dir
from ..data.lerf import find_label_folder, labels_digest
from ..errors import DataError
from .lerf import mean_over_lerf_scenes
from .published import LERF_ACC50_SOURCE, LERF_PUBLISHED, LERF_SOURCE

#: The numbers kept per scene in benchmark.json (from metrics/lerf.json).
SUMMARY_KEYS = ("miou", "macc@0.25", "macc@0.5", "pairs", "frames", "queries")
#: The scenes in the column order of the published table (METHOD §8.2).
BENCHMARK_SCENES: tuple[str, ...] = ("figurines", "teatime", "ramen", "waldo_kitchen")


def scene_problems(root: Path, labels: Path, scene: str) -> list[str]:
    """What is missing for one LeRF scene (empty when it is complete)."""
    d = root / scene
    if not d.is_dir():
        return ["folder missing"]
    out = []
    if find_sparse_dir(d) is None:
        out.append("no COLMAP model (sparse/0/cameras.bin|txt)")
    if not (d / "images").is_dir():
        out.append("no images/ folder")
    if find_label_folder(labels, scene) is None:
        out.append(f"no annotations ({labels}/{scene}/frame_*.json)")
    return out


def check_lerf_root(root: Path, labels: Path, scenes: list[str], restricted: bool) -> None:
    """Unrestricted, every scene must be complete: list what is missing, before any training."""
    if not root.is_dir():
        raise DataError(
            root,
            "LeRF-OVS root folder not found",
            "expected ROOT/<scene>/images/, ROOT/<scene>/sparse/0/ and ROOT/label/<scene>/"
            f"frame_*.json for the scenes {', '.join(scenes)} (METHOD §10.2)",
        )
    if restricted:
        return  # missing scenes then fail one by one and are recorded
    problems = [f"{s}: {'; '.join(p)}" for s in scenes if (p := scene_problems(root, labels, s))]
    if problems:
        raise DataError(
            root,
            f"{len(problems)} of {len(scenes)} LeRF-OVS scenes are missing or incomplete: "
            + " | ".join(problems),
            "each scene needs ROOT/<scene>/images/, ROOT/<scene>/sparse/0/ and the LangSplat "
            "annotations ROOT/label/<scene>/frame_*.json (or give --labels); run a subset with "
            "--scenes",
        )


def metrics_match(data: Mapping, scene: str, labels: Path) -> bool:
    """Whether a saved metrics/lerf.json scored ``scene`` against the annotations now in
    ``labels`` (same folder, same file contents)."""
    if "miou" not in data or data.get("scene_name") != scene:
        return False
    folder = find_label_folder(labels, scene)
    return folder is not None and data.get("labels_digest") == labels_digest(folder)


def summary(metrics: Mapping) -> dict:
    """The reported numbers of one scene."""
    return {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}


def mean(ok: list[dict]) -> dict | None:
    """Unweighted mean over the finished scenes (METHOD §7.2 step 5), or None."""
    if not ok:
        return None
    return mean_over_lerf_scenes({s["scene"]: s["metrics"] for s in ok})


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100.0 * float(v):.2f}"


def _pair(s: Mapping | None, second: str = "macc@0.25") -> str:
    if not s:
        return "-"
    return f"{_pct(s.get('miou'))} / {_pct(s.get(second))}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def tables(result: dict) -> list[str]:
    """Markdown lines: mIoU / mAcc@0.25 per scene and mean (ours and published), then mAcc@0.5."""
    scenes = result["scenes"]
    names = [s["scene"] for s in scenes]
    m = result.get("mean")
    n_ok = len(m["scenes"]) if m else 0

    def ours(key: str) -> list[str]:
        cells = []
        for s in scenes:
            if s["status"] != "ok":
                cells.append(f"failed ({s['error']['type']})")
            elif key == "macc@0.25":
                cells.append(_pair(s["metrics"]))
            else:
                cells.append(_pct(s["metrics"].get(key)))
        if key == "macc@0.25":
            cells.append(_pair(m))
        else:
            cells.append(_pct(m.get(key)) if m else "-")
        return cells

    head = ["Method", *names, f"Mean (ours: {n_ok} of {len(scenes)} scenes)"]
    rows = [["**ours**", *ours("macc@0.25")]]
    for method, p in LERF_PUBLISHED.items():
        rows.append([f"{method} (published)", *[_pair(p.scores.get(n)) for n in names],
                     _pair(p.scores["mean"])])
    lines = ["## mIoU / mAcc@0.25 (percent)", ""]
    lines += _table(head, rows)
    lines += ["", f"Published rows: {LERF_SOURCE}; their Mean is over the 4 LeRF-OVS scenes.", ""]
    oig = LERF_PUBLISHED["OpenInsGaussian"].scores
    rows50 = [
        ["**ours**", *ours("macc@0.5")],
        ["OpenInsGaussian (published)", *[_pct(oig.get(n, {}).get("macc@0.5")) for n in names],
         _pct(oig["mean"]["macc@0.5"])],
    ]
    lines += ["## mAcc@0.5 (percent)", ""]
    lines += _table(head, rows50)
    lines += ["", f"Published row: {LERF_ACC50_SOURCE}.", ""]
    applied = [f"{s['scene']}: " + ", ".join(f"{k} = {v}" for k, v in s["scene_overrides"].items())
               for s in scenes if s.get("scene_overrides")]
    if applied:
        lines += ["Published per-scene exceptions applied (METHOD §9): " + "; ".join(applied)
                  + ".", ""]
    pairs = [[s["scene"], str(s["metrics"].get("pairs", "-")), str(s["metrics"].get("frames", "-")),
              str(s["metrics"].get("queries", "-"))] for s in scenes if s["status"] == "ok"]
    if pairs:
        lines += ["## Scored pairs", ""]
        lines += _table(["Scene", "(frame, query) pairs", "frames", "queries"], pairs)
        lines.append("")
    return lines


__all__ = [
    "SUMMARY_KEYS",
    "check_lerf_root",
    "mean",
    "metrics_match",
    "scene_problems",
    "summary",
    "tables",
]
