"""Fixtures: tiny randomly initialised CLIP / SAM models that go through the real loading code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from perception_fixtures import TINY_CONFIGS, TINY_CONVNEXT, tiny_sam

from openinsgaussian.perception.tvcompat import import_open_clip, import_segment_anything


@pytest.fixture(scope="session")
def tiny_clip_configs(tmp_path_factory) -> list[str]:
    """Register the tiny open_clip configs (once per session)."""
    oc = import_open_clip()
    d = tmp_path_factory.mktemp("open_clip_configs")
    for name, cfg in TINY_CONFIGS.items():
        (d / f"{name}.json").write_text(json.dumps(cfg))
    oc.add_model_config(d)
    return list(TINY_CONFIGS)


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tiny_clip_configs, tmp_path_factory) -> Path:
    """A randomly initialised tiny ConvNeXt CLIP state dict on disk."""
    oc = import_open_clip()
    torch.manual_seed(0)
    model = oc.create_model(TINY_CONVNEXT, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "tiny_convnext.pt"
    torch.save(model.state_dict(), path)
    return path


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
