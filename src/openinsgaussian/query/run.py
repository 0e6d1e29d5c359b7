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
from typing import Any

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
    compat: bool = False
    """Reproduce the public code's quirks (signed leaf-id test, zeroed rare leaves)."""


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
    for col in ("query", "best leaf", "score", "leaves", "#Gaussians"):
        table.add_column(col, justify="left" if col == "query" else "right")
    for r in rows:
        best = "-" if r["best_leaf"] is None else str(r["best_leaf"])
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        table.add_row(r["query"], best, score, str(len(r["leaves"])), str(r["n_gaussians"]))
    Console().print(table)


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
) -> dict:
    """Answer text ``queries`` on a finished run; print a table, write renders and ``query.json``.

    Args:
        run: run directory (after stage 3).
        queries: text queries, e.g. ``["chair", "table"]``.
        views: how many views to render each selection from (test views when the scene has them).
        out: folder for the renders and ``query.json`` (default ``RUN/renders/query``).
        compat: reproduce the public code's selection quirks (None: the config's value).
        config: selection settings (default: the run's ``query`` config section).

    Returns:
        ``{"run", "language_source", "queries": [{"query", "best_leaf", "score" (cosine),
        "leaves" (selected), "n_gaussians" (selected), "labelled_gaussians" (argmax label among
        the queries), "renders"}, ...], "out"}``.
    """
    from ..query.relevance import label_gaussians, leaf_relevance
    from ..query.select import filter_selection, gaussian_mask_for_leaves, select_leaves
    from ..train.pipeline import load_run

    queries = [q for q in (str(q).strip() for q in queries) if q]
    if not queries:
        raise ConfigError("give at least one text query, e.g. openins query RUN chair")
    loaded = load_run(run)
    cfg = config or loaded.config.query
    if compat is not None:
        cfg = replace(cfg, compat=compat)
    inst, model = loaded.instances, loaded.model
    if inst.num_gaussians != len(model):
        raise DataError(
            loaded.run.instances,
            f"holds leaf ids for {inst.num_gaussians} Gaussians but the model has {len(model)}",
            "re-run stage 3",
        )
    encode = text_encoder(inst.language_source, inst.dim, loaded.scene, loaded.config.device)
    text = encode(queries).float()  # [Q,D]
    leaf_feat = torch.from_numpy(inst.leaf_feat)  # [L,D]
    occu = torch.from_numpy(inst.occu_count)  # [L]
    leaf_ind = torch.from_numpy(inst.leaf_ind)  # [N]
    centers = torch.from_numpy(inst.leaf_centers)  # [L+1,6]
    rel = leaf_relevance(text, leaf_feat)  # [Q,L]
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
        leaves = select_leaves(
            text[q],
            leaf_feat,
            occu,
            centers,
            inst.k2,
            min_views=cfg.min_views_select,
            top_k=cfg.top_k,
            center_dist=cfg.center_dist,
            compat=cfg.compat,
        )
        mask = gaussian_mask_for_leaves(leaf_ind, leaves)  # [N]
        if cfg.filter:
            mask = filter_selection(means, scales, mask, cfg.max_scale, cfg.min_count)
        best = int(leaves[0]) if leaves.numel() else None
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
                "best_leaf": best,
                "score": float(rel[q, best]) if best is not None else None,
                "leaves": [int(x) for x in leaves.tolist()],
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


__all__ = ["QueryConfig", "run_query", "selection_overlay", "text_encoder"]
