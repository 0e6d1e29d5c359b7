"""The text-query defaults a run saves in ``config.yml`` (section ``pipeline.query``).

They live here, beside the run directory, and not in :mod:`openinsgaussian.query`, because the
training config composes them (``PipelineConfig.query``) and ``train/`` must not import the
query layer above it. The query layer, the evaluation protocols and the viewer read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The one prompt template of the text side: ``openins eval``, ``openins query``, the viewer,
#: ``Run.query`` and ``openins encode-text`` embed ``template.format(phrase)`` with the CLIP text
#: tower (the phrase itself for the oracle source, whose vectors are keyed by class name).
DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."

#: Interactive default of :attr:`QueryConfig.min_relevancy`: a CLIP match counts as found when
#: the best leaf is closer to the query than to every canonical phrase ("object", "things",
#: "stuff", "texture"), i.e. LERF's pairwise-softmax relevancy is above one half.
DEFAULT_MIN_RELEVANCY = 0.5


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
    min_relevancy: float = DEFAULT_MIN_RELEVANCY
    """Interactive use (``openins query``, the viewer, ``Run.query``) with a CLIP text side: the
    query is not found (nothing selected) when the best leaf's canonical-phrase relevancy is not
    above this. 0.5: the leaf must be closer to the text than to "object", "things", "stuff"
    and "texture"; 0: always take the best leaf. With the oracle source the test is the scene's
    class vocabulary instead (its generic phrases get arbitrary vectors). The evaluation
    protocols ignore it and always take the best leaf, as the published code does."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """Prompt of the CLIP text side, ``{}`` standing for the phrase; used by eval, query, the
    viewer and encode-text alike (the oracle source and ``--text-features`` files take the
    phrase as is)."""


__all__ = ["DEFAULT_MIN_RELEVANCY", "DEFAULT_PROMPT_TEMPLATE", "QueryConfig"]
