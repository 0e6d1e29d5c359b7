"""The whole training chain: preprocessing cache -> stage 0 -> 1 -> 2 -> 3, resumable per stage.

:class:`PipelineConfig` composes the stage configs with the input (mask / language) options and
one seed, with named presets:

* ``scannet`` / ``lerf``: the published schedules and hyper-parameters (METHOD §9): 30k 3DGS +
  20k / 10k instance features + 20k / 10k coarse + 20k fine steps, k1/k2 64/5 and 64/10,
  pos_weight 1.0 / 0.5, SAM level 0 / 3, CLIP (ConvNeXt, fused) features, SAM masks.
* ``capture``: a user's own capture (COLMAP / nerfstudio, SAM + CLIP): the LeRF schedule and
  hyper-parameters, with every fix of :data:`FIXES` on instead of the public code's behaviour, and
  3DGS's 20 px screen-size prune acting as the paper describes.
* ``synthetic``: the built-in room with ground-truth masks and the oracle language source, on a
  short schedule for a CPU, with :data:`FIXES`; the codebook cadences are shortened in proportion
  (see :func:`pipeline_preset`).

``scannet`` and ``lerf`` reproduce the public code, including the behaviours we consider bugs;
each of those is a named switch, and :data:`FIXES` turns all of them the other way. The fixes
together were the best variant on both mask sources of the synthetic suite
(``benchmarks/ablate_fidelity.py``, table in ``benchmarks/README.md``).

:func:`run_pipeline` writes the resolved config to ``config.yml`` (section ``pipeline``) and runs
the stages in order. A finished stage (its outputs exist) is skipped; an interrupted one resumes
from its newest checkpoint when ``resume=True``. ``metrics/pipeline.json`` records the wall time
of every stage.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import ConfigError, RunError
from ..instances.codebook import CodebookConfig, TwoLevelCodebook
from ..io import write_json
from ..run.checkpoints import list_checkpoints, load_latest_checkpoint
from ..run.directory import STAGES, RunDir
from ..run.query_config import QueryConfig
from ..run.serialize import apply_overrides, dataclass_to_dict, dict_to_dataclass
from ..splats.gaussians import GaussianModel
from .inputs import InputsConfig, TrainingInputs, load_training_inputs
from .stage0 import Stage0Config, prepare_frames, resolve_device, stage0_preset, train_stage0
from .stage1 import Stage1Config, stage1_done, train_stage1
from .stage2 import CODEBOOK_FILE, Stage2Config, load_codebook, stage2_done, train_stage2
from .stage3 import Stage3Config, stage3_done, train_stage3

log = logging.getLogger(__name__)

PRESETS = ("synthetic", "scannet", "lerf", "capture")
Backend = Literal["auto", "reference", "cpu", "gsplat"]
SECTION = "pipeline"


@dataclass
class PipelineConfig:
    """The full training chain of one scene (stages 0-3) and the query defaults of the run."""

    preset: str = "synthetic"
    """Name of the preset the config started from (synthetic, scannet, lerf, capture)."""
    seed: int = 0
    """One seed for everything: initialisation, view order, k-means, oracle corruption."""
    device: str = "auto"
    """Torch device: auto (cuda when available), cpu, cuda, cuda:1, ..."""
    backend: Backend = "auto"
    """Rasteriser backend of every stage."""
    progress: bool = True
    """Show progress bars."""
    threads: int = 0
    """CPU threads for torch (0: torch's default). On a busy or small machine 1 is often fastest for
    the CPU rasteriser, which parallelises inside one render."""
    undistort: bool = True
    """Cameras with lens distortion (COLMAP OPENCV / FULL_OPENCV / OPENCV_FISHEYE, nerfstudio
    k1..p2): train on images undistorted with OpenCV (cached once in ``<scene>/undistorted/``,
    new pinhole intrinsics). False keeps the distorted images with the ideal pinhole (the
    behaviour before undistortion existed; a warning says the geometry is then off)."""
    inputs: InputsConfig = field(default_factory=InputsConfig)
    """Masks and language features (SAM level, cache folder, sources used to build the cache)."""
    stage0: Stage0Config = field(default_factory=Stage0Config)
    """Photometric 3DGS."""
    stage1: Stage1Config = field(default_factory=Stage1Config)
    """Instance features."""
    stage2: Stage2Config = field(default_factory=Stage2Config)
    """Two-level codebook."""
    stage3: Stage3Config = field(default_factory=Stage3Config)
    """Association and language aggregation."""
    query: QueryConfig = field(default_factory=QueryConfig)
    """Text-query defaults (openins query / eval)."""


@dataclass(frozen=True)
class _Published:
    """Where the published ScanNet and LeRF schedules differ (METHOD §9); the rest is shared."""

    sam_level: int  # SAM mask granularity level of the cached masks
    feature_iterations: int  # stage-1 steps, also the coarse-codebook steps of stage 2
    k2: int  # leaves per coarse cluster (k1 = 64 for both)
    pos_weight: float  # weight of the positions in the coarse k-means
    query_filter: bool  # scale / outlier filter of the selected Gaussians at query time


_PUBLISHED = {
    "scannet": _Published(
        sam_level=0, feature_iterations=20_000, k2=5, pos_weight=1.0, query_filter=False
    ),
    "lerf": _Published(
        sam_level=3, feature_iterations=10_000, k2=10, pos_weight=0.5, query_filter=True
    ),
}


#: Per-scene exceptions of the published schedules (METHOD §9), as dotted overrides applied on
#: top of the preset when the scene folder has this name: teatime k1 32 and pos_weight 0.1, ramen
#: L_s weight 0.01.
SCENE_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "lerf": {
        "teatime": {"stage2.codebook.k1": 32, "stage2.codebook.pos_weight": 0.1},
        "ramen": {"stage1.lambda_s": 0.01},
    },
}


#: Our fixes of the public code's behaviour (dotted overrides; the reproduction presets keep the
#: code's values): empty k-means clusters re-seeded, one-pass association, stage-3 pseudo labels
#: of the fine stage, no occurrence gate, SAM masks painted largest first, masks that vanish at
#: the training size dropped, id maps resized at pixel centres. Applied by ``synthetic`` and
#: ``capture``; each switch's effect alone and together is in ``benchmarks/README.md``.
FIXES: dict[str, Any] = {
    "inputs.paint_order": "area",
    "inputs.mask_resize": "centre",
    "stage1.keep_empty_masks": False,
    "stage2.occurrence_gate": False,
    "stage2.codebook.empty_clusters": "reseed",
    "stage3.association": "one_pass",
    "stage3.pseudo": "fine_stage",
    "stage3.occurrence_gate": False,
}


def scene_overrides(preset: str, scene: str | None) -> dict[str, Any]:
    """Published per-scene exceptions of ``preset`` for the scene folder ``scene`` ({} if none)."""
    if scene is None:
        return {}
    return dict(SCENE_OVERRIDES.get(preset, {}).get(scene, {}))


def pipeline_preset(name: str, scene: str | None = None) -> PipelineConfig:
    """Named presets (see the module docstring), with ``scene``'s published exceptions applied.

    ``scene`` is the scene folder name, e.g. ``teatime``: see :data:`SCENE_OVERRIDES`.

    ``synthetic`` schedule, sized for the ``default`` room on a 2-core CPU (measurements in
    benchmarks/results/bench_synthetic_pipeline.json): 1000 stage-0 steps (30.7 dB test PSNR);
    600 stage-1 steps at lr 1e-2 with the hard-pair switch after 150 (a quarter, the ScanNet ratio
    5k/20k). Adam moves a feature by about lr per step, so 600 steps at the published 1e-3 leave
    the U[0,1) initial features nearly unseparated (19-class mIoU 0.36 against 0.91 at 1e-2 on the
    default room). 300 coarse steps re-assigned every 50 (the code: 20k steps, every 200); k1 = 24
    coarse clusters with k2 = 5, each active for 25 fine steps and re-assigned every 5 (24 * 25 =
    600 fine steps; the code: 300 and 50). Threads: torch's default (on an idle 2-core machine a
    320x240 render + backward of 80k Gaussians took 78 ms with 2 threads against 126 ms with 1;
    on an oversubscribed machine ``threads=1`` can be much faster).
    """
    if name == "capture":
        cfg = replace(pipeline_preset("lerf"), preset=name, stage0=stage0_preset("capture"))
        return apply_overrides(cfg, FIXES)
    if name in _PUBLISHED:
        p = _PUBLISHED[name]
        cfg = PipelineConfig(
            preset=name,
            # LangSplat's cache painted in SAM order, subsampled with a stride like the code
            inputs=InputsConfig(
                level=p.sam_level,
                masks="sam",
                language="clip",
                paint_order="sam",
                mask_resize="stride",
            ),
            stage0=stage0_preset(name),
            stage1=Stage1Config(
                iterations=p.feature_iterations, hard_pairs_after=5_000, keep_empty_masks=True
            ),
            stage2=Stage2Config(
                coarse_iterations=p.feature_iterations,
                fine_iterations=20_000,
                occurrence_gate=True,
                codebook=CodebookConfig(
                    k1=64, k2=p.k2, pos_weight=p.pos_weight, empty_clusters="zero"
                ),
            ),
            # the public code's association: each leaf rendered alone, pseudo labels rebuilt from
            # the final features, leaves of absent coarse clusters not matched (METHOD §5.1)
            stage3=Stage3Config(association="per_leaf", pseudo="recompute", occurrence_gate=True),
            query=QueryConfig(
                min_views_label=2,
                min_views_select=5,
                filter=p.query_filter,
                outlier_rule="all_distances",
                min_after_filter=10,
            ),
        )
        exceptions = scene_overrides(name, scene)
        if exceptions:
            log.info("%s preset, scene %s: published per-scene values %s", name, scene, exceptions)
            cfg = apply_overrides(cfg, exceptions)
        return cfg
    if name == "synthetic":
        s0 = replace(stage0_preset("synthetic"), iterations=1000, checkpoint_every=500)
        cfg = PipelineConfig(
            preset=name,
            inputs=InputsConfig(level=0, masks="ground_truth", language="oracle"),
            stage0=s0,
            stage1=Stage1Config(
                iterations=600, lr=1e-2, hard_pairs_after=150, checkpoint_every=200
            ),
            stage2=Stage2Config(
                coarse_iterations=300,
                fine_iterations=600,
                checkpoint_every=300,
                codebook=CodebookConfig(
                    k1=24, k2=5, pos_weight=1.0, coarse_every=50, fine_every=5, root_every=25
                ),
            ),
            stage3=Stage3Config(),
            query=QueryConfig(min_views_label=2, min_views_select=5),
        )
        return apply_overrides(cfg, FIXES)
    raise ConfigError(f"unknown pipeline preset {name!r}; choose one of {', '.join(PRESETS)}")


#: Stage fields that follow a top-level field of :class:`PipelineConfig` (``resolve_config``
#: copies the top-level value over them), so they cannot be set on their own.
DERIVED_FIELDS: dict[str, str] = {
    "stage0.seed": "seed",
    "stage0.device": "device",
    "stage0.backend": "backend",
    "stage0.progress": "progress",
    "stage1.progress": "progress",
    "stage2.progress": "progress",
    "stage3.progress": "progress",
    "stage2.codebook.seed": "seed",
}


def _field(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_derived_overrides(cfg: PipelineConfig, overrides: dict[str, Any]) -> None:
    """Refuse an override of a derived stage field (:data:`DERIVED_FIELDS`) whose value differs
    from the top-level field it follows: it would be overwritten by :func:`resolve_config`.

    ``cfg`` is the config with the overrides applied; ``overrides`` uses dotted keys.
    """
    for key in overrides:
        top = DERIVED_FIELDS.get(key)
        if top is not None and _field(cfg, key) != getattr(cfg, top):
            raise ConfigError(
                f"override '{key}={overrides[key]!r}': {key} follows the top-level '{top}' "
                f"({getattr(cfg, top)!r}) of the pipeline config; set {top} instead "
                f"(e.g. --set {top}={overrides[key]!r}, or --{top} for openins train)"
            )


def check_derived_fields(cfg: PipelineConfig) -> None:
    """Refuse a config object whose derived stage fields were set apart from their top-level
    field: each must equal the top-level value or keep its default (then it is filled in)."""
    for key, top in DERIVED_FIELDS.items():
        section, _, name = key.rpartition(".")
        owner = _field(cfg, section)
        default = {f.name: f for f in fields(owner)}[name].default
        value = getattr(owner, name)
        if value != getattr(cfg, top) and value != default:
            raise ConfigError(
                f"pipeline config: {key} = {value!r} but the top-level '{top}' is "
                f"{getattr(cfg, top)!r}; {key} follows '{top}', so set {top} instead"
            )


def resolve_config(cfg: PipelineConfig) -> PipelineConfig:
    """Copy with the top-level seed / device / backend / progress pushed into the stage configs
    (the fields of :data:`DERIVED_FIELDS`)."""
    cb = replace(cfg.stage2.codebook, seed=cfg.seed)
    return replace(
        cfg,
        stage0=replace(
            cfg.stage0, seed=cfg.seed, device=cfg.device, backend=cfg.backend, progress=cfg.progress
        ),
        stage1=replace(cfg.stage1, progress=cfg.progress),
        stage2=replace(cfg.stage2, codebook=cb, progress=cfg.progress),
        stage3=replace(cfg.stage3, progress=cfg.progress),
    )


def _normalise_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``stage1__iterations=5`` and ``{"stage1.iterations": 5}`` both set ``stage1.iterations``."""
    return {k.replace("__", "."): v for k, v in overrides.items()}


# ---- run state ----------------------------------------------------------------------------------
def stage0_done(run: RunDir, cfg: Stage0Config) -> bool:
    """Stage 0 finished: final checkpoint, PLY and (with eval) metrics exist."""
    cks = list_checkpoints(run, "stage0")
    final = bool(cks) and cks[-1][0] >= cfg.iterations
    return final and run.ply.is_file() and (not cfg.eval or run.metrics_path("stage0").is_file())


def stage_done(run: RunDir, stage: str, cfg: PipelineConfig) -> bool:
    if stage == "stage0":
        return stage0_done(run, cfg.stage0)
    return {"stage1": stage1_done, "stage2": stage2_done, "stage3": stage3_done}[stage](run)


def _clear_stage(run: RunDir, stage: str) -> None:
    """Remove a stage's checkpoints and outputs so that it runs from scratch."""
    shutil.rmtree(run.stage_checkpoints(stage), ignore_errors=True)
    run.metrics_path(stage).unlink(missing_ok=True)
    shutil.rmtree(run.render_dir(stage), ignore_errors=True)
    if stage == "stage0":
        run.ply.unlink(missing_ok=True)
    if stage == "stage2":
        (run.path / CODEBOOK_FILE).unlink(missing_ok=True)
    if stage == "stage3":
        run.instances.unlink(missing_ok=True)


def load_stage_model(run: RunDir, stage: str, device: torch.device | str = "cpu") -> GaussianModel:
    """The model of the newest checkpoint of ``stage``."""
    ck = load_latest_checkpoint(run, stage, map_location=device)
    if ck is None or "model" not in ck:
        raise RunError(
            f"{run.stage_checkpoints(stage)}: no checkpoint with a model; run {stage} first"
        )
    model = GaussianModel.from_state_dict(ck["model"], device=device)
    for p in model.params.values():
        p.requires_grad_(False)
    return model


def _check_resume_changes(
    run: RunDir, saved: PipelineConfig, new: PipelineConfig, rerun: set[str]
) -> None:
    """Refuse config changes to a stage that is finished or started (unless it is re-run)."""
    a, b = dataclass_to_dict(saved), dataclass_to_dict(new)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    for key in changed:
        if key in ("query", "progress", "preset", "threads"):
            continue
        if key in STAGES:
            started = stage_done(run, key, saved) or bool(list_checkpoints(run, key))
            if started and key not in rerun:
                raise ConfigError(
                    f"{run.config_path}: '{key}' differs from the saved config, but {key} has "
                    "already "
                    "run here; re-run it with force=True (--force) or use a new run directory"
                )
            continue
        if any(stage_done(run, s, saved) or list_checkpoints(run, s) for s in STAGES) and not rerun:
            raise ConfigError(
                f"{run.config_path}: '{key}' differs from the saved config of a started run; "
                "use a new run directory"
            )


# ---- the saved config ------------------------------------------------------------------------
def read_pipeline_config(run: RunDir) -> PipelineConfig:
    data = run.read_config()
    if SECTION not in data:
        raise RunError(
            f"{run.config_path}: no '{SECTION}' section; is {run.path} a run made by "
            "`openins train`?"
        )
    return dict_to_dataclass(PipelineConfig, data[SECTION], where=f"{run.config_path}:{SECTION}")


# ---- the chain ----------------------------------------------------------------------------------
def compose_config(
    run: RunDir,
    data: Path | str,
    preset: str,
    resume: bool,
    config: PipelineConfig | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[PipelineConfig, PipelineConfig | None]:
    """(config :func:`run_pipeline` runs with, the run's saved config or None).

    The base is ``config``, else the saved config when resuming, else the preset with the data
    folder's published per-scene exceptions; ``overrides`` go on top. A run with a saved config
    keeps its own progress flags (they are part of the stage configs and hashes).
    """
    saved = read_pipeline_config(run) if run.read_config().get(SECTION) is not None else None
    if config is not None:
        check_derived_fields(config)
        base = config
    elif saved is not None and resume:
        base = saved
    else:
        # the folder's own name (not a symlink's target) selects the per-scene exceptions
        base = pipeline_preset(preset, scene=Path(os.path.abspath(data)).name)
    if overrides:
        dotted = _normalise_overrides(overrides)
        base = apply_overrides(base, dotted)
        check_derived_overrides(base, dotted)
    if saved is not None and overrides:
        asked = _normalise_overrides(overrides).get("progress")
        if asked is not None and bool(asked) != saved.progress:
            raise ConfigError(
                f"override 'progress={asked!r}': {run.config_path} was saved with "
                f"progress={saved.progress} and a run keeps its own progress setting (it is part "
                "of its saved stage configs); leave progress out or use a new run directory"
            )
    cfg = resolve_config(base)
    if saved is not None:
        cfg = resolve_config(replace(cfg, progress=saved.progress))
    return cfg, saved


def run_pipeline(
    data: Path,
    run: Path,
    preset: str = "synthetic",
    resume: bool = False,
    stages: list[str] | None = None,
    *,
    config: PipelineConfig | None = None,
    force: bool = False,
    **overrides: Any,
) -> RunDir:
    """``openins train DATA --preset P [--resume]``: preprocessing (if needed) and stages 0-3.

    Args:
        data: scene folder.
        run: run directory (created).
        preset: ``synthetic``, ``scannet`` or ``lerf`` (ignored when resuming a run with a saved
            config, or when ``config`` is given); the published per-scene exceptions of the data
            folder's name are applied (:data:`SCENE_OVERRIDES`, e.g. LeRF teatime).
        resume: continue a run: finished stages are skipped, an interrupted stage continues from
            its newest checkpoint. Without it, a run directory that already holds checkpoints is
            refused.
        stages: subset of ``["stage0", "stage1", "stage2", "stage3"]`` to run (default: all);
            earlier stages must have finished.
        force: re-run the selected stages even when finished (their outputs and those of all
            later stages are removed first).
        overrides: dotted config keys, e.g. ``**{"stage1.iterations": 100}``, or with ``__``:
            ``stage1__iterations=100``.

    Returns:
        The :class:`RunDir`.
    """
    from ..data.load import load_scene

    rd = RunDir(run)
    selected = list(STAGES) if stages is None else list(stages)
    unknown = [s for s in selected if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stages {unknown}; choose from {list(STAGES)}")
    selected = [s for s in STAGES if s in selected]
    cfg, saved = compose_config(rd, data, preset, resume, config, overrides)
    if saved is None and any(list_checkpoints(rd, s) for s in STAGES) and not resume:
        raise RunError(
            f"{rd.path} already holds checkpoints; resume the run (--resume) or choose a new "
            "directory"
        )
    if saved is not None and not resume and not force:
        raise RunError(
            f"{rd.path} already holds a run; pass --resume to continue it (finished stages are "
            "skipped) "
            "or choose a new run directory"
        )
    rerun = set(selected) if force else set()
    if saved is not None:
        _check_resume_changes(rd, saved, cfg, rerun)
    first = STAGES.index(selected[0]) if selected else len(STAGES)
    for s in STAGES[:first]:
        if not stage_done(rd, s, cfg):
            raise RunError(
                f"{rd.path}: {s} has not finished; run it first (stages={s!r} or all stages)"
            )
    if force:
        for s in STAGES[first:]:
            _clear_stage(rd, s)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_config_section("data", str(Path(data)))
    rd.write_config_section(SECTION, cfg)

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    scene = load_scene(Path(data), undistort=cfg.undistort, progress=cfg.progress)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    frames = prepare_frames(scene.train_frames, cfg.stage0)
    timing_path = rd.metrics_path("pipeline")
    timings: dict[str, Any] = {}
    if timing_path.is_file():
        try:
            timings = json.loads(timing_path.read_text()).get("stages", {})
        except (OSError, ValueError):
            timings = {}

    this_call: dict[str, Any] = {}  # what this call did ("stages" keeps each stage's last run)

    def record(stage: str, seconds: float, skipped: bool) -> None:
        this_call[stage] = {"seconds": round(seconds, 3), "skipped": skipped}
        if not (skipped and stage in timings):
            timings[stage] = this_call[stage]
        write_json(
            timing_path,
            {"preset": cfg.preset, "seed": cfg.seed, "device": str(device), "stages": timings,
             "last_call": this_call},
        )

    todo = [s for s in selected if not stage_done(rd, s, cfg)]

    inputs: TrainingInputs | None = None
    if any(s in todo for s in ("stage1", "stage2", "stage3")):
        t0 = time.perf_counter()
        inputs = load_training_inputs(scene, frames, cfg.inputs, cfg.seed, cfg.progress)
        record("inputs", time.perf_counter() - t0, False)

    model: GaussianModel | None = None
    cb: TwoLevelCodebook | None = None
    for stage in selected:
        if stage not in todo:
            log.info("%s: finished earlier, skipped", stage)
            record(stage, 0.0, True)
            model, cb = None, None
            continue
        t0 = time.perf_counter()
        has_ck = bool(list_checkpoints(rd, stage))
        if stage == "stage0":
            model = train_stage0(scene, rd.path, cfg.stage0, resume=resume and has_ck)
        else:
            assert inputs is not None
            prev = STAGES[STAGES.index(stage) - 1]
            if model is None:
                model = load_stage_model(rd, prev, device)
            if stage == "stage1":
                model = train_stage1(
                    model,
                    inputs,
                    rd.path,
                    cfg.stage1,
                    backend=cfg.backend,
                    seed=cfg.seed,
                    resume=resume and has_ck,
                )
            elif stage == "stage2":
                model, cb = train_stage2(
                    model,
                    inputs,
                    rd.path,
                    cfg.stage2,
                    backend=cfg.backend,
                    seed=cfg.seed,
                    resume=resume and has_ck,
                )
            else:
                if cb is None:
                    cb = load_codebook(rd.path / CODEBOOK_FILE, cfg.stage2.codebook, device)
                train_stage3(
                    model,
                    cb,
                    inputs,
                    rd.path,
                    cfg.stage3,
                    backend=cfg.backend,
                    seed=cfg.seed,
                    stage2=cfg.stage2,
                )
        record(stage, time.perf_counter() - t0, False)
    export = rd.exports / "point_cloud.ply"
    if "stage3" in selected and stage3_done(rd) and ("stage3" in todo or not export.is_file()):
        from .stage0 import export_run

        export_run(rd.path, out=export)
    return rd


__all__ = [
    "DERIVED_FIELDS",
    "FIXES",
    "PRESETS",
    "PipelineConfig",
    "load_stage_model",
    "pipeline_preset",
    "read_pipeline_config",
    "resolve_config",
    "run_pipeline",
    "stage_done",
]
