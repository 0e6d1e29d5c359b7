"""Stage 0: photometric 3D Gaussian Splatting, the appearance model every later stage freezes.

One random training view per step (without replacement, reshuffled each epoch), loss
``0.8 L1 + 0.2 (1 - SSIM)``, one Adam (eps 1e-15) per parameter with the 3DGS learning rates, the
position LR decaying log-linearly, SH degree raised every 1000 steps, adaptive density control
(or frozen initial points, as OpenGaussian on ScanNet). Outputs in the run directory:
``config.yml``, ``checkpoints/stage0/``, ``metrics/stage0.json``, ``renders/stage0/*.png`` and
``point_cloud.ply``.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..data.camera import Camera
from ..data.scene import Frame, Scene
from ..errors import ConfigError, RunError
from ..io import save_image, write_json
from ..render import resolve_backend
from ..splats.densify import DensifyConfig, DensifyStrategy
from ..splats.gaussians import GaussianModel
from ..splats.ply import save_gaussians_ply
from ..run.checkpoints import list_checkpoints, rng_state, restore_rng_state
from .loop import TrainLoop, ViewSampler
from .photometric import l1, photometric_loss, psnr, psnr_from_mse, ssim
from ..run.directory import RunDir
from ..run.serialize import apply_overrides, config_hash, dataclass_to_dict
from .schedule import ExponentialLR

log = logging.getLogger(__name__)

STAGE = "stage0"
Preset = Literal["synthetic", "scannet", "lerf", "capture", "blender"]


@dataclass
class Stage0Config:
    """Photometric 3DGS training (defaults: 3DGS / OpenGaussian, METHOD §9)."""

    iterations: int = 30_000
    """Number of optimisation steps (one view each)."""
    sh_degree: int = 3
    """Maximal spherical-harmonics degree."""
    sh_increase_every: int = 1000
    """Raise the active SH degree by one every this many steps (0: use the maximum from the start)."""
    ssim_lambda: float = 0.2
    """Weight of the (1 - SSIM) term; L1 gets 1 - ssim_lambda."""
    lr_means: float = 1.6e-4
    """Initial position LR, multiplied by the scene extent."""
    lr_means_final: float = 1.6e-6
    """Final position LR, multiplied by the scene extent."""
    lr_means_delay_steps: int = 0
    """Warm-up steps of the position LR (3DGS: 0, i.e. none)."""
    lr_means_delay_mult: float = 0.01
    """Warm-up start factor of the position LR (only used with delay steps)."""
    lr_means_max_steps: int | None = None
    """Steps over which the position LR decays (None: ``iterations``)."""
    lr_sh0: float = 2.5e-3
    """LR of the SH DC colour."""
    lr_shN: float = 1.25e-4
    """LR of the higher SH coefficients (3DGS: DC LR / 20)."""
    lr_opacities: float = 0.05
    """LR of the opacity logits."""
    lr_scales: float = 0.005
    """LR of the log-scales."""
    lr_quats: float = 0.001
    """LR of the rotation quaternions."""
    adam_eps: float = 1e-15
    """Adam epsilon (3DGS uses 1e-15)."""
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    """Adaptive density control (ignored with ``frozen_points``)."""
    frozen_points: bool = False
    """Keep the initial points as Gaussian centres: positions are not optimised and there is no
    densification, pruning or opacity reset (Gaussian i stays input point i; OpenGaussian's
    ``--frozen_init_pts`` on ScanNet)."""
    init: Literal["points", "random"] = "points"
    """Initialise from the scene's point cloud, or uniformly at random (scenes without points)."""
    init_opacity: float = 0.1
    """Initial opacity of every Gaussian."""
    random_points: int = 100_000
    """Number of Gaussians of the random initialisation."""
    random_box: float | None = 1.3
    """Half-size of the cube [-b, b]^3 for random init (NeRF-synthetic convention); None: the
    bounding box of the training cameras."""
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Background colour composited behind the Gaussians and behind transparent image pixels."""
    downscale: float = 1.0
    """Divide the image size by this factor (3DGS ``-r``)."""
    max_width: int | None = 1600
    """With downscale 1, shrink images wider than this (3DGS ``-r -1``); None: never."""
    backend: Literal["auto", "reference", "cpu", "gsplat"] = "auto"
    """Rasteriser backend."""
    device: str = "auto"
    """Torch device; "auto": cuda when available, else cpu."""
    seed: int = 0
    """Seed of the initialisation, the view order and the split sampling."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 3
    """How many recent checkpoints to keep."""
    eval: bool = True
    """Measure PSNR/SSIM on the test views at the end (train views when there are none)."""
    save_renders: bool = True
    """Save the evaluation renders as PNG under renders/stage0/."""
    progress: bool = True
    """Show a progress bar."""


def stage0_preset(name: str) -> Stage0Config:
    """Named presets: ``synthetic``, ``scannet``, ``lerf``, ``capture``, ``blender``.

    ``capture`` is ``lerf`` with 3DGS's 20 px screen-size prune acting (the code never applies it).
    """
    frozen = DensifyConfig(enabled=False)
    if name == "synthetic":
        # Frozen surface points like ScanNet; short enough for a CPU.
        return Stage0Config(iterations=3000, frozen_points=True, densify=frozen, checkpoint_every=500)
    if name == "scannet":
        return Stage0Config(iterations=30_000, frozen_points=True, densify=frozen, downscale=2.0)
    if name == "lerf":
        # the 3DGS code zeroes the screen radii before its 20 px prune test reads them: never fires
        return Stage0Config(iterations=30_000, densify=DensifyConfig(max_screen_size=0.0))
    if name == "capture":
        return Stage0Config(iterations=30_000, densify=DensifyConfig())
    if name == "blender":
        return Stage0Config(iterations=30_000, init="random", background=(1.0, 1.0, 1.0),
                            densify=DensifyConfig(reset_at_start=True))
    raise ConfigError(f"unknown stage-0 preset {name!r}; choose one of {', '.join(get_args(Preset))}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return dev


# ---- data ---------------------------------------------------------------------------------------
def working_camera(camera: Camera, cfg: Stage0Config) -> Camera:
    """The camera at the training resolution (``downscale`` / ``max_width`` applied)."""
    if cfg.downscale <= 0:
        raise ConfigError(f"downscale must be positive, got {cfg.downscale}")
    if cfg.downscale != 1.0:
        return camera.scaled(cfg.downscale)
    if cfg.max_width is not None and camera.width > cfg.max_width:
        return camera.scaled(camera.width / cfg.max_width)
    return camera


def prepare_frames(frames: list[Frame], cfg: Stage0Config) -> list[Frame]:
    """Frames at the training resolution whose RGBA images composite onto ``cfg.background``."""
    bg = tuple(float(c) for c in cfg.background)
    return [replace(f, camera=working_camera(f.camera, cfg), background=bg) for f in frames]  # type: ignore[arg-type]


class ImageCache:
    """Every training image decoded once, kept as uint8 ``[3,H,W]`` on the device."""

    def __init__(self, frames: list[Frame], device: torch.device, progress: bool = True, desc: str = "images") -> None:
        self.images: list[torch.Tensor] = []
        for f in tqdm(frames, desc=f"loading {desc}", disable=not progress, unit="img", leave=False):
            rgb = f.load_rgb()  # [H,W,3] uint8
            self.images.append(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous().to(device))

    def __len__(self) -> int:
        return len(self.images)

    def get(self, i: int) -> torch.Tensor:
        """``[3,H,W]`` float32 in [0,1]."""
        return self.images[i].to(torch.float32) / 255.0


def init_model(scene: Scene, cfg: Stage0Config, device: torch.device) -> GaussianModel:
    """3DGS initialisation from the scene points, or random (``cfg.init`` / no points)."""
    has_points = scene.points is not None and len(scene.points) > 0
    if cfg.init == "points" and has_points:
        return GaussianModel.from_points(scene.points, scene.colors, sh_degree=cfg.sh_degree,  # type: ignore[arg-type]
                                         init_opacity=cfg.init_opacity, seed=cfg.seed, device=device)
    if cfg.frozen_points:
        raise ConfigError(f"{scene.root}: frozen_points needs an initial point cloud, and this scene has none")
    if cfg.init == "points":
        log.warning("%s: the scene has no points; using %d random Gaussians", scene.root, cfg.random_points)
    if cfg.random_box is not None:
        lo, hi = np.full(3, -cfg.random_box), np.full(3, cfg.random_box)
    else:
        lo, hi = scene.bounds
    return GaussianModel.random_in_bounds(lo, hi, cfg.random_points, seed=cfg.seed, sh_degree=cfg.sh_degree,
                                          init_opacity=cfg.init_opacity, device=device)


def build_optimizers(model: GaussianModel, cfg: Stage0Config, extent: float) -> dict[str, torch.optim.Adam]:
    """One Adam per trained parameter (positions excluded when frozen; ``ins_feat`` never here)."""
    lrs = {
        "means": cfg.lr_means * extent,
        "scales": cfg.lr_scales,
        "quats": cfg.lr_quats,
        "opacities": cfg.lr_opacities,
        "sh0": cfg.lr_sh0,
        "shN": cfg.lr_shN,
    }
    if cfg.frozen_points:
        del lrs["means"]
    for name, p in model.params.items():
        p.requires_grad_(name in lrs)
    return {k: torch.optim.Adam([model.params[k]], lr=lr, eps=cfg.adam_eps) for k, lr in lrs.items()}


# ---- evaluation ---------------------------------------------------------------------------------
def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "view"


@torch.no_grad()
def evaluate_stage0(model: GaussianModel, frames: list[Frame], cfg: Stage0Config,
                    render_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Mean PSNR / SSIM / L1 over ``frames`` (already at the working resolution); optional PNGs."""
    device = model.device
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    per_view = []
    for f in tqdm(frames, desc="evaluating", disable=not progress, unit="view", leave=False):
        gt = torch.from_numpy(np.ascontiguousarray(f.load_rgb())).to(device).permute(2, 0, 1).float() / 255.0
        img = model.render(f.camera, background=bg, backend=cfg.backend).image.clamp(0.0, 1.0)  # [3,H,W]
        per_view.append({"name": f.name, "psnr": float(psnr(img, gt)), "ssim": float(ssim(img, gt)),
                         "l1": float(l1(img, gt))})
        if render_dir is not None:
            arr = (img.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
            save_image(render_dir / f"{_safe_name(f.name)}.png", arr)
    n = max(len(per_view), 1)
    return {
        "psnr": sum(v["psnr"] for v in per_view) / n,
        "ssim": sum(v["ssim"] for v in per_view) / n,
        "l1": sum(v["l1"] for v in per_view) / n,
        "n_views": len(per_view),
        "per_view": per_view,
    }


# ---- training -----------------------------------------------------------------------------------
def _check_resume_config(run: RunDir, cfg: Stage0Config, resume: bool) -> None:
    have_ckpt = bool(list_checkpoints(run, STAGE))
    if not resume and have_ckpt:
        raise RunError(f"{run.stage_checkpoints(STAGE)} already holds stage-0 checkpoints; "
                       "resume the run (--resume) or choose a new run directory")
    if resume and "stage0" in run.read_config():
        saved = run.load_config_section("stage0", Stage0Config)
        if config_hash(saved) != config_hash(cfg):
            a, b = dataclass_to_dict(saved), dataclass_to_dict(cfg)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ConfigError(f"{run.config_path}: the run was started with a different stage-0 config "
                              f"(differs in {diff}); resume with the saved config")


def train_stage0(scene: Scene, run_dir: Path | str, cfg: Stage0Config, resume: bool = False,
                 *, stop_at: int | None = None) -> GaussianModel:
    """Train (or resume) stage 0 into ``run_dir``; returns the trained Gaussians.

    ``stop_at``: end this call after that step (a checkpoint is written there) without the final
    evaluation and export, e.g. to fit a time-limited job; a later ``resume=True`` call continues.
    """
    run = RunDir(run_dir)
    device = resolve_device(cfg.device)
    _check_resume_config(run, cfg, resume)
    run.write_config_section("data", str(scene.root))
    run.write_config_section(STAGE, cfg)
    h = config_hash(cfg)

    torch.manual_seed(cfg.seed)
    train_frames = prepare_frames(scene.train_frames, cfg)
    extent = scene.camera_extent()
    model = init_model(scene, cfg, device)
    optimizers = build_optimizers(model, cfg, extent)
    split_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    densify_on = cfg.densify.enabled and not cfg.frozen_points
    strategy = DensifyStrategy(cfg.densify, extent, generator=split_gen) if densify_on else None
    sampler = ViewSampler(len(train_frames), seed=cfg.seed)
    pos_lr = ExponentialLR(cfg.lr_means * extent, cfg.lr_means_final * extent,
                           cfg.lr_means_max_steps or cfg.iterations, cfg.lr_means_delay_steps,
                           cfg.lr_means_delay_mult)
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)

    def get_state() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "strategy": strategy.state_dict() if strategy is not None else None,
            "sampler": sampler.state_dict(),
            "rng": rng_state({"split": split_gen}),
            "config_hash": h,
            "extent": extent,
        }

    def load_state(ck: dict[str, Any]) -> None:
        if ck.get("config_hash") != h:
            raise ConfigError(f"{run.stage_checkpoints(STAGE)}: checkpoint config hash {ck.get('config_hash')} "
                              f"does not match the current config ({h})")
        model.load_state_dict(ck["model"])
        optimizers.clear()
        optimizers.update(build_optimizers(model, cfg, extent))
        for k, o in optimizers.items():
            o.load_state_dict(ck["optimizers"][k])
        if strategy is not None:
            strategy.load_state_dict(ck["strategy"])
        sampler.load_state_dict(ck["sampler"])
        restore_rng_state(ck["rng"], {"split": split_gen})

    loop = TrainLoop(run, STAGE, cfg.iterations, checkpoint_every=cfg.checkpoint_every,
                     keep_checkpoints=cfg.keep_checkpoints, progress=cfg.progress, desc="stage 0")
    start = loop.resume(load_state, map_location=device) if resume else 0
    images = ImageCache(train_frames, device, progress=cfg.progress, desc="train images")
    ema: dict[str, float] = {}

    def step_fn(step: int) -> dict[str, Any]:
        model.active_sh_degree = (cfg.sh_degree if cfg.sh_increase_every <= 0
                                  else min(cfg.sh_degree, step // cfg.sh_increase_every))
        if "means" in optimizers:
            for g in optimizers["means"].param_groups:
                g["lr"] = pos_lr(step)
        i = sampler.next()
        cam = train_frames[i].camera
        gt = images.get(i)  # [3,H,W]
        out = model.render(cam, background=bg, backend=cfg.backend)
        if strategy is not None:
            strategy.step_pre_backward(out)
        loss, _ = photometric_loss(out.image, gt, cfg.ssim_lambda)
        if not torch.isfinite(loss):
            raise RunError(f"stage 0: the loss became {float(loss)} at step {step}; lower the learning rates")
        loss.backward()
        for o in optimizers.values():
            o.step()
            o.zero_grad(set_to_none=True)
        if strategy is not None:
            strategy.step_post_backward(model.params, optimizers, step, out, cam.width, cam.height)
        with torch.no_grad():
            view_psnr = psnr_from_mse(float(((out.image.detach() - gt) ** 2).mean()))
        for k, v in (("loss", float(loss.detach())), ("psnr", view_psnr)):
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v  # smoothed for the progress bar
        return {"loss": ema["loss"], "psnr": ema["psnr"], "n": len(model), "sh": model.active_sh_degree}

    end = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)
    loop.total_steps = end
    train_seconds = loop.run(step_fn, get_state, start_step=start) if end > start else loop.elapsed_before
    if end < cfg.iterations:
        return model

    model.active_sh_degree = (cfg.sh_degree if cfg.sh_increase_every <= 0
                              else min(cfg.sh_degree, cfg.iterations // cfg.sh_increase_every))
    for p in model.params.values():
        p.requires_grad_(False)
    ply = save_gaussians_ply(run.ply, model)
    if cfg.eval:
        eval_frames = prepare_frames(scene.test_frames or scene.train_frames, cfg)
        t0 = time.perf_counter()
        res = evaluate_stage0(model, eval_frames, cfg, run.render_dir(STAGE) if cfg.save_renders else None,
                              progress=cfg.progress)
        metrics = {
            "stage": STAGE,
            "split": "test" if scene.test_frames else "train",
            **{k: res[k] for k in ("psnr", "ssim", "l1", "n_views")},
            "n_gaussians": len(model),
            "ply_dropped_nonfinite": ply.dropped,
            "iterations": cfg.iterations,
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(time.perf_counter() - t0, 3),
            "seed": cfg.seed,
            "config_hash": h,
            "package_version": __version__,
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "backend": resolve_backend(cfg.backend, device),
            "torch_threads": torch.get_num_threads(),
            "host": platform.machine(),
            "scene": str(scene.root),
            "per_view": res["per_view"],
        }
        write_json(run.metrics_path(STAGE), metrics)
        log.info("stage 0: %s PSNR %.2f dB, SSIM %.4f over %d views", metrics["split"], metrics["psnr"],
                 metrics["ssim"], metrics["n_views"])
    return model


# ---- entry points for the command line ----------------------------------------------------------
def run_train(data: Path, run: Path, preset: Preset = "synthetic", resume: bool = False, *,
              config: Stage0Config | None = None, overrides: dict[str, Any] | None = None,
              undistort: bool = True) -> GaussianModel:
    """``openins train DATA --preset P [--resume]``: read the scene and run stage 0 into ``run``.

    The config is ``config`` if given, else the named preset; ``overrides`` are dotted keys
    (``{"iterations": 500, "densify.stop": 300}``). On resume the run's saved ``config.yml`` is
    used; a different explicit config is refused. ``undistort``: images of cameras with lens
    distortion are undistorted first (:func:`~openinsgaussian.data.undistort.undistort_scene`).
    """
    from ..data.load import load_scene

    rd = RunDir(run)
    if config is not None:
        cfg = config
    elif resume and "stage0" in rd.read_config():
        cfg = rd.load_config_section("stage0", Stage0Config)
    else:
        cfg = stage0_preset(preset)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    scene = load_scene(Path(data), undistort=undistort, progress=cfg.progress)
    return train_stage0(scene, rd.path, cfg, resume=resume)


def export_run(run: Path, fmt: Literal["ply"] = "ply", out: Path | None = None) -> Path:
    """``openins export RUN --format ply``: write the run's newest Gaussians to a PLY file.

    Uses the newest checkpoint of the latest stage; when ``instances.npz`` holds per-Gaussian
    ``instance_id`` and/or ``leaf_ind``/``leaf_id`` arrays they are written as extra columns.
    Default output: ``RUN/exports/point_cloud.ply``. Returns the written path.
    """
    from ..run.checkpoints import latest_model_state

    if fmt != "ply":
        raise ConfigError(f"unknown export format {fmt!r}; supported: ply")
    rd = RunDir(run)
    if not rd.path.is_dir():
        raise RunError(f"{rd.path}: run directory not found")
    _, ck = latest_model_state(rd)
    model = GaussianModel.from_state_dict(ck["model"])
    extras: dict[str, np.ndarray] = {}
    if rd.instances.is_file():
        with np.load(rd.instances) as z:
            for key, col in (("instance_id", "instance_id"), ("leaf_id", "leaf_id"), ("leaf_ind", "leaf_id")):
                if key in z.files and col not in extras and z[key].shape == (len(model),):
                    extras[col] = z[key].astype(np.int64)
    target = Path(out) if out is not None else rd.exports / "point_cloud.ply"
    res = save_gaussians_ply(target, model, instance_id=extras.get("instance_id"), leaf_id=extras.get("leaf_id"))
    if res.dropped:
        log.warning("%s: %d Gaussians with non-finite values were left out", target, res.dropped)
    return target

