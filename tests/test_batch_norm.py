"""Batch norm kernels against the float64 NumPy reference, on every ISA and both dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import reference as ref
from bnfast._arrays import aligned_empty
from bnfast.testing import assert_close

SIZES = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 257]

# (shape, axis): (N, C), (N, C, L), NCHW, channels-last NHWC.
LAYOUTS = [
    ((64, 33), 1),
    ((5, 7, 9), 1),
    ((4, 6, 17, 9), 1),
    ((3, 5, 7, 12), -1),
    ((2, 3, 300), 1),  # planes long enough for the plane traversal
    ((9, 3), 0),
]


def make_params(rng, c, dtype):
    w = rng.normal(1.0, 0.5, c).astype(dtype)
    b = rng.normal(0.0, 0.5, c).astype(dtype)
    rm = rng.normal(0.0, 1.0, c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    return w, b, rm, rv


def f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


def per_channel(v, x, axis):
    shape = [1] * x.ndim
    shape[axis] = -1
    return np.asarray(v, np.float64).reshape(shape)


def out_scale(x, mean, invstd, w, b, axis):
    """Condition of y = (x - mean) * invstd * w + b: x and mean are rounded to the dtype."""
    g = 1.0 if w is None else np.abs(per_channel(w, x, axis))
    c = 0.0 if b is None else np.abs(per_channel(b, x, axis))
    xa = np.abs(x.astype(np.float64))
    return (xa + np.abs(per_channel(mean, x, axis))) * per_channel(invstd, x, axis) * g + c + 1


def check_train(x, axis, rng, affine=True, momentum=0.1, eps=1e-5):
    dtype = x.dtype
    c = x.shape[axis]
    w, b, rm, rv = make_params(rng, c, dtype)
    if not affine:
        w = b = None
    rm64, rv64 = f64(rm, rv)
    res = bnfast.batch_norm(x, rm, rv, w, b, training=True, momentum=momentum, eps=eps, axis=axis)
    y64, mean64, invstd64 = ref.batch_norm_train(
        *f64(x), rm64, rv64, *f64(w, b), momentum=momentum, eps=eps, axis=axis
    )
    assert res.out.dtype == dtype and res.mean.dtype == dtype
    assert_close(res.out, y64, dtype, scale=out_scale(x, mean64, invstd64, w, b, axis))
    assert_close(res.mean, mean64, dtype, scale=np.abs(x.astype(np.float64)).max(initial=0))
    # Deviations x - mean carry ulp(mean) errors: the variance is conditioned by |mean| * std.
    std = np.sqrt(np.maximum(1 / invstd64**2 - eps, 0))
    var_err = np.abs(mean64) * std + 1
    assert_close(res.invstd, invstd64, dtype, scale=invstd64**3 * var_err)
    assert_close(rm, rm64, dtype, scale=np.abs(x.astype(np.float64)).max(initial=0))
    assert_close(rv, rv64, dtype, scale=var_err)
    return res


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS)
def test_train_layouts(isa, dtype, rng, shape, axis):
    x = rng.normal(0.5, 2.0, shape).astype(dtype)
    check_train(x, axis, rng)
    check_train(x, axis, rng, affine=False)


@pytest.mark.parametrize("n", SIZES)
def test_train_sizes_around_vector_widths(isa, dtype, rng, n):
    # n channels in a row (rows traversal) and n-long planes with n channels.
    check_train(rng.normal(size=(5, n)).astype(dtype), 1, rng)
    check_train(rng.normal(size=(2, n, n + 60)).astype(dtype), 1, rng)
    check_train(rng.normal(size=(n + 1, 3, n)).astype(dtype), 1, rng)


@st.composite
def bn_inputs(draw):
    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    if np.prod(shape) // shape[axis] < 2:
        shape = (shape[0] + 1, *shape[1:]) if axis % ndim != 0 else (shape[0], 2, *shape[2:])
    offset = draw(st.sampled_from([0.0, 3.0, -100.0]))
    spread = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, axis, offset, spread, seed


@given(bn_inputs())
def test_random_shapes_train_eval_backward(isa, dtype, inp):
    shape, axis, offset, spread, seed = inp
    rng = np.random.default_rng(seed)
    x = (rng.normal(offset, spread, shape)).astype(dtype)
    res = check_train(x, axis, rng)
    c = x.shape[axis]
    w, b, rm, rv = make_params(rng, c, dtype)
    y = bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=axis).out
    y64 = ref.batch_norm_eval(*f64(x, rm, rv, w, b), axis=axis)
    assert_close(y, y64, dtype, scale=out_scale(x, rm, 1 / np.sqrt(rv + 1e-5), w, b, axis))
    check_backward(x, axis, rng, res, w, rm, rv)


def check_backward(x, axis, rng, res, w, rm, rv):
    """Backward in training (batch statistics ``res``) and eval mode (running statistics)."""
    dtype, c = x.dtype, x.shape[axis]
    dy = rng.normal(size=x.shape).astype(dtype)
    for training, (mean, invstd) in [
        (True, (res.mean, res.invstd)),
        (False, (rm, 1 / np.sqrt(rv + 1e-5))),
    ]:
        mean, invstd = mean.astype(dtype), invstd.astype(dtype)
        got = bnfast.batch_norm_backward(dy, x, mean, invstd, w, training=training, axis=axis)
        want = ref.batch_norm_backward(*f64(dy, x, mean, invstd, w), training=training, axis=axis)
        m = x.size // c
        # Each gradient sums m terms of size |dy| * |xhat|.
        assert_close(got[0], want[0], dtype, ulps=128, scale=np.abs(want[0]).max() + 1)
        xhat = np.abs(x.astype(np.float64) - per_channel(mean, x, axis)) * per_channel(
            invstd, x, axis
        )
        sums = m * (np.abs(dy).max() + 1) * (xhat.max() + 1)
        assert_close(got[1], want[1], dtype, ulps=128, scale=sums)
        assert_close(got[2], want[2], dtype, ulps=128, scale=m * np.abs(dy).max())


@pytest.mark.parametrize("c", [1, 2, 3, 4, 5, 8, 12, 16, 24, 32, 48, 64, 80])
def test_rows_of_few_vectors(isa, dtype, rng, c):
    # Few channels per row, around every ISA's vector width, and many rows: several row blocks
    # and chunks and a partial last block, with channel means far apart.
    for shape, axis in [((1037, c), 1), ((7, 13, 11, c), -1)]:
        x = (rng.normal(0.0, 1.0, shape) + rng.normal(0.0, 50.0, c)).astype(dtype)
        res = check_train(x, axis, rng)
        w, _, rm, rv = make_params(rng, c, dtype)
        check_backward(x, axis, rng, res, w, rm, rv)


@pytest.mark.parametrize("shape", [(3, 5000), (130, 2600), (70, 2049)])
def test_wide_rows(isa, dtype, rng, shape):
    # Rows whose per-channel constants outgrow L1 are normalized (and dx computed) in strips of
    # channels over groups of 64 rows: few rows, several groups, a partial last strip.
    x = (rng.normal(0.0, 1.0, shape) + rng.normal(0.0, 20.0, shape[1])).astype(dtype)
    res = check_train(x, 1, rng)
    w, _, rm, rv = make_params(rng, shape[1], dtype)
    check_backward(x, 1, rng, res, w, rm, rv)
    check_eval = bnfast.batch_norm(x, rm, rv, w, None, training=False).out
    want = ref.batch_norm_eval(*f64(x, rm, rv, w, None), axis=1)
    assert_close(
        check_eval, want, dtype, scale=out_scale(x, rm, 1 / np.sqrt(rv + 1e-5), w, None, 1)
    )


def test_large_offset_variance(isa):
    # float32, mean 1e4, std 1, 2**20 values per channel: no E[x^2] - E[x]^2 cancellation.
    rng = np.random.default_rng(7)
    for shape, axis in [((1 << 18, 4), 1), ((16, 2, 1 << 16), 1)]:
        x = rng.normal(1e4, 1.0, shape).astype(np.float32)
        res = bnfast.batch_norm(x, training=True, axis=axis)
        _, mean64, invstd64 = ref.batch_norm_train(x.astype(np.float64), axis=axis)
        var = 1 / res.invstd.astype(np.float64) ** 2 - 1e-5
        var64 = 1 / invstd64**2 - 1e-5
        assert np.all(np.abs(var / var64 - 1) < 1e-3), (var, var64)
        assert np.all(np.abs(res.mean - mean64) < 1e-2)
        # The output stays normalized to float32 accuracy, not |mean| ulps.
        assert abs(float(res.out.std()) - 1) < 1e-3


@pytest.mark.parametrize("shape", [(1000, 7), (203, 3, 5), (130, 1030)])
def test_train_rows_drifting_between_blocks(isa, dtype, rng, shape):
    # Rows sorted by a large offset: every row block and chunk has a different mean, so the
    # block and chunk merges (not one two-pass sum) carry the variance.
    x = rng.normal(0.0, 1.0, shape) + 300.0 * (np.arange(shape[0]) // 11).reshape(
        -1, *[1] * (len(shape) - 1)
    )
    check_train(x.astype(dtype), 1, rng)
    x = rng.normal(0.0, 1.0, shape) + np.where(np.arange(shape[0]) % 8 == 0, 1e3, 0.0).reshape(
        -1, *[1] * (len(shape) - 1)
    )
    check_train(x.astype(dtype), 1, rng)


def test_constant_channel(isa, dtype):
    x = np.full((10, 3), 5.0, dtype)
    x[:, 1] = np.arange(10)
    res = bnfast.batch_norm(x, training=True)
    assert np.all(res.out[:, 0] == 0)
    assert np.all(res.out[:, 2] == 0)
    assert res.invstd[0] == pytest.approx(1 / np.sqrt(1e-5), rel=1e-6)
    dx, _, _ = bnfast.batch_norm_backward(np.ones_like(x), x, res.mean, res.invstd)
    assert np.all(np.isfinite(dx))


def test_nan_propagates_to_its_channel_only(isa, dtype, rng):
    for shape in [(8, 5), (2, 5, 70)]:
        x = rng.normal(size=shape).astype(dtype)
        x[1, 2] = np.nan
        rm, rv = np.zeros(5, dtype), np.ones(5, dtype)
        res = bnfast.batch_norm(x, rm, rv, training=True)
        assert np.isnan(res.out[:, 2]).all()
        assert np.isfinite(np.delete(res.out, 2, axis=1)).all()
        assert np.isnan(rm[2]) and np.isnan(rv[2])
        assert np.isfinite(np.delete(rm, 2)).all()


def test_running_stats_convention(dtype, rng):
    # PyTorch: new = (1 - m) * old + m * batch, unbiased variance for the running estimate.
    x = rng.normal(2.0, 3.0, (50, 4)).astype(dtype)
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    bnfast.batch_norm(x, rm, rv, training=True, momentum=0.25)
    assert_close(rm, 0.25 * x.astype(np.float64).mean(0), dtype, scale=10)
    assert_close(rv, 0.75 + 0.25 * x.astype(np.float64).var(0, ddof=1), dtype, scale=10)


def test_layer_momentum_none_is_cumulative_average(rng):
    bn = bnfast.nn.BatchNorm(3, momentum=None, dtype=np.float64)
    batches = [rng.normal(i, 1.0, (20, 3)) for i in range(4)]
    for b in batches:
        bn.forward(b)
    assert_close(bn.running_mean, np.mean([b.mean(0) for b in batches], axis=0), np.float64)
    assert int(bn.num_batches_tracked) == 4


def test_eval_uses_running_stats(dtype, rng):
    bn = bnfast.nn.BatchNorm(4, dtype=dtype)
    for _ in range(30):
        bn.forward(rng.normal(3.0, 2.0, (64, 4)).astype(dtype))
    bn.eval()
    x = rng.normal(3.0, 2.0, (1, 4)).astype(dtype)  # a batch of one is fine in eval
    y = bn.forward(x)
    want = ref.batch_norm_eval(*f64(x, bn.running_mean, bn.running_var, bn.weight, bn.bias))
    assert_close(y, want, dtype)
    assert abs(bn.running_mean.mean() - 3.0) < 0.5


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("shape", "axis"), [((6, 3), 1), ((3, 2, 5), 1), ((2, 3, 2, 4), -1)])
def test_backward_finite_differences(rng, training, shape, axis):
    x = rng.normal(size=shape)
    c = x.shape[axis]
    w, b = rng.normal(1, 0.3, c), rng.normal(0, 0.3, c)
    rm, rv = rng.normal(size=c), rng.uniform(0.5, 2, c)
    dy = rng.normal(size=shape)

    def loss(x, w, b):
        out = bnfast.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, axis=axis).out
        return float((out * dy).sum())

    res = bnfast.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, axis=axis)
    dx, dw, db = bnfast.batch_norm_backward(
        dy, x, res.mean, res.invstd, w, training=training, axis=axis
    )
    h = 1e-6
    for arr, grad in [(x, dx), (w, dw), (b, db)]:
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, w, b)
            arr[i] = old - h
            down = loss(x, w, b)
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("shape", "axis"), [((4099, 65), 1), ((7, 5, 3000), 1), ((3, 1000, 6), -1), ((2003, 48), 1)]
)
def test_bitwise_identical_for_any_thread_count(isa, threads, rng, shape, axis):
    x = rng.normal(1.0, 2.0, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        bnfast.set_num_threads(n)
        rm, rv = np.zeros(x.shape[axis], np.float32), np.ones(x.shape[axis], np.float32)
        res = bnfast.batch_norm(x, rm, rv, training=True, axis=axis)
        grads = bnfast.batch_norm_backward(dy, x, res.mean, res.invstd, axis=axis)
        outs.append([res.out, res.mean, res.invstd, rm, rv, *grads])
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_isas_agree_with_each_other(rng):
    x = rng.normal(size=(33, 17, 5)).astype(np.float32)
    results = {}
    for name in bnfast.available_isas():
        with bnfast.use_isa(name):
            results[name] = bnfast.batch_norm(x, training=True).out
    for name, out in results.items():
        assert_close(out, results["scalar"], np.float32, ulps=16, err_msg=name)


def test_in_place_and_out(isa, dtype, rng):
    x = rng.normal(size=(16, 5)).astype(dtype)
    want = bnfast.batch_norm(x, training=True).out
    out = np.empty_like(x)
    assert bnfast.batch_norm(x, training=True, out=out).out is out
    assert np.array_equal(out, want)
    y = x.copy()
    bnfast.batch_norm(y, training=True, out=y)
    assert np.array_equal(y, want)


@pytest.mark.parametrize(("shape", "axis"), [((1100, 2048), 1), ((2, 16, 65536), 1)])
def test_streamed_outputs_match(isa, rng, shape, axis):
    # Outputs of 8 MiB and more in line-aligned buffers are written with non-temporal stores.
    x = rng.normal(size=shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    aligned = aligned_empty(shape, np.float32)
    plain = aligned_empty((x.size + 16,), np.float32)[4 : 4 + x.size].reshape(shape)
    assert aligned.ctypes.data % 64 == 0 and plain.ctypes.data % 64 == 16
    for out in (aligned, plain):
        rm, rv = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
        res = bnfast.batch_norm(x, rm, rv, training=True, axis=axis, out=out)
        ev = bnfast.batch_norm(x, rm, rv, axis=axis, out=out.copy()).out
        dx, _, _ = bnfast.batch_norm_backward(
            dy, x, res.mean, res.invstd, axis=axis, out=out.copy()
        )
        if out is aligned:
            first = (res.out.copy(), ev, dx)
    for a, b in zip(first, (res.out, ev, dx)):
        assert np.array_equal(a, b)


def test_non_contiguous_input_is_copied(rng):
    x = rng.normal(size=(20, 8))
    res = bnfast.batch_norm(x[:, ::2], training=True)
    want = bnfast.batch_norm(np.ascontiguousarray(x[:, ::2]), training=True)
    assert np.array_equal(res.out, want.out)


def test_buffer_protocol_and_dlpack_inputs(rng):
    x = rng.normal(size=(8, 4)).astype(np.float32)
    want = bnfast.batch_norm(x, training=True).out
    assert np.array_equal(bnfast.batch_norm(memoryview(x), training=True).out, want)

    class DLPackOnly:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    assert np.array_equal(bnfast.batch_norm(DLPackOnly(x), training=True).out, want)


def test_empty_batch(isa, dtype):
    """PyTorch's answer: an empty output; in training NaN saved statistics (the mean of no
    values) and untouched running statistics; zero parameter gradients."""
    x = np.empty((0, 3), dtype)
    rm, rv = np.arange(3, dtype=dtype), np.full(3, 2.0, dtype)
    y = bnfast.batch_norm(x, rm, rv).out
    assert y.shape == (0, 3)
    y, mean, invstd = bnfast.batch_norm(x, rm, rv, training=True)
    assert y.shape == (0, 3) and np.isnan(mean).all() and np.isnan(invstd).all()
    assert np.array_equal(rm, np.arange(3, dtype=dtype)) and np.array_equal(rv, np.full(3, 2.0))
    dx, dw, db = bnfast.batch_norm_backward(x, x, mean, invstd)
    assert dx.shape == (0, 3) and np.array_equal(dw, np.zeros(3)) and np.array_equal(db, dw)


# ---- bad input ---------------------------------------------------------------------------


def test_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnfast.batch_norm(np.ones((1, 4), np.float32), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnfast.batch_norm(np.ones((1, 0), np.float32), training=True)  # PyTorch: C = 0 too
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnfast.nn.BatchNorm(4).forward(np.ones((1, 4), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"x": np.ones((4, 3), np.int64)}, TypeError, "x must be float32, float64 or bfloat16"),
        ({"x": np.ones((4, 3), np.float16)}, TypeError, "x must be float32, float64 or bfloat16"),
        ({"weight": np.ones(4, np.float32)}, ValueError, r"weight must have shape \(3,\)"),
        ({"weight": np.ones(3, np.float64)}, TypeError, "weight must be float32"),
        ({"bias": np.ones((3, 1), np.float32)}, ValueError, "bias must have shape"),
        ({"running_mean": np.zeros(2, np.float32)}, ValueError, "running_mean must have shape"),
        ({"running_var": np.ones(3, np.float64)}, TypeError, "running_var must be float32"),
        (
            {"running_var": np.ones(6, np.float32)[::2]},
            ValueError,
            "running_var must be C-contiguous",
        ),
        ({"out": np.empty((4, 2), np.float32)}, ValueError, "out must have shape"),
        ({"out": np.empty((4, 3), np.float64)}, TypeError, "out must be float32"),
        ({"axis": 2}, ValueError, "axis 2 is out of bounds"),
        ({"eps": float("nan")}, ValueError, "eps must be finite"),
        ({"eps": -1.0}, ValueError, "eps must be >= 0"),
        ({"momentum": float("inf")}, ValueError, "momentum must be finite"),
        ({"x": "abc"}, TypeError, "x must be float32, float64 or bfloat16"),
    ],
)
def test_bad_input_raises_naming_the_argument(kwargs, exc, match):
    args = {
        "x": np.ones((4, 3), np.float32) + np.arange(4, dtype=np.float32)[:, None],
        "running_mean": np.zeros(3, np.float32),
        "running_var": np.ones(3, np.float32),
        "training": True,
        **kwargs,
    }
    rm, rv = args["running_mean"].copy(), args["running_var"].copy()
    with pytest.raises(exc, match=match):
        bnfast.batch_norm(**args)
    # Nothing was written.
    assert np.array_equal(args["running_mean"], rm) and np.array_equal(args["running_var"], rv)


def test_read_only_and_overlapping_outputs():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    rm = np.zeros(3, np.float32)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean is read-only"):
        bnfast.batch_norm(x, rm, np.ones(3, np.float32), training=True)
    out = np.empty_like(x)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        bnfast.batch_norm(x, training=True, out=out)
    buf = np.arange(16, dtype=np.float32)
    with pytest.raises(ValueError, match="out overlaps x"):
        bnfast.batch_norm(buf[:12].reshape(4, 3), training=True, out=buf[3:15].reshape(4, 3))
    stats = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match="different arrays"):
        bnfast.batch_norm(x, stats[:3], stats[:3], training=True)
    with pytest.raises(ValueError, match="running_mean overlaps x"):
        bnfast.batch_norm(x, x.reshape(-1)[:3], np.ones(3, np.float32), training=True)


def test_eval_needs_running_stats():
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        bnfast.batch_norm(np.ones((4, 3), np.float32))


def test_backward_bad_input():
    x = np.ones((4, 3), np.float32)
    m, s = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="dy must have shape"):
        bnfast.batch_norm_backward(np.ones((4, 2), np.float32), x, m, s)
    with pytest.raises(TypeError, match="dy must be float32"):
        bnfast.batch_norm_backward(np.ones((4, 3)), x, m, s)
    with pytest.raises(ValueError, match="invstd must have shape"):
        bnfast.batch_norm_backward(x, x, m, s[:2])


def test_layer_state_dict_round_trip(rng):
    a = bnfast.nn.BatchNorm(5)
    for _ in range(3):
        a.forward(rng.normal(size=(8, 5)).astype(np.float32))
    b = bnfast.nn.BatchNorm(5)
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k])
    with pytest.raises(KeyError, match="missing"):
        b.load_state_dict({"weight": a.weight})


def test_layer_gradients_accumulate_and_zero(rng):
    bn = bnfast.nn.BatchNorm(3, dtype=np.float64)
    x, dy = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    bn.forward(x)
    bn.backward(dy)
    bn.forward(x)
    bn.backward(dy)
    _, dw, db = ref.batch_norm_backward(dy, x, x.mean(0), 1 / np.sqrt(x.var(0) + 1e-5))
    np.testing.assert_allclose(bn.dbias, 2 * db, rtol=1e-12)
    np.testing.assert_allclose(bn.dweight, 2 * dw, rtol=1e-10)
    bn.zero_grad()
    assert not bn.dweight.any() and not bn.dbias.any()
    assert [p.shape for p in bn.parameters()] == [g.shape for g in bn.gradients()]


def test_layer_fed_its_own_output_keeps_backward_exact(rng):
    # bn(bn(x)) with one layer: the second call must not normalize the first output in place,
    # since backward needs that input.
    x = rng.normal(size=(16, 4))
    bn = bnfast.nn.BatchNorm(4, dtype=np.float64)
    y1 = bn.forward(x)
    y1_copy = y1.copy()
    bn.forward(y1)
    assert np.array_equal(y1, y1_copy)
    dy = rng.normal(size=(16, 4))
    dx = bn.backward(dy)
    mean, var = y1_copy.mean(0), y1_copy.var(0)
    want, _, _ = ref.batch_norm_backward(dy, y1_copy, mean, 1 / np.sqrt(var + 1e-5))
    np.testing.assert_allclose(dx, want, rtol=1e-9, atol=1e-12)
