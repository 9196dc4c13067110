"""bfloat16 batch norm (PyTorch's mixed type: bfloat16 data, float32 parameters and statistics)
against the float64 reference of the widened inputs, against PyTorch, and on bad input.

The bound on the bfloat16 outputs (y, dx). The kernels compute in float32 and round once, so a
result is within 1 bfloat16 ulp of the correctly rounded reference wherever the float32 error
before that rounding is below a quarter of a bfloat16 ulp of the result. That error is bounded
per element by an error model (``*_err`` below) built from the float32 rounding of each
operation and the measured error of the float32 statistics the kernel returns (the mean and
invstd that normalized y; dweight and dbias, which carry the errors of the sums dx is made
from). Elements where the model allows more (a result that cancels to far below the terms it is
made of: y near 0 in a channel far from 0, dx where dy, its mean and the xhat term cancel)
are held to ``|y - ref| <= err + 2 ulp``: the cancellation is in the formula, and float32
statistics (PyTorch's too) cannot resolve it to bfloat16's last place. Each test also
requires most elements to be in the 1-ulp class (``min_strict``), so the bound is not met by
classifying everything as cancellation. Eval y, eval dx and train y away from cancellation
are 1 ulp.

float32 outputs (mean, invstd, running statistics, dweight, dbias) are held to the
tolerances tests/test_batch_norm.py uses for the float32 kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import reference as ref
from bnfast._arrays import BFLOAT16_BITS, aligned_empty
from bnfast.testing import assert_bfloat16_within, assert_close

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
U = 2.0**-24  # float32 unit roundoff

LAYOUTS = [
    ((64, 33), 1),  # (N, C) rows
    ((5, 7, 9), 1),
    ((4, 6, 17, 9), 1),  # NCHW, short planes: rows traversal
    ((3, 5, 7, 12), -1),  # NHWC
    ((2, 3, 300), 1),  # planes traversal
    ((9, 3), 0),
    ((1037, 64), 1),  # rows of exactly 4 vectors (AVX-512), several blocks and chunks
    ((130, 2600), 1),  # wide rows: strips
    ((2, 4, 40000), 1),  # planes longer than a segment
]


def bf16(a):
    return np.asarray(a, np.float64).astype(np.float32).astype(BF16)


def wide(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def per_channel(v, x, axis):
    shape = [1] * x.ndim
    shape[axis] = -1
    return np.asarray(v, np.float64).reshape(shape)


def bf16_ulp(v):
    """Spacing of bfloat16 at |v| (below the smallest normal, that of the smallest normal:
    results there round to zero)."""
    e = np.floor(np.log2(np.maximum(np.abs(v), 2.0**-126)))
    return 2.0 ** (e - 7)


def assert_bf16_conditioned(actual, want, err, min_strict=0.0, what=""):
    """``actual`` (bfloat16) within 1 ulp of ``want`` (float64) correctly rounded where the error
    model ``err`` is below a quarter ulp, else within ``err`` + 2 ulp (see the module docstring);
    the first class must hold at least ``min_strict`` of the finite elements."""
    actual = np.asarray(actual)
    assert actual.dtype == BF16, actual.dtype
    want = np.asarray(want, np.float64)
    err = np.broadcast_to(np.asarray(err, np.float64), want.shape)
    finite = np.isfinite(want)
    strict = ~finite | (np.nan_to_num(err, nan=np.inf) <= bf16_ulp(want) / 4)
    assert_bfloat16_within(actual[strict], want[strict], 1, err_msg=what)
    a = actual.astype(np.float64)
    loose = ~strict
    np.testing.assert_array_equal(np.isnan(a[loose]), np.isnan(want[loose]), err_msg=what)
    ok = np.abs(a[loose] - want[loose]) <= err[loose] + 2 * bf16_ulp(
        np.abs(want[loose]) + err[loose]
    )
    ok |= np.isnan(want[loose])
    assert ok.all(), f"{(~ok).sum()} values past err + 2 ulp {what}"
    n = int(finite.sum())
    if n:
        frac = float((strict & finite).sum()) / n
        assert frac >= min_strict, f"only {frac:.3f} of the values are well conditioned {what}"


def train_y_err(x, mean_k, invstd_k, mean64, invstd64, w, b, axis):
    """Error of train y before its rounding: the kernel's float32 mean and invstd (measured
    against the float64 ones) and 8 float32 roundings of the terms (x - mean, the scale, the
    FMA, slack)."""
    g = 1.0 if w is None else np.abs(per_channel(w, x, axis))
    bb = 0.0 if b is None else np.abs(per_channel(b, x, axis))
    inv = per_channel(invstd64, x, axis)
    d = np.abs(x.astype(np.float64) - per_channel(mean64, x, axis))
    dm = np.abs(per_channel(np.asarray(mean_k, np.float64) - mean64, x, axis))
    di = np.abs(per_channel(np.asarray(invstd_k, np.float64) - invstd64, x, axis))
    return dm * inv * g + di * g * d + 8 * U * (d * inv * g + bb)


def eval_y_err(x, rm, rv, w, b, axis, eps=1e-5):
    """Error of eval y before its rounding: the statistics are given, so only float32
    roundings of x - mean, the scale and the FMA (8 of them, with slack)."""
    g = 1.0 if w is None else np.abs(per_channel(w, x, axis))
    bb = 0.0 if b is None else np.abs(per_channel(b, x, axis))
    inv = 1 / np.sqrt(per_channel(rv, x, axis) + eps)
    d = np.abs(x.astype(np.float64) - per_channel(rm, x, axis))
    return 8 * U * (d * inv * g + bb)


def train_dx_err(dy, x, mean, invstd, w, axis, got, want):
    """Error of train dx = k (dy - mean(dy) - xhat mean(dy xhat)) before its rounding: the sums
    behind mean(dy) and mean(dy xhat) carry the measured errors of dbias and dweight (the
    kernel's float32 accumulation), and 8 float32 roundings of each term."""
    c = x.shape[axis]
    m = max(1, x.size // max(1, c))
    k = np.abs(per_channel(invstd, x, axis)) * (
        1.0 if w is None else np.abs(per_channel(w, x, axis))
    )
    xhat = np.abs(x.astype(np.float64) - per_channel(mean, x, axis)) * per_channel(invstd, x, axis)
    ddw = np.abs(per_channel(np.asarray(got[1], np.float64) - want[1], x, axis))
    ddb = np.abs(per_channel(np.asarray(got[2], np.float64) - want[2], x, axis))
    dw = np.abs(per_channel(want[1], x, axis))
    db = np.abs(per_channel(want[2], x, axis))
    dya = np.abs(dy.astype(np.float64))
    return k / m * (ddb + xhat * ddw) + 8 * U * k * (dya + db / m + xhat * dw / m)


def make_params(rng, c, dtype=F32):
    w = rng.normal(1.0, 0.5, c).astype(dtype)
    b = rng.normal(0.0, 0.5, c).astype(dtype)
    rm = rng.normal(0.0, 1.0, c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    return w, b, rm, rv


def check_train(x, axis, rng, affine=True, momentum=0.1, eps=1e-5, min_strict=0.0):
    c = x.shape[axis]
    w, b, rm, rv = make_params(rng, c)
    if not affine:
        w = b = None
    rm64, rv64 = wide(rm), wide(rv)
    res = bnfast.batch_norm(x, rm, rv, w, b, training=True, momentum=momentum, eps=eps, axis=axis)
    y64, mean64, invstd64 = ref.batch_norm_train(
        x, rm64, rv64, wide(w), wide(b), momentum=momentum, eps=eps, axis=axis
    )
    assert res.out.dtype == BF16 and res.mean.dtype == F32 and res.invstd.dtype == F32
    assert rm.dtype == F32 and rv.dtype == F32
    err = train_y_err(x, res.mean, res.invstd, mean64, invstd64, w, b, axis)
    assert_bf16_conditioned(res.out, y64, err, min_strict, "train y")
    # The float32 kernel's tolerances (tests/test_batch_norm.py check_train).
    xmax = np.abs(x.astype(np.float64)).max(initial=0)
    assert_close(res.mean, mean64, F32, scale=xmax)
    std = np.sqrt(np.maximum(1 / invstd64**2 - eps, 0))
    var_err = np.nan_to_num(np.abs(mean64) * std) + 1  # NaN: no values (then NaN statistics)
    assert_close(res.invstd, invstd64, F32, scale=np.nan_to_num(invstd64**3 * var_err))
    assert_close(rm, rm64, F32, scale=xmax)
    assert_close(rv, rv64, F32, scale=var_err)
    return res, w, b


def check_eval(x, axis, rng, min_strict=0.9):
    c = x.shape[axis]
    w, b, rm, rv = make_params(rng, c)
    res = bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=axis)
    y64 = ref.batch_norm_eval(x, wide(rm), wide(rv), wide(w), wide(b), axis=axis)
    assert res.out.dtype == BF16
    assert_bf16_conditioned(res.out, y64, eval_y_err(x, rm, rv, w, b, axis), min_strict, "eval y")
    np.testing.assert_array_equal(res.mean, rm)
    assert_close(res.invstd, 1 / np.sqrt(rv.astype(np.float64) + 1e-5), F32, ulps=2)


def check_backward(x, axis, rng, res, w, min_strict=0.0, dy=None):
    """Backward in training (batch statistics ``res``) and eval mode (running statistics)."""
    c = x.shape[axis]
    if dy is None:
        dy = bf16(rng.normal(size=x.shape))
    _, _, rm, rv = make_params(rng, c)
    for training, mean, invstd in [
        (True, res.mean, res.invstd),
        (False, rm, (1 / np.sqrt(rv.astype(np.float64) + 1e-5)).astype(F32)),
    ]:
        got = bnfast.batch_norm_backward(dy, x, mean, invstd, w, training=training, axis=axis)
        want = ref.batch_norm_backward(dy, x, mean, invstd, wide(w), training=training, axis=axis)
        assert got[0].dtype == BF16 and got[1].dtype == F32 and got[2].dtype == F32
        if training:
            err = train_dx_err(dy, x, mean, invstd, w, axis, got, want)
            assert_bf16_conditioned(got[0], want[0], err, min_strict, "train dx")
        else:
            # dx = dy * (weight * invstd): two float32 roundings, always 1 ulp.
            assert_bfloat16_within(got[0], want[0], 1, err_msg="eval dx")
        # The float32 kernel's tolerances (tests/test_batch_norm.py check_backward).
        m = x.size // c if c else 0
        xhat = np.abs(x.astype(np.float64) - per_channel(mean, x, axis)) * per_channel(
            invstd, x, axis
        )
        dymax = np.abs(dy.astype(np.float64)).max(initial=0)
        sums = m * (dymax + 1) * (xhat.max(initial=0) + 1)
        assert_close(got[1], want[1], F32, ulps=128, scale=sums)
        assert_close(got[2], want[2], F32, ulps=128, scale=m * dymax)


# ---- layouts and sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS)
def test_train_eval_backward_layouts(isa, rng, shape, axis):
    x = bf16(rng.normal(0.5, 2.0, shape))
    res, w, _ = check_train(x, axis, rng, min_strict=0.95)
    check_train(x, axis, rng, affine=False, min_strict=0.95)
    check_eval(x, axis, rng, min_strict=0.95)
    check_backward(x, axis, rng, res, w, min_strict=0.95)


@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 127, 128, 129, 257])
def test_sizes_around_vector_widths(isa, rng, n):
    # n channels in a row (rows traversal), n-long planes (bfloat16 planes from 128 values).
    for shape in [(5, n), (2, n, n + 60), (n + 1, 3, n)]:
        x = bf16(rng.normal(size=shape))
        res, w, _ = check_train(x, 1, rng, min_strict=0.9)
        check_eval(x, 1, rng)
        # Train dx sums to 0 over a channel: with few values per channel it is mostly
        # cancellation (with 2 it is exactly 0).
        check_backward(x, 1, rng, res, w, min_strict=0.9 if x.size // n >= 16 else 0.0)


@pytest.mark.parametrize(("shape", "axis"), [((4096, 5), 1), ((6, 3, 50000), 1), ((64, 700), 1)])
def test_large_offset(isa, rng, shape, axis):
    # 1000 + N(0, 1): bfloat16 holds such values only to 4 (its spacing at 1000), and the
    # statistics must still be those of the data (no E[x^2] - E[x]^2 cancellation); y is 1 ulp
    # wherever it does not itself cancel to near 0.
    x = bf16(1000.0 + rng.normal(size=shape))
    res, w, _ = check_train(x, axis, rng, min_strict=0.9)
    invstd64 = ref.batch_norm_train(x, axis=axis)[2]
    assert np.all(np.abs(res.invstd / invstd64 - 1) < 1e-4), (res.invstd, invstd64)
    check_eval(x, axis, rng, min_strict=0.0)
    check_backward(x, axis, rng, res, w, min_strict=0.9)


def test_large_offset_output_stays_normalized(isa):
    rng = np.random.default_rng(7)
    x = bf16(rng.normal(1e4, 100.0, (1 << 16, 4)))
    res = bnfast.batch_norm(x, training=True)
    y = res.out.astype(np.float64)
    assert np.all(np.abs(y.mean(axis=0)) < 1e-2) and np.all(np.abs(y.std(axis=0) - 1) < 1e-2)


# ---- random shapes --------------------------------------------------------------------------


@st.composite
def bn_inputs(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    # Length-1 axes in every position, and longer planes now and then.
    if ndim > 1 and draw(st.booleans()):
        shape = tuple(1 if i == draw(st.integers(0, ndim - 1)) else n for i, n in enumerate(shape))
    if ndim > 1 and draw(st.integers(0, 4)) == 0:
        shape = (*shape[:-1], draw(st.integers(120, 400)))
    axis = draw(st.integers(-ndim, ndim - 1))
    offset = draw(st.sampled_from([0.0, 3.0, -100.0, 1000.0]))
    spread = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    affine = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, axis, offset, spread, affine, seed


@given(bn_inputs())
def test_random_shapes(isa, inp):
    shape, axis, offset, spread, affine, seed = inp
    rng = np.random.default_rng(seed)
    x = bf16(rng.normal(offset, spread, shape))
    m = math.prod(n for i, n in enumerate(shape) if i != axis % len(shape))
    check_eval(x, axis, rng, min_strict=0.0)
    if m == 1:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bnfast.batch_norm(x, training=True, axis=axis)
        return
    res, w, _ = check_train(x, axis, rng, affine=affine)
    if m == 0:
        assert np.isnan(res.mean).all() and np.isnan(res.invstd).all()
    check_backward(x, axis, rng, res, w)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((0, 3), 1), ((4, 0), 1), ((0, 3, 5), 1), ((2, 3, 0), 1), ((2, 0, 5), 1), ((0, 4), -1)],
)
def test_empty(isa, shape, axis):
    # As the float32 kernels: an empty output, NaN statistics of nothing, the running statistics
    # untouched (bfloat16 ones too, not even rounded), zero dweight and dbias.
    x = np.zeros(shape, BF16)
    c = shape[axis]
    for rm, rv in [
        (np.full(c, 0.25, F32), np.full(c, 2.0, F32)),
        (bf16(np.full(c, 0.25)), bf16(np.full(c, 2.0))),
    ]:
        rm0, rv0 = rm.copy(), rv.copy()
        y, mean, invstd = bnfast.batch_norm(x, rm, rv, training=True, axis=axis)
        assert y.shape == shape and y.dtype == BF16
        assert mean.dtype == F32 and mean.shape == (c,)
        if math.prod(shape) // max(c, 1) == 0 or c == 0:
            assert np.isnan(mean).all() and np.isnan(invstd).all()
        assert rm.tobytes() == rm0.tobytes() and rv.tobytes() == rv0.tobytes()
    f32 = bnfast.batch_norm(
        x.astype(F32), np.zeros(c, F32), np.ones(c, F32), training=True, axis=axis
    )
    np.testing.assert_array_equal(mean, f32.mean)
    dx, dw, db = bnfast.batch_norm_backward(x, x, mean, invstd, training=True, axis=axis)
    assert dx.shape == shape and dx.dtype == BF16
    assert dw.dtype == F32 and np.all(dw == 0) and np.all(db == 0)


@pytest.mark.parametrize("shape", [(1, 5), (1, 3, 4, 4), (1, 8, 1, 1)])
def test_eval_batch_of_one(isa, rng, shape):
    x = bf16(rng.normal(size=shape))
    check_eval(x, 1, rng, min_strict=0.9)
    if math.prod(shape) // shape[1] == 1:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bnfast.batch_norm(x, training=True)


def test_constant_channel(isa):
    x = bf16(np.full((10, 3), 5.0))
    x[:, 1] = bf16(np.arange(10))
    res = bnfast.batch_norm(x, training=True)
    assert np.all(res.out[:, 0].astype(np.float32) == 0)
    assert res.invstd[0] == np.float32(1 / np.sqrt(1e-5))


# ---- NaN and infinity -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("shape", "axis"), [((40, 6), 1), ((3, 6, 200), 1), ((4, 5, 5, 6), -1)])
def test_nan_and_inf_propagate_to_their_channel(isa, rng, bad, shape, axis):
    with np.errstate(invalid="ignore"):  # the references' inf - inf
        nan_and_inf_propagate(rng, bad, shape, axis)


def nan_and_inf_propagate(rng, bad, shape, axis):
    x = bf16(rng.normal(size=shape))
    idx = [0] * len(shape)
    idx[axis] = 2
    x[tuple(idx)] = bf16(bad)
    c = shape[axis]
    w, b, rm, rv = make_params(rng, c)
    rm0 = rm.copy()
    res = bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis)
    y64, mean64, invstd64 = ref.batch_norm_train(x, axis=axis, weight=wide(w), bias=wide(b))
    # y: all NaN in channel 2 (its variance is NaN), the other channels as without it.
    err = train_y_err(x, res.mean, res.invstd, mean64, invstd64, w, b, axis)
    assert_bf16_conditioned(res.out, y64, err, 0.9, "train y")
    ch = [slice(None)] * len(shape)
    ch[axis] = 2
    assert np.isnan(res.out[tuple(ch)].astype(np.float32)).all()
    assert np.isnan(res.invstd[2]) and np.isnan(rv[2])
    # The mean of a channel holding an infinity is that infinity or NaN (inf - inf in a merge).
    assert np.isnan(res.mean[2]) or res.mean[2] == mean64[2]
    others = np.arange(c) != 2
    assert np.all(np.isfinite(res.mean[others])) and np.all(rm[others] != rm0[others])
    # Backward from those statistics: NaN in channel 2 only.
    dy = bf16(rng.normal(size=shape))
    dx, dw, _ = bnfast.batch_norm_backward(dy, x, res.mean, res.invstd, w, axis=axis)
    assert np.isnan(dx[tuple(ch)].astype(np.float32)).all() and np.isnan(dw[2])
    assert np.isfinite(dx.astype(np.float32)).sum() == dx.size - dx[tuple(ch)].size
    # Eval: only the element itself is not finite.
    y = bnfast.batch_norm(x, rm0, np.abs(rm0) + 1, w, b, axis=axis).out
    want = ref.batch_norm_eval(x, wide(rm0), np.abs(wide(rm0)) + 1, wide(w), wide(b), axis=axis)
    assert_bfloat16_within(y, want, 1)


def test_inf_in_dy(isa, rng):
    x = bf16(rng.normal(size=(30, 4)))
    res, w, _ = check_train(x, 1, rng)
    dy = bf16(rng.normal(size=x.shape))
    dy[3, 1] = bf16(np.inf)
    got = bnfast.batch_norm_backward(dy, x, res.mean, res.invstd, w)
    with np.errstate(invalid="ignore"):
        want = ref.batch_norm_backward(dy, x, res.mean, res.invstd, wide(w))
    # Channel 1: its sums are infinite, dx infinite or NaN as the reference's; others 1 ulp.
    np.testing.assert_array_equal(
        np.isnan(got[0].astype(np.float32)), np.isnan(want[0]), err_msg="NaN positions"
    )
    assert_bfloat16_within(got[0][:, [0, 2, 3]], want[0][:, [0, 2, 3]], 1)
    fin = ~np.isnan(want[0][:, 1])
    np.testing.assert_array_equal(got[0][fin, 1].astype(np.float64), want[0][fin, 1])
    assert got[2][1] == np.inf and np.isinf(got[1][1])


# ---- dtypes of the per-channel arrays -------------------------------------------------------


def test_bfloat16_parameters_are_widened(isa, rng):
    # PyTorch takes all-bfloat16 parameters beside bfloat16 input too: the same result as their
    # float32 widening, bfloat16 running statistics written back rounded.
    x = bf16(rng.normal(2.0, 3.0, (16, 5, 9)))
    w, b, rm, rv = (bf16(a) for a in make_params(rng, 5))
    w32, b32, rm32, rv32 = (a.astype(F32) for a in (w, b, rm, rv))
    got = bnfast.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3)
    want = bnfast.batch_norm(x, rm32, rv32, w32, b32, training=True, momentum=0.3)
    for g, h in zip(got, want):
        assert g.tobytes() == h.tobytes()
    assert rm.dtype == BF16 and rm.tobytes() == ref.round_bfloat16(rm32).tobytes()
    assert rv.tobytes() == ref.round_bfloat16(rv32).tobytes()
    rmr, rvr = (bf16(a) for a in make_params(np.random.default_rng(1), 5)[2:])
    rm64, rv64 = rmr.copy(), rvr.copy()
    ref.batch_norm_train(x, rm64, rv64, momentum=0.3)
    bnfast.batch_norm(x, rmr, rvr, training=True, momentum=0.3)
    assert_bfloat16_within(rmr, rm64.astype(np.float64), 1)
    assert_bfloat16_within(rvr, rv64.astype(np.float64), 1)
    e1 = bnfast.batch_norm(x, rm, rv, w, b)
    e2 = bnfast.batch_norm(x, rm.astype(F32), rv.astype(F32), w32, b32)
    assert e1.out.tobytes() == e2.out.tobytes()
    dy = bf16(rng.normal(size=x.shape))
    g1 = bnfast.batch_norm_backward(dy, x, bf16(got.mean), bf16(got.invstd), w)
    g2 = bnfast.batch_norm_backward(
        dy, x, bf16(got.mean).astype(F32), bf16(got.invstd).astype(F32), w32
    )
    for g, h in zip(g1, g2):
        assert g.tobytes() == h.tobytes()


def test_bits_view_dtype(isa, rng):
    # bnfast.torch's bits-only bfloat16 view: the same bits, outputs in that dtype.
    x = bf16(rng.normal(size=(20, 6)))
    xb = x.view(BFLOAT16_BITS)
    w, b, rm, rv = make_params(rng, 6)
    a = bnfast.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True)
    r = bnfast.batch_norm(xb, rm.copy(), rv.copy(), w, b, training=True)
    assert r.out.dtype == BFLOAT16_BITS and r.out.tobytes() == a.out.tobytes()
    dy = bf16(rng.normal(size=x.shape))
    g = bnfast.batch_norm_backward(dy.view(BFLOAT16_BITS), xb, r.mean, r.invstd, w)
    h = bnfast.batch_norm_backward(dy, x, a.mean, a.invstd, w)
    assert g[0].dtype == BFLOAT16_BITS and g[0].tobytes() == h[0].tobytes()


def test_out_and_in_place(isa, rng):
    x = bf16(rng.normal(size=(64, 128)))
    want = bnfast.batch_norm(x, training=True).out
    out = aligned_empty(x.shape, BF16)
    got = bnfast.batch_norm(x, training=True, out=out).out
    assert got is out and out.tobytes() == want.tobytes()
    xi = x.copy()
    bnfast.batch_norm(xi, training=True, out=xi)
    assert xi.tobytes() == want.tobytes()


def test_streamed_outputs(isa, rng):
    # Outputs past the streaming threshold (8 MiB) into line-aligned buffers: non-temporal
    # bfloat16 stores, the same bits as the cached stores into a buffer off the line.
    shape = (8192, 1280)  # 20 MiB
    n = math.prod(shape)

    def aligned(off=0):
        return aligned_empty(n + 64, BF16)[off : off + n].reshape(shape)

    x, dy = aligned(), aligned()
    x[...] = bf16(rng.normal(size=shape))
    dy[...] = bf16(rng.normal(size=shape))
    res = bnfast.batch_norm(x, training=True, out=aligned())
    ref_y = bnfast.batch_norm(x, training=True, out=aligned(16)).out
    assert res.out.tobytes() == ref_y.tobytes()
    g = bnfast.batch_norm_backward(dy, x, res.mean, res.invstd, out=aligned())
    h = bnfast.batch_norm_backward(dy, x, res.mean, res.invstd, out=aligned(16))
    assert g[0].tobytes() == h[0].tobytes()


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((4099, 65), 1), ((7, 5, 3000), 1), ((3, 1000, 6), -1), ((2003, 48), 1), ((8, 4, 900), 1)],
)
def test_bitwise_identical_for_any_thread_count(isa, threads, rng, shape, axis):
    x = bf16(rng.normal(1.0, 2.0, shape))
    dy = bf16(rng.normal(size=shape))
    outs = []
    for n in (1, 2, 3):
        bnfast.set_num_threads(n)
        rm, rv = np.zeros(x.shape[axis], F32), np.ones(x.shape[axis], F32)
        res = bnfast.batch_norm(x, rm, rv, training=True, axis=axis)
        grads = bnfast.batch_norm_backward(dy, x, res.mean, res.invstd, axis=axis)
        outs.append([a.tobytes() for a in (*res, rm, rv, *grads)])
    assert outs[1] == outs[0] and outs[2] == outs[0]


# ---- ISAs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "axis"), [*LAYOUTS, ((1000, 7), 1), ((7, 13, 11, 64), -1), ((4, 8, 56, 56), 1)]
)
def test_avx512_bf16_matches_avx512_bitwise(isa, rng, shape, axis):
    # The two differ only in the instruction that rounds to bfloat16, which rounds alike.
    if isa != "avx512_bf16":
        pytest.skip("compares avx512_bf16 with avx512")
    x = bf16(1.0 + rng.normal(size=shape))
    dy = bf16(rng.normal(size=shape))
    w, b, rm, rv = make_params(rng, shape[axis])

    def run():
        t = bnfast.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True, axis=axis)
        e = bnfast.batch_norm(x, rm, rv, w, b, axis=axis)
        g = bnfast.batch_norm_backward(dy, x, t.mean, t.invstd, w, axis=axis)
        h = bnfast.batch_norm_backward(dy, x, rm, e.invstd, w, training=False, axis=axis)
        return [a.tobytes() for a in (*t, e.out, *g, *h)]

    got = run()
    with bnfast.use_isa("avx512"):
        want = run()
    assert got == want


# ---- PyTorch ----------------------------------------------------------------------------------


def to_torch(torch, a):
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)


def from_torch(t):
    return t.detach().contiguous().view(__import__("torch").int16).numpy().view(BF16)


@pytest.mark.parametrize(
    ("shape", "axis"), [((256, 64), 1), ((8, 16, 14, 14), 1), ((4, 7, 300), 1), ((6, 9, 9, 24), -1)]
)
def test_matches_pytorch_bfloat16(isa, rng, shape, axis):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    axis = axis % len(shape)
    c = shape[axis]
    x = bf16(rng.normal(0.5, 2.0, shape))
    dy = bf16(rng.normal(size=shape))
    w, b, rm, rv = make_params(rng, c)

    def torch_layout(a):  # torch's channel axis is 1
        return a if axis == 1 else a.movedim(axis, 1)

    for training in (True, False):
        trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
        tx = torch_layout(to_torch(torch, x)).requires_grad_()
        tw = torch.from_numpy(w.copy()).requires_grad_()
        tb = torch.from_numpy(b.copy()).requires_grad_()
        ty = F.batch_norm(tx, trm, trv, tw, tb, training=training, momentum=0.1, eps=1e-5)
        assert ty.dtype == torch.bfloat16
        ty.backward(torch_layout(to_torch(torch, dy)))
        brm, brv = rm.copy(), rv.copy()
        res = bnfast.batch_norm(x, brm, brv, w, b, training=training, axis=axis)
        want_y = from_torch(ty if axis == 1 else ty.movedim(1, axis))
        # A few ulps apart (both round float32 results of float32 statistics once), more only
        # where y cancels to near 0 (see the module docstring).
        _, mean64, invstd64 = (
            ref.batch_norm_train(x, None, None, wide(w), wide(b), axis=axis)
            if training
            else (ref.batch_norm_eval(x, wide(rm), wide(rv), wide(w), wide(b), axis=axis), 0, 0)
        )
        err = (
            train_y_err(x, res.mean, res.invstd, mean64, invstd64, w, b, axis)
            if training
            else eval_y_err(x, rm, rv, w, b, axis)
        )
        close_to_torch(res.out, want_y, err)
        np.testing.assert_allclose(brm, trm.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(brv, trv.numpy(), rtol=1e-5, atol=1e-6)
        dx, dw, db = bnfast.batch_norm_backward(
            dy, x, res.mean, res.invstd, w, training=training, axis=axis
        )
        want_dx = from_torch(tx.grad if axis == 1 else tx.grad.movedim(1, axis))
        want = ref.batch_norm_backward(dy, x, res.mean, res.invstd, wide(w), training, axis)
        dx_err = (
            train_dx_err(dy, x, res.mean, res.invstd, w, axis, (dx, dw, db), want)
            if training
            else 0.0
        )
        close_to_torch(dx, want_dx, dx_err)
        m = x.size // c
        np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-4, atol=1e-5 * m)
        np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4, atol=1e-5 * m)


def close_to_torch(got, want, err, ulps=2):
    """Within ``ulps`` bfloat16 ulps of PyTorch, or within twice the error model plus that
    where the result cancels."""
    g, t = got.astype(np.float64), want.astype(np.float64)
    tol = ulps * bf16_ulp(np.maximum(np.abs(g), np.abs(t))) + 2 * np.asarray(err)
    bad = np.abs(g - t) > tol
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} differ from PyTorch: {g[bad][:5]} {t[bad][:5]}"
    )
    strict = np.asarray(err) <= bf16_ulp(t) / 4
    near = (
        np.abs(g - t)[np.broadcast_to(strict, g.shape)]
        <= ulps * bf16_ulp(t)[np.broadcast_to(strict, g.shape)]
    )
    assert near.all()


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"weight": np.ones(3, np.float64)}, TypeError, "weight must be float32 or bfloat16"),
        ({"bias": np.ones(3, np.float16)}, TypeError, "bias must be float32"),
        ({"running_mean": np.zeros(3)}, TypeError, "running_mean must be float32 or bfloat16"),
        ({"running_var": np.ones(3, np.int32)}, TypeError, "running_var must be float32 or bf"),
        ({"out": np.empty((4, 3), np.float32)}, TypeError, "out must be bfloat16"),
        ({"weight": bf16(np.ones(4))}, ValueError, r"weight must have shape \(3,\)"),
        ({"running_var": bf16(np.ones(6))[::2]}, ValueError, "running_var must be C-contiguous"),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_bad_input_raises_naming_the_argument(isa, kwargs, exc, match, training):
    args = {
        "x": bf16(np.ones((4, 3)) + np.arange(4)[:, None]),
        "running_mean": np.zeros(3, np.float32),
        "running_var": np.ones(3, np.float32),
        "training": training,
        **kwargs,
    }
    saved = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(exc, match=match):
        bnfast.batch_norm(**args)
    for k, v in saved.items():  # nothing written
        assert args[k].tobytes() == v.tobytes(), k


def test_float_input_keeps_its_dtype_rule(isa):
    # bfloat16 parameters are for bfloat16 input only.
    x = np.ones((4, 3), np.float32) + np.arange(4, dtype=np.float32)[:, None]
    with pytest.raises(TypeError, match="weight must be float32 like the input"):
        bnfast.batch_norm(x, training=True, weight=bf16(np.ones(3)))
    with pytest.raises(TypeError, match="weight must be float32"):
        bnfast.batch_norm(x.astype(BF16).astype(F32), training=True, weight=np.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dy": np.ones((4, 3), np.float32)}, "dy must be bfloat16"),
        ({"mean": np.zeros(3)}, "mean must be float32 or bfloat16"),
        ({"invstd": np.ones(3, np.float16)}, "invstd must be float32"),
        ({"weight": np.ones(3)}, "weight must be float32 or bfloat16"),
        ({"out": np.zeros((4, 3), np.float32)}, "out must be bfloat16"),
    ],
)
def test_backward_bad_dtypes(isa, kwargs, match):
    x = bf16(np.arange(12.0).reshape(4, 3))
    out = kwargs.get("out")
    out0 = None if out is None else out.copy()
    args = {"dy": x.copy(), "x": x, "mean": np.zeros(3, F32), "invstd": np.ones(3, F32), **kwargs}
    with pytest.raises(TypeError, match=match):
        bnfast.batch_norm_backward(**args)
    if out is not None:
        assert out.tobytes() == out0.tobytes()


def test_training_one_value_per_channel_refused(isa):
    rm = bf16(np.zeros(3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnfast.batch_norm(bf16(np.ones((1, 3))), rm, bf16(np.ones(3)), training=True)
    assert rm.tobytes() == bf16(np.zeros(3)).tobytes()


# ---- the layer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_layer(isa, rng, backend):
    # bfloat16 data through the layer, float32 parameters and running statistics; the two
    # backends agree to the bound of the kernels (the reference rounds once).
    from bnfast.nn import BatchNorm

    x = bf16(rng.normal(1.0, 2.0, (32, 6, 5, 5)))
    dy = bf16(rng.normal(size=x.shape))
    bn = BatchNorm(6, dtype=BF16).set_backend(backend)
    assert bn.weight.dtype == F32 and bn.running_var.dtype == F32
    y = bn.forward(x)
    dx = bn.backward(dy)
    assert y.dtype == BF16 and dx.dtype == BF16 and bn.dweight.dtype == F32
    res = bnfast.batch_norm(x, np.zeros(6, F32), np.ones(6, F32), training=True)
    assert_bfloat16_within(y, res.out.astype(np.float64), 1)
    g = bnfast.batch_norm_backward(dy, x, res.mean, res.invstd)
    assert_bfloat16_within(dx, g[0].astype(np.float64), 1)
    assert_close(bn.dbias, g[2], F32, ulps=128, scale=x.size)
    bn.eval()
    assert bn.forward(x).dtype == BF16
