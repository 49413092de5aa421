"""KL schedules against hand-derived values."""

import math

import pytest

from vaecore.schedules import (
    ConstantSchedule,
    CyclicalSchedule,
    LinearSchedule,
    LogisticSchedule,
    make_schedule,
)


def test_constant():
    s = ConstantSchedule(0.3)
    assert s(0) == 0.3 and s(10**9) == 0.3


def test_linear():
    s = LinearSchedule(warmup_steps=100, start=0.0, end=1.0)
    assert s(0) == 0.0
    assert s(25) == 0.25
    assert s(100) == 1.0
    assert s(1000) == 1.0
    assert LinearSchedule(10, start=0.5, end=0.0)(4) == pytest.approx(0.3)


def test_logistic_hand_values():
    s = LogisticSchedule(k=0.0025, x0=2500)
    assert s(2500) == 0.5
    # 1 / (1 + e^{-1}) at step x0 + 1/k
    assert s(2900) == pytest.approx(1 / (1 + math.exp(-1.0)), rel=1e-15)
    assert s(0) == pytest.approx(1 / (1 + math.exp(6.25)), rel=1e-15)
    # no overflow far from x0, and monotone
    assert s(10**7) == 1.0
    assert 0.0 <= LogisticSchedule(k=10.0, x0=10**6)(0) < 1e-300
    assert LogisticSchedule(k=1.0, x0=0.0, max_weight=2.0)(0) == 1.0


def test_cyclical_fu_et_al():
    # 4 cycles of 100 steps, rising over the first half of each cycle
    s = CyclicalSchedule(total_steps=400, n_cycles=4, ratio=0.5)
    assert [s(t) for t in (0, 25, 50, 75, 99)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert [s(t) for t in (100, 110, 150, 300, 349)] == [0.0, 0.2, 1.0, 0.0, pytest.approx(0.98)]
    assert s(400) == 1.0 and s(10**6) == 1.0
    assert CyclicalSchedule(total_steps=10, n_cycles=1, ratio=1.0, max_weight=0.5)(4) == 0.2


@pytest.mark.parametrize(
    "name,kwargs,field",
    [
        ("linear", {"warmup_steps": 0}, "warmup_steps"),
        ("logistic", {"k": 0.0}, "k"),
        ("cyclical", {"ratio": 1.5}, "ratio"),
        ("cyclical", {"n_cycles": 0}, "n_cycles"),
        ("constant", {"value": -1.0}, "value"),
    ],
)
def test_invalid_values_name_the_field(name, kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_schedule(name, **kwargs)


def test_make_schedule():
    assert make_schedule("linear", warmup_steps=4)(1) == 0.25
    with pytest.raises(ValueError, match="constant"):
        make_schedule("cosine")
    with pytest.raises(ValueError, match="unexpected"):
        make_schedule("constant", warmup_steps=3)
    with pytest.raises(ValueError, match="step"):
        ConstantSchedule()(-1)
