"""KL-weight schedules (annealing), as frozen dataclasses: ``weight = schedule(step)``.

- ``ConstantSchedule(value)``: ``value`` at every step.
- ``LinearSchedule(warmup_steps, start, end)``: ``start + (end - start) * min(1, step / warmup_steps)``.
- ``LogisticSchedule(k, x0, max_weight)`` (Bowman et al. 2016):
  ``max_weight / (1 + exp(-k * (step - x0)))``: half of ``max_weight`` at step ``x0``, ``k`` the
  steepness (the rise from 12% to 88% of ``max_weight`` takes ``4 / k`` steps).
  The defaults ``k=0.0025, x0=2500`` are those of the common public PyTorch sentence VAE.
- ``CyclicalSchedule(total_steps, n_cycles, ratio, max_weight)`` (Fu et al. 2019): training is cut
  into ``n_cycles`` periods of ``total_steps / n_cycles`` steps; in each the weight rises linearly
  from 0 to ``max_weight`` over the first ``ratio`` of the period and holds there for the rest.
  After ``total_steps`` it stays at ``max_weight``.

``make_schedule(name, **kwargs)`` builds one by name (``constant|linear|logistic|cyclical``).

The image task's learning-rate schedule ``burda`` (``burda_lr_scale``) is Burda et al.'s (2015):
stage i = 0..7 lasts 3^i epochs at ``lr * 10^(-i / 7)``, 3,280 epochs in all (the last rate after).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _step(step: float) -> float:
    _check(step >= 0, f"step must be >= 0, got {step}")
    return float(step)


@dataclass(frozen=True)
class ConstantSchedule:
    value: float = 1.0

    def __post_init__(self) -> None:
        _check(self.value >= 0, f"value must be >= 0, got {self.value}")

    def __call__(self, step: int) -> float:
        _step(step)
        return float(self.value)


@dataclass(frozen=True)
class LinearSchedule:
    warmup_steps: int = 10_000
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        _check(self.warmup_steps >= 1, f"warmup_steps must be >= 1, got {self.warmup_steps}")
        _check(self.start >= 0 and self.end >= 0, f"start and end must be >= 0, got {self.start}, {self.end}")

    def __call__(self, step: int) -> float:
        frac = min(1.0, _step(step) / self.warmup_steps)
        return float(self.start + (self.end - self.start) * frac)


@dataclass(frozen=True)
class LogisticSchedule:
    k: float = 0.0025
    x0: float = 2500.0
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        _check(self.k > 0, f"k must be > 0, got {self.k}")
        _check(self.max_weight >= 0, f"max_weight must be >= 0, got {self.max_weight}")

    def __call__(self, step: int) -> float:
        x = -self.k * (_step(step) - self.x0)
        # 1 / (1 + exp(x)) without overflow for large x
        if x > 0:
            e = math.exp(-x)
            return float(self.max_weight * e / (1.0 + e))
        return float(self.max_weight / (1.0 + math.exp(x)))


@dataclass(frozen=True)
class CyclicalSchedule:
    total_steps: int = 40_000
    n_cycles: int = 4
    ratio: float = 0.5
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        _check(self.total_steps >= 1, f"total_steps must be >= 1, got {self.total_steps}")
        _check(self.n_cycles >= 1, f"n_cycles must be >= 1, got {self.n_cycles}")
        _check(0 < self.ratio <= 1, f"ratio must be in (0, 1], got {self.ratio}")
        _check(self.max_weight >= 0, f"max_weight must be >= 0, got {self.max_weight}")

    def __call__(self, step: int) -> float:
        s = _step(step)
        if s >= self.total_steps:
            return float(self.max_weight)
        period = self.total_steps / self.n_cycles
        tau = math.fmod(s, period) / period
        return float(self.max_weight * min(1.0, tau / self.ratio))


SCHEDULES = {
    "constant": ConstantSchedule,
    "linear": LinearSchedule,
    "logistic": LogisticSchedule,
    "cyclical": CyclicalSchedule,
}

Schedule = ConstantSchedule | LinearSchedule | LogisticSchedule | CyclicalSchedule


def make_schedule(name: str, **kwargs: Any) -> Schedule:
    """The schedule called ``name`` with ``kwargs``; ValueError naming the allowed names or fields."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"schedule {name!r}: {e}") from None


BURDA_STAGES = 8
BURDA_EPOCHS = (3 ** BURDA_STAGES - 1) // 2  # 3,280: 1 + 3 + ... + 3^7


def burda_stage(epoch: int) -> int:
    """The stage i of 0-based ``epoch`` in Burda et al.'s schedule: epochs (3^i - 1) / 2 to
    (3^(i+1) - 3) / 2 are stage i; from epoch 3,280 on, the last stage (7)."""
    _check(epoch >= 0, f"epoch must be >= 0, got {epoch}")
    stage, end = 0, 1
    while epoch >= end and stage < BURDA_STAGES - 1:
        stage, end = stage + 1, end + 3 ** (stage + 1)
    return stage


def burda_lr_scale(epoch: int) -> float:
    """The factor 10^(-i / 7) on the learning rate in stage i (``burda_stage``) of Burda et al."""
    return 10.0 ** (-burda_stage(epoch) / 7.0)
