"""Text features for arbitrary phrases, in OpenGaussian's ``text_features.json`` layout.

The file maps each phrase to its L2-normalised embedding: ``{"chair": [0.01, ...], ...}``. The
public OpenGaussian/OpenInsGaussian code ships such files for a fixed list of 103 phrases; this
module writes one for any list, with the same CLIP model as the scene's language features, so
queries are never limited to a precomputed vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import write_json
from ..run.query_config import DEFAULT_PROMPT_TEMPLATE


def encode_phrases(phrases: list[str], model: str, pretrained: str, checkpoint: Path | None = None,
                   template: str = DEFAULT_PROMPT_TEMPLATE,
                   device: str = "auto") -> dict[str, list[float]]:
    """Embed ``phrases`` with the open_clip text tower; returns ``{phrase: [D floats]}``.

    ``template`` is the prompt of the text side (the default is the one ``openins eval`` and
    ``openins query`` use, so a file written here scores exactly as those commands do).
    """
    from ..perception import resolve_device
    from ..perception.clip_model import ClipModel
    from .text import check_prompt_template

    check_prompt_template(template)

    clean = [p.strip() for p in phrases if p.strip()]
    if not clean:
        raise DataError(None, "no phrases given", "pass at least one phrase")
    clip = ClipModel(model=model, pretrained=pretrained, checkpoint=checkpoint, device=resolve_device(device))
    feats = clip.encode_text(clean, template=template).cpu().numpy().astype(np.float32)  # [n, D]
    return {p: f.tolist() for p, f in zip(clean, feats)}


def write_text_features(path: Path, features: dict[str, list[float]]) -> Path:
    """Write ``features`` atomically; the JSON loads in OpenGaussian's ``text_features.json`` reader."""
    write_json(path, features, indent=None)
    return path


def read_text_features(path: Path) -> tuple[list[str], np.ndarray]:
    """``(phrases, [n, D] float32)`` from a ``text_features.json`` written here or by OpenGaussian."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(path, "text feature file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(path, "expected a non-empty object mapping phrases to feature lists")
    names = list(data)
    dims = {len(v) if isinstance(v, list) else -1 for v in data.values()}
    if len(dims) != 1 or -1 in dims:
        raise DataError(path, f"feature lists must all have one length, found {sorted(dims)}")
    return names, np.asarray([data[n] for n in names], dtype=np.float32)
