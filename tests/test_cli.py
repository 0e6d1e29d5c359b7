"""The openins command: wiring, flags and error reporting (the work itself is tested per module)."""

import pytest

from openinsgaussian.cli import _parse_overrides, main
from openinsgaussian.errors import ConfigError


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("synth", "info", "preprocess", "train", "query", "eval", "export", "benchmark", "encode-text", "demo",
                "view"):
        assert cmd in text


def test_overrides_are_yaml_typed():
    assert _parse_overrides(("stage1.iterations=100", "stage3.aggregation=mean", "x=0.5", "y=true")) == {
        "stage1.iterations": 100, "stage3.aggregation": "mean", "x": 0.5, "y": True}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _parse_overrides(("stage1.iterations",))


def test_bad_input_gives_a_message_and_exit_code_2(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path) in err


def test_synth_then_info(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--preset", "tiny", "--seed", "3"]) == 0
    root = tmp_path / "synth_tiny_3"
    assert main(["info", str(root), "--json-output"]) == 0
    out = capsys.readouterr().out
    assert '"source": "scannet"' in out and '"point_labels": true' in out


def test_synth_in_the_lerf_layout_then_benchmark_lerf(tmp_path, capsys):
    import json

    import torch

    threads = torch.get_num_threads()
    assert main(["synth", "--out", str(tmp_path), "--preset", "tiny", "--layout", "lerf"]) == 0
    root = tmp_path / "lerf_ovs"
    assert (root / "synth_tiny_0" / "sparse" / "0" / "images.bin").is_file()
    assert "LeRF-OVS layout written" in capsys.readouterr().out
    out = tmp_path / "bench"
    args = ["benchmark", "lerf", "--root", str(root), "--scenes", "synth_tiny_0", "--fast",
            "--out", str(out), "--set", "inputs.masks=ground_truth", "inputs.language=oracle",
            "threads=1", "query.min_views_select=2"]
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["failed"] == [] and saved["overrides"]["query.min_views_select"] == 2
    assert saved["command"].startswith("openins benchmark lerf")
    assert "report:" in capsys.readouterr().out
