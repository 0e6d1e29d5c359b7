"""The ``openins`` command: thin wiring from the command line to the package's functions.

Each subcommand is a function whose signature tyro turns into flags; the work lives in the
package modules, imported lazily so that ``openins --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from .errors import OpenInsError
from .perception.preprocess import PreprocessConfig

Preset = Literal["tiny", "small", "default"]


def synth(
    out: Path = Path("outputs/synthetic"),
    preset: Preset = "default",
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """Generate a procedural indoor room in the ScanNet (OpenGaussian) layout.

    Args:
        out: Parent folder; the scene is written to OUT/synth_<preset>_<seed>.
        preset: Size: tiny (unit tests), small, default (demo and benchmarks).
        seed: Random seed; the same seed gives the same files.
        overwrite: Regenerate even when a complete scene is already there.
    """
    from .data.synthetic import SynthConfig, generate_room

    root = generate_room(SynthConfig(out=out, preset=preset, seed=seed, overwrite=overwrite))
    print(f"scene written to {root}")


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
        print(json.dumps(summary, indent=2))
        return
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scene {summary['root']}", show_header=False)
    for key, value in summary.items():
        if key in ("root", "problems", "label_counts"):
            continue
        table.add_row(key, str(value))
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


def demo(out: Path = Path("outputs/demo"), seed: int = 0, preset: Preset = "default") -> None:
    """Run the main job end to end on the built-in synthetic room and print where the outputs are.

    Args:
        out: Output folder for the scene and the run.
        seed: Random seed of the room and of training.
        preset: Size of the synthetic room.
    """
    from .demo import run_demo

    run_demo(out=out, seed=seed, preset=preset)


def preprocess(cfg: Annotated["PreprocessConfig", tyro.conf.arg(name="")]) -> None:
    """Masks and per-mask language features for every image, cached in the LangSplat layout.

    Resumable: images whose cache entry exists are skipped.
    """
    from .perception.preprocess import run_preprocess

    out = run_preprocess(cfg)
    print(f"cache written to {out}")


def encode_text(
    phrases: Annotated[list[str], tyro.conf.Positional],
    out: Path = Path("text_features.json"),
    model: str = "convnext_base_w",
    pretrained: str = "laion2b_s13b_b82k_augreg",
    checkpoint: Path | None = None,
    template: str = "{}",
    device: str = "auto",
) -> None:
    """Write an OpenGaussian-compatible text_features.json for any list of phrases.

    Args:
        phrases: Phrases to embed, e.g. "chair" "red mug".
        out: Output JSON path.
        model: open_clip model name (ViT-B-16 for the OpenGaussian baseline).
        pretrained: open_clip pretrained tag (laion2b_s34b_b88k for ViT-B-16).
        checkpoint: Local checkpoint file instead of the pretrained tag (also OIG_CLIP_CHECKPOINT).
        template: Prompt template; "{}" embeds the bare phrase.
        device: auto, cpu or cuda.
    """
    from .query.text_features import encode_phrases, write_text_features

    feats = encode_phrases(phrases, model, pretrained, checkpoint, template, device)
    write_text_features(out, feats)
    print(f"{len(feats)} phrase(s), {len(next(iter(feats.values())))}-d, written to {out}")


COMMANDS = {
    "synth": synth,
    "info": info,
    "preprocess": preprocess,
    "encode-text": encode_text,
    "demo": demo,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``openins`` console script."""
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
