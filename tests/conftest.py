"""Shared fixtures: CPU always, CUDA when present; real data from ../shared/data when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see the package __init__)

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OIG_SHARED_DATA", REPO.parent / "shared" / "data"))

# Keep the suite predictable on small CI machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def lego_dir(shared_data: Path) -> Path:
    p = shared_data / "nerf_synthetic_lego_400"
    if not (p / "transforms_train.json").is_file():
        pytest.skip(f"lego scene not found at {p}")
    return p


@pytest.fixture
def lerf_labels_dir(shared_data: Path) -> Path:
    p = shared_data / "lerf_ovs_labels"
    if not p.is_dir():
        pytest.skip(f"LeRF-OVS labels not found at {p}")
    return p


@pytest.fixture(scope="session")
def tiny_clip_configs(tmp_path_factory) -> list[str]:
    """Register the tiny open_clip configs (once per session)."""
    from openinsgaussian.perception.tvcompat import import_open_clip

    from tests.perception.perception_fixtures import TINY_CONFIGS, TINY_CONVNEXT

    oc = import_open_clip()
    d = tmp_path_factory.mktemp("open_clip_configs")
    for name, cfg in TINY_CONFIGS.items():
        (d / f"{name}.json").write_text(json.dumps(cfg))
    oc.add_model_config(d)
    return list(TINY_CONFIGS)


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tiny_clip_configs, tmp_path_factory) -> Path:
    """A randomly initialised tiny ConvNeXt CLIP state dict on disk."""
    from openinsgaussian.perception.tvcompat import import_open_clip

    from tests.perception.perception_fixtures import TINY_CONFIGS, TINY_CONVNEXT

    oc = import_open_clip()
    torch.manual_seed(0)
    model = oc.create_model(TINY_CONVNEXT, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "tiny_convnext.pt"
    torch.save(model.state_dict(), path)
    return path
