"""What the viewer shows, read from a run directory, and text / click selection on it.

:func:`load_viewer_run` reads the newest Gaussians of a run (any stage, so a stage-0-only run is
viewable), its config, scene (for the cameras and the oracle text side) and, when stage 3 has
run, ``instances.npz``. :class:`TextSelector` answers a text query with exactly the selection of
``openins query`` (:func:`~openinsgaussian.query.select.select_leaves`, then
:func:`~openinsgaussian.query.select.gaussian_mask_for_leaves` and, when the run's query config
says so, :func:`~openinsgaussian.query.select.filter_selection`), and remembers recent queries so
that a clicked instance can be matched against them. No viser here.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.scene import Scene
from ..errors import ConfigError, DataError, OpenInsError, RunError
from ..query.text import TextSide
from ..run.directory import RunDir
from ..run.instances import Instances
from ..run.query_config import QueryConfig
from ..train.pipeline import PipelineConfig

log = logging.getLogger(__name__)

@dataclass
class ViewerRun:
    """A run as the viewer needs it (numpy on the CPU; ``N`` Gaussians)."""

    run: RunDir
    config: PipelineConfig
    model_source: str  # where the Gaussians came from, e.g. "checkpoints/stage3/step_000120.pt"
    means: np.ndarray  # [N, 3] float32
    quats: np.ndarray  # [N, 4] float32 (w, x, y, z), unit
    scales: np.ndarray  # [N, 3] float32, activated
    opacities: np.ndarray  # [N] float32 in (0, 1)
    rgb: np.ndarray  # [N, 3] float32 in [0, 1], view-independent (SH degree 0)
    scene: Scene | None = None
    scene_problem: str | None = None  # why the scene could not be read (cameras / oracle missing)
    instances: Instances | None = None
    instances_problem: str | None = None  # why there are no instances (no query box then)

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])


def load_viewer_run(run: Path | str) -> ViewerRun:
    """Read a run directory for viewing; see the module docstring.

    Raises:
        RunError: the directory, its ``config.yml`` or any Gaussians (checkpoint or
            ``point_cloud.ply``) are missing.
        DataError: ``instances.npz`` is unreadable or does not match the Gaussians.
    """
    from ..render.sh import sh_to_rgb
    from ..run.checkpoints import latest_model_state
    from ..run.instances import load_instances
    from ..splats.gaussians import GaussianModel
    from ..train.finished import load_scene_of_run
    from ..train.pipeline import read_pipeline_config

    rd = RunDir(run)
    if not rd.path.is_dir():
        raise RunError(f"{rd.path}: run directory not found (train one with `openins train`)")
    if not rd.config_path.is_file():
        raise RunError(f"{rd.config_path}: not found; is {rd.path} a run made by `openins train`?")
    cfg = read_pipeline_config(rd)

    model: GaussianModel
    try:
        stage, ck = latest_model_state(rd)
        model = GaussianModel.from_state_dict(ck["model"])
        source = f"checkpoints/{stage}/step_{int(ck.get('step', 0)):06d}.pt"
    except RunError:
        if not rd.ply.is_file():
            raise RunError(
                f"{rd.path}: no Gaussians to show: neither a checkpoint under {rd.checkpoints} nor "
                f"{rd.ply.name}; train the run first (`openins train`)"
            ) from None
        from ..splats.ply import load_gaussians_ply

        model, _ = load_gaussians_ply(rd.ply)
        source = rd.ply.name
    with torch.no_grad():
        means = model.means.detach().float().cpu().numpy()
        rgb = sh_to_rgb(model.params["sh0"][:, 0, :]).clamp(0.0, 1.0).float().cpu().numpy()
        out = ViewerRun(
            run=rd,
            config=cfg,
            model_source=source,
            means=np.ascontiguousarray(means),
            quats=model.quats.detach().float().cpu().numpy(),
            scales=model.scales.detach().float().cpu().numpy(),
            opacities=model.opacities.detach().float().cpu().numpy(),
            rgb=np.ascontiguousarray(rgb),
        )

    try:
        out.scene = load_scene_of_run(rd, cfg)
    except RunError:
        out.scene_problem = f"{rd.config_path} names no scene folder"
    except OpenInsError as e:
        out.scene_problem = f"scene folder not readable ({e})"
    if out.scene_problem:
        log.warning("%s: %s; no cameras shown", rd.path, out.scene_problem)

    if not rd.instances.is_file():
        out.instances_problem = (
            f"no {rd.instances.name} in {rd.path}: instance colours and text queries need stage 3 "
            "(`openins train` through all stages)"
        )
    else:
        inst = load_instances(rd.instances)
        if inst.num_gaussians != out.num_gaussians:
            raise DataError(
                rd.instances,
                f"holds leaf ids for {inst.num_gaussians} Gaussians but {source} has "
                f"{out.num_gaussians}",
                "re-run stage 3",
            )
        out.instances = inst
    return out


# ---- text selection -----------------------------------------------------------------------------
@dataclass
class QuerySelection:
    """The answer to one text query (the numbers ``openins query`` prints)."""

    text: str
    leaves: np.ndarray  # [S] int64 selected leaf ids, the best first
    best_leaf: int | None
    score: float | None  # cosine of the best leaf
    mask: np.ndarray  # [N] bool selected Gaussians
    relevancy: float | None = None  # canonical-phrase relevancy of the best leaf
    found: bool = True  # False: nothing matches (openins query's found test); nothing selected
    reason: str | None = None  # why not found

    @property
    def rejected(self) -> bool:
        """A best leaf exists but the found test turned it down."""
        return self.best_leaf is not None and not self.found

    @property
    def n_gaussians(self) -> int:
        return int(self.mask.sum())


@dataclass
class LeafInfo:
    """A clicked instance: its leaf, size, views and the recent query that matches it best."""

    gaussian: int
    leaf: int | None  # None: the Gaussian belongs to no leaf (sentinel id)
    coarse: int | None
    mask: np.ndarray  # [N] bool the leaf's Gaussians (empty selection for no leaf)
    views: int = 0  # occu_count of the leaf
    best_query: str | None = None
    best_query_score: float | None = None

    @property
    def n_gaussians(self) -> int:
        return int(self.mask.sum())


@dataclass
class TextSelector:
    """Text -> selected Gaussians with the selection of ``openins query``; recent-query memory.

    Build it with :meth:`from_run`; ``side`` is the run's text side
    (:func:`openinsgaussian.query.text.text_side`, with the query config's prompt template).
    """

    instances: Instances
    means: Tensor  # [N, 3]
    scales: Tensor  # [N, 3]
    query: QueryConfig
    side: TextSide
    language_source: str = ""
    max_recent: int = 8
    recent: deque[tuple[str, Tensor]] = field(default_factory=deque)  # (text, [D] feature)

    def __post_init__(self) -> None:
        inst = self.instances
        self._leaf_feat = torch.from_numpy(inst.leaf_feat)  # [L, D]

    @classmethod
    def from_run(
        cls, vr: ViewerRun, query: QueryConfig | None = None, device: str | None = None
    ) -> TextSelector:
        """Selector on a loaded run; ``query`` defaults to the run's own query config.

        Raises:
            RunError: the run has no instances. ConfigError: its language source needs the scene
            (oracle) and the scene could not be read, or is unknown.
        """
        from ..query.text import text_side

        if vr.instances is None:
            raise RunError(vr.instances_problem or f"{vr.run.instances}: not found")
        inst = vr.instances
        src = inst.language_source
        if (src == "oracle" or src.startswith("oracle(")) and vr.scene is None:
            raise ConfigError(
                f"{vr.run.path}: text queries with the oracle language source need the scene "
                f"folder, but {vr.scene_problem}"
            )
        query = query or vr.config.query
        side = text_side(src, inst.dim, scene=vr.scene, device=device or vr.config.device,
                         prompt_template=query.prompt_template)
        return cls(
            instances=inst,
            means=torch.from_numpy(vr.means),
            scales=torch.from_numpy(vr.scales),
            query=query,
            side=side,
            language_source=src,
        )

    def _text_feature(self, text: str) -> Tensor:
        """``[D]`` float32 feature of ``text`` (cached among the recent queries)."""
        for t, f in self.recent:
            if t == text:
                return f
        return self.side.encode([text]).float()[0]

    def _remember(self, text: str, feat: Tensor) -> None:
        self.recent = deque(((t, f) for t, f in self.recent if t != text), maxlen=self.max_recent)
        self.recent.appendleft((text, feat))

    def select(self, text: str) -> QuerySelection:
        """Selected leaves and Gaussians for ``text``: :func:`~openinsgaussian.query.selection.
        select_for_text`, the selection of ``openins query``."""
        from ..query.selection import select_for_text

        text = str(text).strip()
        if not text:
            raise ConfigError("type a text query first, e.g. chair")
        feat = self._text_feature(text)  # [D]
        sel = select_for_text(feat, self.instances, self.means, self.scales, self.query,
                              self.side.canonical(), in_vocabulary=self.side.in_vocabulary(text))
        self._remember(text, feat)
        return QuerySelection(
            text=text,
            leaves=sel.leaves.cpu().numpy().astype(np.int64),
            best_leaf=sel.best_leaf,
            score=sel.score,
            mask=sel.mask.cpu().numpy().astype(bool),
            relevancy=sel.relevancy,
            found=sel.found,
            reason=sel.reason,
        )

    def best_recent_query(self, leaf: int) -> tuple[str, float] | None:
        """The recent query whose feature is closest (cosine) to ``leaf``'s, with its score."""
        from ..query.relevance import leaf_relevance

        if not self.recent or not 0 <= leaf < self._leaf_feat.shape[0]:
            return None
        feats = torch.stack([f for _, f in self.recent])  # [Q, D]
        rel = leaf_relevance(feats, self._leaf_feat[leaf : leaf + 1])[:, 0]  # [Q]
        q = int(rel.argmax())
        return self.recent[q][0], float(rel[q])


def leaf_info(instances: Instances, gaussian: int, selector: TextSelector | None) -> LeafInfo:
    """The instance (leaf) of Gaussian ``gaussian``, with its best-matching recent query."""
    leaf_ind = instances.leaf_ind
    leaf = int(leaf_ind[gaussian])
    if not 0 <= leaf < instances.num_leaves:
        return LeafInfo(gaussian, None, None, np.zeros(len(leaf_ind), dtype=bool))
    best = selector.best_recent_query(leaf) if selector is not None else None
    return LeafInfo(
        gaussian=gaussian,
        leaf=leaf,
        coarse=int(instances.coarse_ind[gaussian]),
        mask=leaf_ind == leaf,
        views=int(instances.occu_count[leaf]),
        best_query=best[0] if best else None,
        best_query_score=best[1] if best else None,
    )


__all__ = [
    "LeafInfo",
    "QuerySelection",
    "TextSelector",
    "ViewerRun",
    "leaf_info",
    "load_viewer_run",
]
