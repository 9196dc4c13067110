"""Speed-of-light kernels (_core.membench): each mode copies / updates / sums what it claims."""

from __future__ import annotations

import numpy as np
import pytest

import bnfast
from bnfast import _core
from bnfast._arrays import aligned_empty

SIZES = [0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 257, (1 << 14) + 5, 100_003]


def _inputs(rng, k, n, dtype):
    return [rng.random(n).astype(dtype) for _ in range(k)]


def _sum(arrays, n, dtype):
    s = np.zeros(n, dtype)
    for a in arrays:
        s = s + a
    return s


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_read(isa, dtype, rng, n, k):
    ins = _inputs(rng, k, n, dtype)
    got = _core.membench(ins, [], "read")
    want = sum(float(a.astype(np.float64).sum()) for a in ins)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert got == pytest.approx(want, rel=rtol, abs=rtol)


@pytest.mark.parametrize("mode", ["write", "write_nt"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("k", "m"), [(0, 1), (1, 1), (2, 1), (1, 2), (3, 4), (4, 3)])
def test_write(isa, dtype, rng, mode, n, k, m):
    ins = _inputs(rng, k, n, dtype)
    outs = [aligned_empty((n,), dtype) for _ in range(m)]
    for o in outs:
        o[...] = np.nan
    assert _core.membench(ins, outs, mode) is None
    want = _sum(ins, n, dtype)  # same order of additions as the kernel: exact
    for o in outs:
        np.testing.assert_array_equal(o, want)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("k", "m"), [(0, 1), (1, 1), (1, 2), (1, 3), (2, 2), (4, 4)])
def test_update(isa, dtype, rng, n, k, m):
    ins = _inputs(rng, k, n, dtype)
    outs = _inputs(rng, m, n, dtype)
    before = [o.copy() for o in outs]
    _core.membench(ins, outs, "update")
    s = _sum(ins, n, dtype)
    for o, b in zip(outs, before):
        np.testing.assert_array_equal(o, b + s)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("k", "m"), [(0, 1), (1, 1), (2, 1), (1, 2), (4, 3)])
def test_exp(isa, dtype, rng, n, k, m):
    ins = [(a - 0.5) * 40 for a in _inputs(rng, k, n, dtype)]
    outs = [aligned_empty((n,), dtype) for _ in range(m)]
    for o in outs:
        o[...] = np.nan
    assert _core.membench(ins, outs, "exp") is None
    want = np.exp(_sum(ins, n, dtype).astype(np.float64))
    for o in outs:  # vmath.h's exp: within 2 ulp (one ulp is at most eps relative)
        np.testing.assert_allclose(o, want, rtol=2 * np.finfo(dtype).eps, atol=0)


def test_any_shape_and_threads(isa, rng, threads):
    x = rng.random((37, 1000, 11)).astype(np.float32)
    sums = set()
    for nt in (1, 2, 3):
        bnfast.set_num_threads(nt)
        sums.add(_core.membench([x], [], "read"))
        y = aligned_empty(x.shape, x.dtype)
        _core.membench([x], [y], "write_nt")
        np.testing.assert_array_equal(y, x)
    assert len(sums) == 1  # bitwise the same sum for any thread count


def test_bad_inputs():
    a = np.zeros(64, np.float32)
    b = aligned_empty((64,), np.float32)
    with pytest.raises(ValueError, match="mode"):
        _core.membench([a], [b], "copy")
    with pytest.raises(ValueError, match="writes"):
        _core.membench([a], [], "write")
    with pytest.raises(ValueError, match="read"):
        _core.membench([a], [b], "read")
    with pytest.raises(ValueError, match="at most"):
        _core.membench([a] * 5, [b], "write")
    with pytest.raises(TypeError, match=r"reads\[0\]"):
        _core.membench([[1.0, 2.0]], [b], "write")
    with pytest.raises(TypeError, match=r"writes\[0\] must be float32"):
        _core.membench([a], [np.zeros(64)], "write")
    with pytest.raises(TypeError, match=r"reads\[0\] must be float32"):
        _core.membench([np.zeros(64, np.int32)], [b], "write")
    with pytest.raises(TypeError, match=r"reads\[0\] must be float32 or float64"):
        _core.membench([np.zeros(64, np.uint16).view([("bfloat16", "<u2")])], [b], "write")
    with pytest.raises(ValueError, match="elements"):
        _core.membench([a], [aligned_empty((63,), np.float32)], "write")
    with pytest.raises(ValueError, match="overlaps"):
        _core.membench([a], [a], "update")
    with pytest.raises(ValueError, match="overlaps"):
        _core.membench([a], [b, b], "write")
    with pytest.raises(ValueError, match="read-only"):
        ro = aligned_empty((64,), np.float32)
        ro.flags.writeable = False
        _core.membench([a], [ro], "write")
    with pytest.raises(ValueError, match="64-byte"):
        _core.membench([a], [aligned_empty((65,), np.float32)[1:]], "write_nt")
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.membench([np.zeros(128, np.float32)[::2]], [b], "write")
