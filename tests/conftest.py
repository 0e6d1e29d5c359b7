"""Shared fixtures: CPU always, CUDA when present; real data from ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
