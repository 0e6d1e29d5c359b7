"""Text queries on a finished run: selections, the scene inventory and the ``openins query`` job.

:class:`QueryEngine` holds a loaded run (:func:`~openinsgaussian.train.finished.load_run`) and its
text side (:func:`~openinsgaussian.query.text.text_side`, with the run's prompt template or a
``text_features.json``), and answers:

* :meth:`QueryEngine.select`: text -> :class:`~openinsgaussian.query.selection.Selection` through
  :func:`~openinsgaussian.query.selection.select_for_text` (the viewer's selection too);
* :meth:`QueryEngine.instances`: the inventory (:mod:`.inventory`);
* :meth:`QueryEngine.save`: what ``openins query`` writes: renders of each selection from a few
  views (the selected Gaussians in colour over a dimmed grey render of the whole scene,
  ``<out>/<query>__<view>.png``, default ``RUN/renders/query/``), one PLY per query with
  ``export_ply``, and ``query.json`` with every selection's fields, the per-Gaussian label
  counts among the queries (:func:`~openinsgaussian.query.relevance.label_gaussians`) and the
  text side (prompt template, text-features file).

The library face (:class:`openinsgaussian.Run`) and the CLI are thin layers over this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..io import safe_filename, save_image, write_json
from ..run.query_config import QueryConfig
from .inventory import Instance, VocabularyEncoder, scene_instances
from .selection import Selection, SelectionContext, make_selection, select_for_text
from .text import TextSide, text_side


# ---- rendering ----------------------------------------------------------------------------------
@torch.no_grad()
def selection_overlay(
    model: Any, camera: Any, selected: Tensor, dim: float = 0.35, backend: str = "auto"
) -> np.ndarray:
    """``[H, W, 3]`` uint8: the selected Gaussians in colour over a dimmed grey full render."""
    full = model.render(camera, backend=backend).image.clamp(0, 1)  # [3,H,W]
    grey = full.mean(0, keepdim=True).expand(3, -1, -1) * dim
    if bool(selected.any()):
        out = model.subset(selected.nonzero().flatten()).render(camera, backend=backend)
        img = out.image.clamp(0, 1) + (1.0 - out.alpha) * grey  # [3,H,W]
    else:
        img = grey
    return (img.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def pick_views(frames: list[Any], count: int) -> list[Any]:
    """``count`` frames spread evenly over ``frames`` (first and last included)."""
    if count <= 0 or not frames:
        return []
    idx = sorted({int(round(x)) for x in np.linspace(0, len(frames) - 1, min(count, len(frames)))})
    return [frames[i] for i in idx]


# ---- results ------------------------------------------------------------------------------------
@dataclass
class QueryReport:
    """What ``openins query`` produced for a list of texts."""

    run: Path
    """The run directory."""
    language_source: str
    """The run's language source (``oracle`` or ``clip:...``)."""
    selections: list[Selection]
    """One selection per query, in order."""
    labelled_gaussians: list[int]
    """Per query: Gaussians whose leaf matches this query best among the queries."""
    renders: list[list[Path]]
    """Per query: the overlay renders."""
    plys: list[Path | None]
    """Per query: the PLY of the selected Gaussians (None without ``export_ply``)."""
    out: Path
    """Folder of the renders and ``query.json``."""
    text_side: dict[str, Any] = field(default_factory=dict)
    """How the texts were embedded."""
    aggregation: str | None = None

    @property
    def json_path(self) -> Path:
        return self.out / "query.json"

    def to_json(self) -> dict[str, Any]:
        return {
            "run": str(self.run),
            "language_source": self.language_source,
            "aggregation": self.aggregation,
            **self.text_side,
            "queries": [
                {
                    **s.to_json(),
                    "labelled_gaussians": n,
                    "renders": [str(p) for p in r],
                    "ply": None if ply is None else str(ply),
                }
                for s, n, r, ply in zip(
                    self.selections, self.labelled_gaussians, self.renders, self.plys, strict=True
                )
            ],
            "out": str(self.out),
        }


# ---- the engine ---------------------------------------------------------------------------------
class QueryEngine:
    """Text queries and the inventory of one loaded run (see the module docstring).

    Args:
        loaded: a :class:`~openinsgaussian.train.finished.LoadedRun`.
        config: selection settings (default: the run's ``query`` section).
        prompt_template: CLIP prompt (default: ``config.prompt_template``).
        text_features: score with this ``text_features.json`` instead of the run's text encoder.
        device: torch device of a CLIP text tower (default: the run's device setting).
    """

    def __init__(
        self,
        loaded: Any,
        config: QueryConfig | None = None,
        *,
        prompt_template: str | None = None,
        text_features: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        self.loaded = loaded
        cfg = config or loaded.config.query
        if prompt_template is not None:
            cfg = replace(cfg, prompt_template=prompt_template)
        self.config = cfg
        inst = loaded.instances
        self.side: TextSide = text_side(
            inst.language_source,
            inst.dim,
            scene=loaded.scene,
            device=device or loaded.config.device,
            prompt_template=cfg.prompt_template,
            text_features=text_features,
        )
        model = loaded.model
        self.means = model.means.detach().cpu()  # [N, 3]
        self.scales = model.scales.detach().cpu()  # [N, 3]
        self.context = SelectionContext(
            model=model,
            cameras=[f.camera for f in loaded.frames],
            leaf_ind=np.asarray(inst.leaf_ind, dtype=np.int64),
            backend=loaded.config.backend,
        )
        self.vocabularies = VocabularyEncoder(self.side)

    def _settings(self, compat: bool | None, min_relevancy: float | None) -> QueryConfig:
        cfg = self.config if compat is None else replace(self.config, compat=compat)
        if min_relevancy is not None:
            if not 0.0 <= min_relevancy < 1.0:
                raise ConfigError(f"min_relevancy must be in [0, 1), got {min_relevancy}")
            cfg = replace(cfg, min_relevancy=float(min_relevancy))
        return cfg

    def select(
        self,
        texts: list[str],
        *,
        compat: bool | None = None,
        min_relevancy: float | None = None,
        progress: bool = False,
    ) -> list[Selection]:
        """One :class:`Selection` per text (``compat`` / ``min_relevancy`` override the
        config's)."""
        from tqdm.auto import tqdm

        texts = _clean(texts)
        cfg = self._settings(compat, min_relevancy)
        feats = self.side.encode(texts).float()  # [Q, D]
        canon = self.side.canonical()  # [C, D] or None
        desc = self.side.describe()
        out = []
        for q, text in enumerate(
            tqdm(texts, desc="queries", unit="query", disable=not progress, leave=False)
        ):
            ts = select_for_text(
                feats[q], self.loaded.instances, self.means, self.scales, cfg, canon,
                in_vocabulary=self.side.in_vocabulary(text),
            )
            out.append(make_selection(text, ts, desc, self.context))
        return out

    def labelled_counts(self, texts: list[str]) -> list[int]:
        """Per text: Gaussians labelled with it when every Gaussian takes the best of ``texts``."""
        from .relevance import label_gaussians

        inst = self.loaded.instances
        labels = label_gaussians(
            self.side.encode(_clean(texts)).float(),
            torch.from_numpy(inst.leaf_feat),
            torch.from_numpy(inst.occu_count),
            torch.from_numpy(inst.leaf_ind),
            self.config.min_views_label,
            self.config.compat,
        )  # [N] 0..Q
        return [int((labels == q + 1).sum()) for q in range(len(_clean(texts)))]

    def instances(self, min_views: int | None = None) -> list[Instance]:
        """The inventory: leaves matched in ``min_views`` views (None: ``min_views_label``)."""
        mv = self.config.min_views_label if min_views is None else int(min_views)
        return scene_instances(self.loaded.instances, self.context, self.vocabularies, mv)

    def save(
        self,
        selections: list[Selection],
        out: Path | None = None,
        views: int = 3,
        export_ply: Path | None = None,
        progress: bool = False,
    ) -> QueryReport:
        """Renders (``views`` per selection), PLYs (into ``export_ply``) and ``query.json``."""
        from tqdm.auto import tqdm

        loaded = self.loaded
        out_dir = Path(out) if out is not None else loaded.run.render_dir("query")
        frames = pick_views(loaded.eval_frames, views)
        model = loaded.model
        renders: list[list[Path]] = []
        plys: list[Path | None] = []
        for sel in tqdm(selections, desc="renders", unit="query", disable=not progress,
                        leave=False):
            mask = torch.zeros(len(model), dtype=torch.bool)
            mask[torch.from_numpy(sel.gaussian_ids)] = True
            paths = []
            for f in frames:
                name = f"{safe_filename(sel.text, 'query')}__{safe_filename(f.name, 'view')}"
                p = out_dir / f"{name}.png"
                img = selection_overlay(model, f.camera, mask.to(model.device),
                                        backend=loaded.config.backend)
                save_image(p, img)
                paths.append(p)
            renders.append(paths)
            plys.append(
                sel.export_ply(Path(export_ply) / f"{safe_filename(sel.text, 'query')}.ply")
                if export_ply is not None else None
            )
        report = QueryReport(
            run=loaded.run.path,
            language_source=loaded.instances.language_source,
            selections=list(selections),
            labelled_gaussians=self.labelled_counts([s.text for s in selections])
            if selections else [],
            renders=renders,
            plys=plys,
            out=out_dir,
            text_side=self.side.describe(),
            aggregation=loaded.instances.header.get("aggregation"),
        )
        write_json(report.json_path, report.to_json())
        return report


def _clean(texts: list[str]) -> list[str]:
    clean = [t for t in (str(t).strip() for t in texts) if t]
    if not clean:
        raise ConfigError("give at least one text query, e.g. openins query RUN chair")
    return clean


__all__ = [
    "QueryConfig",
    "QueryEngine",
    "QueryReport",
    "pick_views",
    "selection_overlay",
]
