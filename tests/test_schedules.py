"""Learning-rate schedules: values at known epochs, attaching to an optimizer, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnfast.optim import SGD
from bnfast.optim.schedules import (
    CosineDecay,
    ExponentialDecay,
    InverseSqrtDecay,
    InverseTimeDecay,
    LinearWarmup,
    Staircase,
    StepDecay,
)


@pytest.fixture
def opt():
    return SGD([np.zeros(3, np.float32)], lr=0.2)


def test_inverse_time_decay_course_values():
    s = InverseTimeDecay(decay_rate=1.0, lr0=0.2)
    # The course's table: alpha0 = 0.2, decay_rate = 1 -> 0.1, 0.067, 0.05, 0.04 at epochs 1..4.
    assert [s(e) for e in range(5)] == pytest.approx([0.2, 0.1, 0.2 / 3, 0.05, 0.04])


def test_exponential_decay():
    s = ExponentialDecay(base=0.95, lr0=0.1)
    assert s(0) == 0.1
    assert s(10) == pytest.approx(0.1 * 0.95**10)
    assert ExponentialDecay(base=0.5, lr0=1.0)(3) == 0.125


def test_inverse_sqrt_decay_epoch_zero_is_epoch_one():
    s = InverseSqrtDecay(k=0.5, lr0=0.2)
    assert s(0) == s(1) == pytest.approx(0.1)
    assert s(4) == pytest.approx(0.05)
    assert s(100) == pytest.approx(0.01)


def test_staircase():
    s = Staircase(boundaries=[10, 20], values=[0.1, 0.05, 0.01])
    assert [s(e) for e in (0, 9, 10, 19, 20, 1000)] == [0.1, 0.1, 0.05, 0.05, 0.01, 0.01]
    with pytest.raises(ValueError, match="one more"):
        Staircase(boundaries=[10], values=[0.1])
    with pytest.raises(ValueError, match="increasing"):
        Staircase(boundaries=[10, 5], values=[0.1, 0.2, 0.3])


def test_step_decay():
    s = StepDecay(step_size=30, gamma=0.1, lr0=0.1)
    assert [s(e) for e in (0, 29, 30, 59, 60)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_cosine_decay():
    s = CosineDecay(t_max=10, eta_min=0.01, lr0=0.11)
    assert s(0) == pytest.approx(0.11)
    assert s(5) == pytest.approx(0.06)
    assert s(10) == pytest.approx(0.01)
    assert s(25) == pytest.approx(0.01)  # held at eta_min after t_max
    assert s(2) == pytest.approx(0.01 + 0.1 * (1 + math.cos(math.pi * 0.2)) / 2)


def test_linear_warmup_then_cosine():
    s = LinearWarmup(warmup=4, start_factor=0.0, then=CosineDecay(t_max=10), lr0=0.4)
    assert [s(e) for e in range(5)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert s(9) == pytest.approx(0.2)
    assert s(14) == pytest.approx(0.0)
    plain = LinearWarmup(warmup=3, lr0=0.3)
    assert plain(0) == pytest.approx(0.1)  # PyTorch's LinearLR default start factor, 1/3
    assert plain(3) == plain(50) == 0.3


def test_attach_and_step_per_epoch(opt):
    s = ExponentialDecay(opt, base=0.5)
    assert s.lr0 == 0.2 and opt.lr == 0.2
    lrs = []
    for _ in range(3):
        opt.step([np.ones(3, np.float32)])
        lrs.append(s.step())
    assert lrs == [0.1, 0.05, 0.025]
    assert opt.lr == 0.025 and s.epoch == 3


def test_attach_sets_current_value(opt):
    s = LinearWarmup(warmup=10, start_factor=0.1, lr0=1.0)
    s.attach(opt)
    assert opt.lr == pytest.approx(0.1)


def test_per_iteration_schedule_drives_updates(opt):
    p = opt.params[0]
    s = InverseTimeDecay(opt, decay_rate=1.0)
    total = 0.0
    for _ in range(4):
        total += opt.lr
        opt.step([np.ones(3, np.float32)])
        s.step()
    np.testing.assert_allclose(p, -total * np.ones(3), rtol=1e-6)


def test_state_dict_round_trip(opt):
    s = CosineDecay(opt, t_max=10)
    for _ in range(3):
        s.step()
    sd = s.state_dict()
    other_opt = SGD([np.zeros(3, np.float32)], lr=0.9)
    t = CosineDecay(other_opt, t_max=10)
    t.load_state_dict(sd)
    assert t.epoch == 3 and other_opt.lr == opt.lr
    assert t.step() == s.step()


def test_bad_arguments():
    with pytest.raises(ValueError, match="lr0"):
        ExponentialDecay()(0)
    with pytest.raises(ValueError, match="finite"):
        ExponentialDecay(lr0=float("nan"))
    with pytest.raises(ValueError, match="epoch"):
        ExponentialDecay(lr0=0.1)(-1)
    with pytest.raises(ValueError, match="t_max"):
        CosineDecay(t_max=0, lr0=0.1)
    with pytest.raises(ValueError, match="step_size"):
        StepDecay(step_size=0, lr0=0.1)
    with pytest.raises(ValueError, match="decay_rate"):
        InverseTimeDecay(decay_rate=-1, lr0=0.1)
