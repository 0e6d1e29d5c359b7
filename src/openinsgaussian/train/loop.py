"""The one loop every training stage shares: view sampling, progress bar, checkpoints, resume.

A stage supplies three callables: ``step_fn(step) -> stats`` (one optimisation step, 1-based),
``get_state() -> dict`` (everything to resume) and ``load_state(dict)``. :class:`TrainLoop`
calls them in order, shows a tqdm bar (ETA, loss, PSNR, #Gaussians...), writes a checkpoint every
``checkpoint_every`` steps and at the end, and on Ctrl-C finishes the current step, saves, then
re-raises ``KeyboardInterrupt`` so that ``--resume`` continues exactly there.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..run.checkpoints import load_latest_checkpoint, save_checkpoint
from ..run.directory import RunDir


class ViewSampler:
    """One training-view index per step, without replacement, reshuffled every epoch.

    The permutation comes from its own seeded CPU generator; its state, the current permutation
    and the position in it are checkpointed so a resumed run sees the same view sequence.
    """

    def __init__(self, n: int, seed: int) -> None:
        if n <= 0:
            raise ConfigError("no training views to sample from")
        self.n = int(n)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.order: list[int] = []
        self.pos = 0
        self.epoch = 0

    def next(self) -> int:
        if self.pos >= len(self.order):
            self.order = torch.randperm(self.n, generator=self.generator).tolist()
            self.pos = 0
            self.epoch += 1
        i = self.order[self.pos]
        self.pos += 1
        return i

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "order": torch.tensor(self.order, dtype=torch.int64), "pos": self.pos,
                "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:
            raise ConfigError(f"checkpoint was trained on {state['n']} views, this scene has {self.n}")
        self.order = [int(i) for i in state["order"].tolist()]
        self.pos = int(state["pos"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"].cpu())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class TrainLoop:
    """Steps ``start+1 .. total_steps`` of one stage with progress and checkpoints."""

    def __init__(
        self,
        run: RunDir,
        stage: str,
        total_steps: int,
        *,
        checkpoint_every: int = 1000,
        keep_checkpoints: int = 3,
        progress: bool = True,
        postfix_every: int = 10,
        desc: str | None = None,
    ) -> None:
        if total_steps < 0:
            raise ConfigError(f"total steps must be >= 0, got {total_steps}")
        self.run_dir = run
        self.stage = stage
        self.total_steps = int(total_steps)
        self.checkpoint_every = int(checkpoint_every)
        self.keep = int(keep_checkpoints)
        self.progress = progress
        self.postfix_every = max(1, int(postfix_every))
        self.desc = desc or stage
        self.elapsed_before = 0.0  # seconds spent in earlier (interrupted) runs of this stage
        self.last_saved = -1

    # ---- resume ---------------------------------------------------------------------------------
    def resume(self, load_state: Callable[[dict[str, Any]], None],
               map_location: torch.device | str = "cpu") -> int:
        """Load the newest complete checkpoint through ``load_state``; returns its step (0: none)."""
        ck = load_latest_checkpoint(self.run_dir, self.stage, map_location)
        if ck is None:
            return 0
        load_state(ck)
        self.elapsed_before = float(ck.get("elapsed_s", 0.0))
        self.last_saved = int(ck["step"])
        return int(ck["step"])

    def save(self, step: int, get_state: Callable[[], dict[str, Any]], elapsed: float) -> None:
        payload = get_state()
        payload["elapsed_s"] = elapsed
        save_checkpoint(self.run_dir, self.stage, step, payload, keep=self.keep)
        self.last_saved = step

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, step_fn: Callable[[int], dict[str, Any]], get_state: Callable[[], dict[str, Any]],
            start_step: int = 0) -> float:
        """Run the remaining steps; returns the total training seconds (all runs of this stage)."""
        interrupted = threading.Event()
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            def _on_sigint(_sig: int, _frame: Any) -> None:
                if interrupted.is_set():  # second Ctrl-C: stop right now
                    raise KeyboardInterrupt
                interrupted.set()

            old_handler = signal.signal(signal.SIGINT, _on_sigint)
        t0 = time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=start_step, desc=self.desc, dynamic_ncols=True,
                   disable=not self.progress, unit="step")
        step = start_step
        try:
            for step in range(start_step + 1, self.total_steps + 1):
                stats = step_fn(step)
                bar.update(1)
                if step % self.postfix_every == 0 or step == self.total_steps:
                    bar.set_postfix({k: _fmt(v) for k, v in stats.items()}, refresh=False)
                elapsed = self.elapsed_before + time.perf_counter() - t0
                if (self.checkpoint_every > 0 and step % self.checkpoint_every == 0) or step == self.total_steps:
                    self.save(step, get_state, elapsed)
                if interrupted.is_set():
                    if self.last_saved != step:
                        self.save(step, get_state, elapsed)
                    bar.write(f"{self.desc}: interrupted, checkpoint saved at step {step}")
                    raise KeyboardInterrupt
        finally:
            bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        return self.elapsed_before + time.perf_counter() - t0
