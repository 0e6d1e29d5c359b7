"""Text queries: relevance of every leaf, per-Gaussian labels, selected Gaussians."""

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
