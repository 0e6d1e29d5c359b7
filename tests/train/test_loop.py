"""View sampling without replacement and the shared loop's checkpoint cadence / resume."""

from __future__ import annotations

import pytest

from openinsgaussian.errors import ConfigError
from openinsgaussian.run.checkpoints import list_checkpoints
from openinsgaussian.train.loop import TrainLoop, ViewSampler
from openinsgaussian.run import RunDir


def test_views_without_replacement_each_epoch_and_resume():
    s = ViewSampler(5, seed=0)
    seq = [s.next() for _ in range(15)]
    for e in range(3):
        assert sorted(seq[5 * e: 5 * e + 5]) == [0, 1, 2, 3, 4]
    assert seq[:5] != seq[5:10] or seq[5:10] != seq[10:15]  # reshuffled between epochs
    s2 = ViewSampler(5, seed=0)
    [s2.next() for _ in range(7)]
    state = s2.state_dict()
    rest = [s2.next() for _ in range(8)]
    s3 = ViewSampler(5, seed=123)
    s3.load_state_dict(state)
    assert [s3.next() for _ in range(8)] == rest == seq[7:]
    with pytest.raises(ConfigError):
        ViewSampler(4, seed=0).load_state_dict(state)


def test_loop_cadence_and_resume(tmp_path):
    r = RunDir(tmp_path)
    state = {"acc": 0}

    def step_fn(step):
        state["acc"] += step
        return {"acc": state["acc"]}

    def get_state():
        return {"acc": state["acc"]}

    loop = TrainLoop(r, "stage0", 7, checkpoint_every=3, keep_checkpoints=10, progress=False)
    loop.total_steps = 5  # stop early, as train_stage0(stop_at=5) does
    loop.run(step_fn, get_state, 0)
    assert [s for s, _ in list_checkpoints(r, "stage0")] == [3, 5]
    state["acc"] = -999  # lost in a crash
    loop2 = TrainLoop(r, "stage0", 7, checkpoint_every=3, keep_checkpoints=10, progress=False)
    start = loop2.resume(lambda ck: state.update(acc=ck["acc"]))
    assert start == 5 and state["acc"] == 15
    loop2.run(step_fn, get_state, start)
    assert state["acc"] == sum(range(1, 8))
    assert [s for s, _ in list_checkpoints(r, "stage0")] == [3, 5, 6, 7]


def test_ctrl_c_finishes_the_step_saves_and_reraises(tmp_path):
    import os
    import signal

    r = RunDir(tmp_path)
    done = []

    def step_fn(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step
        done.append(step)
        return {}

    loop = TrainLoop(r, "stage0", 10, checkpoint_every=100, progress=False)
    # a background shell starts the tests with SIGINT ignored: start from Python's default handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run(step_fn, lambda: {"done": list(done)}, 0)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == [1, 2, 3]  # step 3 completed, step 4 never started
    assert [s for s, _ in list_checkpoints(r, "stage0")] == [3]
