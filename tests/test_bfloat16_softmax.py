"""bfloat16 softmax, log-softmax, their backward, softmax cross-entropy and sigmoid BCE.

The kernels widen bfloat16 inputs to float32, compute in float32 and round each bfloat16 output
once; losses (and class weights, per-row grad_output) are float32. They are held to the float64
reference of the widened inputs (bnfast.reference), correctly rounded to bfloat16:

- outputs that are not differences (softmax, cross-entropy gradients of non-target classes
  without smoothing): within 2 bfloat16 ulp (0.5 from the final rounding, the rest is the
  float32 error of exp/log/sum/divide, a few float32 ulp, which can move a value across a
  rounding boundary);
- outputs that are differences of larger terms (log-softmax near 0, both backward passes, the
  gradient p - t of the target class, smoothed or probability targets, BCE's sigmoid - y): each
  term carries float32 rounding errors proportional to its own magnitude, which the cancellation
  leaves in the small result. There the bound is 2 ulp, or else one bfloat16 ulp of the result
  plus c * eps32 * S, where S is the magnitude of the terms (given per test) and c counts the
  float32 roundings on the way: K + 8 for anything through a K-term sum (the worst case of a
  sequential float32 sum of positive terms is (K - 1) eps32 of their total, the vector sums
  are better), 8 otherwise (exp, log, divide, a few products);
- float32 losses: the float32 kernels' own tolerance (tests/test_softmax.py: 16 float32 ulp
  with the scale max|x| + log(K + 1) for cross-entropy, 8 for BCE).

Results below float32's normal range (|v| < 2^-126) become zeros when rounded to bfloat16 (the
rule of bfloat16.h, the reference's too); a value that float32 error moves across that edge
passes when both sides are within 2^-125 of zero.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import _core
from bnfast import reference as R
from bnfast._arrays import BFLOAT16_BITS
from bnfast.testing import assert_bfloat16_within
from bnfast.testing import assert_close as _assert_close

BF16 = np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
EPS32 = float(np.finfo(np.float32).eps)
TINY = 2.0**-125


def bf(a) -> np.ndarray:
    """``a`` rounded to bfloat16 the kernels' way (keeping a 0-d shape)."""
    a = np.asarray(a, np.float64)
    return R.round_bfloat16(a).reshape(a.shape)


def wide(a: np.ndarray) -> np.ndarray:
    """bfloat16 (or float32) values as float64, exactly."""
    return np.asarray(a).astype(np.float32).astype(np.float64)


def ulp_bf16(r: np.ndarray) -> np.ndarray:
    """One bfloat16 ulp at |r| (8 significant bits)."""
    _, e = np.frexp(np.nan_to_num(np.abs(r), posinf=0))
    return np.ldexp(1.0, e - 8)


def assert_bf16(actual, ref, *, ulps=2, scale=None, c=8, err_msg=""):
    """``actual`` (bfloat16) within ``ulps`` bfloat16 ulp of ``ref`` (float64) rounded once; with
    ``scale`` (the magnitude S of the terms a difference cancelled), elements farther off pass
    when within ulp(ref) + c * eps32 * S (module docstring). Both sides within 2^-125 of zero
    pass (the flush of float32 subnormals)."""
    actual = np.asarray(actual)
    assert actual.dtype == BF16, actual.dtype
    ref = np.asarray(ref, np.float64)
    a = wide(actual)
    with np.errstate(invalid="ignore"):
        ok = (np.abs(a) <= TINY) & (np.abs(ref) <= TINY)
        if scale is not None:
            tol = ulp_bf16(ref) + c * EPS32 * np.asarray(scale, np.float64)
            ok |= np.isfinite(ref) & (np.abs(a - ref) <= tol)
    ok = np.broadcast_to(ok, ref.shape)
    assert_bfloat16_within(actual[~ok], ref[~ok], ulps, err_msg=err_msg)


def assert_f32_close(actual, expected, **kw):
    """bnfast.testing.assert_close in float32, quiet about inf - inf."""
    assert np.asarray(actual).dtype == F32
    with np.errstate(invalid="ignore"):
        _assert_close(actual, expected, F32, **kw)


def logits(rng, shape, scale=3.0) -> np.ndarray:
    return bf(rng.standard_normal(shape) * scale)


# ---- softmax / log_softmax ------------------------------------------------------------------


def _lsm_scale(x64: np.ndarray, axis: int) -> np.ndarray:
    """|z| + |L| + 1 for log-softmax y = z - L (z = x - max, L = log sum exp z)."""
    if x64.ndim == 0:
        return np.ones(())
    m = np.max(x64, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isneginf(m) | np.isnan(m), 0, m)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z = x64 - m
        s = np.sum(np.exp(z), axis=axis, keepdims=True)
        ls = np.where(s > 0, np.log(s), 0)
    return np.nan_to_num(np.abs(z) + np.abs(ls) + 1, posinf=0)


def check_softmax(x: np.ndarray, axis: int) -> None:
    x64 = wide(x)
    k = x.shape[axis] if x.ndim else 1
    y = bnfast.softmax(x, axis=axis)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_bf16(y, R.softmax(x64, axis), err_msg="softmax")
    ls = bnfast.log_softmax(x, axis=axis)
    assert ls.dtype == x.dtype and ls.shape == x.shape
    assert_bf16(
        ls, R.log_softmax(x64, axis), scale=_lsm_scale(x64, axis), c=k + 8, err_msg="log_softmax"
    )


def check_backward(y: np.ndarray, dy: np.ndarray, axis: int, log: bool) -> None:
    y64, dy64 = wide(y), wide(dy)
    k = y.shape[axis] if y.ndim else 1
    if log:
        dx = bnfast.log_softmax_backward(y, dy, axis)
        ref = R.log_softmax_backward(y64, dy64, axis)
        scale = np.abs(dy64) + np.exp(y64) * np.sum(np.abs(dy64), axis=axis, keepdims=True)
    else:
        dx = bnfast.softmax_backward(y, dy, axis)
        ref = R.softmax_backward(y64, dy64, axis)
        scale = np.abs(y64) * (np.abs(dy64) + np.sum(np.abs(y64 * dy64), axis=axis, keepdims=True))
    assert dx.dtype == y.dtype and dx.shape == y.shape
    assert_bf16(dx, ref, scale=scale, c=k + 8, err_msg="log backward" if log else "backward")


DIMS = st.sampled_from([0, 1, 2, 3, 5, 16, 17, 40])


@st.composite
def softmax_inputs(draw):
    shape = tuple(draw(st.lists(DIMS, min_size=1, max_size=4)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape) * scale
    special = draw(st.sampled_from(["none", "extreme", "neginf_row", "nan"]))
    if x.size:
        flat = np.moveaxis(x, axis, -1).reshape(-1, shape[axis]) if shape[axis] else None
        if flat is not None and special != "none":
            r = rng.integers(0, flat.shape[0])
            if special == "extreme":
                flat[r, rng.integers(0, flat.shape[1], 2)] = [1e30, -1e30]
            elif special == "neginf_row":
                flat[r] = -np.inf
            else:
                flat[r, rng.integers(0, flat.shape[1])] = np.nan
            x = np.moveaxis(flat.reshape(np.moveaxis(x, axis, -1).shape), -1, axis)
    return bf(x), axis, rng


@given(softmax_inputs())
def test_softmax_hypothesis(isa, inp):
    x, axis, _ = inp
    check_softmax(x, axis)


@given(softmax_inputs(), st.booleans())
def test_softmax_backward_hypothesis(isa, inp, log):
    x, axis, rng = inp
    y = (bnfast.log_softmax if log else bnfast.softmax)(x, axis=axis)
    dy = bf(rng.standard_normal(x.shape))
    check_backward(y, dy, axis, log)


@pytest.mark.parametrize("k", [1, 7, 16, 17, 33, 64, 65, 257, 1000])
@pytest.mark.parametrize("shape", ["rows", "cols"])
def test_softmax_sizes(isa, rng, k, shape):
    x = logits(rng, (37, k) if shape == "rows" else (3, k, 19), 4)
    check_softmax(x, 1)
    for log in (False, True):
        y = (bnfast.log_softmax if log else bnfast.softmax)(x, axis=1)
        check_backward(y, bf(rng.standard_normal(x.shape)), 1, log)


def test_softmax_edge_rows(isa):
    inf, nan = np.inf, np.nan
    x = bf(
        [
            [1e30, -1e30, 0, 1e30],
            [1e8, 1e8 + 2**20, 0, -inf],
            [-inf, -inf, -inf, -inf],
            [0, nan, 1, 2],
            [-inf, nan, -inf, -inf],
            [3, -inf, -inf, 2],
        ]
    )
    check_softmax(x, -1)
    y, ls = bnfast.softmax(x), bnfast.log_softmax(x)
    np.testing.assert_array_equal(wide(y[2]), 0)
    np.testing.assert_array_equal(wide(ls[2]), -inf)
    assert np.isnan(wide(y[3])).all() and np.isnan(wide(y[4])).all()
    assert np.isfinite(wide(y[[0, 1, 5]])).all()
    assert wide(y[0, 0]) == wide(y[0, 3]) == 0.5 and wide(y[0, 1]) == 0
    assert wide(ls[5, 1]) == -inf


def test_softmax_degenerate_shapes(isa):
    assert bnfast.softmax(bf(np.zeros((0, 5)))).shape == (0, 5)
    assert bnfast.log_softmax(bf(np.zeros((4, 0))), axis=1).shape == (4, 0)
    np.testing.assert_array_equal(wide(bnfast.softmax(bf(np.full((4, 1), 7.0)))), 1)
    np.testing.assert_array_equal(wide(bnfast.log_softmax(bf(np.full((4, 1), -3e30)))), 0)
    s = bnfast.softmax(bf(np.asarray(2.0)), axis=0)
    assert s.shape == () and s.dtype == BF16 and wide(s) == 1


def test_softmax_inplace_and_out(isa, rng):
    x = logits(rng, (7, 19))
    for fn in (bnfast.softmax, bnfast.log_softmax):
        expected = fn(x)
        out = np.empty_like(x)
        assert fn(x, out=out) is out
        assert out.tobytes() == expected.tobytes()
        y = x.copy()
        fn(y, out=y)
        assert y.tobytes() == expected.tobytes()


def test_bits_view(isa, rng):
    """bnfast.torch's bits view [("bfloat16", "<u2")] gives the same bits, in its own dtype."""
    x = logits(rng, (9, 23))
    xb = x.view(np.uint16).view(BFLOAT16_BITS)
    for fn in (bnfast.softmax, bnfast.log_softmax):
        yb = fn(xb)
        assert yb.dtype == BFLOAT16_BITS and yb.tobytes() == fn(x).tobytes()
    t = rng.integers(0, 23, 9)
    lb, gb = bnfast.softmax_cross_entropy(xb, t)
    lm, gm = bnfast.softmax_cross_entropy(x, t)
    assert gb.dtype == BFLOAT16_BITS and gb.tobytes() == gm.tobytes() and lb == lm
    yt = (rng.uniform(size=(9, 23)) > 0.5).astype(np.float32)
    lb, gb = bnfast.sigmoid_binary_cross_entropy(xb, yt)
    lm, gm = bnfast.sigmoid_binary_cross_entropy(x, yt)
    assert gb.dtype == BFLOAT16_BITS and gb.tobytes() == gm.tobytes() and lb == lm


# ---- cross-entropy --------------------------------------------------------------------------


def _targets(rng, shape, k, n_ignore=0, dtype=np.int64):
    t = rng.integers(0, k, shape)
    if n_ignore:
        flat = t.reshape(-1)
        flat[rng.choice(flat.size, min(n_ignore, flat.size), replace=False)] = -100
    return t.astype(dtype)


def _as64(v):
    if isinstance(v, np.ndarray) and (v.dtype.kind == "f" or v.dtype == BF16):
        return wide(v)
    return v


def check_xent(x, t, *, axis=1, **kw):
    """Loss (float32) and gradient (bfloat16) against the float64 reference of the widened
    inputs. Gradient bound (module docstring): the terms of grad_j = g (coef p_j - w_j t'_j)
    are at most S = |g| (coef + max_k |w_k t'_k|) per row, coef = sum_k w_k t'_k."""
    loss, grad = bnfast.softmax_cross_entropy(x, t, axis=axis, **kw)
    kw64 = {name: _as64(v) for name, v in kw.items()}
    x64 = wide(x)
    prob = t.dtype.kind == "f" or t.dtype == BF16
    with np.errstate(invalid="ignore", over="ignore"):  # -inf rows: inf * 0 where ignored
        rl, rg = R.softmax_cross_entropy(x64, wide(t) if prob else t, axis=axis, **kw64)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    assert loss.dtype == F32 and loss.shape == rl.shape
    k = x.shape[axis]
    mag = np.abs(x64[np.isfinite(x64)]).max(initial=1) + np.log(k + 1)
    assert_f32_close(loss, rl, ulps=16, scale=mag)
    # S per row from the reference's own pieces: grad with unit grad_output, weights, targets.
    eps = kw.get("label_smoothing", 0.0)
    w = kw64.get("weight")
    w = np.ones(k) if w is None else w
    wshape = [1] * x.ndim
    wshape[axis] = k
    wb = w.reshape(wshape)
    if prob:
        wt = np.abs(wb * (wide(t) * (1 - eps) + eps / k))
    else:
        live = t != kw.get("ignore_index", -100)
        onehot = np.zeros(x.shape)
        yk = np.expand_dims(np.where(live, t, 0), axis)
        np.put_along_axis(onehot, yk, 1.0, axis=axis)
        onehot *= np.expand_dims(live, axis)
        wt = np.abs(wb * (onehot * (1 - eps) + eps / k * np.expand_dims(live, axis)))
    coef = np.sum(wt, axis=axis, keepdims=True)
    g = kw64.get("grad_output")
    g = 1.0 if g is None else (np.expand_dims(g, axis) if kw.get("reduction") == "none" else g)
    if kw.get("reduction", "mean") == "mean":
        kept = np.where(live, w[np.where(live, t, 0)], 0) if not prob else None
        divisor = x.size / k if prob else float(np.sum(kept))
        g = g / divisor if divisor else 0.0
    scale = np.abs(g) * (coef + np.max(wt, axis=axis, keepdims=True, initial=0))
    assert_bf16(grad, rg, scale=scale, c=k + 8, err_msg="grad")
    return loss, grad


@pytest.mark.parametrize("k", [1, 3, 10, 16, 17, 33, 100, 1000])
@pytest.mark.parametrize("layout", ["rows", "cols"])
@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
def test_xent_sizes(isa, rng, k, layout, tdtype):
    shape = (41, k) if layout == "rows" else (3, k, 13)
    x = logits(rng, shape)
    t = _targets(rng, (41,) if layout == "rows" else (3, 13), k, n_ignore=5, dtype=tdtype)
    check_xent(x, t)
    check_xent(x, t, reduction="sum")
    check_xent(x, t, reduction="none")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["w0", "w1"])
@pytest.mark.parametrize("kind", ["i64", "i32", "prob"])
@pytest.mark.parametrize("grad_output", [False, True], ids=["g0", "g1"])
def test_xent_options(isa, rng, reduction, smoothing, weighted, kind, grad_output):
    for shape in [(45, 10), (6, 70), (4, 12, 9)]:
        k = shape[1]
        x = logits(rng, shape)
        rest = shape[:1] + shape[2:]
        if kind == "prob":
            p = rng.dirichlet(np.ones(k), size=int(np.prod(rest)))
            p[0] = 0  # an all-zero probability row
            t = bf(np.moveaxis(p.reshape((*rest, k)), -1, 1))
        else:
            t = _targets(rng, rest, k, n_ignore=3, dtype=np.int64 if kind == "i64" else np.int32)
        kw = {"reduction": reduction, "label_smoothing": smoothing}
        if weighted:
            kw["weight"] = rng.uniform(0.1, 3.0, k).astype(np.float32)
        if grad_output:
            kw["grad_output"] = (
                rng.uniform(-2, 2, rest).astype(np.float32) if reduction == "none" else 0.75
            )
        check_xent(x, t, **kw)


@st.composite
def xent_inputs(draw):
    n = draw(st.sampled_from([0, 1, 2, 5, 16, 17, 40]))
    k = draw(st.sampled_from([1, 2, 3, 10, 16, 31, 70]))
    d = draw(st.sampled_from([None, 1, 3, 17]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n, k) if d is None else (n, k, d)
    x = rng.standard_normal(shape) * draw(st.sampled_from([1e-2, 1.0, 30.0, 1e3]))
    special = draw(st.sampled_from(["none", "extreme", "neginf_row"]))
    if x.size and special == "extreme":
        x[0, 0] = 1e30
        x[-1, -1] = -1e30
    elif x.size and special == "neginf_row":
        x[0] = -np.inf
    kind = draw(st.sampled_from(["i64", "i32", "prob"]))
    rest = shape[:1] + shape[2:]
    if kind == "prob":
        p = rng.dirichlet(np.ones(k), size=max(int(np.prod(rest)), 1))[: int(np.prod(rest))]
        t = bf(np.moveaxis(p.reshape((*rest, k)), -1, 1))
    else:
        t = _targets(rng, rest, k, n_ignore=draw(st.integers(0, 3)))
        t = t.astype(np.int64 if kind == "i64" else np.int32)
    kw = {
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.05, 0.5])),
    }
    if draw(st.booleans()):
        kw["weight"] = rng.uniform(0.1, 3.0, k).astype(np.float32)
    return bf(x), t, kw


@given(xent_inputs())
def test_xent_hypothesis(isa, inp):
    x, t, kw = inp
    check_xent(x, t, **kw)


def test_xent_extreme_logits(isa):
    inf = np.inf
    x = bf(
        [
            [1e30, -1e30, 0, 5],
            [-1e30, 1e30, 1e30, 0],
            [1e8, 1e8 - 2**20, 0, -1e8],
            [0, -inf, 2, -inf],
            [-inf, -inf, -inf, -inf],
        ]
    )
    t = np.array([1, 2, 0, 2, 3])
    loss, grad = check_xent(x, t, reduction="none")
    assert loss[0] == np.float32(wide(x[0, 0]) * 2) and loss[1] == np.float32(np.log(2.0))
    assert loss[4] == np.inf  # all -inf row: documented +inf
    np.testing.assert_array_equal(wide(grad[4]), [0, 0, 0, -1])
    assert np.isfinite(wide(grad)).all() and wide(grad[3, 1]) == wide(grad[3, 3]) == 0


def test_xent_near_one_target(isa):
    """p_y close to 1: the target entry p_y - 1 is rounded once from float32 (not from a
    bfloat16 p_y, which would leave 0 or -2^-8)."""
    x = bf([[12.0, 0.0, 0.0, 0.0], [0.0, 9.0, -1.0, 1.0]])
    _, grad = check_xent(x, np.array([0, 1]), reduction="sum")
    r = -3 * np.exp(-12.0) / (1 + 3 * np.exp(-12.0))  # -1.8e-5: float32 p_y - 1 has eps32 error
    assert abs(wide(grad[0, 0]) - r) <= ulp_bf16(r) + 8 * EPS32


def test_xent_nan_and_empty(isa, rng):
    x = logits(rng, (33, 9))
    x[5, 3] = np.nan
    t = _targets(rng, 33, 9)
    loss, grad = bnfast.softmax_cross_entropy(x, t, reduction="none")
    rows = np.arange(33) != 5
    assert np.isnan(loss[5]) and np.isnan(wide(grad[5])).all()
    assert np.isfinite(loss[rows]).all() and np.isfinite(wide(grad[rows])).all()
    t[5] = -100  # an ignored NaN row contributes nothing
    loss, grad = bnfast.softmax_cross_entropy(x, t)
    assert np.isfinite(loss) and (wide(grad[5]) == 0).all()
    loss, grad = bnfast.softmax_cross_entropy(x, np.full(33, -100))
    assert np.isnan(loss) and loss.dtype == F32 and (wide(grad) == 0).all()
    e = bf(np.zeros((0, 4)))
    loss, grad = bnfast.softmax_cross_entropy(e, np.zeros(0, np.int64))
    assert np.isnan(loss) and grad.shape == (0, 4) and grad.dtype == BF16
    loss, grad = bnfast.softmax_cross_entropy(
        bf(np.zeros((3, 0))), np.full(3, -100), reduction="none"
    )
    assert loss.dtype == F32 and (loss == 0).all() and grad.shape == (3, 0)


def test_xent_bfloat16_parameters(isa, rng):
    """bfloat16 class weights and grad_output are widened exactly: the same bits as float32."""
    x = logits(rng, (20, 11))
    t = _targets(rng, 20, 11)
    w = bf(rng.uniform(0.1, 3, 11))
    go = bf(rng.uniform(-1, 1, 20))
    l1, g1 = bnfast.softmax_cross_entropy(x, t, w, reduction="none", grad_output=go)
    l2, g2 = bnfast.softmax_cross_entropy(
        x, t, wide(w).astype(F32), reduction="none", grad_output=wide(go).astype(F32)
    )
    assert l1.tobytes() == l2.tobytes() and g1.tobytes() == g2.tobytes()


# ---- sigmoid binary cross-entropy -----------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, "class", "row", "full"])
@pytest.mark.parametrize("pos_weight", [False, True], ids=["pw0", "pw1"])
@pytest.mark.parametrize("c", [1, 7, 16, 33])
def test_bce(isa, rng, reduction, weight, pos_weight, c):
    shape = (9, c)
    x = logits(rng, shape, 6)
    x[0, 0] = 200
    x[-1, -1] = -1e30
    y = bf(rng.uniform(size=shape) > 0.5)
    y[1] = bf(0.3)  # soft labels
    kw = {"reduction": reduction}
    if weight == "class":
        kw["weight"] = rng.uniform(0.1, 2, c).astype(F32)
    elif weight == "row":
        kw["weight"] = rng.uniform(0.1, 2, (9, 1)).astype(F32)
    elif weight == "full":
        kw["weight"] = rng.uniform(0.1, 2, shape).astype(F32)
    if pos_weight:
        kw["pos_weight"] = rng.uniform(0.5, 3, c).astype(F32)
    if reduction == "none":
        kw["grad_output"] = rng.uniform(-2, 2, shape).astype(F32)
    loss, grad = bnfast.sigmoid_binary_cross_entropy(x, y, **kw)
    assert loss.dtype == F32 and grad.dtype == BF16
    kw64 = {k: _as64(v) for k, v in kw.items()}
    x64, y64 = wide(x), wide(y)
    rl, rg = R.sigmoid_binary_cross_entropy(x64, y64, **kw64)
    assert_f32_close(loss, rl, ulps=16, scale=8)
    # grad = w g (c sigmoid(x) - pw y): terms of magnitude S = |w g| (|c| sigmoid + |pw y|).
    w = np.broadcast_to(kw64.get("weight", 1.0), shape)
    pw = kw64.get("pos_weight", 1.0)
    g = kw64.get("grad_output", 1.0) / (x.size if reduction == "mean" else 1)
    cc = 1 + (pw - 1) * y64
    with np.errstate(over="ignore"):
        sig = 1 / (1 + np.exp(-x64))
    scale = np.abs(w * g) * (np.abs(cc) * sig + np.abs(pw * y64))
    assert_bf16(grad, rg, scale=scale, c=8)


def test_bce_targets_and_edges(isa):
    x = bf([[1e30, -1e30, 0.0, np.nan, 90.0, -90.0]])
    y = np.array([[1, 0, 1, 1, 1, 0]])  # integers: converted to bfloat16 like the logits
    loss, grad = bnfast.sigmoid_binary_cross_entropy(x, y, reduction="none")
    assert loss.dtype == F32 and grad.dtype == BF16
    np.testing.assert_array_equal(loss[0, [0, 1]], 0)
    np.testing.assert_array_equal(wide(grad[0, [0, 1]]), 0)
    assert_f32_close(loss[0, 2], np.log(2))
    assert np.isnan(loss[0, 3]) and np.isnan(wide(grad[0, 3]))
    loss, grad = bnfast.sigmoid_binary_cross_entropy(bf(np.zeros((0, 3))), np.zeros((0, 3)))
    assert np.isnan(loss) and loss.dtype == F32 and grad.shape == (0, 3)
    # float targets are rounded to bfloat16 (to nearest), as PyTorch needs them in the dtype
    x = bf(np.zeros((1, 2)))
    _, g1 = bnfast.sigmoid_binary_cross_entropy(x, np.array([[0.3, 0.7]]), reduction="sum")
    _, g2 = bnfast.sigmoid_binary_cross_entropy(x, bf([[0.3, 0.7]]), reduction="sum")
    assert g1.tobytes() == g2.tobytes()


# ---- PyTorch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 10), (16, 1000), (8, 33, 5)])
def test_matches_torch(isa, rng, shape):
    """PyTorch's bfloat16 CPU softmax / log_softmax and cross_entropy on bfloat16 logits the
    way autocast runs it (upcast to float32; the gradient rounded back to bfloat16 by the cast's
    backward). Softmax and the cross-entropy gradient of both are within about 1 ulp of the
    exact value: 2 ulp apart at most (gradients with the cancellation bound). PyTorch's
    bfloat16 log_softmax rounds an intermediate to bfloat16 (it returns 0.0 for -0.00098 where
    log-sum-exp is about 0.001): it agrees with bnfast only within a bfloat16 ulp of the terms
    |z| + |L| + 1, while bnfast's stays within the module's bound of the exact value."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = logits(rng, shape)
    xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    y = bnfast.softmax(x, axis=1)
    ty = torch.softmax(xt, dim=1).view(torch.int16).numpy().view(BF16)
    assert_bf16(y, wide(ty))
    ls = bnfast.log_softmax(x, axis=1)
    tls = torch.log_softmax(xt, dim=1).view(torch.int16).numpy().view(BF16)
    lsm_scale = _lsm_scale(wide(x), 1)
    assert_bf16(ls, R.log_softmax(wide(x), 1), scale=lsm_scale, c=shape[1] + 8)
    assert (np.abs(wide(ls) - wide(tls)) <= ulp_bf16(wide(tls)) + 2.0**-8 * lsm_scale).all()
    t = rng.integers(0, shape[1], shape[:1] + shape[2:])
    for smoothing in (0.0, 0.1):
        loss, grad = bnfast.softmax_cross_entropy(x, t, label_smoothing=smoothing)
        xr = xt.clone().requires_grad_(True)
        tl = F.cross_entropy(xr.float(), torch.from_numpy(t), label_smoothing=smoothing)
        tl.backward()
        assert loss.dtype == F32 and tl.dtype == torch.float32
        mag = np.abs(wide(x)).max() + np.log(shape[1] + 1)
        assert_f32_close(loss, tl.item(), ulps=16, scale=mag)
        tg = xr.grad.view(torch.int16).numpy().view(BF16)
        # S: the gradient's terms are at most (1 + max(t')) / rows per element
        assert_bf16(grad, wide(tg), scale=2.0 / t.size, c=shape[1] + 8)


# ---- ISAs and arguments ---------------------------------------------------------------------


def test_avx512_bf16_is_bitwise_avx512(isa, rng):
    """The avx512_bf16 target differs only in how it rounds to bfloat16 (one instruction)."""
    if isa != "avx512_bf16":
        pytest.skip("compares avx512_bf16 with avx512")
    cases = [((64, 10), 1), ((37, 1000), 1), ((5, 70, 7), 1), ((300, 33), -1)]
    for shape, axis in cases:
        x = logits(rng, shape, 5)
        dy = bf(rng.standard_normal(shape))
        k = shape[axis]
        t = rng.integers(0, k, shape[:1] + shape[2:]) if axis == 1 else None
        yt = bf(rng.uniform(size=shape))

        def run(x=x, dy=dy, axis=axis, t=t, yt=yt):
            r = [bnfast.softmax(x, axis=axis), bnfast.log_softmax(x, axis=axis)]
            r += [
                bnfast.softmax_backward(r[0], dy, axis),
                bnfast.log_softmax_backward(r[1], dy, axis),
            ]
            if t is not None:
                r += bnfast.softmax_cross_entropy(x, t, reduction="none", label_smoothing=0.1)
            r += bnfast.sigmoid_binary_cross_entropy(x, yt, reduction="none")
            return [a.tobytes() for a in r]

        mine = run()
        with bnfast.use_isa("avx512"):
            assert run() == mine, shape


def test_bad_inputs_name_the_argument(isa, rng):
    """Dtype mixes that are not served: TypeError naming the argument, nothing written."""
    x = logits(rng, (8, 5))
    t = _targets(rng, 8, 5)
    out = bf(np.full((8, 5), 42.0))
    before = out.tobytes()
    calls = {
        "weight": lambda: bnfast.softmax_cross_entropy(x, t, np.ones(5), out=out),
        "target": lambda: bnfast.softmax_cross_entropy(x, np.full((8, 5), 0.2, F32), out=out),
        "grad_output": lambda: bnfast.softmax_cross_entropy(
            x, t, reduction="none", grad_output=np.ones(8), out=out
        ),
        "out": lambda: bnfast.softmax_cross_entropy(x, t, out=np.zeros((8, 5), F32)),
        "dy": lambda: bnfast.softmax_backward(bnfast.softmax(x), np.ones((8, 5), F32), out=out),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"\b{name}\b"):
            call()
        assert out.tobytes() == before, name
    core = {
        "weight": lambda: _core.softmax_cross_entropy(
            x, t, 1, np.ones(5), -100, "mean", 0.0, None, out
        ),
        "target": lambda: _core.softmax_cross_entropy(
            x, np.full((8, 5), 0.2, F32), 1, None, -100, "mean", 0.0, None, out
        ),
        "grad_output": lambda: _core.softmax_cross_entropy(
            x, t, 1, None, -100, "none", 0.0, np.ones(8), out
        ),
        "targets": lambda: _core.sigmoid_binary_cross_entropy(
            x, np.ones((8, 5), F32), None, None, "mean", None, out
        ),
        "pos_weight": lambda: _core.sigmoid_binary_cross_entropy(
            x, x, None, np.ones(5), "mean", None, out
        ),
        "out": lambda: _core.softmax(x, -1, np.zeros((8, 5), F32)),
    }
    for name, call in core.items():
        with pytest.raises(TypeError, match=rf"\b{name}\b"):
            call()
        assert out.tobytes() == before, name
    # float32 logits with bfloat16 probabilities: the target names itself too
    with pytest.raises(TypeError, match="target"):
        bnfast.softmax_cross_entropy(wide(x).astype(F32), bf(np.full((8, 5), 0.2)))


def test_vmath_bfloat16(isa, rng):
    """exp and log of bfloat16: float32 vmath on widened values, rounded once (1 ulp)."""
    x = bf(rng.uniform(-80, 80, 1000))
    e = _core.vmath_exp(x)
    assert e.dtype == BF16
    assert_bfloat16_within(e, np.exp(wide(x)), 1)
    p = bf(np.abs(wide(x)) + 1e-3)
    assert_bfloat16_within(_core.vmath_log(p), np.log(wide(p)), 1)


def test_reference_takes_bfloat16(isa, rng):
    """bnfast.reference on bfloat16 arrays: the float64 formula of the widened inputs, bfloat16
    outputs rounded once, float32 losses (what the kernels are held to)."""
    x = logits(rng, (6, 11))
    xb = x.view(np.uint16).view(BFLOAT16_BITS)
    for fn in (R.softmax, R.log_softmax):
        r = fn(x, 1)
        assert r.dtype == BF16 and r.tobytes() == bf(fn(wide(x), 1)).tobytes()
        assert fn(xb, 1).dtype == BFLOAT16_BITS and fn(xb, 1).tobytes() == r.tobytes()
    y, dy = bnfast.softmax(x), bf(rng.standard_normal(x.shape))
    r = R.softmax_backward(y, dy, 1)
    assert r.tobytes() == bf(R.softmax_backward(wide(y), wide(dy), 1)).tobytes()
    assert_bf16(bnfast.softmax_backward(y, dy, 1), r, scale=4, c=19)
    t = rng.integers(0, 11, 6)
    loss, grad = R.softmax_cross_entropy(x, t, label_smoothing=0.1)
    rl, rg = R.softmax_cross_entropy(wide(x), t, label_smoothing=0.1)
    assert loss.dtype == F32 and loss == np.float32(rl) and grad.tobytes() == bf(rg).tobytes()
    loss, grad = R.sigmoid_binary_cross_entropy(x, bf(rng.uniform(size=x.shape)))
    assert loss.dtype == F32 and grad.dtype == BF16
    assert bnfast.softmax(bf(np.asarray(1.0)), axis=0).shape == R.softmax(bf(np.asarray(1.0))).shape


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_xent_long_rows(isa, rng, kind):
    """Rows over 1 KiB (one row per group, the next row's max taken in this row's last pass)."""
    x = logits(rng, (9, 1000), 4)
    if kind == "prob":
        t = bf(rng.dirichlet(np.ones(1000) * 0.1, size=9))
    else:
        t = _targets(rng, 9, 1000, n_ignore=2)
    w = rng.uniform(0.1, 3.0, 1000).astype(F32)
    for kw in ({}, {"weight": w, "label_smoothing": 0.2}, {"reduction": "none"}):
        check_xent(x, t, **kw)


def test_threads_bitwise(isa, rng, threads):
    """Fixed work units: the same bits on one thread and several (losses included)."""
    cases = [
        (logits(rng, (300, 10)), 1),
        (logits(rng, (40, 700)), 1),
        (logits(rng, (6, 33, 50)), 1),
    ]

    def run(x, axis):
        k = x.shape[axis]
        t = np.random.default_rng(1).integers(0, k, x.shape[:1] + x.shape[2:])
        y = bnfast.softmax(x, axis=axis)
        r = [y, bnfast.log_softmax(x, axis=axis), bnfast.softmax_backward(y, x, axis)]
        r += bnfast.softmax_cross_entropy(x, t, label_smoothing=0.1, axis=axis)
        r += bnfast.sigmoid_binary_cross_entropy(x, bnfast.softmax(x, axis=axis))
        return [a.tobytes() for a in r]

    for x, axis in cases:
        bnfast.set_num_threads(1)
        one = run(x, axis)
        bnfast.set_num_threads(4)
        assert run(x, axis) == one, x.shape


def test_backward_in_place(isa, rng):
    for shape in [(5, 9), (7, 300), (3, 20, 11)]:
        x = logits(rng, shape)
        dy = bf(rng.standard_normal(shape))
        for fwd, bwd in (
            (bnfast.softmax, bnfast.softmax_backward),
            (bnfast.log_softmax, bnfast.log_softmax_backward),
        ):
            y = fwd(x, axis=1)
            expected = bwd(y, dy, 1)
            d = dy.copy()
            assert bwd(y, d, 1, out=d) is d and d.tobytes() == expected.tobytes()
            yy = y.copy()
            assert bwd(yy, dy, 1, out=yy) is yy and yy.tobytes() == expected.tobytes()


def test_bce_bfloat16_parameters(isa, rng):
    """bfloat16 weight, pos_weight and grad_output are widened exactly: float32's bits."""
    x = logits(rng, (6, 13))
    y = bf(rng.uniform(size=(6, 13)))
    w, pw, go = (
        bf(rng.uniform(0.1, 2, 13)),
        bf(rng.uniform(0.5, 3, 13)),
        bf(rng.uniform(size=(6, 13))),
    )
    a = bnfast.sigmoid_binary_cross_entropy(
        x, y, w, pos_weight=pw, reduction="none", grad_output=go
    )
    f = [wide(v).astype(F32) for v in (w, pw, go)]
    b = bnfast.sigmoid_binary_cross_entropy(
        x, y, f[0], pos_weight=f[1], reduction="none", grad_output=f[2]
    )
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    with pytest.raises(TypeError, match="grad_output"):
        bnfast.sigmoid_binary_cross_entropy(x, y, reduction="none", grad_output=np.ones((6, 13)))
