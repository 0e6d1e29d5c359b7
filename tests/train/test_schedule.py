"""The 3DGS log-linear position learning rate."""

from __future__ import annotations

import math

import pytest

from openinsgaussian.errors import ConfigError
from openinsgaussian.train.schedule import ExponentialLR, exponential_lr


def test_position_lr_values():
    extent = 4.4
    f = ExponentialLR(1.6e-4 * extent, 1.6e-6 * extent, max_steps=30_000)
    assert f(0) == pytest.approx(1.6e-4 * extent, rel=1e-12)
    # half way the log-linear rate is the geometric mean: 1.6e-5 * extent
    assert f(15_000) == pytest.approx(1.6e-5 * extent, rel=1e-12)
    assert f(30_000) == pytest.approx(1.6e-6 * extent, rel=1e-12)
    assert f(45_000) == pytest.approx(1.6e-6 * extent, rel=1e-12)  # clamped after the end
    assert f(7_500) == pytest.approx(1.6e-4 * extent * 10 ** (-0.5), rel=1e-12)  # quarter: one half decade


def test_delay_warmup_and_negative_step():
    assert exponential_lr(0, 1.0, 0.01, 100, delay_steps=10, delay_mult=0.01) == pytest.approx(0.01)
    # at the end of the warm-up the factor is 1: lr = exp(0.9 ln 1 + 0.1 ln 0.01) = 0.01^0.1
    assert exponential_lr(10, 1.0, 0.01, 100, delay_steps=10, delay_mult=0.01) == pytest.approx(0.01**0.1)
    mid = exponential_lr(5, 1.0, 0.01, 100, delay_steps=10, delay_mult=0.01)
    assert mid == pytest.approx((0.01 + 0.99 * math.sin(math.pi / 4)) * 0.01**0.05)
    assert exponential_lr(-1, 1.0, 0.01, 100) == 0.0


def test_bad_schedule_rejected():
    with pytest.raises(ConfigError):
        ExponentialLR(1e-3, 0.0, 100)
    with pytest.raises(ConfigError):
        ExponentialLR(1e-3, 1e-5, 0)
