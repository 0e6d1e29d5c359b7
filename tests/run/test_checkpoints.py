"""Atomic checkpoints, keep-last-k, fallback over unreadable files, RNG state round trip."""

from __future__ import annotations

import torch

from openinsgaussian.run.checkpoints import (
    list_checkpoints,
    load_latest_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from openinsgaussian.run import RunDir


def test_keep_last_k_and_latest(tmp_path):
    r = RunDir(tmp_path)
    for step in (10, 20, 30, 40):
        save_checkpoint(r, "stage0", step, {"x": torch.tensor([step])}, keep=2)
    assert [s for s, _ in list_checkpoints(r, "stage0")] == [30, 40]
    ck = load_latest_checkpoint(r, "stage0")
    assert ck is not None and ck["step"] == 40 and ck["stage"] == "stage0" and int(ck["x"]) == 40
    assert not list(r.stage_checkpoints("stage0").glob("*.tmp"))  # no temp files left behind
    assert load_latest_checkpoint(r, "stage1") is None


def test_unreadable_newest_falls_back(tmp_path):
    r = RunDir(tmp_path)
    save_checkpoint(r, "stage0", 10, {"x": 1})
    save_checkpoint(r, "stage0", 20, {"x": 2})
    p = r.checkpoint_path("stage0", 20)
    p.write_bytes(p.read_bytes()[:50])  # a truncated copy, e.g. from an interrupted rsync
    ck = load_latest_checkpoint(r, "stage0")
    assert ck is not None and ck["step"] == 10


def test_rng_state_roundtrip():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(5)
    st = rng_state({"g": g})
    a = (torch.rand(3), torch.rand(3, generator=g))
    restore_rng_state(st, {"g": g})
    b = (torch.rand(3), torch.rand(3, generator=g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
