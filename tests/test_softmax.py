"""Softmax, log-softmax, softmax cross-entropy and sigmoid BCE against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
import bnfast.nn
from bnfast import reference as R
from bnfast.testing import assert_close as _assert_close

SIZES = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 257]
F64 = np.float64


def assert_close(actual, expected, dtype, **kw):
    """bnfast.testing.assert_close, quiet about inf - inf where both sides are infinite."""
    with np.errstate(invalid="ignore"):
        _assert_close(actual, expected, dtype, **kw)


def _ref(fn, *arrays, **kw):
    """The reference evaluated in float64 on the (rounded) inputs."""
    return fn(*[a.astype(F64) if a.dtype.kind == "f" else a for a in arrays], **kw)


# ---- softmax / log_softmax ------------------------------------------------------------------


@pytest.mark.parametrize("k", SIZES)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_rows(isa, dtype, rng, k, log):
    x = (rng.standard_normal((5, k)) * 4).astype(dtype)
    fn, ref = (bnfast.log_softmax, R.log_softmax) if log else (bnfast.softmax, R.softmax)
    y = fn(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, _ref(ref, x), dtype, ulps=8, scale=8 if log else 1)


@pytest.mark.parametrize(
    "shape,axis", [((3, 5, 17), 1), ((2, 9, 4, 5), 1), ((4, 33), 0), ((2, 3, 40), -2)]
)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_axes(isa, dtype, rng, shape, axis, log):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    fn, ref = (bnfast.log_softmax, R.log_softmax) if log else (bnfast.softmax, R.softmax)
    assert_close(fn(x, axis=axis), _ref(ref, x, axis=axis), dtype, ulps=8, scale=8)


@given(
    a=st.integers(0, 5),
    k=st.integers(1, 70),
    b=st.integers(1, 40),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_softmax_hypothesis(isa, dtype, a, k, b, scale, seed):
    x = (np.random.default_rng(seed).standard_normal((a, k, b)) * scale).astype(dtype)
    assert_close(bnfast.softmax(x, axis=1), _ref(R.softmax, x, axis=1), dtype, ulps=8)
    lsm = _ref(R.log_softmax, x, axis=1)
    assert_close(bnfast.log_softmax(x, axis=1), lsm, dtype, ulps=8, scale=np.abs(x).max(initial=1))


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_backward(isa, dtype, rng, log):
    for shape, axis in [((6, 17), -1), ((3, 9, 20), 1)]:
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        if log:
            y = bnfast.log_softmax(x, axis=axis)
            dx, ref = bnfast.log_softmax_backward(y, dy, axis), R.log_softmax_backward
        else:
            y = bnfast.softmax(x, axis=axis)
            dx, ref = bnfast.softmax_backward(y, dy, axis), R.softmax_backward
        assert_close(dx, _ref(ref, y, dy, axis=axis), dtype, ulps=16, scale=4)


def test_softmax_inplace_and_out(isa, dtype, rng):
    x = rng.standard_normal((7, 19)).astype(dtype)
    expected = bnfast.softmax(x)
    out = np.empty_like(x)
    assert bnfast.softmax(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    y = x.copy()
    bnfast.softmax(y, out=y)
    np.testing.assert_array_equal(y, expected)
    y = x.copy()
    bnfast.log_softmax(y, out=y)
    np.testing.assert_array_equal(y, bnfast.log_softmax(x))


def test_softmax_edge_rows(isa, dtype):
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [1e30, -1e30, 0, 1e30],
            [1e8, 1e8 + 1024, 0, -inf],
            [-inf, -inf, -inf, -inf],
            [0, nan, 1, 2],
            [-inf, nan, -inf, -inf],
            [3, -inf, -inf, 2],
        ],
        dtype,
    )
    y = bnfast.softmax(x)
    ls = bnfast.log_softmax(x)
    assert_close(y, _ref(R.softmax, x), dtype, ulps=8)
    assert_close(ls, _ref(R.log_softmax, x), dtype, ulps=8, scale=1)
    np.testing.assert_array_equal(y[2], 0)
    np.testing.assert_array_equal(ls[2], -inf)
    assert np.isnan(y[3]).all() and np.isnan(y[4]).all()
    assert np.isfinite(y[[0, 1, 5]]).all()
    assert y[5, 1] == 0 and ls[5, 1] == -inf
    assert y[0, 1] == 0 and y[0, 0] == y[0, 3] == dtype.type(0.5)


def test_softmax_degenerate_shapes(isa, dtype):
    assert bnfast.softmax(np.zeros((0, 5), dtype)).shape == (0, 5)
    np.testing.assert_array_equal(bnfast.softmax(np.full((4, 1), 7.0, dtype)), 1)
    np.testing.assert_array_equal(bnfast.log_softmax(np.full((4, 1), -3e30, dtype)), 0)


# ---- cross-entropy --------------------------------------------------------------------------

TARGET_DTYPES = [np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint64]


def _targets(rng, shape, k, n_ignore=0, dtype=np.int64):
    t = rng.integers(0, k, shape)
    if n_ignore:
        flat = t.reshape(-1)
        flat[rng.choice(flat.size, min(n_ignore, flat.size), replace=False)] = -100
    return t.astype(dtype) if dtype != np.int64 else t


def _check_xent(x, t, dtype, **kw):
    loss, grad = bnfast.softmax_cross_entropy(x, t, **kw)
    kw64 = dict(kw)
    for name in ("weight", "grad_output"):
        if isinstance(kw64.get(name), np.ndarray):
            kw64[name] = kw64[name].astype(F64)
    rl, rg = R.softmax_cross_entropy(
        x.astype(F64), t.astype(F64) if t.dtype.kind == "f" else t, **kw64
    )
    assert grad.dtype == dtype and grad.shape == x.shape
    assert loss.dtype == dtype and loss.shape == rl.shape
    mag = np.abs(x.astype(F64)).max(initial=1) + np.log(x.shape[kw.get("axis", 1)] + 1)
    assert_close(loss, rl, dtype, ulps=16, scale=mag)
    assert_close(grad, rg, dtype, ulps=16)
    return loss, grad


@pytest.mark.parametrize("k", SIZES)
def test_xent_sizes(isa, dtype, rng, k):
    x = (rng.standard_normal((37, k)) * 3).astype(dtype)
    _check_xent(x, _targets(rng, 37, k), dtype)


@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
@pytest.mark.parametrize(
    "ignore", [-100, 3, 2**40, -(2**31)], ids=["-100", "class3", "2^40", "int32min"]
)
def test_xent_ignore_index_values(isa, dtype, rng, tdtype, ignore):
    """Rows whose target equals ignore_index (any int64, a valid class too) drop out, in full
    vector groups and in tails, for int64 and int32 targets; other targets are range-checked."""
    n, k = 53, 10
    x = (rng.standard_normal((n, k)) * 3).astype(dtype)
    t = rng.integers(0, k, n)
    if np.iinfo(tdtype).min <= ignore <= np.iinfo(tdtype).max:
        t[rng.choice(n, 9, replace=False)] = ignore
    _check_xent(x, t.astype(tdtype), dtype, ignore_index=ignore)
    t[37] = k
    with pytest.raises(IndexError, match=r"target\[37\] = 10 is out of range"):
        bnfast.softmax_cross_entropy(x, t.astype(tdtype), ignore_index=ignore)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["w0", "w1"])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("ignore", [0, 5])
@pytest.mark.parametrize("go", [False, True], ids=["go0", "go1"])
@pytest.mark.parametrize("shape", [(23, 10), (4, 10, 19)], ids=["2d", "3d"])
def test_xent_class_options(isa, dtype, rng, reduction, weighted, smoothing, ignore, go, shape):
    k = shape[1]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    tshape = (shape[0], *shape[2:])
    t = _targets(rng, tshape, k, ignore)
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, k).astype(dtype)
    if go:
        kw["grad_output"] = (
            rng.standard_normal(tshape).astype(dtype) if reduction == "none" else 0.7
        )
    _check_xent(x, t, dtype, **kw)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["w0", "w1"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(23, 10), (4, 17, 19)], ids=["2d", "3d"])
def test_xent_prob_options(isa, dtype, rng, reduction, weighted, smoothing, shape):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    p = rng.dirichlet(np.ones(shape[1]), (shape[0], *shape[2:]))
    p = np.moveaxis(p, -1, 1).astype(dtype)
    p[0, 0] = 0  # zero-probability entries
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, shape[1]).astype(dtype)
    _check_xent(x, p, dtype, **kw)


@pytest.mark.parametrize("tdtype", TARGET_DTYPES)
def test_xent_target_dtypes(isa, rng, tdtype):
    x = rng.standard_normal((40, 7)).astype(np.float32)
    t = rng.integers(0, 7, 40)
    ref = bnfast.softmax_cross_entropy(x, t)
    got = bnfast.softmax_cross_entropy(x, t.astype(tdtype))
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


@given(
    n=st.integers(0, 40),
    k=st.integers(1, 40),
    d=st.integers(1, 20),
    three_d=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    weighted=st.booleans(),
    scale=st.sampled_from([1e-2, 1.0, 20.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_xent_hypothesis(isa, dtype, n, k, d, three_d, reduction, smoothing, weighted, scale, seed):
    rng = np.random.default_rng(seed)
    shape = (n, k, d) if three_d else (n, k)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    t = _targets(rng, (n, d) if three_d else (n,), k, n_ignore=n // 4)
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    if weighted:
        kw["weight"] = rng.uniform(0.1, 3.0, k).astype(dtype)
    if t.size and (t != -100).any():
        _check_xent(x, t, dtype, **kw)


def test_xent_extreme_logits(isa, dtype):
    inf = np.inf
    x = np.array(
        [
            [1e30, -1e30, 0, 5],
            [-1e30, 1e30, 1e30, 0],
            [1e8, 1e8 - 64, 0, -1e8],
            [0, -inf, 2, -inf],
            [-inf, -inf, -inf, -inf],
        ],
        dtype,
    )
    t = np.array([1, 2, 0, 2, 3])
    loss, grad = bnfast.softmax_cross_entropy(x, t, reduction="none")
    rl, rg = R.softmax_cross_entropy(x.astype(F64), t, reduction="none")
    assert_close(loss, rl, dtype, ulps=4)
    assert_close(grad, rg, dtype, ulps=4)
    assert loss[0] == dtype.type(2e30) and loss[1] == dtype.type(np.log(2.0))
    assert loss[4] == inf  # all -inf row: documented +inf
    np.testing.assert_array_equal(grad[4], [0, 0, 0, -1])
    assert np.isfinite(grad).all()
    # -inf logits get probability 0 and no gradient
    assert grad[3, 1] == 0 and grad[3, 3] == 0


def test_xent_nan_stays_in_its_row(isa, dtype, rng):
    x = rng.standard_normal((33, 9)).astype(dtype)
    x[5, 3] = np.nan
    t = _targets(rng, 33, 9)
    loss, grad = bnfast.softmax_cross_entropy(x, t, reduction="none")
    assert np.isnan(loss[5]) and np.isnan(grad[5]).all()
    rows = np.arange(33) != 5
    assert np.isfinite(loss[rows]).all() and np.isfinite(grad[rows]).all()
    total, _ = bnfast.softmax_cross_entropy(x, t)
    assert np.isnan(total)
    y = bnfast.softmax(x)
    assert np.isnan(y[5]).all() and np.isfinite(y[rows]).all()
    # an ignored NaN row contributes nothing
    t[5] = -100
    loss, grad = bnfast.softmax_cross_entropy(x, t)
    assert np.isfinite(loss) and (grad[5] == 0).all() and np.isfinite(grad).all()


def test_xent_all_ignored_and_empty(isa, dtype, rng):
    x = rng.standard_normal((6, 4)).astype(dtype)
    t = np.full(6, -100)
    loss, grad = bnfast.softmax_cross_entropy(x, t)
    assert np.isnan(loss) and (grad == 0).all()  # documented: NaN like PyTorch, gradient 0
    loss, grad = bnfast.softmax_cross_entropy(x, t, reduction="sum")
    assert loss == 0 and (grad == 0).all()
    e = np.zeros((0, 4), dtype)
    loss, grad = bnfast.softmax_cross_entropy(e, np.zeros(0, np.int64))
    assert np.isnan(loss) and grad.shape == (0, 4)
    loss, grad = bnfast.softmax_cross_entropy(e, np.zeros(0, np.int64), reduction="none")
    assert loss.shape == (0,)


def test_xent_k1_and_unbatched(isa, dtype):
    x = np.array([[3.0], [-1e30], [7.0]], dtype)
    loss, grad = bnfast.softmax_cross_entropy(x, np.zeros(3, np.int64), reduction="none")
    np.testing.assert_array_equal(loss, 0)
    np.testing.assert_array_equal(grad, 0)
    v = np.array([1.0, 2.0, 3.0], dtype)
    loss, grad = bnfast.softmax_cross_entropy(v, np.array(2), axis=0)
    rl, rg = R.softmax_cross_entropy(v.astype(F64), np.array(2), axis=0)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)


def test_xent_bad_targets_raise_before_writing(isa, dtype, rng):
    x = rng.standard_normal((8, 5)).astype(dtype)
    out = np.full_like(x, 42)
    for bad, row in [(5, 3), (-1, 6), (-101, 0)]:
        t = _targets(rng, 8, 5)
        t[row] = bad
        with pytest.raises(IndexError, match=rf"row {row}\b"):
            bnfast.softmax_cross_entropy(x, t, out=out)
        assert (out == 42).all()
    t3 = _targets(rng, (2, 3), 5)
    t3[1, 2] = 9
    with pytest.raises(IndexError, match=r"target\[1, 2\]"):
        bnfast.softmax_cross_entropy(rng.standard_normal((2, 5, 3)), t3)
    with pytest.raises(IndexError):
        bnfast.softmax_cross_entropy(x, np.array([2**63 + 1] * 8, np.uint64))


def test_xent_bad_arguments(dtype, rng):
    x = rng.standard_normal((8, 5)).astype(dtype)
    t = _targets(rng, 8, 5)
    with pytest.raises(ValueError, match="shape"):
        bnfast.softmax_cross_entropy(x, np.full((8, 4), 0.2, dtype))
    with pytest.raises(ValueError, match="shape"):
        bnfast.softmax_cross_entropy(x, t[:7])
    with pytest.raises(TypeError, match="target"):
        bnfast.softmax_cross_entropy(x, t.astype(bool))
    with pytest.raises(TypeError, match="target"):
        bnfast.softmax_cross_entropy(x, t.astype(str))
    with pytest.raises(TypeError, match="logits"):
        bnfast.softmax_cross_entropy(x.astype(np.int32), t)
    with pytest.raises(TypeError, match="weight"):
        bnfast.softmax_cross_entropy(x, t, weight=np.ones(5, np.float16))
    with pytest.raises(ValueError, match="weight"):
        bnfast.softmax_cross_entropy(x, t, weight=np.ones(4, dtype))
    with pytest.raises(ValueError, match="reduction"):
        bnfast.softmax_cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        bnfast.softmax_cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="out"):
        bnfast.softmax_cross_entropy(x, t, out=x)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.empty_like(x)
        ro.flags.writeable = False
        bnfast.softmax_cross_entropy(x, t, out=ro)
    with pytest.raises(ValueError, match="axis"):
        bnfast.softmax_cross_entropy(x, t, axis=3)
    with pytest.raises(TypeError, match="x"):
        bnfast.softmax(np.zeros(3, np.int64))


# ---- sigmoid binary cross-entropy ------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, "class", "row", "full"])
@pytest.mark.parametrize("pos_weight", [False, True], ids=["pw0", "pw1"])
@pytest.mark.parametrize("c", [1, 7, 16, 33])
def test_bce(isa, dtype, rng, reduction, weight, pos_weight, c):
    shape = (9, c)
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    x[0, 0] = 200
    y = (rng.uniform(size=shape) > 0.5).astype(dtype)
    y[1] = 0.3  # soft labels
    kw = {"reduction": reduction}
    if weight == "class":
        kw["weight"] = rng.uniform(0.1, 2, c).astype(dtype)
    elif weight == "row":
        kw["weight"] = rng.uniform(0.1, 2, (9, 1)).astype(dtype)
    elif weight == "full":
        kw["weight"] = rng.uniform(0.1, 2, shape).astype(dtype)
    if pos_weight:
        kw["pos_weight"] = rng.uniform(0.5, 3, c).astype(dtype)
    loss, grad = bnfast.sigmoid_binary_cross_entropy(x, y, **kw)
    kw64 = {k: (v.astype(F64) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    rl, rg = R.sigmoid_binary_cross_entropy(x.astype(F64), y.astype(F64), **kw64)
    assert_close(loss, rl, dtype, ulps=16, scale=8)
    assert_close(grad, rg, dtype, ulps=16)


def test_bce_edges(isa, dtype):
    x = np.array([[1e30, -1e30, 0.0, np.nan, 90.0, -90.0]], dtype)
    y = np.array([[1, 0, 1, 1, 1, 0]], dtype)
    loss, grad = bnfast.sigmoid_binary_cross_entropy(x, y, reduction="none")
    rl, rg = R.sigmoid_binary_cross_entropy(x.astype(F64), y.astype(F64), reduction="none")
    assert_close(loss, rl, dtype, ulps=4)
    assert_close(grad, rg, dtype, ulps=4)
    np.testing.assert_array_equal(loss[0, [0, 1]], 0)
    np.testing.assert_array_equal(grad[0, [0, 1]], 0)
    assert_close(loss[0, 2], np.log(2), dtype)
    assert np.isnan(loss[0, 3]) and np.isnan(grad[0, 3])
    assert np.isfinite(np.delete(loss, 3)).all()
    loss, grad = bnfast.sigmoid_binary_cross_entropy(np.zeros((0, 3), dtype), np.zeros((0, 3)))
    assert np.isnan(loss) and grad.shape == (0, 3)


def test_bce_bad_arguments(dtype):
    x = np.zeros((4, 3), dtype)
    with pytest.raises(ValueError, match="target"):
        bnfast.sigmoid_binary_cross_entropy(x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="weight"):
        bnfast.sigmoid_binary_cross_entropy(x, x, weight=np.ones(2))
    with pytest.raises(ValueError, match="pos_weight"):
        bnfast.sigmoid_binary_cross_entropy(x, x, pos_weight=np.ones((5, 3)))
    with pytest.raises(TypeError, match="target"):
        bnfast.sigmoid_binary_cross_entropy(x, np.zeros((4, 3), "U1"))


# ---- finite differences (float64) ------------------------------------------------------------


def _fd_check(f, x, grad, h=1e-6, tol=1e-6):
    """Central differences of the scalar f at every element of x against grad."""
    num = np.empty_like(x)
    flat, nflat = x.reshape(-1), num.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f(x)
        flat[i] = old - h
        fm = f(x)
        flat[i] = old
        nflat[i] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=tol, atol=tol)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_fd_softmax_backward(isa, rng, log):
    x = rng.standard_normal((3, 5, 2))
    dy = rng.standard_normal(x.shape)
    fn = bnfast.log_softmax if log else bnfast.softmax
    bwd = bnfast.log_softmax_backward if log else bnfast.softmax_backward
    grad = bwd(fn(x, axis=1), dy, axis=1)
    _fd_check(lambda z: float(np.sum(fn(z, axis=1) * dy)), x, grad)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"label_smoothing": 0.2},
        {"weight": "w", "label_smoothing": 0.2},
        {"weight": "w", "reduction": "sum"},
        {"reduction": "none", "grad_output": "go"},
        {"prob": True, "weight": "w", "label_smoothing": 0.1},
        {"prob": True, "reduction": "none", "grad_output": "go"},
    ],
    ids=lambda kw: "-".join(sorted(kw)) or "plain",
)
@pytest.mark.parametrize("three_d", [False, True], ids=["2d", "3d"])
def test_fd_xent(isa, rng, kw, three_d):
    kw = dict(kw)
    shape = (4, 5, 3) if three_d else (6, 5)
    tshape = (4, 3) if three_d else (6,)
    x = rng.standard_normal(shape)
    if kw.pop("prob", False):
        t = np.moveaxis(rng.dirichlet(np.ones(5), tshape), -1, 1)
    else:
        t = _targets(rng, tshape, 5)
        t.reshape(-1)[1] = -100
    if kw.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2, 5)
    go = None
    if kw.get("grad_output") == "go":
        go = rng.standard_normal(tshape)
        kw["grad_output"] = go
    _, grad = bnfast.softmax_cross_entropy(x, t, **kw)
    kw.pop("grad_output", None)

    def f(z):
        loss, _ = bnfast.softmax_cross_entropy(z, t, **kw)
        return float(np.sum(loss * go)) if go is not None else float(loss)

    _fd_check(f, x, grad)


@pytest.mark.parametrize("pw", [False, True], ids=["pw0", "pw1"])
def test_fd_bce(isa, rng, pw):
    x = rng.standard_normal((4, 6)) * 3
    y = rng.uniform(size=(4, 6))
    kw = {"weight": rng.uniform(0.5, 2, (4, 1))}
    if pw:
        kw["pos_weight"] = rng.uniform(0.5, 3, 6)
    _, grad = bnfast.sigmoid_binary_cross_entropy(x, y, **kw)
    _fd_check(lambda z: float(bnfast.sigmoid_binary_cross_entropy(z, y, **kw)[0]), x, grad)


# ---- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(20000, 10), (300, 1000), (64, 10, 200)], ids=str)
def test_thread_determinism(isa, threads, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    t = _targets(rng, (shape[0], *shape[2:]), shape[1], n_ignore=7)
    outs = []
    for n in (1, 2):
        bnfast.set_num_threads(n)
        loss, grad = bnfast.softmax_cross_entropy(x, t, label_smoothing=0.1)
        bl, bg = bnfast.sigmoid_binary_cross_entropy(x, x > 0)
        outs.append((loss, grad, bnfast.softmax(x, axis=1), bl, bg))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


# ---- layers ----------------------------------------------------------------------------------


def test_layers(rng):
    x = rng.standard_normal((16, 10)).astype(np.float32)
    t = _targets(rng, 16, 10)
    ce = bnfast.nn.SoftmaxCrossEntropy(label_smoothing=0.1)
    loss = ce.forward(x, t)
    assert isinstance(loss, float)
    g = ce.backward()
    rl, rg = bnfast.softmax_cross_entropy(x, t, label_smoothing=0.1)
    assert loss == float(rl)
    np.testing.assert_array_equal(g, rg)
    ce.forward(x * 2, t)
    assert ce.backward() is g  # buffer reused for the same shape
    bce = bnfast.nn.SigmoidBinaryCrossEntropy(pos_weight=np.full(10, 2.0))
    bce.forward(x, x > 0)
    assert bce.backward().shape == x.shape
    for layer, fn, bwd in [
        (bnfast.nn.Softmax(), bnfast.softmax, bnfast.softmax_backward),
        (bnfast.nn.LogSoftmax(), bnfast.log_softmax, bnfast.log_softmax_backward),
    ]:
        y = layer.forward(x)
        np.testing.assert_array_equal(y, fn(x))
        dy = rng.standard_normal(x.shape).astype(np.float32)
        np.testing.assert_array_equal(layer.backward(dy), bwd(fn(x), dy))
    with pytest.raises(RuntimeError):
        bnfast.nn.SoftmaxCrossEntropy().backward()
