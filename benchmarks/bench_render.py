"""Rendering benchmark: forward and forward+backward time and peak memory per backend.

For every backend that runs on this machine (``reference``, ``cpu``, and ``gsplat`` with CUDA), for
10k and 100k Gaussians at 256x256 with 3 and 6 feature channels, two stages are measured:

- ``render``: the public ``render(...)`` call (projection + compositing, depth channel appended);
- ``composite``: compositing alone (stage B) on precomputed projections, with the C feature
  channels plus depth, as the API passes them (not for gsplat, which has no separate stage).

Each (stage, backend, N, C) runs in a fresh subprocess so that its memory figures are its own:

- CPU: how far the resident set size rises above its level just before the call (Linux: the
  kernel's high-water mark ``VmHWM``, reset right before the call, after freeing what can be
  freed; elsewhere ``ru_maxrss``). It counts tensors, the autograd graph and allocator slack;
  ``tracemalloc`` would miss torch's C++ allocations entirely. The first call is measured, the
  forward pass and forward+backward separately, once the inputs exist and the backend is loaded.
- CUDA: the growth of ``torch.cuda.max_memory_allocated`` over the same starting point.

Times are medians of repeated calls after that first one, on ``torch.get_num_threads()`` threads
(or ``--threads``); CUDA timings synchronise. Results go atomically to
``benchmarks/results/bench_render.json`` and, as a Markdown table, into the rendering section of
``benchmarks/README.md``.

Run: ``python benchmarks/bench_render.py`` (``--quick`` for a small smoke run that writes nothing).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import tyro
from tqdm import tqdm

from openinsgaussian.data.camera import Camera
from openinsgaussian.io import write_json, write_text

HERE = Path(__file__).resolve().parent
README_START = "<!-- bench_render:start -->"
README_END = "<!-- bench_render:end -->"


@dataclass
class BenchConfig:
    """Rendering benchmark settings."""

    sizes: tuple[int, ...] = (10_000, 100_000)
    """Numbers of Gaussians."""
    channels: tuple[int, ...] = (3, 6)
    """Feature channels per Gaussian (the API appends depth as one more)."""
    width: int = 256
    """Image width in pixels."""
    height: int = 256
    """Image height in pixels."""
    backends: tuple[str, ...] = ("reference", "cpu", "gsplat")
    """Backends to try; those that cannot run here are skipped and listed in the output."""
    stages: tuple[str, ...] = ("render", "composite")
    """``render``: the full API call; ``composite``: compositing alone."""
    threads: int = 0
    """CPU threads for torch and the compiled compositor; 0 keeps torch's default."""
    repeats: int = 5
    """Timed calls per measurement after the first (fewer once ``max_seconds`` is spent)."""
    max_seconds: float = 15.0
    """Time budget per measurement for the repeated calls."""
    seed: int = 0
    """Scene seed."""
    out: Path = HERE / "results" / "bench_render.json"
    """JSON output."""
    readme: Path = HERE / "README.md"
    """Markdown file whose rendering section receives the table."""
    quick: bool = False
    """Smoke run: 2k Gaussians at 64x64, one repeat; prints the table and writes nothing."""


# ------------------------------------------------------------------------------------------------
# Scene
# ------------------------------------------------------------------------------------------------
def make_scene(n: int, channels: int, width: int, height: int, seed: int = 0) -> dict[str, Any]:
    """Random Gaussians with the statistics of a trained scene seen from inside it.

    Camera at the origin looking down +z with a 58 degree horizontal field of view; means uniform
    in a box 2..8 m in front of it (slightly wider than the view frustum); scales log-uniform in
    [5 mm, 15 cm], so screen radii run from a few pixels to a few tens (median 9 px at 256x256);
    random rotations; opacities uniform in [0.05, 0.95]; features uniform in [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    f = 0.9 * width
    camera = Camera.from_intrinsics(f, f, width / 2, height / 2, width, height,
                                    torch.eye(4, dtype=torch.float64), name="bench")
    lo = torch.tensor([-2.5, -2.5, 2.0])
    hi = torch.tensor([2.5, 2.5, 8.0])
    means = lo + torch.rand(n, 3, generator=g) * (hi - lo)  # [N,3]
    quats = torch.randn(n, 4, generator=g)  # [N,4]
    log_s = math.log(0.005) + torch.rand(n, 3, generator=g) * math.log(0.15 / 0.005)
    scales = torch.exp(log_s)  # [N,3]
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g)  # [N]
    colors = torch.rand(n, channels, generator=g)  # [N,C]
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                camera=camera)


# ------------------------------------------------------------------------------------------------
# One measurement (runs in its own subprocess)
# ------------------------------------------------------------------------------------------------
class _PeakRSS:
    """Peak resident memory of this process over one operation, in MB.

    Linux: free what can be freed (gc, glibc ``malloc_trim``), reset the kernel's high-water mark
    (``/proc/self/clear_refs`` = 5), then report ``VmHWM`` minus the ``VmRSS`` at the reset.
    Elsewhere: growth of ``ru_maxrss``, which misses memory below an earlier, higher peak.
    """

    def __init__(self) -> None:
        self.base = 0.0
        self.linux = Path("/proc/self/clear_refs").exists()

    @staticmethod
    def _status_mb(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0  # kB
        raise KeyError(key)

    @staticmethod
    def _maxrss_mb() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / 2**20 if sys.platform == "darwin" else r / 1024.0  # bytes on macOS, else KiB

    def reset(self) -> None:
        gc.collect()
        if self.linux:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.base = self._status_mb("VmRSS")
                return
            except OSError:
                self.linux = False
        self.base = self._maxrss_mb()

    def peak(self) -> float:
        return (self._status_mb("VmHWM") if self.linux else self._maxrss_mb()) - self.base


def _measure(backend: str, stage: str, n: int, channels: int, cfg: BenchConfig) -> dict[str, Any]:
    from openinsgaussian.render import api
    from openinsgaussian.render.projection import project_gaussians
    from openinsgaussian.render.reference import composite_reference

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if backend == "gsplat" else "cpu")
    scene = make_scene(n, channels, cfg.width, cfg.height, cfg.seed)
    cam = scene.pop("camera")
    params = {k: v.to(device) for k, v in scene.items()}
    chosen = api.resolve_backend(backend, device)
    if chosen != backend:
        raise RuntimeError(f"backend {backend!r} resolved to {chosen!r}")

    with torch.no_grad():
        K, viewmat = cam.to(device, torch.float32)
        proj = project_gaussians(params["means"], params["quats"], params["scales"], viewmat, K,
                                 cfg.width, cfg.height)
    visible = proj.radii > 0
    radii_v = proj.radii[visible].float()
    stats = {
        "visible": int(visible.sum()),
        "radius_median_px": float(radii_v.median()) if radii_v.numel() else 0.0,
        "radius_p90_px": float(radii_v.quantile(0.9)) if radii_v.numel() else 0.0,
    }

    if stage == "render":
        def call(grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
            p = {k: v.detach().requires_grad_(grad) for k, v in params.items()}
            out = api.render(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], cam,
                             backend=backend)
            return out.image, out.alpha
    else:
        if backend == "cpu":
            from openinsgaussian.render.cpu_fast import composite_cpu as composite
        else:
            composite = composite_reference
        feats = torch.cat([params["colors"], proj.depths[:, None]], dim=1)  # [N,C+1], as the API

        def call(grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
            ins = [t.detach().requires_grad_(grad)
                   for t in (proj.means2d, proj.conics, params["opacities"], feats)]
            image, alpha, _ = composite(*ins, proj.depths, proj.radii, cfg.width, cfg.height)
            return image, alpha

    cuda = device.type == "cuda"

    def run(backward: bool) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            image, alpha = call(backward)
            if backward:
                (image.sum() + alpha.sum()).backward()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def cuda_peak_mb() -> float | None:
        return (torch.cuda.max_memory_allocated() - base_cuda) / 2**20 if cuda else None

    if backend == "cpu":
        from openinsgaussian.render.cpu_fast import cpu_backend_available

        cpu_backend_available()  # load the library before the memory baseline
    base_cuda = 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.max_memory_allocated()
    rss = _PeakRSS()
    rss.reset()
    first_fwd = run(False)
    mem_fwd, cuda_fwd = rss.peak(), cuda_peak_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss.reset()
    first_fb = run(True)
    mem_fb, cuda_fb = rss.peak(), cuda_peak_mb()

    def timed(backward: bool) -> list[float]:
        times: list[float] = []
        end = time.perf_counter() + cfg.max_seconds
        while len(times) < cfg.repeats and (not times or time.perf_counter() < end):
            times.append(run(backward))
        return times

    t_fwd, t_fb = timed(False), timed(True)
    return {
        "backend": backend, "stage": stage, "n": n, "channels": channels,
        "width": cfg.width, "height": cfg.height, "device": str(device),
        "threads": torch.get_num_threads(),
        "forward_s": statistics.median(t_fwd), "forward_backward_s": statistics.median(t_fb),
        "forward_runs": len(t_fwd), "forward_backward_runs": len(t_fb),
        "first_forward_s": first_fwd, "first_forward_backward_s": first_fb,
        "peak_rss_forward_mb": mem_fwd, "peak_rss_forward_backward_mb": mem_fb,
        "peak_cuda_forward_mb": cuda_fwd, "peak_cuda_forward_backward_mb": cuda_fb,
        **stats,
    }


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------
def _available_backends(cfg: BenchConfig) -> tuple[list[str], dict[str, str]]:
    from openinsgaussian.render.cpu_fast import cpu_backend_available, cpu_backend_error
    from openinsgaussian.render.gsplat_backend import gsplat_status

    ok, skipped = [], {}
    for b in cfg.backends:
        if b == "reference":
            ok.append(b)
        elif b == "cpu":
            if cpu_backend_available():
                ok.append(b)
            else:
                skipped[b] = cpu_backend_error() or "unavailable"
        elif b == "gsplat":
            good, why = gsplat_status() if torch.cuda.is_available() else (False, "no CUDA device")
            if good:
                ok.append(b)
            else:
                skipped[b] = why
        else:
            skipped[b] = "unknown backend"
    return ok, skipped


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine(cfg: BenchConfig) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(),
        "torch_threads": cfg.threads if cfg.threads > 0 else torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": _load_average(),
    }


def _mem(r: dict[str, Any], key: str) -> float:
    cuda = r[f"peak_cuda_{key}_mb"]
    return cuda if cuda is not None else r[f"peak_rss_{key}_mb"]


def _table(results: list[dict[str, Any]]) -> str:
    rows = ["| stage | backend | N | C | visible | fwd (ms) | fwd+bwd (ms) | peak mem fwd (MB) "
            "| peak mem fwd+bwd (MB) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        head = f"| {r['stage']} | {r['backend']} | {r['n']} | {r['channels']} |"
        if "error" in r:
            rows.append(f"{head} | failed: {r['error'][:60]} | | | |")
            continue
        rows.append(f"{head} {r['visible']} | {1000 * r['forward_s']:.1f} | "
                    f"{1000 * r['forward_backward_s']:.1f} | {_mem(r, 'forward'):.0f} | "
                    f"{_mem(r, 'forward_backward'):.0f} |")
    return "\n".join(rows)


def _speedups(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = [r for r in results if "error" not in r]
    by_key = {(r["stage"], r["backend"], r["n"], r["channels"]): r for r in ok}
    out = []
    for (stage, backend, n, c), r in sorted(by_key.items()):
        ref = by_key.get((stage, "reference", n, c))
        if backend == "reference" or ref is None:
            continue
        out.append({"stage": stage, "backend": backend, "n": n, "channels": c,
                    "forward": ref["forward_s"] / r["forward_s"],
                    "forward_backward": ref["forward_backward_s"] / r["forward_backward_s"]})
    return out


def _update_readme(path: Path, report: dict[str, Any]) -> None:
    m, cfg = report["machine"], report["config"]
    speed = "\n".join(
        f"- {s['stage']}, {s['backend']} vs reference, N={s['n']}, C={s['channels']}: "
        f"{s['forward']:.1f}x forward, {s['forward_backward']:.1f}x forward+backward"
        for s in report["speedups"]) or "- none (only one backend measured)"
    skipped = "".join(f"\n- `{b}` not measured: {why.splitlines()[0][:120]}"
                      for b, why in report["skipped"].items())
    block = f"""{README_START}
Measured {report['date']} with `{report['command']}` on {m['cpu']} ({m['cpu_count']} cores,
{m['torch_threads']} torch thread(s); load average {m['load_average_at_start']} at the start and
{report['load_average_at_end']} at the end), torch {m['torch']}, Python {m['python']}.
Image {cfg['width']}x{cfg['height']}; times are medians of repeated calls; peak memory is the
rise of the resident set size during the first call (CUDA: of peak allocated memory). Raw
numbers: `benchmarks/results/bench_render.json`.

{_table(report['results'])}

Speedups in the same run:

{speed}
{skipped}
{README_END}"""
    if path.is_file():
        text = path.read_text()
    else:
        text = "# Benchmarks\n\nLatest measured figures, one section per component.\n"
    pattern = re.escape(README_START) + r".*?" + re.escape(README_END)
    if re.search(pattern, text, flags=re.S):
        text = re.sub(pattern, lambda _: block, text, flags=re.S)
    else:
        if "## Rendering" not in text:
            text = (text.rstrip("\n") + "\n\n## Rendering\n\n"
                    "Run: `python benchmarks/bench_render.py`.\n")
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text(path, text)


def _config_json(cfg: BenchConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Measure every (stage, backend, N, C) case in its own subprocess; returns the report."""
    if cfg.quick:
        cfg.sizes, cfg.width, cfg.height, cfg.repeats = (2000,), 64, 64, 1
    backends, skipped = _available_backends(cfg)
    cases = [(s, b, n, c) for s in cfg.stages for n in cfg.sizes for c in cfg.channels
             for b in backends if not (s == "composite" and b == "gsplat")]
    machine = _machine(cfg)
    results = []
    for stage, backend, n, c in tqdm(cases, desc="bench_render", unit="case"):
        spec = {"stage": stage, "backend": backend, "n": n, "channels": c,
                "config": _config_json(cfg)}
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                               json.dumps(spec)], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results.append({"stage": stage, "backend": backend, "n": n, "channels": c,
                            "error": last})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": machine,
        "load_average_at_end": _load_average(),
        "config": _config_json(cfg),
        "skipped": skipped,
        "results": results,
        "speedups": _speedups(results),
    }


def _worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    conf = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()
            if k not in ("out", "readme")}
    result = _measure(spec["backend"], spec["stage"], spec["n"], spec["channels"],
                      BenchConfig(**conf))
    print(json.dumps(result))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
        return
    cfg = tyro.cli(BenchConfig)
    report = run(cfg)
    for s in report["speedups"]:
        print(f"{s['stage']:9s} {s['backend']:6s} N={s['n']:>6} C={s['channels']}: "
              f"{s['forward']:.1f}x fwd, {s['forward_backward']:.1f}x fwd+bwd vs reference")
    if cfg.quick:
        print(_table(report["results"]))
        return
    write_json(cfg.out, report)
    _update_readme(cfg.readme, report)
    print(f"wrote {cfg.out} and {cfg.readme}")


if __name__ == "__main__":
    main()
