"""Learning-rate schedules: the log-linear decay 3DGS uses for the Gaussian positions."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


def exponential_lr(step: int, lr_init: float, lr_final: float, max_steps: int,
                   delay_steps: int = 0, delay_mult: float = 1.0) -> float:
    """Log-linear interpolation from ``lr_init`` (step 0) to ``lr_final`` (step ``max_steps``).

    ``lr(t) = exp((1 - t) log lr_init + t log lr_final)`` with ``t = clip(step / max_steps, 0, 1)``;
    with ``delay_steps > 0`` it is multiplied by a warm-up factor that rises from ``delay_mult`` to 1
    along ``sin(pi/2 * clip(step / delay_steps, 0, 1))``. Negative steps give 0.
    """
    if step < 0 or (lr_init == 0.0 and lr_final == 0.0):
        return 0.0
    if delay_steps > 0:
        warm = delay_mult + (1.0 - delay_mult) * math.sin(0.5 * math.pi * min(max(step / delay_steps, 0.0), 1.0))
    else:
        warm = 1.0
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return warm * math.exp(math.log(lr_init) * (1.0 - t) + math.log(lr_final) * t)


@dataclass(frozen=True)
class ExponentialLR:
    """Callable form of :func:`exponential_lr` (positions: 1.6e-4 * extent -> 1.6e-6 * extent)."""

    lr_init: float
    lr_final: float
    max_steps: int
    delay_steps: int = 0
    delay_mult: float = 1.0

    def __post_init__(self) -> None:
        if self.lr_init < 0 or self.lr_final < 0 or (self.lr_init == 0) != (self.lr_final == 0):
            raise ConfigError(f"exponential LR needs both rates > 0 (or both 0), got {self.lr_init}, {self.lr_final}")
        if self.max_steps <= 0:
            raise ConfigError(f"exponential LR needs max_steps > 0, got {self.max_steps}")

    def __call__(self, step: int) -> float:
        return exponential_lr(step, self.lr_init, self.lr_final, self.max_steps, self.delay_steps, self.delay_mult)
