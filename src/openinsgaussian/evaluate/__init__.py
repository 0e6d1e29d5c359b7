"""Benchmark protocols and their metrics, per-scene JSON and plots."""

from .plots import plot_per_class_iou
from .scannet import (
    CLASS_LISTS,
    NYU40_NAMES,
    SCANNET10,
    SCANNET15,
    SCANNET19,
    ClassList,
    canonical_class_name,
    evaluate_scannet,
    mean_over_scenes,
    remap_labels,
    scannet_metrics,
)

__all__ = [
    "CLASS_LISTS",
    "NYU40_NAMES",
    "SCANNET10",
    "SCANNET15",
    "SCANNET19",
    "ClassList",
    "canonical_class_name",
    "evaluate_scannet",
    "mean_over_scenes",
    "plot_per_class_iou",
    "remap_labels",
    "scannet_metrics",
]
