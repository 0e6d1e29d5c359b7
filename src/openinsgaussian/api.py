"""The library face: open a finished run and ask it for objects, as data.

Example (``RUN`` is a finished run directory, e.g. ``outputs/demo/run_default_0`` after
``make demo``):

>>> import openinsgaussian as oig
>>> run = oig.open_run(RUN, device="cpu")
>>> sel = run.query("bed")
>>> sel.found, sel.gaussian_ids.dtype
(True, dtype('int64'))
>>> lo, hi = sel.bounds
>>> bool((lo <= sel.centroid).all() and (sel.centroid <= hi).all())
True
>>> sel.mask(0).shape == (run.cameras[0].height, run.cameras[0].width)
True
>>> run.query("zebra").found  # not a class of this room
False

Everything here is a thin layer over the package's modules (one code path: ``openins`` calls
these functions and only prints what they return): :class:`Run` over
:class:`~openinsgaussian.query.run.QueryEngine` and :func:`~openinsgaussian.train.finished.
load_run`; :func:`train`, :func:`preprocess` and :func:`evaluate` over the pipeline, the
preprocessing driver and the two protocols.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.camera import Camera
from .errors import ConfigError
from .evaluate.result import EvalResult
from .query.inventory import Instance, Vocabulary
from .query.run import QueryEngine, QueryReport
from .query.selection import ObjectGeometry, Selection, resolve_camera
from .query.text import TextSide
from .render import RenderOutput
from .run.query_config import QueryConfig
from .train.finished import LoadedRun, load_run
from .train.pipeline import PipelineConfig


class Run:
    """A finished run (stages 0-3): its Gaussians, cameras, text queries and instances.

    Open one with :func:`open_run`. Queries use the run's text side (its language source, the
    prompt template of its ``query`` config) unless ``prompt_template`` / ``text_features`` are
    given per call.
    """

    def __init__(self, loaded: LoadedRun) -> None:
        self._loaded = loaded
        self._engines: dict[tuple[str | None, str | None], QueryEngine] = {}
        self._cameras: list[Camera] | None = None

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, gaussians={self.num_gaussians}, "
                f"language_source={self.language_source!r})")

    # ---- what the run holds ---------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The run directory."""
        return self._loaded.run.path

    @property
    def config(self) -> PipelineConfig:
        """The run's resolved config (``config.yml``)."""
        return self._loaded.config

    @property
    def query_config(self) -> QueryConfig:
        """The run's text-query defaults."""
        return self._loaded.config.query

    @property
    def scene(self) -> Any:
        """The scene it was trained on (:class:`~openinsgaussian.data.scene.Scene`)."""
        return self._loaded.scene

    @property
    def model(self) -> Any:
        """The newest Gaussians (:class:`~openinsgaussian.splats.gaussians.GaussianModel`)."""
        return self._loaded.model

    @property
    def num_gaussians(self) -> int:
        return len(self._loaded.model)

    @property
    def language_source(self) -> str:
        """``oracle`` or ``clip:<model>:<weights>``."""
        return self._loaded.instances.language_source

    @property
    def cameras(self) -> list[Camera]:
        """The run's cameras, train then test, at the training resolution.

        >>> run = oig.open_run(RUN)
        >>> cam = run.cameras[0]
        >>> cam.K.shape, cam.world_to_cam.shape
        (torch.Size([3, 3]), torch.Size([4, 4]))
        """
        if self._cameras is None:
            self._cameras = [f.camera for f in self._loaded.frames]
        return self._cameras

    # ---- queries --------------------------------------------------------------------------------
    def _engine(self, prompt_template: str | None, text_features: Any) -> QueryEngine:
        key = (prompt_template, None if text_features is None else str(text_features))
        if key not in self._engines:
            self._engines[key] = QueryEngine(
                self._loaded, prompt_template=prompt_template, text_features=text_features
            )
        return self._engines[key]

    def text_side(
        self, *, text_features: str | Path | None = None, prompt_template: str | None = None
    ) -> TextSide:
        """The run's text side (``.encode(phrases)``, ``.describe()``) for these settings."""
        return self._engine(prompt_template, text_features).side

    def query(
        self,
        text: str,
        *,
        text_features: str | Path | None = None,
        prompt_template: str | None = None,
        min_relevancy: float | None = None,
        compat: bool | None = None,
    ) -> Selection:
        """The Gaussians matching ``text``, as a :class:`~openinsgaussian.query.selection.Selection`.

        Args:
            text: any phrase, e.g. ``"red mug"``.
            text_features: score with this OpenGaussian ``text_features.json`` (the phrase is
                looked up by its exact key) instead of the run's text encoder.
            prompt_template: CLIP prompt for this call (default: the run's).
            min_relevancy: CLIP found threshold for this call (default: the run's, 0.5).
            compat: the public code's selection quirks (default: the run's).

        >>> run = oig.open_run(RUN)
        >>> sel = run.query("wall")
        >>> sel.found, sel.n_gaussians > 0, int(sel.leaves[0]) == sel.best_leaf
        (True, True, True)
        >>> sorted(sel.obb.to_json())
        ['axes', 'center', 'extent']
        """
        return self.query_all([text], text_features=text_features, prompt_template=prompt_template,
                              min_relevancy=min_relevancy, compat=compat)[0]

    def query_all(
        self,
        texts: list[str],
        *,
        text_features: str | Path | None = None,
        prompt_template: str | None = None,
        min_relevancy: float | None = None,
        compat: bool | None = None,
        progress: bool = False,
    ) -> list[Selection]:
        """:meth:`query` for several texts at once (one text-encoder call)."""
        return self._engine(prompt_template, text_features).select(
            list(texts), compat=compat, min_relevancy=min_relevancy, progress=progress
        )

    def query_report(
        self,
        texts: list[str],
        *,
        views: int = 3,
        out: str | Path | None = None,
        export_ply: str | Path | None = None,
        text_features: str | Path | None = None,
        prompt_template: str | None = None,
        min_relevancy: float | None = None,
        compat: bool | None = None,
        progress: bool = False,
    ) -> QueryReport:
        """What ``openins query`` does: :meth:`query_all`, then renders of every selection from
        ``views`` views, one PLY per query into ``export_ply`` and ``query.json`` in ``out``
        (default ``RUN/renders/query``)."""
        engine = self._engine(prompt_template, text_features)
        sels = engine.select(list(texts), compat=compat, min_relevancy=min_relevancy,
                             progress=progress)
        return engine.save(sels, None if out is None else Path(out), views,
                           None if export_ply is None else Path(export_ply), progress=progress)

    def instances(
        self,
        min_views: int | None = None,
        *,
        text_features: str | Path | None = None,
        prompt_template: str | None = None,
    ) -> list[Instance]:
        """The scene inventory: one :class:`~openinsgaussian.query.inventory.Instance` per leaf
        owning Gaussians and matched in ``min_views`` views (default: the run's
        ``query.min_views_label``); ``labels(vocabulary, k)`` uses the text side chosen here.

        >>> run = oig.open_run(RUN)
        >>> inst = run.instances()
        >>> label, score = inst[0].labels("scannet19", k=3)[0]
        >>> isinstance(label, str), len(inst[0].labels("scannet19", k=3))
        (True, 3)
        """
        return self._engine(prompt_template, text_features).instances(min_views)

    # ---- rendering ------------------------------------------------------------------------------
    def camera(self, camera_or_view: Any) -> Camera:
        """A camera, a view index into :attr:`cameras` or a view name -> the :class:`Camera`."""
        return resolve_camera(camera_or_view, self.cameras)

    @torch.no_grad()
    def render(
        self,
        camera_or_view: Any,
        selection: ObjectGeometry | np.ndarray | None = None,
        *,
        background: tuple[float, float, float] | None = None,
    ) -> RenderOutput:
        """Render the run in a camera (or view index / name): every Gaussian, or only those of
        ``selection`` (a :class:`Selection`, an :class:`Instance` or an array of Gaussian ids).

        >>> run = oig.open_run(RUN)
        >>> out = run.render(0, run.query("bed"))
        >>> out.image.shape[0], out.alpha.shape[0]
        (3, 1)
        """
        cam = self.camera(camera_or_view)
        model = self._loaded.model
        if selection is not None:
            ids = selection.gaussian_ids if isinstance(selection, ObjectGeometry) else selection
            model = model.subset(torch.as_tensor(np.asarray(ids, dtype=np.int64)))
        bg = None if background is None else torch.tensor(background, dtype=torch.float32)
        return model.render(cam, background=bg, backend=self._loaded.config.backend)


def open_run(path: str | Path, device: str = "cpu") -> Run:
    """Open a finished run directory (``openins train`` through stage 3).

    Raises:
        RunError: the folder is not a run, or has no checkpoint.
        DataError: ``instances.npz`` is missing (stage 3 has not run) or inconsistent.

    >>> oig.open_run(RUN).num_gaussians > 0
    True
    """
    return Run(load_run(path, device=device))


# ---- training, preprocessing, evaluation --------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` did."""

    run: Path
    """The run directory."""
    config: PipelineConfig
    """The config it ran with (also in ``RUN/config.yml``)."""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What this call did per step (``inputs``, ``stage0`` .. ``stage3``): ``seconds`` and
    ``skipped`` (finished earlier); ``metrics/pipeline.json`` also keeps each stage's last run."""
    seconds: float = 0.0
    """Wall time of this call."""

    @property
    def finished(self) -> bool:
        """Stage 3 has run: :func:`open_run` can open the run."""
        return (self.run / "instances.npz").is_file()

    def open(self, device: str = "cpu") -> Run:
        return open_run(self.run, device=device)


def train(
    scene: str | Path,
    run: str | Path = "outputs/run",
    preset: str = "synthetic",
    *,
    resume: bool = False,
    stages: list[str] | None = None,
    force: bool = False,
    config: PipelineConfig | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a scene folder into ``run``: the preprocessing cache when missing, then stages 0-3.

    Args:
        scene: scene folder (COLMAP, ScanNet layout, Blender / nerfstudio transforms).
        run: run directory.
        preset: ``synthetic``, ``scannet``, ``lerf`` (per-scene published exceptions applied) or
            ``capture`` (a user's own capture: the LeRF schedule with our fixes).
        resume: continue a run (finished stages are skipped).
        stages: a subset of ``stage0`` .. ``stage3``.
        force: re-run the selected stages.
        config: a full :class:`~openinsgaussian.train.pipeline.PipelineConfig` instead of the
            preset.
        overrides: dotted config keys, e.g. ``**{"stage1.iterations": 200}``, or ``seed=3``.
    """
    from .train.pipeline import read_pipeline_config, run_pipeline

    t0 = time.perf_counter()
    rd = run_pipeline(Path(scene), Path(run), preset, resume, stages, config=config, force=force,
                      **overrides)

    timing = rd.metrics_path("pipeline")
    stages_done = json.loads(timing.read_text()).get("last_call", {}) if timing.is_file() else {}
    return TrainResult(run=rd.path, config=read_pipeline_config(rd), stages=stages_done,
                       seconds=time.perf_counter() - t0)


@dataclass
class PreprocessResult:
    """The preprocessing cache of a scene (``preprocess.json``)."""

    cache: Path
    """The cache folder (``<name>_s.npy`` / ``_f.npy`` per image)."""
    images: int
    """Images in the cache."""
    processed: int
    """Images computed by this call (the others were cached)."""
    seconds: float
    mask_source: str | None
    language_source: str | None
    dim: int | None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)


def preprocess(scene: str | Path, *, config: Any = None, **settings: Any) -> PreprocessResult:
    """Masks and per-mask language features for every image of ``scene``, cached (resumable).

    ``settings`` are fields of :class:`~openinsgaussian.perception.preprocess.PreprocessConfig`,
    e.g. ``masks="ground_truth", language="oracle"`` or ``masks="sam", language="clip"``; or pass
    a whole ``config``.
    """
    from dataclasses import replace

    from .perception.preprocess import META_NAME, PreprocessConfig, run_preprocess

    try:
        cfg = (PreprocessConfig(data=Path(scene), **settings) if config is None
               else replace(config, data=Path(scene), **settings))
    except TypeError as e:
        raise ConfigError(f"preprocess: {e}") from None
    out = run_preprocess(cfg)
    meta = json.loads((out / META_NAME).read_text())
    return PreprocessResult(
        cache=out, images=len(meta.get("images", {})), processed=int(meta.get("processed", 0)),
        seconds=float(meta.get("seconds") or 0.0), mask_source=meta.get("mask_source"),
        language_source=meta.get("language_source"), dim=meta.get("dim"), meta=meta,
    )


def evaluate(
    run: str | Path,
    protocol: str = "scannet",
    *,
    labels: str | Path | None = None,
    scene_name: str | None = None,
    compat: bool = False,
    prompt_template: str | None = None,
    text_features: str | Path | None = None,
) -> EvalResult:
    """Evaluate a finished run with a benchmark protocol (``scannet`` or ``lerf``); the metrics
    JSON goes to ``RUN/metrics/<protocol>.json``.

    ``labels``: the LeRF annotation folder. ``prompt_template`` / ``text_features``: the text
    side (default: the run's template; a ``text_features.json`` is used as is). The protocols
    always take the best leaf (no found test), as the published code does.

    >>> res = oig.evaluate(RUN, protocol="scannet")
    >>> sorted(res.summary)
    ['scannet10', 'scannet15', 'scannet19']
    >>> res.metrics["prompt_template"]
    'a photo of a {}.'
    """
    from .evaluate.run import run_eval

    return run_eval(
        Path(run), protocol,  # type: ignore[arg-type]
        compat,
        labels=None if labels is None else Path(labels),
        scene_name=scene_name,
        prompt_template=prompt_template,
        text_features=None if text_features is None else Path(text_features),
    )


__all__ = [
    "EvalResult",
    "Instance",
    "PreprocessResult",
    "QueryReport",
    "Run",
    "Selection",
    "TrainResult",
    "Vocabulary",
    "evaluate",
    "open_run",
    "preprocess",
    "train",
]
