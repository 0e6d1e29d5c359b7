"""The ``openins`` command: thin wiring from the command line to the package's functions.

Each subcommand is a function whose signature tyro turns into flags; the work lives in the
package modules, imported lazily so that ``openins --help`` stays fast.
"""

from __future__ import annotations

import json as _json
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from .errors import OpenInsError
from .perception.preprocess import PreprocessConfig
from .run.query_config import DEFAULT_PROMPT_TEMPLATE

Preset = Literal["tiny", "small", "default"]


def synth(
    out: Path = Path("outputs/synthetic"),
    preset: Preset = "default",
    seed: int = 0,
    overwrite: bool = False,
    layout: Literal["scannet", "lerf"] = "scannet",
    label_frames: int = 4,
) -> None:
    """Generate a procedural indoor room in the ScanNet (OpenGaussian) or LeRF-OVS layout.

    Args:
        out: Parent folder; the scene is written to OUT/synth_<preset>_<seed> (ScanNet layout);
            with --layout lerf also to OUT/lerf_ovs/synth_<preset>_<seed> (COLMAP) with its
            annotations in OUT/lerf_ovs/label/synth_<preset>_<seed>/.
        preset: Size: tiny (unit tests), small, default (demo and benchmarks).
        seed: Random seed; the same seed gives the same files.
        overwrite: Regenerate even when a complete scene is already there.
        layout: scannet, or lerf (COLMAP + LangSplat-style polygon annotations): then e.g.
            `openins benchmark lerf --root OUT/lerf_ovs --scenes synth_<preset>_<seed> --set
            inputs.masks=ground_truth inputs.language=oracle` runs without SAM / CLIP weights.
        label_frames: LeRF layout: number of annotated frames.
    """
    from .data.synthetic import SynthConfig, generate_room

    root = generate_room(SynthConfig(out=out, preset=preset, seed=seed, overwrite=overwrite))
    print(f"scene written to {root}")
    if layout == "lerf":
        from .data.synthetic_lerf import LerfLayoutConfig, write_lerf_layout

        cfg = LerfLayoutConfig(label_frames=label_frames)
        dest = write_lerf_layout(root, out / "lerf_ovs", cfg=cfg, overwrite=overwrite)
        labels = dest.parent / "label" / dest.name
        print(f"LeRF-OVS layout written to {dest} (annotations in {labels})")


def info(
    data: Annotated[Path, tyro.conf.Positional],
    format: Literal["auto", "colmap", "scannet", "transforms"] = "auto",
    downscale: float = 1.0,
    json_output: bool = False,
) -> None:
    """Print what a reader finds in a scene folder: frames, resolution, points, labels, problems.

    Args:
        data: Scene folder (COLMAP, ScanNet/OpenGaussian layout, or Blender/nerfstudio transforms).
        format: Reader to use; auto detects it from the folder contents.
        downscale: Image downscale factor applied to the cameras.
        json_output: Print the summary as JSON instead of a table.
    """
    from .data.load import load_scene

    scene = load_scene(data, format=format, downscale=downscale)
    summary = scene.summary()
    if json_output:
        print(_json.dumps(summary, indent=2))
        return
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scene {summary['root']}", show_header=False)
    for key, value in summary.items():
        if key in ("root", "problems", "label_counts", "distortion_coefficients",
                   "images_undistorted"):
            continue
        table.add_row(key, str(value))
    names = {"opencv": "k1 k2 p1 p2 k3 k4 k5 k6", "fisheye": "k1 k2 k3 k4"}
    for g in summary.get("distortion_coefficients") or []:
        coeffs = " ".join(f"{c:.6g}" for c in g["coeffs"])
        table.add_row(f"lens {g['model']} ({names[g['model']]})", f"{coeffs}  [{g['frames']} frames]")
    if summary.get("distortion_coefficients"):
        table.add_row("undistortion", "openins train / preprocess undistort these images on load "
                      "(OpenCV, cached in <scene>/undistorted/); --set undistort=false "
                      "(train) or --no-undistort (preprocess) keeps them")
    if "label_counts" in summary:
        table.add_row("labels (NYU40 id: points)", ", ".join(f"{k}: {v}" for k, v in summary["label_counts"].items()))
    console = Console()
    console.print(table)
    problems = summary.get("problems") or []
    if problems:
        console.print(f"[yellow]{len(problems)} problem(s):[/yellow]")
        for p in problems:
            console.print(f"  - {p}")
    else:
        console.print("no problems found")


def demo(
    out: Path = Path("outputs/demo"),
    seed: int = 0,
    preset: Preset = "default",
    masks: Literal["ground_truth", "classical"] = "ground_truth",
) -> None:
    """Run the main job end to end on the built-in synthetic room and print where the outputs are.

    Args:
        out: Output folder for the scene and the run.
        seed: Random seed of the room and of training.
        preset: Size of the synthetic room.
        masks: Mask source: the room's ground-truth instances, or classical graph segmentation.
    """
    from .demo import run_demo

    _console().rule(f"openinsgaussian demo: synthetic room '{preset}', seed {seed}")
    res = run_demo(out=out, seed=seed, preset=preset, masks=masks)
    _print_demo(res)


def _print_demo(res) -> None:
    _print_eval(res.evaluation)
    if res.queries is not None:
        _print_query(res.queries)
    console = _console()
    console.print("[bold]where things are:[/bold]")
    for name, path in res.outputs.items():  # plain lines: a table would cut long paths
        print(f"  {name}: {path}")
    summary = ", ".join(
        f"{k}: mIoU {v['miou']:.3f} / mAcc {v['macc']:.3f}"
        for k, v in res.evaluation.summary.items()
        if v["miou"] is not None
    )
    times = ", ".join(
        f"{k} {v['seconds']:.0f}s" for k, v in res.stages.items() if not v.get("skipped")
    )
    console.print(
        f"[bold]ScanNet protocol ({res.evaluation.language_source} language):[/bold] {summary}"
    )
    console.print(
        f"wall time of this call {res.seconds:.0f}s (data {res.data_seconds:.0f}s, training "
        f"{res.train_seconds:.0f}s)"
        + (f"; stages run now: {times}" if times else "; every stage finished earlier")
    )
    print(f'next: openins query {res.run} "chair"   |   openins instances {res.run}   |   '
          f"openins view {res.run}  (web viewer)")


def preprocess(cfg: Annotated["PreprocessConfig", tyro.conf.arg(name="")]) -> None:
    """Masks and per-mask language features for every image, cached in the LangSplat layout.

    Resumable: images whose cache entry exists are skipped.
    """
    from .api import preprocess as preprocess_scene

    res = preprocess_scene(cfg.data, config=cfg)
    print(f"{res.images} image(s) ({res.processed} computed now), cache written to {res.cache}")


def encode_text(
    phrases: Annotated[list[str], tyro.conf.Positional],
    out: Path = Path("text_features.json"),
    model: str = "convnext_base_w",
    pretrained: str = "laion2b_s13b_b82k_augreg",
    checkpoint: Path | None = None,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    device: str = "auto",
) -> None:
    """Write an OpenGaussian-compatible text_features.json for any list of phrases.

    Args:
        phrases: Phrases to embed, e.g. "chair" "red mug".
        out: Output JSON path.
        model: open_clip model name (ViT-B-16 for the OpenGaussian baseline).
        pretrained: open_clip pretrained tag (laion2b_s34b_b88k for ViT-B-16).
        checkpoint: Local checkpoint file instead of the pretrained tag (also OIG_CLIP_CHECKPOINT).
        prompt_template: Prompt template, {} standing for the phrase; the default is the one
            openins eval / query / view use, so the file scores as they do ("{}": bare phrase).
        device: auto, cpu or cuda.
    """
    from .query.text_features import encode_phrases, write_text_features

    feats = encode_phrases(phrases, model, pretrained, checkpoint, prompt_template, device)
    write_text_features(out, feats)
    print(f"{len(feats)} phrase(s), {len(next(iter(feats.values())))}-d, written to {out}")


def _parse_overrides(items: tuple[str, ...]) -> dict:
    """``("stage1.iterations=100", ...)`` -> ``{"stage1.iterations": 100}`` (YAML-typed values)."""
    import yaml

    from .errors import ConfigError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. stage1.iterations=100), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def train(
    data: Annotated[Path, tyro.conf.Positional],
    run: Path = Path("outputs/run"),
    preset: Literal["synthetic", "scannet", "lerf", "capture", "blender"] = "synthetic",
    resume: bool = False,
    stage0_only: bool = False,
    force: bool = False,
    seed: int = 0,
    undistort: bool = True,
    set: tuple[str, ...] = (),
) -> None:
    """Train a scene: preprocessing (if its cache is missing), then stages 0-3.

    Args:
        data: Scene folder.
        run: Run directory (config.yml, checkpoints/, metrics/, renders/, point_cloud.ply, instances.npz).
        preset: scannet / lerf reproduce the published code (its schedules, hyper-parameters and
            behaviours); capture is for your own captures (LeRF schedule, our fixes on);
            synthetic is the built-in room on a CPU schedule; blender trains stage 0 only
            (README, "Presets").
        resume: Continue an interrupted run: finished stages are skipped, the interrupted one
            continues from its newest checkpoint.
        stage0_only: Train only the photometric 3DGS stage.
        force: Re-run the selected stages even when finished.
        seed: Random seed.
        undistort: Undistort images of cameras with lens distortion (OpenCV, cached beside the
            scene); --no-undistort trains on the distorted images with the ideal pinhole (a
            resumed run keeps its saved setting).
        set: Config overrides as KEY=VALUE, e.g. --set stage1.iterations=200 stage0.iterations=500.
    """
    overrides = _parse_overrides(set)
    if preset == "blender":
        from .train.stage0 import run_train

        if set:
            overrides = {k.removeprefix("stage0."): v for k, v in overrides.items()}
        run_train(data, run, "blender", resume, overrides={"seed": seed, **overrides},
                  undistort=undistort)
        print(f"run written to {run}")
        return
    from .api import train as train_scene

    res = train_scene(data, run, preset, resume=resume,
                      stages=["stage0"] if stage0_only else None, force=force,
                      **{"seed": seed, **({} if undistort else {"undistort": False}), **overrides})
    print(f"run written to {res.run}" + ("" if res.finished else " (stage 3 not run yet)"))


def query(
    run: Annotated[Path, tyro.conf.Positional],
    queries: Annotated[tuple[str, ...], tyro.conf.Positional],
    views: int = 3,
    out: Path | None = None,
    export_ply: Path | None = None,
    json: bool = False,
    compat: bool = False,
    min_relevancy: float | None = None,
    prompt_template: str | None = None,
    text_features: Path | None = None,
) -> None:
    """Find the Gaussians matching each text query; print the matches and render them.

    Writes OUT/query.json (every selection: found, Gaussian ids, leaves, scores, 3D boxes).

    Args:
        run: Trained run directory.
        queries: Any text, e.g. "chair" "red mug".
        views: Number of views to render each selection from.
        out: Render folder (default RUN/renders/query).
        export_ply: Folder for one PLY per query holding only the selected Gaussians.
        json: Print the selections as JSON (machine readable) instead of the table.
        compat: Reproduce the public code's selection quirks (signed leaf-id test).
        min_relevancy: CLIP runs: a query is not found (nothing selected) when the best leaf's
            relevancy against generic phrases (object, things, stuff, texture) is not above
            this. Default: the run's query.min_relevancy (0.5; 0: always the best leaf).
            Oracle runs: a phrase outside the scene's classes is not found.
        prompt_template: CLIP prompt, {} standing for the phrase (default: the run's,
            "a photo of a {}.").
        text_features: Score with this OpenGaussian text_features.json (phrase -> features)
            instead of the run's text encoder; each query must be one of its keys.
    """
    from .api import open_run

    report = open_run(run).query_report(
        list(queries), views=views, out=out, export_ply=export_ply, text_features=text_features,
        prompt_template=prompt_template, min_relevancy=min_relevancy, compat=compat or None,
    )
    if json:
        print(_json.dumps(report.to_json(), indent=2))
        return
    _print_query(report)
    print(f"renders and query.json in {report.out}")
    if export_ply is not None:
        print(f"PLYs of the selections in {export_ply}")


def _print_query(report) -> None:
    from rich.table import Table

    side = report.text_side
    title = f"text queries (language source: {report.language_source}"
    if side.get("text_features"):
        title += f", text features {side['text_features']}"
    elif side.get("prompt_template_applied"):
        title += f", prompt {side['prompt_template']!r}"
    table = Table(title=title + ")")
    for col in ("query", "found", "best leaf", "score", "relevancy", "leaves", "#Gaussians",
                "box min .. max"):
        table.add_column(col, justify="left" if col in ("query", "box min .. max") else "right")
    for sel in report.selections:
        b = sel.bounds
        box = "-" if b is None else f"{_vec(b[0])} .. {_vec(b[1])}"
        table.add_row(
            sel.text, "yes" if sel.found else "no", _opt(sel.best_leaf), _num(sel.score),
            _num(sel.relevancy), str(len(sel.leaves)), str(sel.n_gaussians), box,
        )
    _console().print(table)
    for sel in report.selections:
        if not sel.found:
            print(f"{sel.text}: not found ({sel.reason})")


def instances(
    run: Annotated[Path, tyro.conf.Positional],
    vocab: str = "scannet19",
    k: int = 3,
    min_views: int | None = None,
    json: Path | None = None,
    prompt_template: str | None = None,
    text_features: Path | None = None,
) -> None:
    """The scene inventory: one row per instance (leaf) with its Gaussians, 3D box, top labels
    and the views it was matched in.

    Args:
        run: Trained run directory.
        vocab: Label vocabulary: scannet19, scannet15, scannet10, a text file (one phrase per
            line) or a text_features.json (its features used as is).
        k: Labels per instance.
        min_views: List leaves matched in at least this many views (default: the run's
            query.min_views_label).
        json: Also write the inventory to this JSON file.
        prompt_template: CLIP prompt of the vocabulary (default: the run's).
        text_features: Embed a phrase vocabulary with this text_features.json (exact keys).
    """
    from .api import open_run
    from .io import write_json

    r = open_run(run)
    items = r.instances(min_views, text_features=text_features, prompt_template=prompt_template)
    rows = [i.to_json(vocabulary=vocab, k=k) for i in items]
    if json is not None:
        side = r.text_side(text_features=text_features,
                           prompt_template=prompt_template).describe()
        write_json(json, {"run": str(r.path), "language_source": r.language_source,
                          "vocabulary": vocab, **side, "instances": rows})
    from rich.table import Table

    table = Table(title=f"instances of {r.path} ({len(rows)}; language source "
                        f"{r.language_source}, vocabulary {vocab})")
    for col in ("id", "#Gaussians", "box min .. max", f"top-{k} labels", "views"):
        table.add_column(col, justify="left" if col in ("box min .. max", f"top-{k} labels")
                         else "right")
    for row in rows:
        b = row["bounds"]
        box = "-" if b is None else f"{_vec(b[0])} .. {_vec(b[1])}"
        labels = ", ".join(f"{t} {s:.2f}" for t, s in row["labels"])
        table.add_row(str(row["id"]), str(row["n_gaussians"]), box, labels, str(row["n_views"]))
    _console().print(table)
    if json is not None:
        print(f"inventory written to {json}")


def evaluate(
    run: Annotated[Path, tyro.conf.Positional],
    protocol: Literal["scannet", "lerf"] = "scannet",
    compat: bool = False,
    labels: Path | None = None,
    scene_name: str | None = None,
    prompt_template: str | None = None,
    text_features: Path | None = None,
) -> None:
    """Evaluate a run with a benchmark protocol and write metrics/<protocol>.json and plots/overlays.

    Args:
        run: Trained run directory.
        protocol: scannet: per-point mIoU/mAcc for 19/15/10 classes; lerf: text selections rendered
            to masks vs the LeRF-OVS annotations (mIoU, mAcc@0.25, mAcc@0.5).
        compat: Reproduce the public evaluation quirks (METHOD §11.8).
        labels: LeRF: folder of frame_XXXXX.json annotations (label/<scene>/ or the scene's folder).
        scene_name: LeRF: scene name for the query list (default: the run's scene folder name).
        prompt_template: CLIP prompt, {} standing for the class name / query (default: the
            run's, "a photo of a {}."); recorded in the metrics JSON.
        text_features: Score with this OpenGaussian text_features.json as is (the public repos
            ship one per benchmark); ScanNet class names map to its keys ("showercurtain").
    """
    from .api import evaluate as evaluate_run

    res = evaluate_run(run, protocol, labels=labels, scene_name=scene_name, compat=compat,
                       prompt_template=prompt_template, text_features=text_features)
    _print_eval(res)
    print(f"metrics: {res.metrics_path}")
    if res.plot is not None:
        print(f"plot: {res.plot}")
    if res.overlays is not None:
        print(f"overlays: {res.overlays}")


def _print_eval(res) -> None:
    from rich.table import Table

    side = res.metrics.get("text_features") or (
        f"prompt {res.metrics.get('prompt_template')!r}"
        if res.metrics.get("prompt_template_applied") else None
    )
    title = (f"{'ScanNet' if res.protocol == 'scannet' else 'LeRF'} protocol, {res.scene} "
             f"({res.language_source}{', ' + side if side else ''}"
             f"{', compat' if res.compat else ''})")
    table = Table(title=title)
    if res.protocol == "scannet":
        for col in ("classes", "mIoU", "mAcc", "classes present"):
            table.add_column(col, justify="right")
        for name, r in res.summary.items():
            table.add_row(name, _num(r["miou"], 4), _num(r["macc"], 4),
                          str(r["classes_present"]))
    else:
        for col in ("query", "pairs", "#Gaussians", "mIoU", "mAcc@0.25", "mAcc@0.5"):
            table.add_column(col, justify="left" if col == "query" else "right")
        for q, r in res.summary.items():
            name = "[bold]scene[/bold]" if q == "scene" else q
            table.add_row(name, str(r["pairs"]), str(r.get("n_gaussians", "")),
                          _num(r["miou"], 4), _num(r["macc@0.25"], 4), _num(r["macc@0.5"], 4))
    _console().print(table)


def _console():
    from rich.console import Console

    return Console()


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _opt(v: object) -> str:
    return "-" if v is None else str(v)


def _vec(v) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in v) + ")"


def benchmark(
    dataset: Annotated[Literal["scannet", "lerf", "synthetic"], tyro.conf.Positional],
    root: Path | None = None,
    scenes: tuple[str, ...] = (),
    fast: bool = False,
    seed: int = 0,
    out: Path | None = None,
    labels: Path | None = None,
    set: tuple[str, ...] = (),
) -> None:
    """Preprocess, train and evaluate every scene of a benchmark; writes benchmark.json and .md.

    Resumable per scene and per stage. ScanNet and LeRF-OVS results are tabled beside the
    published numbers; synthetic results use the oracle language source.

    Args:
        dataset: scannet (the 10 scenes of the protocol, under --root), lerf (the 4 LeRF-OVS
            scenes under --root, annotations in ROOT/label/) or synthetic (a fixed suite of
            generated rooms with ground-truth and classical masks).
        root: Folder holding the scene folders (scannet, lerf; synthetic rooms are generated).
        scenes: Subset of scenes to run.
        fast: Much shorter schedules, for smoke runs.
        seed: Random seed.
        out: Output folder (default outputs/benchmark/<dataset>).
        labels: lerf: the annotations folder (LangSplat's label/; default ROOT/label).
        set: Config overrides for every scene as KEY=VALUE, e.g. --set threads=1.
    """
    from .evaluate.benchmark import run_benchmark

    run_benchmark(dataset, root, out or Path("outputs/benchmark") / dataset, scenes=list(scenes) or None,
                  fast=fast, seed=seed, overrides=_parse_overrides(set) or None, labels=labels,
                  command=_command())


def export(
    run: Annotated[Path, tyro.conf.Positional],
    format: Literal["ply"] = "ply",
    out: Path | None = None,
) -> None:
    """Export the trained Gaussians (Inria/gsplat PLY layout plus instance features and ids).

    Args:
        run: Trained run directory.
        format: Output format.
        out: Output file (default RUN/exports/point_cloud.ply).
    """
    from .train.stage0 import export_run

    path = export_run(run, format, out)
    print(f"exported to {path}")


def view(
    run: Annotated[Path, tyro.conf.Positional],
    port: int = 8080,
    host: str = "127.0.0.1",
    max_gaussians: int = 1_000_000,
    color_mode: Literal["rgb", "instance", "coarse"] = "instance",
    others: Literal["dim", "hide"] = "dim",
    cameras: bool = True,
    camera_images: bool = False,
    min_relevancy: float | None = None,
    prompt_template: str | None = None,
) -> None:
    """Open a trained run in the web viewer (extra `viewer`): splats coloured by instance, a text
    box to query, click to select an instance. Stops with Ctrl-C.

    Args:
        run: Run directory (any stage; the query box needs a finished run).
        port: Port of the viewer (open http://HOST:PORT in a browser).
        host: Address to listen on (0.0.0.0 to reach it from other machines).
        max_gaussians: Show at most this many Gaussians in the browser (a fixed subset);
            selections still use all of them.
        color_mode: Initial colouring: rgb, instance (leaf) or coarse (cluster).
        others: What happens to the Gaussians outside a selection: dim or hide.
        cameras: Show the training cameras.
        camera_images: Show each camera's image in its frustum.
        min_relevancy: Text queries select nothing below this relevancy (as openins query).
        prompt_template: CLIP prompt of text queries (default: the run's, as openins query).
    """
    from .viewer import ViewerConfig, serve

    serve(run, ViewerConfig(host=host, port=port, max_gaussians=max_gaussians,
                            color_mode=color_mode, others=others, show_cameras=cameras,
                            camera_images=camera_images, min_relevancy=min_relevancy,
                            prompt_template=prompt_template))


COMMANDS = {
    "synth": synth,
    "info": info,
    "preprocess": preprocess,
    "train": train,
    "query": query,
    "instances": instances,
    "eval": evaluate,
    "export": export,
    "benchmark": benchmark,
    "encode-text": encode_text,
    "view": view,
    "demo": demo,
}


_ARGS: list[str] = []  # this invocation's arguments, recorded in benchmark reports


def _command() -> str:
    """The command line of this invocation, e.g. ``openins benchmark synthetic --fast``."""
    import shlex

    return shlex.join(["openins", *_ARGS])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``openins`` console script."""
    _ARGS[:] = list(sys.argv[1:] if argv is None else argv)
    try:
        tyro.extras.subcommand_cli_from_dict(
            COMMANDS,
            prog="openins",
            description="openinsgaussian: open-vocabulary 3D instance segmentation with Gaussian Splatting.",
            args=argv,
        )
    except OpenInsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept and the run can be resumed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
