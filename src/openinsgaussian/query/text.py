"""The text side of a run: phrases -> ``[n, D]`` features comparable with its leaf features.

One function, :func:`text_side`, builds it for every command that embeds text (``openins eval``,
``openins query``, ``openins instances``, the viewer, :meth:`openinsgaussian.Run.query`), so they
all embed a phrase the same way:

* ``clip:<model>:<pretrained>[...]`` runs: open_clip's text tower on
  ``prompt_template.format(phrase)``; the template defaults to
  :data:`~openinsgaussian.run.query_config.DEFAULT_PROMPT_TEMPLATE` (``"a photo of a {}."``),
  also the default of ``openins encode-text``;
* ``oracle`` runs: the class vector of the phrase (:class:`~openinsgaussian.perception.oracle.
  OracleLanguage`), the phrase taken as is;
* ``text_features=FILE``: an OpenGaussian-format ``text_features.json`` (phrase -> list of
  floats) used as is: each phrase is looked up by its exact key, a missing key or a dimension
  that differs from the leaf features is an error naming the file.

Absent objects: :meth:`TextSide.in_vocabulary` is the oracle's test (a phrase outside the scene's
classes is not there); for CLIP-like sides :meth:`TextSide.canonical` gives LERF's canonical
phrases for the relevancy test.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, DataError, ModelLoadError
from ..run.query_config import DEFAULT_PROMPT_TEMPLATE
from .relevance import CANONICAL_PHRASES


def check_prompt_template(template: str) -> str:
    """``template`` when it holds exactly one ``{}`` and formats; ConfigError otherwise."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ConfigError(
            f"prompt template {template!r} must contain exactly one {{}} for the phrase, "
            f"e.g. {DEFAULT_PROMPT_TEMPLATE!r} or '{{}}'"
        )
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError) as e:
        raise ConfigError(
            f"prompt template {template!r} does not format ({e}); escape literal braces as {{{{ }}}}"
        ) from None
    return template


class TextSide:
    """Phrases -> features for one run (see the module docstring). Subclasses set the fields."""

    source: str  # "clip:<model>:<pretrained>", "oracle", "file:<path>"
    prompt_template: str  # the configured template
    template_applied: bool  # False: phrases are taken as is (oracle, text-features files)
    dim: int
    text_features: Path | None = None

    def encode(self, phrases: Sequence[str]) -> Tensor:
        """``[n, D]`` float32 features of ``phrases`` (not necessarily normalised)."""
        raise NotImplementedError

    def canonical(self) -> Tensor | None:
        """``[C, D]`` features of :data:`~openinsgaussian.query.relevance.CANONICAL_PHRASES`, or
        None when this side cannot give them (a text-features file without those keys)."""
        return self.encode(list(CANONICAL_PHRASES))

    def in_vocabulary(self, phrase: str) -> bool | None:
        """Whether the scene can hold ``phrase`` (oracle: one of its classes); None: no such
        test, the relevancy decides."""
        return None

    @property
    def relevancy_calibrated(self) -> bool:
        """True when the canonical-phrase relevancy tells present from absent (CLIP-like)."""
        return True

    def describe(self) -> dict[str, Any]:
        """What every query / metrics JSON records about the text side."""
        return {
            "text_side": self.source,
            "prompt_template": self.prompt_template,
            "prompt_template_applied": self.template_applied,
            "text_features": None if self.text_features is None else str(self.text_features),
        }


class ClipTextSide(TextSide):
    """open_clip's text tower named by a ``clip:<model>:<pretrained>`` language source."""

    def __init__(self, language_source: str, dim: int, prompt_template: str, device: str) -> None:
        parts = str(language_source).split(":")
        if len(parts) < 3:
            raise ConfigError(
                f"language source {language_source!r} does not name a CLIP model "
                "(clip:<model>:<pretrained>)"
            )
        self.source = str(language_source)
        self.model_name, self.pretrained = parts[1], parts[2]
        self.prompt_template = check_prompt_template(prompt_template)
        self.template_applied = True
        self.dim = int(dim)
        self.device = device
        self._clip: Any = None
        self._canon: Tensor | None = None

    def encode(self, phrases: Sequence[str]) -> Tensor:
        if self._clip is None:
            from ..perception.clip_model import ClipModel

            self._clip = ClipModel(self.model_name, self.pretrained, device=self.device)
        feats = self._clip.encode_text(list(phrases), template=self.prompt_template)
        feats = feats.float().cpu()  # [n, D]
        if feats.shape[1] != self.dim:
            raise ModelLoadError(
                f"{self.source}: text features have {feats.shape[1]} dims, the leaves {self.dim}"
            )
        return feats

    def canonical(self) -> Tensor | None:
        if self._canon is None:
            self._canon = self.encode(list(CANONICAL_PHRASES))
        return self._canon


class OracleTextSide(TextSide):
    """The oracle's class vectors; a phrase outside the scene's classes is not in the scene."""

    def __init__(self, language_source: str, dim: int, scene: Any, prompt_template: str) -> None:
        if scene is None:
            raise ConfigError("the oracle text side needs the run's scene (its class names)")
        from ..data.classes import canonical_class_name
        from ..perception.oracle import OracleLanguage

        self.source = str(language_source)
        self.prompt_template = check_prompt_template(prompt_template)
        self.template_applied = False
        self.dim = int(dim)
        self.oracle = OracleLanguage(scene, dim=dim)
        self._canonical_name = canonical_class_name
        self.vocabulary = self.oracle.scene_vocabulary()

    def encode(self, phrases: Sequence[str]) -> Tensor:
        return self.oracle.encode_text(list(phrases)).float()

    def in_vocabulary(self, phrase: str) -> bool | None:
        return self._canonical_name(phrase) in self.vocabulary

    @property
    def relevancy_calibrated(self) -> bool:
        return False  # the generic phrases get arbitrary vectors


class FileTextSide(TextSide):
    """An OpenGaussian-format ``text_features.json``, each phrase looked up by its exact key."""

    def __init__(self, path: Path, dim: int, prompt_template: str) -> None:
        from .text_features import read_text_features

        self.text_features = Path(path)
        self.source = f"file:{self.text_features}"
        self.prompt_template = check_prompt_template(prompt_template)
        self.template_applied = False
        names, feats = read_text_features(self.text_features)
        if feats.shape[1] != dim:
            raise DataError(
                self.text_features,
                f"its features are {feats.shape[1]}-d but the run's leaf features are {dim}-d",
                "use the text features of the CLIP model the run's language features came from",
            )
        self.dim = int(dim)
        self.keys = names
        self._index = {n: i for i, n in enumerate(names)}
        self._feats = torch.from_numpy(feats)  # [K, D]

    def lookup(self, phrase: str) -> int:
        """Row of ``phrase`` in the file; DataError naming the file and the phrase if absent."""
        i = self._index.get(phrase)
        if i is None:
            close = difflib.get_close_matches(phrase, self.keys, n=3, cutoff=0.6)
            hint = f"the file has {len(self.keys)} phrases"
            hint += f"; close keys: {', '.join(map(repr, close))}" if close else (
                f", e.g. {', '.join(map(repr, self.keys[:5]))}"
            )
            raise DataError(self.text_features, f"no entry for the phrase {phrase!r}", hint)
        return i

    def encode(self, phrases: Sequence[str]) -> Tensor:
        if not phrases:
            return torch.zeros(0, self.dim)
        return self._feats[[self.lookup(p) for p in phrases]].float()

    def canonical(self) -> Tensor | None:
        if all(p in self._index for p in CANONICAL_PHRASES):
            return self.encode(list(CANONICAL_PHRASES))
        return None


def text_side(
    language_source: str,
    dim: int,
    *,
    scene: Any = None,
    device: str = "auto",
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    text_features: str | Path | None = None,
) -> TextSide:
    """The text side of a run whose leaves carry ``dim``-d features from ``language_source``.

    Args:
        language_source: the run's source (``instances.npz`` header): ``oracle`` (optionally
            with settings in parentheses) or ``clip:<model>:<pretrained>[:...]``.
        dim: leaf feature dimension D.
        scene: the run's scene (needed by the oracle).
        device: torch device of the CLIP text tower.
        prompt_template: CLIP prompt, ``{}`` standing for the phrase.
        text_features: score with this ``text_features.json`` instead (phrases looked up as is).
    """
    if text_features is not None:
        return FileTextSide(Path(text_features), dim, prompt_template)
    src = str(language_source)
    if src == "oracle" or src.startswith("oracle("):
        return OracleTextSide(src, dim, scene, prompt_template)
    if src.startswith("clip:"):
        return ClipTextSide(src, dim, prompt_template, device)
    raise ConfigError(
        f"unknown language source {src!r} in instances.npz; expected 'oracle' or 'clip:...'"
    )


__all__ = [
    "ClipTextSide",
    "FileTextSide",
    "OracleTextSide",
    "TextSide",
    "check_prompt_template",
    "text_side",
]
