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


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory) -> Path:
    """The tiny seed-0 room trained through stage 3 on the tiny schedule, selections from 2 views.

    Shared by the query, viewer and LeRF-evaluation tests (one training for all); tests that
    change a run copy it first.
    """
    from openinsgaussian.data.synthetic import SynthConfig, generate_room
    from openinsgaussian.train.pipeline import run_pipeline

    from tests.tiny_schedule import TINY_PIPELINE

    old = torch.get_num_threads()
    room = generate_room(
        SynthConfig(out=tmp_path_factory.mktemp("data"), preset="tiny", seed=0, progress=False)
    )
    run = tmp_path_factory.mktemp("runs") / "run"
    overrides = {**TINY_PIPELINE, "stage0.eval": False, "query.min_views_select": 2}
    run_pipeline(room, run, "synthetic", **overrides)
    torch.set_num_threads(old)
    return run


@pytest.fixture(scope="session")
def clip_run(finished_tiny_run, tiny_clip_checkpoint, tmp_path_factory) -> dict:
    """A copy of the tiny run whose leaves carry features of the tiny random CLIP
    (language source ``clip:oig_test_convnext:random``; set OIG_CLIP_CHECKPOINT to
    ``checkpoint`` when using it). Leaf ``a`` holds the embedding of "a photo of a chair."
    computed by hand (tokenizer + text tower), leaf ``b`` that of the bare "chair", the others
    random unit vectors."""
    import shutil

    import numpy as np
    import torch.nn.functional as F

    from openinsgaussian.perception.clip_model import ClipModel
    from openinsgaussian.run.instances import load_instances, save_instances

    from tests.perception.perception_fixtures import TINY_CONVNEXT

    run = tmp_path_factory.mktemp("clip_run") / "run"
    shutil.copytree(finished_tiny_run, run)
    clip = ClipModel(TINY_CONVNEXT, "random", checkpoint=tiny_clip_checkpoint, device="cpu")

    @torch.no_grad()
    def embed(prompt: str) -> np.ndarray:
        tokens = clip.tokenizer([prompt])
        return F.normalize(clip.model.encode_text(tokens).float(), dim=-1)[0].numpy()

    inst = load_instances(run / "instances.npz")
    owned = np.bincount(inst.leaf_ind[inst.leaf_ind < inst.num_leaves], minlength=inst.num_leaves)
    eligible = np.flatnonzero((inst.occu_count >= 2) & (owned > 0))
    a, b = int(eligible[0]), int(eligible[1])
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((inst.num_leaves, 32)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    feats[a], feats[b] = embed("a photo of a chair."), embed("chair")
    inst.leaf_feat = feats
    inst.header = {**inst.header, "language_source": f"clip:{TINY_CONVNEXT}:random"}
    save_instances(run / "instances.npz", inst)
    return {"run": run, "a": a, "b": b, "checkpoint": tiny_clip_checkpoint, "embed": embed}
