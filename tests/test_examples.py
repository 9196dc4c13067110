"""The course's worked example: J(w) = w^2 - 10w + 25 minimized by each optimizer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bnfast import reference as R
from bnfast.examples import course_quadratic as ex

# The values the example's docstring states (float32, 1000 steps, lr 0.01).
STATED = {"sgd": 4.999988, "momentum": 4.999993, "rmsprop": 4.9999895, "adam": 4.86467}


def reference_run(name: str, lr: float = 0.01, steps: int = 1000) -> float:
    """The same descent with the float64 NumPy reference updates."""
    x = ex.COEFFICIENTS.astype(np.float64)
    w = np.zeros(1)
    s1, s2 = np.zeros(1), np.zeros(1)
    for t in range(1, steps + 1):
        g = 2 * x[0] * w + x[1]
        if name == "sgd":
            w, _ = R.sgd(w, g, None, lr)
        elif name == "momentum":
            w, s1 = R.momentum_course(w, g, s1, lr, beta=0.9)
        elif name == "rmsprop":
            w, s1 = R.rmsprop_course(w, g, s1, lr, beta2=0.999)
        else:
            w, s1, s2, _ = R.adam(w, g, s1, s2, None, t, lr)
    return float(w[0])


@pytest.mark.parametrize("name", ex.COURSE)
def test_values_reached(isa, name):
    w = ex.minimize(name)
    assert w == pytest.approx(STATED[name], abs=2e-6)
    # float32 kernels follow the float64 reference trajectory.
    assert w == pytest.approx(reference_run(name), abs=2e-5)
    if name != "adam":
        assert abs(w - 5) < 2e-5


def test_cost_is_the_course_polynomial():
    w = np.array([0.0, 5.0, 2.0])
    np.testing.assert_allclose(ex.cost(w, ex.COEFFICIENTS.astype(np.float64)), (w - 5) ** 2)


def test_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "bnfast.examples.course_quadratic"],
        capture_output=True, text=True, check=True, timeout=120, cwd="/",
    ).stdout  # fmt: skip
    assert "gradient descent" in out and "w = 4.99999" in out
    assert out.count("J(w) = ") == 5  # the header and one line per optimizer


def test_course_optimizers_are_registered():
    from bnfast.optim import OPTIMIZERS

    assert set(ex.COURSE) <= set(OPTIMIZERS)
    with pytest.raises(ValueError, match="unknown optimizer"):
        ex.make_optimizer("gd", np.zeros(1, np.float32), np.zeros(1, np.float32), 0.01)
