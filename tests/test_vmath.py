"""Error of the vectorized exp and log (csrc/include/bnfast/vmath.h) against a wider reference.

The float32 functions are measured over float32 inputs spread over the whole range (every
``stride``-th bit pattern plus the special values; ``BNFAST_VMATH_EXHAUSTIVE=1`` measures every
float32), the float64 ones over random inputs against long double. The bounds asserted here are
the ones stated in vmath.h.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import bnfast
from bnfast import _core

MAX_ULP_F32 = 2.0  # the bound asserted; measured maxima are stated in vmath.h
MAX_ULP_F64 = 2.0
EXHAUSTIVE = os.environ.get("BNFAST_VMATH_EXHAUSTIVE") == "1"


def _float32_inputs(start: int, stop: int) -> np.ndarray:
    """Float32 values with bit patterns in [start, stop) (every one, or a strided sample)."""
    stride = 1 if EXHAUSTIVE else 4099
    return np.arange(start, stop, stride, dtype=np.uint32).view(np.float32)


def _ulp_error_f32(actual: np.ndarray, exact: np.ndarray) -> float:
    """Max |actual - exact| in units of the float32 spacing at the exact value."""
    finite = np.isfinite(exact)
    ex = exact[finite]
    # Spacing of float32 at |exact| (subnormal spacing 2**-149 below the normal range);
    # beyond FLT_MAX the correctly rounded result is inf, checked separately.
    big = np.abs(ex) > np.finfo(np.float32).max
    assert np.all(np.isinf(actual[finite][big]))
    ex = ex[~big]
    spacing = np.spacing(np.abs(ex).astype(np.float32)).astype(np.float64)
    spacing = np.maximum(spacing, 2.0**-149)
    err = np.abs(actual[finite][~big].astype(np.float64) - ex) / spacing
    return float(err.max(initial=0.0))


def _measure_f32(fn_core, fn_ref, lo_bits: int, hi_bits: int, chunk: int = 1 << 24) -> float:
    worst = 0.0
    for s in range(lo_bits, hi_bits, chunk * (1 if EXHAUSTIVE else 64)):
        x = _float32_inputs(s, min(hi_bits, s + chunk * (1 if EXHAUSTIVE else 64)))
        with np.errstate(all="ignore"):
            exact = fn_ref(x.astype(np.float64))
        worst = max(worst, _ulp_error_f32(fn_core(x), exact))
    return worst


def test_exp_f32_whole_range(isa):
    neg = _measure_f32(_core.vmath_exp, np.exp, 0x80000000, 0xFF800001)  # -0 .. -inf
    pos = _measure_f32(_core.vmath_exp, np.exp, 0, 0x7F800001)  # +0 .. +inf
    assert max(neg, pos) <= MAX_ULP_F32, (neg, pos)


def test_log_f32_whole_range(isa):
    err = _measure_f32(_core.vmath_log, np.log, 1, 0x7F800001)  # smallest subnormal .. inf
    assert err <= MAX_ULP_F32, err


def test_special_values(isa, dtype):
    inf, nan = np.inf, np.nan
    x = np.array([-inf, inf, nan, 0.0, -0.0], dtype)
    e = _core.vmath_exp(x)
    np.testing.assert_array_equal(e, np.array([0, inf, nan, 1, 1], dtype))
    x = np.array([-inf, inf, nan, 0.0, -0.0, -1.0, 1.0, -1e-30], dtype)
    lg = _core.vmath_log(x)
    np.testing.assert_array_equal(lg, np.array([nan, inf, nan, -inf, -inf, nan, 0, nan], dtype))
    tiny = np.finfo(dtype).smallest_subnormal
    assert _core.vmath_exp(np.array([np.log(float(tiny)) - 1], dtype))[0] == 0
    big = np.finfo(dtype).max
    assert _core.vmath_exp(np.array([np.log(float(big)) * 1.001], dtype))[0] == inf


@pytest.mark.parametrize("fn", ["exp", "log"])
def test_f64_random(isa, fn):
    rng = np.random.default_rng(7)
    n = 1_000_000 if EXHAUSTIVE else 100_000
    if fn == "exp":
        x = rng.uniform(-745.0, 709.7, n)
        x[: n // 2] = rng.uniform(-5, 5, n // 2)
        actual = _core.vmath_exp(x)
        exact = np.exp(x.astype(np.longdouble))
    else:
        x = np.exp(rng.uniform(-744.0, 709.0, n))
        x[: n // 2] = rng.uniform(0.5, 2.0, n // 2)
        actual = _core.vmath_log(x)
        exact = np.log(x.astype(np.longdouble))
    if np.finfo(np.longdouble).nmant < 60:
        pytest.skip("long double is not wider than double here")
    spacing = np.maximum(np.spacing(np.abs(exact).astype(np.float64)), 2.0**-1074)
    err = np.abs((actual.astype(np.longdouble) - exact) / spacing.astype(np.longdouble))
    assert float(err.max()) <= MAX_ULP_F64


def test_isas_agree_on_vector_paths():
    """avx2 and avx512 evaluate the same FMA sequence: bitwise equal results."""
    isas = [i for i in bnfast.available_isas() if i != "scalar"]
    if len(isas) < 2:
        pytest.skip("needs two vector ISAs")
    x = _float32_inputs(0, 0xFFFFFFFF)
    x = x[np.isfinite(x)]
    outs = []
    for name in isas:
        with bnfast.use_isa(name):
            outs.append((_core.vmath_exp(x), _core.vmath_log(np.abs(x))))
    for o in outs[1:]:
        np.testing.assert_array_equal(o[0], outs[0][0])
        np.testing.assert_array_equal(o[1], outs[0][1])
