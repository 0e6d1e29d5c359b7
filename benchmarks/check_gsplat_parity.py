"""Parity of the gsplat (CUDA) backend with the reference compositor: outputs and gradients.

Renders random Gaussians in front of a camera with both backends on the GPU, then reports max
absolute, mean absolute and relative L2 errors of image, alpha and expected depth, the relative L2
error and cosine similarity of every parameter gradient (and of the means2d screen gradient), the
top-id agreement and the time of one forward+backward per backend. Writes
benchmarks/results/gsplat_parity.json (atomically) and prints a table.

Without CUDA (or a loadable gsplat) it prints "skipped: ..." and exits 0.

    python benchmarks/check_gsplat_parity.py [--n 10000] [--width 320] [--height 240]
    python benchmarks/check_gsplat_parity.py --other cpu --out /tmp/cpu_parity.json  # fast CPU path
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.table import Table

from openinsgaussian.data.camera import Camera
from openinsgaussian.io import write_json
from openinsgaussian.render.api import RenderOutput, render

HERE = Path(__file__).resolve().parent
PARAMS = ("means", "quats", "scales", "opacities", "colors")


@dataclass
class ParityConfig:
    """What to compare."""

    n: int = 10_000
    """Number of random Gaussians."""
    width: int = 320
    """Image width in pixels."""
    height: int = 240
    """Image height in pixels."""
    channels: int = 3
    """Feature channels when sh_degree is None."""
    sh_degree: int | None = 3
    """Render SH colours of this degree; None renders random `channels`-d features instead."""
    seed: int = 0
    """Random seed of the scene and the loss weights."""
    other: str = "gsplat"
    """Backend compared with the reference: 'gsplat' (CUDA) or 'cpu' (the fast CPU compositor)."""
    out: Path = HERE / "results" / "gsplat_parity.json"
    """Where the JSON report is written."""


def make_scene(cfg: ParityConfig, device: torch.device) -> tuple[Camera, list[torch.Tensor]]:
    """Random Gaussians spread over the view frustum between depth 2 and 6."""
    g = torch.Generator().manual_seed(cfg.seed)
    f = 0.9 * cfg.width
    cam = Camera.from_intrinsics(
        f, f, cfg.width / 2, cfg.height / 2, cfg.width, cfg.height, np.eye(4)
    )
    z = torch.rand(cfg.n, generator=g) * 4 + 2
    half = torch.tensor([cfg.width / (2 * f), cfg.height / (2 * f)])
    xy = (torch.rand(cfg.n, 2, generator=g) * 2 - 1) * half * 1.1 * z[:, None]
    means = torch.cat([xy, z[:, None]], 1)
    quats = torch.randn(cfg.n, 4, generator=g)
    scales = torch.exp(torch.randn(cfg.n, 3, generator=g) * 0.4 - 4.0)
    opacities = torch.rand(cfg.n, generator=g) * 0.9 + 0.05
    if cfg.sh_degree is None:
        colors = torch.rand(cfg.n, cfg.channels, generator=g)
    else:
        colors = torch.randn(cfg.n, (cfg.sh_degree + 1) ** 2, 3, generator=g) * 0.3
    return cam, [t.to(device) for t in (means, quats, scales, opacities, colors)]


def run_backend(
    backend: str,
    cam: Camera,
    params: list[torch.Tensor],
    cfg: ParityConfig,
    weights: list[torch.Tensor] | None,
) -> tuple[RenderOutput, list[torch.Tensor], float, list[torch.Tensor]]:
    """One forward + backward: output, gradients (params, then means2d), seconds, loss weights."""
    leaves = [p.clone().requires_grad_(True) for p in params]
    sync = torch.cuda.synchronize if leaves[0].is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = render(*leaves, cam, sh_degree=cfg.sh_degree, backend=backend, return_ids=True)  # type: ignore[arg-type]
    if weights is None:
        gen = torch.Generator(device=leaves[0].device).manual_seed(cfg.seed + 1)
        weights = [
            torch.rand(t.shape, device=t.device, generator=gen)
            for t in (out.image, out.alpha, out.depth)
        ]
    loss = sum((o * w).sum() for o, w in zip((out.image, out.alpha, out.depth), weights))
    loss.backward()
    sync()
    seconds = time.perf_counter() - t0
    grads = [p.grad.detach() for p in leaves] + [out.means2d.grad.detach()]
    return out, grads, seconds, weights


def errors(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Max/mean absolute error and relative L2 error of ``a`` against ``b``."""
    a, b = a.detach(), b.detach()
    d = (a.double() - b.double()).abs()
    return {
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "rel_l2": float(d.norm() / b.double().norm().clamp(min=1e-30)),
    }


def grad_errors(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Relative L2 error and cosine similarity of two gradients."""
    out = errors(a, b)
    out["cosine"] = float(
        torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0)
    )
    return out


def main(cfg: ParityConfig) -> int:
    console = Console()
    if cfg.other == "gsplat":
        if not torch.cuda.is_available():
            print("skipped: no CUDA")
            return 0
        from openinsgaussian.render.gsplat_backend import gsplat_status

        ok, reason = gsplat_status()
        if not ok:
            print(f"skipped: gsplat unavailable ({reason})")
            return 0
        device = torch.device("cuda")
    elif cfg.other == "cpu":
        device = torch.device("cpu")
    else:
        print(f"--other must be 'gsplat' or 'cpu', got {cfg.other!r}", file=sys.stderr)
        return 2

    cam, params = make_scene(cfg, device)
    run_backend(cfg.other, cam, params, cfg, None)  # warm-up (JIT builds, allocator)
    out_o, grads_o, sec_o, weights = run_backend(cfg.other, cam, params, cfg, None)
    out_r, grads_r, sec_r, _ = run_backend("reference", cam, params, cfg, weights)

    covered = (out_r.alpha > 0.5) & (out_o.alpha > 0.5)
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "outputs": {
            "image": errors(out_o.image, out_r.image),
            "alpha": errors(out_o.alpha, out_r.alpha),
            "depth_where_alpha_gt_0.5": errors(out_o.depth[covered], out_r.depth[covered]),
        },
        "gradients": {
            name: grad_errors(a, b) for name, a, b in zip((*PARAMS, "means2d"), grads_o, grads_r)
        },
        "top_id_agreement": float((out_o.top_id == out_r.top_id).float().mean()),
        "visible_gaussians": {
            "other": int((out_o.radii > 0).sum()),
            "reference": int((out_r.radii > 0).sum()),
        },
        "seconds_forward_backward": {cfg.other: sec_o, "reference": sec_r},
    }
    if cfg.other == "gsplat":
        import gsplat

        report["gsplat"] = gsplat.__version__
    write_json(cfg.out, report)

    table = Table(title=f"{cfg.other} vs reference: {cfg.n} Gaussians, {cfg.width}x{cfg.height}")
    for col in ("quantity", "max abs", "mean abs", "rel L2", "cosine"):
        table.add_column(col)
    for name, e in report["outputs"].items():
        table.add_row(name, f"{e['max_abs']:.3g}", f"{e['mean_abs']:.3g}", f"{e['rel_l2']:.3g}", "")
    for name, e in report["gradients"].items():
        table.add_row(
            f"d/d {name}",
            f"{e['max_abs']:.3g}",
            f"{e['mean_abs']:.3g}",
            f"{e['rel_l2']:.3g}",
            f"{e['cosine']:.5f}",
        )
    console.print(table)
    console.print(
        f"top_id agreement {report['top_id_agreement']:.4f}; forward+backward "
        f"{cfg.other} {sec_o:.3f} s, reference {sec_r:.3f} s; written {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ParityConfig)))
