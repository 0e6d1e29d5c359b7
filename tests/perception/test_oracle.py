import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from openinsgaussian.data.camera import Camera
from openinsgaussian.data.scene import Frame, Scene
from openinsgaussian.errors import ConfigError, DataError
from openinsgaussian.perception.oracle import OracleLanguage

H, W = 6, 8


def _labels() -> np.ndarray:
    lab = np.zeros((H, W), dtype=np.uint16)
    lab[:, :4] = 5  # chair (left half)
    lab[:, 4:] = 1  # wall (right half)
    lab[0, :] = 0  # unlabelled top row
    return lab


def _frame(tmp_path, name="000000", labels=True) -> Frame:
    img = tmp_path / "rgb.png"
    if not img.exists():
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img)
    lab = tmp_path / "label.png"
    if labels and not lab.exists():
        Image.fromarray(_labels()).save(lab)
    cam = Camera.from_intrinsics(10.0, 10.0, W / 2, H / 2, W, H, np.eye(4), name=name)
    return Frame(name=name, camera=cam, image_path=img, label_path=lab if labels else None)


def _scene(tmp_path) -> Scene:
    return Scene(
        root=tmp_path,
        source="synthetic",
        train_frames=[_frame(tmp_path)],
        test_frames=[],
        instance_classes={1: ("chair", 5), 2: ("wall", 1), 3: ("table", 7)},
    )


def _mask(*cells) -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    for r, c in cells:
        m[r, c] = True
    return m


IMG = np.zeros((H, W, 3), np.uint8)


def test_class_vectors_are_deterministic_unit_and_distinct(tmp_path):
    a, b = (
        OracleLanguage(_scene(tmp_path), dim=64),
        OracleLanguage(_scene(tmp_path), dim=64, seed=5),
    )
    v = a.class_vector("chair")
    assert v.shape == (64,) and v.dtype == torch.float32
    assert abs(float(v.norm()) - 1.0) < 1e-6
    assert torch.equal(v, b.class_vector("chair"))
    assert torch.equal(a.class_vector("Shower curtain"), a.class_vector("showercurtain"))
    assert float(v @ a.class_vector("table")) < 0.6
    t = a.encode_text(["chair", "wall", "a name nobody uses"])
    assert t.shape == (3, 64) and torch.equal(t[0], v)


def test_class_vector_does_not_depend_on_python_hash_seed(tmp_path):
    code = (
        "from openinsgaussian.perception.oracle import OracleLanguage, _unit_vector, stable_seed;"
        "print(float(_unit_vector(stable_seed('oracle-class', 'chair', 16), 16)[0]))"
    )
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    oracle = OracleLanguage(_scene(tmp_path), dim=16)
    assert len(outs) == 1 and float(outs.pop()) == pytest.approx(
        float(oracle.class_vector("chair")[0])
    )


def test_mask_features_are_text_vectors_of_majority_class(tmp_path):
    scene = _scene(tmp_path)
    oracle = OracleLanguage(scene, dim=32)
    masks = torch.stack(
        [
            _mask((1, 0), (1, 1), (2, 0), (2, 4), (3, 5)),  # 3 chair px + 2 wall px -> chair
            _mask((4, 6), (5, 7)),  # wall
            _mask((0, 0), (0, 5)),  # only unlabelled pixels -> unknown
        ]
    )
    feats = oracle(IMG, masks, scene.train_frames[0])
    assert feats.shape == (3, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))
    text = oracle.encode_text(["chair", "wall"])
    assert torch.equal(feats[0], text[0]) and torch.equal(feats[1], text[1])
    assert torch.equal(feats[2], oracle.unknown_vector())
    assert oracle.mask_classes(masks, scene.train_frames[0]) == ["chair", "wall", None]
    assert oracle.name == "oracle" and oracle.description == "oracle"


def _many_chair_masks(n: int) -> torch.Tensor:
    masks = torch.zeros(n, H, W, dtype=torch.bool)
    masks[:, 2:4, 1:3] = True  # chair pixels, ring reaches the wall at column 4 for ring_width >= 2
    return masks


def test_confusion_fraction_and_targets(tmp_path):
    scene = _scene(tmp_path)
    oracle = OracleLanguage(scene, dim=32, confuse_fraction=0.3, seed=1)
    frame = scene.train_frames[0]
    feats = oracle(IMG, _many_chair_masks(1000), frame)
    chair, wall, table = oracle.encode_text(["chair", "wall", "table"])
    is_chair = (feats == chair).all(1)
    other = (feats == wall).all(1) | (feats == table).all(1)
    assert bool((is_chair | other).all())  # a confused mask gets another scene class, never noise
    assert abs(float(other.float().mean()) - 0.3) < 0.05
    assert torch.equal(feats, oracle(IMG, _many_chair_masks(1000), frame))  # deterministic
    assert "confuse=0.3" in oracle.description and "seed=1" in oracle.description


def test_blend_uses_surrounding_classes(tmp_path):
    scene = _scene(tmp_path)
    oracle = OracleLanguage(scene, dim=32, blend_fraction=0.5, ring_width=2)
    feats = oracle(IMG, _many_chair_masks(400), scene.train_frames[0])
    chair, wall = oracle.encode_text(["chair", "wall"])
    blended = torch.nn.functional.normalize(0.5 * chair + 0.5 * wall, dim=0)
    is_blend = torch.isclose(feats, blended, atol=1e-6).all(1)
    assert bool((is_blend | (feats == chair).all(1)).all())
    assert abs(float(is_blend.float().mean()) - 0.5) < 0.08


def test_noise_keeps_unit_norm_and_is_deterministic(tmp_path):
    scene = _scene(tmp_path)
    oracle = OracleLanguage(scene, dim=64, noise=0.05, seed=2)
    masks = _many_chair_masks(5)
    a = oracle(IMG, masks, scene.train_frames[0])
    torch.testing.assert_close(a.norm(dim=1), torch.ones(5))
    cos = a @ oracle.class_vector("chair")
    assert bool((cos < 0.9999).all()) and bool((cos > 0.5).all())
    assert not torch.equal(a[0], a[1])  # independent per mask
    assert torch.equal(a, oracle(IMG, masks, scene.train_frames[0]))


def test_view_corruption_fraction_and_whole_view(tmp_path):
    scene = _scene(tmp_path)
    oracle = OracleLanguage(scene, dim=32, view_corrupt_fraction=0.3, seed=4)
    flags = [oracle.is_view_corrupted(f"frame_{i:05d}") for i in range(2000)]
    assert abs(np.mean(flags) - 0.3) < 0.04
    bad = next(i for i, f in enumerate(flags) if f)
    good = next(i for i, f in enumerate(flags) if not f)
    chair = oracle.class_vector("chair")
    masks = _many_chair_masks(20)
    f_bad = oracle(IMG, masks, _frame(tmp_path, f"frame_{bad:05d}"))
    f_good = oracle(IMG, masks, _frame(tmp_path, f"frame_{good:05d}"))
    assert not (f_bad == chair).all(1).any()  # every mask of the corrupted view is confused
    assert (f_good == chair).all(1).all()


def test_oracle_errors(tmp_path):
    scene = _scene(tmp_path)
    with pytest.raises(ConfigError):
        OracleLanguage(scene, confuse_fraction=0.7, blend_fraction=0.5)
    with pytest.raises(ConfigError):
        OracleLanguage(scene, view_corrupt_fraction=1.5)
    oracle = OracleLanguage(scene, dim=8)
    (tmp_path / "nolab").mkdir()
    with pytest.raises(DataError, match="label map"):
        oracle(IMG, _many_chair_masks(1), _frame(tmp_path / "nolab", labels=False))
    with pytest.raises(DataError):
        oracle(IMG, torch.zeros(1, H + 1, W, dtype=torch.bool), scene.train_frames[0])
