"""Run-directory layout, config.yml round trip, overrides and hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from openinsgaussian.errors import ConfigError, RunError
from openinsgaussian.run import (
    RunDir,
    apply_overrides,
    config_hash,
    dataclass_to_dict,
    dict_to_dataclass,
)
from openinsgaussian.train.stage0 import Stage0Config, stage0_preset


def test_layout(tmp_path):
    r = RunDir(tmp_path / "run")
    assert r.config_path == tmp_path / "run" / "config.yml"
    assert r.checkpoint_path("stage0", 1200) == tmp_path / "run" / "checkpoints" / "stage0" / "step_001200.pt"
    assert r.metrics_path("stage0") == tmp_path / "run" / "metrics" / "stage0.json"
    assert r.render_dir("stage0") == tmp_path / "run" / "renders" / "stage0"
    assert r.ply == tmp_path / "run" / "point_cloud.ply"
    assert not (tmp_path / "run").exists()  # nothing is created by asking for paths


@pytest.mark.parametrize("preset", ["synthetic", "scannet", "lerf", "blender"])
def test_config_yaml_roundtrip(tmp_path, preset):
    cfg = stage0_preset(preset)
    r = RunDir(tmp_path)
    r.write_config_section("stage0", cfg)
    r.write_config_section("data", str(tmp_path / "scene"))
    back = r.load_config_section("stage0", Stage0Config)
    assert back == cfg
    assert isinstance(back.background, tuple) and isinstance(back.densify.start, int)
    assert r.read_config()["data"] == str(tmp_path / "scene")
    assert config_hash(back) == config_hash(cfg)


def test_presets_follow_the_method():
    sc = stage0_preset("scannet")
    assert sc.frozen_points and sc.downscale == 2.0 and sc.iterations == 30_000 and not sc.densify.enabled
    le = stage0_preset("lerf")
    assert le.densify.enabled and le.densify.start == 500 and le.densify.stop == 15_000
    assert le.densify.grad_threshold == 2e-4 and le.densify.min_opacity == 0.005
    bl = stage0_preset("blender")
    assert bl.init == "random" and bl.background == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="unknown stage-0 preset"):
        stage0_preset("nope")


def test_bad_config_values_are_named(tmp_path):
    d = dataclass_to_dict(Stage0Config())
    d["iterationz"] = 5
    with pytest.raises(ConfigError, match="iterationz"):
        dict_to_dataclass(Stage0Config, d)
    d = dataclass_to_dict(Stage0Config())
    d["backend"] = "vulkan"
    with pytest.raises(ConfigError, match="backend"):
        dict_to_dataclass(Stage0Config, d)
    d = dataclass_to_dict(Stage0Config())
    d["densify"]["start"] = "soon"
    with pytest.raises(ConfigError, match="densify.start"):
        dict_to_dataclass(Stage0Config, d)
    (tmp_path / "config.yml").write_text("- just\n- a list\n")
    with pytest.raises(RunError, match="mapping"):
        RunDir(tmp_path).read_config()
    with pytest.raises(RunError, match="stage1"):
        RunDir(tmp_path / "empty").load_config_section("stage1", Stage0Config)


def test_overrides_and_hash_change():
    cfg = stage0_preset("lerf")
    new = apply_overrides(cfg, {"iterations": 100, "densify.stop": 50, "background": [1, 1, 1]})
    assert new.iterations == 100 and new.densify.stop == 50 and new.background == (1.0, 1.0, 1.0)
    assert cfg.iterations == 30_000  # the original is untouched
    assert config_hash(new) != config_hash(cfg)
    with pytest.raises(ConfigError, match="no such field"):
        apply_overrides(cfg, {"densify.nope": 1})
    with pytest.raises(ConfigError, match="not a config section"):
        apply_overrides(cfg, {"iterations.x": 1})
    assert isinstance(dataclass_to_dict({"p": Path("/a")})["p"], str)
