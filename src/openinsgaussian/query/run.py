"""``openins query RUN "chair" "table"``: text -> leaves -> Gaussians, printed and rendered.

Loads a finished run (``instances.npz`` and the newest Gaussians), encodes the queries with the
run's own language source (the ``oracle`` class vectors, or the CLIP text tower named in the
header), then for every query:

* the per-leaf relevance (cosine) and the LeRF-style selection of leaves
  (:func:`openinsgaussian.query.select.select_leaves`, optional scale / outlier filter);
* the per-Gaussian labels among the given queries
  (:func:`openinsgaussian.query.relevance.label_gaussians`: every Gaussian of a leaf seen in
  enough views takes the query its leaf matches best, so with a few queries the whole room is
  spread over them; the count per query is ``labelled_gaussians``);
* renders of the selection from a few views: the selected Gaussians in their colours over a
  dimmed grey render of the whole scene, ``<out>/<query>__<view>.png`` (default
  ``RUN/renders/query/``), plus ``query.json`` with the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError, ModelLoadError
from ..io import save_image, write_json

TextEncoder = Callable[[list[str]], Tensor]


@dataclass
class QueryConfig:
    """Text-query defaults of a run (METHOD §6)."""

    min_views_label: int = 2
    """Per-Gaussian labels: leaves matched in fewer views are unlabelled (ScanNet protocol: 2)."""
    min_views_select: int = 5
    """Selection: leaves matched in fewer views are never selected (LeRF protocol: 5)."""
    top_k: int = 10
    """Selection: how many top-ranked leaves are considered for merging with the best one."""
    center_dist: float = 0.9
    """Selection: maximum fine-centre distance (6-d) of a merged leaf to the best one."""
    filter: bool = False
    """Apply the LeRF evaluation's clean-up (scales < max_scale, >= min_count, outliers)."""
    max_scale: float = 0.1
    """Filter: Gaussians with any scale above this are dropped."""
    min_count: int = 100
    """Filter: selections with fewer Gaussians render nothing."""
    outlier_rule: Literal["all_distances", "per_point"] = "all_distances"
    """Filter: the outlier threshold is mean + std of all n*K squared KNN distances (the public
    code) or of the n per-point means (standard statistical outlier removal)."""
    min_after_filter: int = 10
    """Filter: fewer Gaussians left after the outlier removal render nothing (the code: 10)."""
    compat: bool = False
    """Reproduce the public code's quirks (signed leaf-id test, zeroed rare leaves)."""
    min_relevancy: float = 0.0
    """Interactive use: select nothing when the best leaf's canonical-phrase relevancy is not
    above this (0: always take the best leaf, as the method and the LeRF protocol do; 0.5: the
    leaf must be closer to the text than to "object", "things", "stuff" and "texture"). The
    relevancy is LERF's CLIP-space test; with the oracle language source the generic phrases
    get arbitrary vectors, so there it does not tell present from absent objects."""


@dataclass
class TextSelection:
    """The answer to one text query: the leaves and Gaussians it selects and how well it matched."""

    leaves: Tensor  # [S] int64 selected leaf ids, the best first (empty: nothing selected)
    mask: Tensor  # [N] bool selected Gaussians
    best_leaf: int | None  # the best-scoring eligible leaf (even when rejected)
    score: float | None  # cosine of the best leaf (the method's relevance)
    relevancy: float | None  # canonical-phrase relevancy of the best leaf (None: not computed)
    rejected: bool = False  # a best leaf exists but its relevancy is not above ``min_relevancy``


def select_for_text(
    text_feat: Tensor,
    inst: Any,
    means: Tensor,
    scales: Tensor,
    cfg: QueryConfig,
    canon_feats: Tensor | None = None,
) -> TextSelection:
    """Selection of ``openins query`` (and the viewer) for one ``[D]`` text feature.

    :func:`~openinsgaussian.query.select.select_leaves` on the run's leaves (``inst``: an
    :class:`~openinsgaussian.train.instances_file.Instances`), their Gaussians, then the optional
    scale / outlier filter. With ``canon_feats`` ``[C, D]`` the best leaf's canonical-phrase
    relevancy is reported, and ``cfg.min_relevancy > 0`` rejects weak matches.
    """
    from .relevance import canonical_relevancy, leaf_relevance
    from .select import filter_selection, gaussian_mask_for_leaves, select_leaves

    if not 0.0 <= cfg.min_relevancy < 1.0:
        raise ConfigError(f"query min_relevancy must be in [0, 1), got {cfg.min_relevancy}")
    if cfg.min_relevancy > 0 and canon_feats is None:
        raise ConfigError("min_relevancy needs the canonical-phrase features (canon_feats)")

    leaf_feat = torch.from_numpy(inst.leaf_feat)  # [L, D]
    leaves = select_leaves(
        text_feat,
        leaf_feat,
        torch.from_numpy(inst.occu_count),
        torch.from_numpy(inst.leaf_centers),
        inst.k2,
        min_views=cfg.min_views_select,
        top_k=cfg.top_k,
        center_dist=cfg.center_dist,
        compat=cfg.compat,
    )
    leaf_ind = torch.from_numpy(inst.leaf_ind)  # [N]
    best = int(leaves[0]) if leaves.numel() else None
    score = relevancy = None
    if best is not None:
        t = text_feat.float().reshape(1, -1)  # [1, D]
        score = float(leaf_relevance(t, leaf_feat[best : best + 1])[0, 0])
        if canon_feats is not None:
            rel = canonical_relevancy(t, leaf_feat[best : best + 1], canon_feats.float())
            relevancy = float(rel[0, 0])
    rejected = relevancy is not None and cfg.min_relevancy > 0 and relevancy <= cfg.min_relevancy
    if rejected:
        leaves = leaves[:0]
    mask = gaussian_mask_for_leaves(leaf_ind, leaves)  # [N]
    if cfg.filter and not rejected:
        mask = filter_selection(
            means,
            scales,
            mask,
            cfg.max_scale,
            cfg.min_count,
            outlier_rule=cfg.outlier_rule,
            min_after=cfg.min_after_filter,
        )
    return TextSelection(leaves, mask, best, score, relevancy, rejected)


# ---- text encoders ------------------------------------------------------------------------------
def text_encoder(
    language_source: str, dim: int, scene: Any = None, device: str = "auto"
) -> TextEncoder:
    """The text side matching a run's language source.

    ``oracle`` (optionally with settings in parentheses): the class vectors of
    :class:`~openinsgaussian.perception.oracle.OracleLanguage` (needs the scene);
    ``clip:<model>:<pretrained>[:...]``: open_clip's text tower, loaded on first use.
    """
    src = str(language_source)
    if src == "oracle" or src.startswith("oracle("):
        if scene is None:
            raise ConfigError("the oracle text encoder needs the run's scene")
        from ..perception.oracle import OracleLanguage

        oracle = OracleLanguage(scene, dim=dim)
        return lambda texts: oracle.encode_text(list(texts))
    if src.startswith("clip:"):
        parts = src.split(":")
        if len(parts) < 3:
            raise ConfigError(
                f"language source {src!r} does not name a CLIP model (clip:<model>:<pretrained>)"
            )
        model_name, pretrained = parts[1], parts[2]
        state: dict[str, Any] = {}

        def encode(texts: list[str]) -> Tensor:
            if "clip" not in state:
                from ..perception.clip_model import ClipModel

                state["clip"] = ClipModel(model_name, pretrained, device=device)
            feats = state["clip"].encode_text(list(texts)).float().cpu()
            if feats.shape[1] != dim:
                raise ModelLoadError(
                    f"{src}: text features have {feats.shape[1]} dims, the leaves {dim}"
                )
            return feats

        return encode
    raise ConfigError(
        f"unknown language source {src!r} in instances.npz; expected 'oracle' or 'clip:...'"
    )


# ---- rendering ----------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "query"


@torch.no_grad()
def selection_overlay(
    model: Any, camera: Any, selected: Tensor, dim: float = 0.35, backend: str = "auto"
) -> np.ndarray:
    """``[H, W, 3]`` uint8: the selected Gaussians in colour over a dimmed grey full render."""
    from ..render import render
    from ..splats.gaussians import num_sh_bases

    k = num_sh_bases(model.active_sh_degree)
    sh = model.sh[:, :k, :]
    full = model.render(camera, backend=backend).image.clamp(0, 1)  # [3,H,W]
    grey = full.mean(0, keepdim=True).expand(3, -1, -1) * dim
    if bool(selected.any()):
        idx = selected.nonzero().flatten()
        out = render(
            model.means[idx],
            model.quats[idx],
            model.scales[idx],
            model.opacities[idx],
            sh[idx],
            camera,
            sh_degree=model.active_sh_degree,
            backend=backend,
        )
        img = out.image.clamp(0, 1) + (1.0 - out.alpha) * grey  # [3,H,W]
    else:
        img = grey
    return (img.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _pick_views(frames: list[Any], count: int) -> list[Any]:
    if count <= 0 or not frames:
        return []
    idx = sorted({int(round(x)) for x in np.linspace(0, len(frames) - 1, min(count, len(frames)))})
    return [frames[i] for i in idx]


def _print_table(rows: list[dict[str, Any]], source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"text queries (language source: {source})")
    for col in ("query", "best leaf", "score", "relevancy", "leaves", "#Gaussians"):
        table.add_column(col, justify="left" if col == "query" else "right")
    weak = False
    calibrated = not source.startswith("oracle")  # the oracle's generic phrases are arbitrary
    for r in rows:
        best = "-" if r["best_leaf"] is None else str(r["best_leaf"])
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        rel = "-" if r["relevancy"] is None else f"{r['relevancy']:.3f}"
        if calibrated and r["relevancy"] is not None and r["relevancy"] <= 0.5:
            rel += " (weak)"
            weak = True
        n = "no match" if r["rejected"] else str(r["n_gaussians"])
        table.add_row(r["query"], best, score, rel, str(len(r["leaves"])), n)
    Console().print(table)
    if weak:
        print(
            "weak: the best leaf is not closer to the text than to a generic phrase (object, "
            "things, stuff, texture); the object may be absent. --min-relevancy 0.5 selects "
            "nothing for such queries."
        )


# ---- entry point --------------------------------------------------------------------------------
def run_query(
    run: Path,
    queries: list[str],
    views: int = 3,
    out: Path | None = None,
    *,
    compat: bool | None = None,
    config: QueryConfig | None = None,
    print_table: bool = True,
    min_relevancy: float | None = None,
) -> dict:
    """Answer text ``queries`` on a finished run; print a table, write renders and ``query.json``.

    Args:
        run: run directory (after stage 3).
        queries: text queries, e.g. ``["chair", "table"]``.
        views: how many views to render each selection from (test views when the scene has them).
        out: folder for the renders and ``query.json`` (default ``RUN/renders/query``).
        compat: reproduce the public code's selection quirks (None: the config's value).
        config: selection settings (default: the run's ``query`` config section).
        min_relevancy: select nothing for queries whose best leaf's canonical-phrase relevancy
            is not above this (None: the config's value, 0 by default).

    Returns:
        ``{"run", "language_source", "queries": [{"query", "best_leaf", "score" (cosine),
        "relevancy" (canonical-phrase relevancy of the best leaf), "rejected" (below
        ``min_relevancy``: nothing selected), "leaves" (selected), "n_gaussians" (selected),
        "labelled_gaussians" (argmax label among the queries), "renders"}, ...], "out"}``.
    """
    from ..query.relevance import CANONICAL_PHRASES, label_gaussians
    from ..train.pipeline import load_run

    queries = [q for q in (str(q).strip() for q in queries) if q]
    if not queries:
        raise ConfigError("give at least one text query, e.g. openins query RUN chair")
    loaded = load_run(run)
    cfg = config or loaded.config.query
    if compat is not None:
        cfg = replace(cfg, compat=compat)
    if min_relevancy is not None:
        if not 0.0 <= min_relevancy < 1.0:
            raise ConfigError(f"min_relevancy must be in [0, 1), got {min_relevancy}")
        cfg = replace(cfg, min_relevancy=min_relevancy)
    inst, model = loaded.instances, loaded.model
    if inst.num_gaussians != len(model):
        raise DataError(
            loaded.run.instances,
            f"holds leaf ids for {inst.num_gaussians} Gaussians but the model has {len(model)}",
            "re-run stage 3",
        )
    encode = text_encoder(inst.language_source, inst.dim, loaded.scene, loaded.config.device)
    text = encode(queries).float()  # [Q,D]
    canon = encode(list(CANONICAL_PHRASES)).float()  # [C,D]
    leaf_feat = torch.from_numpy(inst.leaf_feat)  # [L,D]
    occu = torch.from_numpy(inst.occu_count)  # [L]
    leaf_ind = torch.from_numpy(inst.leaf_ind)  # [N]
    labels = label_gaussians(
        text, leaf_feat, occu, leaf_ind, cfg.min_views_label, cfg.compat
    )  # [N] 0..Q
    out_dir = Path(out) if out is not None else loaded.run.render_dir("query")
    frames = _pick_views(loaded.eval_frames, views)
    means, scales = model.means.detach().cpu(), model.scales.detach().cpu()
    rows = []
    from tqdm.auto import tqdm

    for q, name in enumerate(
        tqdm(queries, desc="queries", unit="query", disable=not loaded.config.progress, leave=False)
    ):
        sel = select_for_text(text[q], inst, means, scales, cfg, canon)
        mask = sel.mask  # [N]
        paths = []
        for f in frames:
            p = out_dir / f"{_safe(name)}__{_safe(f.name)}.png"
            save_image(
                p,
                selection_overlay(
                    model, f.camera, mask.to(model.device), backend=loaded.config.backend
                ),
            )
            paths.append(str(p))
        rows.append(
            {
                "query": name,
                "best_leaf": sel.best_leaf,
                "score": sel.score,
                "relevancy": sel.relevancy,
                "rejected": sel.rejected,
                "leaves": [int(x) for x in sel.leaves.tolist()],
                "n_gaussians": int(mask.sum()),
                "labelled_gaussians": int((labels == q + 1).sum()),
                "renders": paths,
            }
        )
    result = {
        "run": str(loaded.run.path),
        "language_source": inst.language_source,
        "aggregation": inst.header.get("aggregation"),
        "queries": rows,
        "out": str(out_dir),
    }
    write_json(out_dir / "query.json", result)
    if print_table:
        _print_table(rows, inst.language_source)
        print(f"renders and query.json in {out_dir}")
    return result


__all__ = [
    "QueryConfig",
    "TextSelection",
    "run_query",
    "select_for_text",
    "selection_overlay",
    "text_encoder",
]
