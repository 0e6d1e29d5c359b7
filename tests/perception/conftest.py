"""Fixtures: tiny randomly initialised CLIP / SAM models that go through the real loading code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.perception.perception_fixtures import TINY_CONFIGS, TINY_CONVNEXT, tiny_sam

from openinsgaussian.perception.tvcompat import import_open_clip, import_segment_anything  # noqa: F401


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_checkpoint):
    """The tiny ConvNeXt CLIP loaded from its checkpoint file through :class:`ClipModel`."""
    from openinsgaussian.perception.clip_model import ClipModel

    return ClipModel(TINY_CONVNEXT, pretrained="random-test", checkpoint=tiny_clip_checkpoint, device="cpu")


@pytest.fixture
def tiny_sam_registry(monkeypatch):
    """Replace segment-anything's ``vit_b`` builder by the tiny SAM for one test."""
    sa = import_segment_anything()
    monkeypatch.setitem(sa.sam_model_registry, "vit_b", tiny_sam)
    return sa.sam_model_registry
