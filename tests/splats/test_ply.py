"""Gaussian PLY export/import in the Inria layout with our extra columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openinsgaussian.data.ply import read_ply, write_ply
from openinsgaussian.errors import DataError
from openinsgaussian.splats.gaussians import GaussianModel
from openinsgaussian.splats.ply import load_gaussians_ply, save_gaussians_ply


def _random_model(n: int = 20, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    params = {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, 15, 3, generator=g),
        "ins_feat": torch.rand(n, 6, generator=g),
    }
    return GaussianModel(params, sh_degree=3)


def test_layout_and_channel_major_rest(tmp_path):
    m = _random_model()
    save_gaussians_ply(tmp_path / "g.ply", m)
    v = read_ply(tmp_path / "g.ply")
    names = list(v.keys())
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
                + [f"rot_{i}" for i in range(4)] + [f"ins_feat_{i}" for i in range(6)])
    assert names == expected
    assert all(a.dtype == np.float32 for a in v.values())
    # f_rest index = channel * 15 + coefficient: channel 2 (blue) of SH coefficient 4 (k = 3)
    assert v["f_rest_33"][5] == m.params["shN"][5, 3, 2].item()
    assert v["f_dc_1"][0] == m.params["sh0"][0, 0, 1].item()
    assert (tmp_path / "g.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")


def test_roundtrip_bit_exact_with_extras(tmp_path):
    m = _random_model(33, seed=1)
    inst = np.arange(33, dtype=np.int64) % 5
    leaf = (np.arange(33, dtype=np.int64) * 7) % 11
    res = save_gaussians_ply(tmp_path / "g.ply", m, instance_id=inst, leaf_id=leaf)
    assert res.written == 33 and res.dropped == 0
    m2, extras = load_gaussians_ply(tmp_path / "g.ply")
    assert m2.sh_degree == 3
    for k in m.params:
        assert torch.equal(m.params[k], m2.params[k]), k
    np.testing.assert_array_equal(extras["instance_id"], inst)
    np.testing.assert_array_equal(extras["leaf_id"], leaf)
    assert read_ply(tmp_path / "g.ply")["leaf_id"].dtype == np.int32


def test_nonfinite_rows_dropped_and_counted(tmp_path):
    m = _random_model(10, seed=2)
    with torch.no_grad():
        m.params["means"][3, 1] = float("nan")
        m.params["shN"][7, 14, 0] = float("inf")
    res = save_gaussians_ply(tmp_path / "g.ply", m, leaf_id=np.arange(10))
    assert res.dropped == 2 and res.written == 8
    m2, extras = load_gaussians_ply(tmp_path / "g.ply")
    keep = [i for i in range(10) if i not in (3, 7)]
    assert torch.equal(m2.params["means"], m.params["means"][keep])
    np.testing.assert_array_equal(extras["leaf_id"], keep)


def test_plain_3dgs_and_opengaussian_files(tmp_path):
    m = _random_model(6, seed=3)
    save_gaussians_ply(tmp_path / "ours.ply", m)
    cols = read_ply(tmp_path / "ours.ply")
    plain = {k: a for k, a in cols.items() if not k.startswith("ins_feat_")}
    write_ply(tmp_path / "plain.ply", plain)
    m_plain, _ = load_gaussians_ply(tmp_path / "plain.ply", seed=5)
    assert torch.equal(m_plain.params["shN"], m.params["shN"])
    f = m_plain.ins_feat
    assert f.shape == (6, 6) and f.min() >= 0 and f.max() < 1  # fresh U[0,1) features
    og = dict(plain)
    for i, name in enumerate(("ins_feat_r", "ins_feat_g", "ins_feat_b", "ins_feat_r2", "ins_feat_g2", "ins_feat_b2")):
        og[name] = cols[f"ins_feat_{i}"]
    write_ply(tmp_path / "og.ply", og)
    m_og, _ = load_gaussians_ply(tmp_path / "og.ply")
    assert torch.equal(m_og.ins_feat, m.ins_feat)


def test_degree_from_rest_columns_and_errors(tmp_path):
    m = _random_model(4)
    cols = read_ply((save_gaussians_ply(tmp_path / "g.ply", m)).path)
    deg1 = {k: a for k, a in cols.items() if not (k.startswith("f_rest_") and int(k[7:]) >= 9)}
    write_ply(tmp_path / "d1.ply", deg1)
    assert load_gaussians_ply(tmp_path / "d1.ply")[0].params["shN"].shape == (4, 3, 3)
    bad = {k: a for k, a in cols.items() if not (k.startswith("f_rest_") and int(k[7:]) >= 10)}
    write_ply(tmp_path / "d.ply", bad)
    with pytest.raises(DataError, match="f_rest"):
        load_gaussians_ply(tmp_path / "d.ply")
    deg0 = {k: a for k, a in cols.items() if not k.startswith("f_rest_")}
    write_ply(tmp_path / "d0.ply", deg0)
    assert load_gaussians_ply(tmp_path / "d0.ply")[0].sh_degree == 0
    write_ply(tmp_path / "pts.ply", {"x": cols["x"], "y": cols["y"], "z": cols["z"]})
    with pytest.raises(DataError, match="missing properties"):
        load_gaussians_ply(tmp_path / "pts.ply")
    with pytest.raises(DataError, match="leaf_id"):
        save_gaussians_ply(tmp_path / "bad.ply", m, leaf_id=np.zeros(3, dtype=np.int64))
