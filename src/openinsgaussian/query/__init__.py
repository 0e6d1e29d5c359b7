"""Text queries: relevance of every leaf, per-Gaussian labels, selections and the inventory.

Modules: ``relevance`` (cosine and canonical-phrase relevancy, per-Gaussian labels), ``select``
(leaf choice and the LeRF clean-up), ``text`` (the one text side: prompt template, oracle,
``text_features.json``), ``selection`` (one query -> :class:`Selection`, the found test),
``geometry`` (inliers, axis-aligned and oriented boxes), ``inventory`` (:class:`Instance` and
labels), ``run`` (:class:`QueryEngine` and the ``openins query`` job), ``text_features`` (the
OpenGaussian ``text_features.json`` file).
"""

from .relevance import label_gaussians, leaf_classes, leaf_relevance
from .select import filter_selection, gaussian_mask_for_leaves, select_leaves

__all__ = [
    "filter_selection",
    "gaussian_mask_for_leaves",
    "label_gaussians",
    "leaf_classes",
    "leaf_relevance",
    "select_leaves",
]
