"""Search spaces: warps, sampling distributions (KS tests), grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnfast.tune import (
    Choice,
    IntUniform,
    LogUniform,
    OneMinusLogUniform,
    PowerOfTwo,
    Uniform,
)
from bnfast.tune.spaces import grid_points, sample


def ks_uniform(x: np.ndarray, a: float, b: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic of ``x`` against U(a, b) and its asymptotic p-value."""
    u = np.sort((np.asarray(x, dtype=np.float64) - a) / (b - a))
    n = u.size
    i = np.arange(1, n + 1)
    d = max(np.max(i / n - u), np.max(u - (i - 1) / n))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    k = np.arange(1, 101)
    p = float(np.clip(2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * k**2 * lam**2)), 0, 1))
    return float(d), p


def draws(param, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([param.sample(rng) for _ in range(n)])


def test_ks_helper_rejects_non_uniform():
    rng = np.random.default_rng(1)
    assert ks_uniform(rng.random(4000), 0, 1)[1] > 0.01
    assert ks_uniform(rng.random(4000) ** 2, 0, 1)[1] < 1e-6


def test_log_uniform_each_decade_equally_likely():
    x = draws(LogUniform(1e-4, 1.0))
    assert x.min() >= 1e-4 and x.max() <= 1.0
    _, p = ks_uniform(np.log10(x), -4.0, 0.0)
    assert p > 0.01
    counts = np.histogram(np.log10(x), bins=[-4, -3, -2, -1, 0])[0]
    assert np.all(np.abs(counts / x.size - 0.25) < 0.03)
    # and it is not uniform in alpha itself
    assert ks_uniform(x, 1e-4, 1.0)[1] < 1e-6


def test_one_minus_log_uniform_half_above_0_99():
    b = draws(OneMinusLogUniform(0.9, 0.999))
    assert b.min() >= 0.9 and b.max() <= 0.999
    _, p = ks_uniform(np.log10(1.0 - b), -3.0, -1.0)
    assert p > 0.01
    assert abs(np.mean(b > 0.99) - 0.5) < 0.03
    # uniform sampling on [0.9, 0.999] would put about 9% above 0.99
    assert ks_uniform(b, 0.9, 0.999)[1] < 1e-6


def test_uniform_ks():
    assert ks_uniform(draws(Uniform(-2.0, 3.0)), -2.0, 3.0)[1] > 0.01


@pytest.mark.parametrize(
    "param, values",
    [
        (IntUniform(2, 4), [2, 3, 4]),
        (PowerOfTwo(16, 256), [16, 32, 64, 128, 256]),
        (Choice(["relu", "tanh", "gelu"]), ["relu", "tanh", "gelu"]),
    ],
)
def test_discrete_uniform_frequencies(param, values):
    x = list(draws(param, n=3000))
    freq = np.array([x.count(v) for v in values]) / len(x)
    assert set(x) == set(values)
    assert np.all(np.abs(freq - 1 / len(values)) < 0.04)


PARAMS = [
    Uniform(-1.0, 2.5),
    LogUniform(1e-4, 1.0),
    LogUniform(3.0, 5e4),
    OneMinusLogUniform(0.9, 0.999),
    OneMinusLogUniform(0.0, 0.99),
    IntUniform(50, 100),
    PowerOfTwo(1, 1024),
    Choice([None, 1, "a", True]),
]


@pytest.mark.parametrize("param", PARAMS, ids=repr)
@given(u=st.floats(0.0, 1.0))
def test_warp_round_trip(param, u):
    v = param.unwarp(u)
    w = param.warp(v)
    assert 0.0 <= w <= 1.0
    assert param.unwarp(w) == v or math.isclose(param.unwarp(w), v, rel_tol=1e-12)
    if not isinstance(param, (IntUniform, PowerOfTwo, Choice)):
        assert math.isclose(w, u, abs_tol=1e-9)


def test_warp_ends_and_monotone():
    for p in [LogUniform(1e-4, 1), OneMinusLogUniform(0.9, 0.999), Uniform(0, 1)]:
        assert math.isclose(p.unwarp(0.0), p.a) and math.isclose(p.unwarp(1.0), p.b)
        vals = [p.unwarp(u) for u in np.linspace(0, 1, 11)]
        assert vals == sorted(vals)
    assert math.isclose(OneMinusLogUniform(0.9, 0.999).unwarp(0.5), 0.99)
    assert math.isclose(LogUniform(1e-4, 1).unwarp(0.5), 1e-2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Uniform(1, 1),
        lambda: LogUniform(0, 1),
        lambda: OneMinusLogUniform(0.9, 1.0),
        lambda: IntUniform(5, 2),
        lambda: PowerOfTwo(3, 8),
        lambda: Choice([]),
    ],
)
def test_bad_bounds(make):
    with pytest.raises(ValueError):
        make()


def test_unit_out_of_range_and_bad_values():
    with pytest.raises(ValueError):
        Uniform(0, 1).unwarp(1.5)
    with pytest.raises(ValueError):
        Choice(["a"]).warp("b")
    with pytest.raises(ValueError):
        IntUniform(1, 3).warp(7)


def test_sample_box_restricts_unit_coordinates():
    space = {"lr": LogUniform(1e-4, 1), "n": IntUniform(0, 9)}
    rng = np.random.default_rng(0)
    for _ in range(200):
        params, _, _ = sample(space, rng, {"lr": (0.5, 0.75), "n": (0.2, 0.4)})
        assert 1e-2 <= params["lr"] <= 10**-1 + 1e-12
        assert params["n"] in (2, 3, 4)


def test_define_by_run_conditional_space():
    def space(suggest):
        layers = suggest("layers", IntUniform(2, 4))
        out = {"layers": layers}
        for i in range(layers):
            out[f"units{i}"] = suggest(f"units{i}", IntUniform(50, 100))
        return out

    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(30):
        params, unit, _ = sample(space, rng)
        assert len(params) == params["layers"] + 1 and set(unit) == set(params)
        seen.add(params["layers"])
    assert seen == {2, 3, 4}


def test_sample_rejects_non_params_and_repeats():
    with pytest.raises(TypeError):
        sample({"a": 3}, np.random.default_rng(0))
    with pytest.raises(ValueError):
        sample(lambda s: {"a": s("a", Uniform(0, 1)), "b": s("a", Uniform(0, 1))},
               np.random.default_rng(0))  # fmt: skip


def test_grid_points():
    g = grid_points(
        {"lr": LogUniform(1e-4, 1), "act": Choice(["a", "b"]), "k": IntUniform(2, 3)}, 5
    )
    assert len(g) == 5 * 2 * 2
    assert sorted({p["lr"] for p in g}) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    with pytest.raises(TypeError):
        grid_points(lambda s: {}, 3)
