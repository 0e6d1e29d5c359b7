"""``openins eval RUN --protocol lerf``: LeRF-OVS 3D object selection of a run, scored in 2D.

LeRF protocol (METHOD §6 "LeRF selection", §7.2): for every text query of the scene (the
hard-coded LeRF-OVS list when the scene is one of the four, else the categories of the labels),
the query is encoded with the run's own language source, leaves are selected in 3D
(:func:`~openinsgaussian.query.select.select_leaves`, ``min_views`` = the run's
``query.min_views_select``), turned into a Gaussian mask and cleaned up per evaluation camera, as the
public renderer does: the selected Gaussians visible in that camera with scales < 0.1, nothing
below 100 of them, statistical outlier removal (threshold over all n*K squared KNN distances),
nothing below 10 left. Only those Gaussians are rendered on a white background; the predicted mask is ``alpha > 0.7``. Evaluation cameras are the
run's train and test frames whose names match the annotated frames. Each (frame, GT category)
pair gets an IoU (missing prediction = 0), summarised as mIoU, mAcc@0.25 and mAcc@0.5.

Writes ``RUN/metrics/lerf.json`` (with the seed, config hash, package version, device, language
source, text side, protocol name and compat switch) and one overlay per (query, frame) pair in
``RUN/renders/lerf/`` (TP green, FP red, FN blue over the frame's image), and returns an
:class:`~.result.EvalResult`. The queries are embedded by the run's text side (its prompt
template) or looked up by exact key in a ``text_features.json``; the best leaf is always taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.lerf import (
    LERF_QUERIES,
    LerfAnnotation,
    RasterMode,
    category_masks,
    frame_index,
    labels_digest,
    match_frames,
    read_lerf_labels,
)
from ..errors import DataError, RunError
from ..io import safe_filename, write_json
from .lerf import evaluate_lerf_frame, lerf_metrics, save_overlay
from .result import EvalResult
from .run import run_metadata

PROTOCOL_NAME = "lerf"
ALPHA_THRESHOLD = 0.7  # predicted mask = rendered alpha > this (METHOD §6 step 5)
MAX_SCALE = 0.1  # selection filter: every activated scale below this (METHOD §6 step 4)
MIN_COUNT = 100  # selection filter: fewer Gaussians render nothing (METHOD §6 step 4)


def _match_cameras(
    labels: dict[str, LerfAnnotation], frames: list[Any]
) -> tuple[dict[str, Any], str]:
    """``{annotated frame: scene frame}`` by file stem, else by trailing frame number.

    The number fallback lets annotations named ``frame_00002`` address scenes whose images are
    named ``000002``; it is used only when every annotated frame maps to exactly one camera.
    """
    by_name = {f.name: f for f in frames}
    try:
        return {a: by_name[n] for a, n in match_frames(labels, by_name).items()}, "stem"
    except DataError as stem_error:
        by_number: dict[int, list[Any]] = {}
        for f in frames:
            try:
                by_number.setdefault(frame_index(f.name), []).append(f)
            except DataError:
                continue
        out: dict[str, Any] = {}
        for a in labels:
            hits = by_number.get(frame_index(a), [])
            if len(hits) != 1:
                names = sorted(by_name)
                sample = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
                shown = ", ".join(list(labels)[:5]) + (" ..." if len(labels) > 5 else "")
                raise DataError(
                    next(iter(labels.values())).path,
                    f"annotated frames do not match the run's cameras ({stem_error.problem})",
                    f"annotated: {shown}; cameras ({len(names)}): {sample}",
                ) from None
            out[a] = hits[0]
        return out, "frame number"


def _gt_at_camera(masks: dict[str, np.ndarray], width: int, height: int) -> dict[str, np.ndarray]:
    """GT masks resized (nearest neighbour) to the camera's ``width x height``."""
    from PIL import Image

    out = {}
    for q, m in masks.items():
        img = Image.fromarray(m.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
        out[q] = np.asarray(img) > 127  # [H, W] bool
    return out


@torch.no_grad()
def _render_alpha(model: Any, idx: torch.Tensor, camera: Any, backend: str) -> np.ndarray:
    """``[H, W]`` float alpha of Gaussians ``idx`` rendered alone on a white background."""
    from ..render import render
    from ..splats.gaussians import num_sh_bases

    k = num_sh_bases(model.active_sh_degree)
    out = render(
        model.means[idx],
        model.quats[idx],
        model.scales[idx],
        model.opacities[idx],
        model.sh[idx, :k, :],
        camera,
        sh_degree=model.active_sh_degree,
        background=torch.ones(3, dtype=model.means.dtype, device=model.means.device),
        backend=backend,  # type: ignore[arg-type]
    )
    return out.alpha[0].detach().cpu().numpy()


def run_eval_lerf(
    run: Path,
    label_dir: Path,
    scene_name: str | None = None,
    compat: bool = False,
    raster_mode: RasterMode = "cv2",
    *,
    prompt_template: str | None = None,
    text_features: Path | None = None,
) -> EvalResult:
    """Evaluate ``run`` with the LeRF-OVS protocol; the metrics are also written to JSON.

    Args:
        run: run directory (after stage 3).
        label_dir: LangSplat's ``label/`` folder, the dataset root holding it, or a folder with the
            ``frame_*.json`` files of this scene.
        scene_name: LeRF scene (``figurines``, ``ramen``, ``teatime``, ``waldo_kitchen``) whose
            query list is used; default: the run's scene folder name. For other names the queries
            are the categories found in the labels.
        compat: reproduce the public selection's quirks (signed leaf-id test, zeroed rare
            leaves), METHOD §6.
        raster_mode: how GT polygons are rasterised (``cv2`` = OpenCV ``fillPoly``).
        prompt_template: CLIP prompt (default: the run's ``query.prompt_template``).
        text_features: score with this OpenGaussian ``text_features.json`` (exact keys).
    """
    from tqdm.auto import tqdm

    from ..query.select import filter_selection, gaussian_mask_for_leaves, select_leaves
    from ..query.text import text_side
    from ..run.directory import RunDir
    from ..train.finished import load_run

    rd = RunDir(run)
    if rd.path.is_dir() and not rd.instances.is_file():
        raise RunError(
            f"{rd.instances}: not found; the LeRF protocol needs the leaf language features of "
            "stage 3 (run `openins train` to the end)"
        )
    loaded = load_run(run)
    scene, model, inst, cfg = loaded.scene, loaded.model, loaded.instances, loaded.config
    name = scene_name or Path(scene.root).name
    try:
        labels = read_lerf_labels(label_dir, name)
    except DataError as e:
        raise DataError(
            e.path, f"no LeRF label files for scene {name!r}: {e.problem}", e.hint
        ) from None
    if not labels:
        raise DataError(label_dir, f"no frame_*.json label files for scene {name!r}")
    label_folder = next(iter(labels.values())).path.parent  # where the files were read
    frames = loaded.frames
    matched, matched_by = _match_cameras(labels, frames)
    queries = list(LERF_QUERIES.get(name, ()))
    if not queries:
        queries = list(dict.fromkeys(c for a in labels.values() for c in a.categories))

    # GT masks at the camera size (nearest-neighbour resize where the label size differs).
    gts: dict[str, dict[str, np.ndarray]] = {}
    resized: dict[str, dict[str, list[int]]] = {}
    for fr, ann in labels.items():
        cam = matched[fr].camera
        masks = category_masks(ann, raster_mode)
        if (ann.width, ann.height) != (cam.width, cam.height):
            masks = _gt_at_camera(masks, cam.width, cam.height)
            resized[fr] = {"label": [ann.width, ann.height], "camera": [cam.width, cam.height]}
        gts[fr] = masks

    side = text_side(
        inst.language_source, inst.dim, scene=scene, device=cfg.device,
        prompt_template=prompt_template or cfg.query.prompt_template, text_features=text_features,
    )
    text = side.encode(queries).float()  # [Q, D]
    leaf_feat = torch.from_numpy(inst.leaf_feat)  # [L, D]
    occu = torch.from_numpy(inst.occu_count)  # [L]
    leaf_ind = torch.from_numpy(inst.leaf_ind)  # [N]
    centers = torch.from_numpy(inst.leaf_centers)  # [L+1, 6]
    means, scales = model.means.detach().cpu(), model.scales.detach().cpu()
    qcfg = cfg.query

    from ..render.projection import visible_mask

    visible = {  # [N] bool per evaluation camera: screen radius > 0
        fr: visible_mask(model.means.detach(), model.quats.detach(), model.scales.detach(),
                         matched[fr].camera).cpu()
        for fr in labels
    }
    out_dir = loaded.run.render_dir("lerf")
    preds: dict[str, dict[str, np.ndarray | None]] = {fr: {} for fr in labels}
    selections: dict[str, dict] = {}
    overlays: list[str] = []
    images = {fr: matched[fr].load_rgb() for fr in labels}  # [H, W, 3] uint8
    for q, query in enumerate(
        tqdm(queries, desc="LeRF queries", unit="query", disable=not cfg.progress, leave=False)
    ):
        leaves = select_leaves(
            text[q],
            leaf_feat,
            occu,
            centers,
            inst.k2,
            min_views=qcfg.min_views_select,
            top_k=qcfg.top_k,
            center_dist=qcfg.center_dist,
            compat=compat,
        )
        selected = gaussian_mask_for_leaves(leaf_ind, leaves)  # [N]
        rendered: dict[str, int] = {}
        for fr, gt in gts.items():
            kept = filter_selection(
                means,
                scales,
                selected,
                MAX_SCALE,
                MIN_COUNT,
                visible=visible[fr],
                outlier_rule=qcfg.outlier_rule,
                min_after=qcfg.min_after_filter,
            )  # [N], this camera's clean-up
            idx = kept.nonzero().flatten().to(model.means.device)  # [S]
            rendered[fr] = int(idx.numel())
            if idx.numel() == 0:
                pred = None  # nothing survived the filter: IoU 0 for every pair
            else:
                alpha = _render_alpha(model, idx, matched[fr].camera, cfg.backend)
                pred = alpha > ALPHA_THRESHOLD  # [H, W] bool
            preds[fr][query] = pred
            if query in gt:
                stem = f"{safe_filename(query, 'query')}__{safe_filename(fr, 'view')}"
                p = out_dir / f"{stem}.png"
                overlays.append(str(save_overlay(images[fr], pred, gt[query], p)))
        selections[query] = {
            "leaves": [int(x) for x in leaves.tolist()],
            "selected_gaussians": int(selected.sum()),
            "n_gaussians": max(rendered.values(), default=0),
            "rendered_per_frame": rendered,
        }

    ious: dict[tuple[str, str], float] = {}
    for fr, gt in gts.items():
        for query, iou in evaluate_lerf_frame(preds[fr], gt, frame=fr).items():
            ious[(fr, query)] = iou
    result = lerf_metrics(ious)
    result.update(
        {
            **run_metadata(loaded, compat, side),
            "scene_name": name,
            "labels": str(label_dir),
            "labels_folder": str(label_folder),
            "labels_digest": labels_digest(label_folder),
            "protocol": PROTOCOL_NAME,
            "metric_protocol": result["protocol"],
            "min_views": qcfg.min_views_select,
            "alpha_threshold": ALPHA_THRESHOLD,
            "max_scale": MAX_SCALE,
            "min_count": MIN_COUNT,
            "outlier_rule": qcfg.outlier_rule,
            "min_after_filter": qcfg.min_after_filter,
            "empty_union_iou": 0.0,
            "raster_mode": raster_mode,
            "queries_from": "LERF_QUERIES" if name in LERF_QUERIES else "labels",
            "query_list": queries,
            "frames_matched_by": matched_by,
            "frame_cameras": {fr: f.name for fr, f in matched.items()},
            "gt_resized": resized,
            "selections": selections,
            "overlays": overlays,
            "preset": cfg.preset,
        }
    )
    metrics = loaded.run.metrics_path("lerf")
    write_json(metrics, result)
    summary: dict[str, dict[str, float | int | None]] = {
        q: {
            "miou": r["iou"],
            "macc@0.25": r.get("macc@0.25"),
            "macc@0.5": r.get("macc@0.5"),
            "pairs": r["pairs"],
            "n_gaussians": selections.get(q, {}).get("n_gaussians", 0),
        }
        for q, r in result["per_query"].items()
    }
    summary["scene"] = {
        "miou": result["miou"],
        "macc@0.25": result.get("macc@0.25"),
        "macc@0.5": result.get("macc@0.5"),
        "pairs": result["pairs"],
    }
    return EvalResult(
        protocol="lerf",
        run=loaded.run.path,
        scene=name,
        metrics_path=metrics,
        language_source=inst.language_source,
        compat=compat,
        summary=summary,
        metrics=result,
        overlays=out_dir,
    )


__all__ = ["run_eval_lerf"]
