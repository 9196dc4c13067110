"""The edge sweep: every public kernel function on every ISA and both dtypes, over shapes with
empty and length-1 axes in every position and lengths around each vector width and tile.

Each case either returns the reference's answer (the README's table of empty and tiny inputs
says what that is where PyTorch defines it) or raises the exception type the table gives,
naming the argument. Factors vary one at a time from a valid base case (the length of one axis,
the channel axis, statistic lengths, layout, writability, aliasing); a hypothesis test draws
pairwise combinations of shape, ISA, dtype and layout. tools/sanitize.sh runs this file under
ASan + UBSan (scalar, AVX2, AVX-512) and tools/valgrind_memcheck.sh under valgrind (scalar,
AVX2): a read or write outside the caller's arrays fails there even where the values agree.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import nn
from bnfast import reference as ref
from bnfast.optim import SGD, Adam, AdamW, Momentum, RMSprop, clip_grad_norm
from bnfast.testing import assert_close

# Lengths around every ISA's vector width (4/8/16 floats, 2/4/8 doubles) and row tiles.
LENGTHS = (0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65)
BASES = ((2, 3), (2, 3, 2), (2, 3, 2, 2))


def _cases() -> list[tuple[tuple[int, ...], int]]:
    """(shape, axis): each axis of each base shape set to each length in turn, with the channel
    axis first, in the middle and last; and 1-D shapes."""
    out = [((n,), 0) for n in LENGTHS]
    for base in BASES:
        axes = sorted({0, len(base) // 2, len(base) - 1})
        for pos in range(len(base)):
            for n in LENGTHS:
                shape = (*base[:pos], n, *base[pos + 1 :])
                out += [(shape, ax) for ax in axes]
    return out


CASES = _cases()


def rest_count(shape: tuple[int, ...], axis: int) -> int:
    """Values per channel (or rows of a softmax): the product of the other axes."""
    return math.prod(n for i, n in enumerate(shape) if i != axis % len(shape))


def channel_shape(shape, axis):
    return tuple(n if i == axis % len(shape) else 1 for i, n in enumerate(shape))


def f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


def close(got, want, dtype, scale=1.0, ulps=128, what=""):
    with np.errstate(invalid="ignore"):
        assert_close(got, want, dtype, ulps=ulps, scale=scale, err_msg=what)


def data(shape, dtype, seed, offset=0.0):
    return (np.random.default_rng(seed).normal(offset, 1.0, shape)).astype(dtype)


# ---- batch norm ----------------------------------------------------------------------------


def bn_params(c, dtype, seed):
    rng = np.random.default_rng(seed + 1)
    w = rng.normal(1.0, 0.5, c).astype(dtype)
    b = rng.normal(0.0, 0.5, c).astype(dtype)
    rm = rng.normal(0.0, 1.0, c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    return w, b, rm, rv


def check_bn_train(shape, axis, dtype, seed):
    x = data(shape, dtype, seed, offset=0.5)
    c, m = shape[axis], rest_count(shape, axis)
    w, b, rm, rv = bn_params(c, dtype, seed)
    rm0, rv0 = rm.copy(), rv.copy()
    what = f"shape {shape} axis {axis}"
    if m == 1:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis)
        assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
        return None
    y, mean, invstd = bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis)
    rm64, rv64 = f64(rm0, rv0)
    y64, mean64, invstd64 = ref.batch_norm_train(*f64(x), rm64, rv64, *f64(w, b), axis=axis)
    assert y.shape == shape and mean.shape == invstd.shape == (c,), what
    cs = channel_shape(shape, axis)
    xa = np.abs(x.astype(np.float64)).max(initial=0)
    with np.errstate(invalid="ignore"):
        ys = (xa + np.abs(mean64.reshape(cs))) * invstd64.reshape(cs) * np.abs(w.reshape(cs)) + 2
        # Deviations x - mean carry ulp(mean) errors: the variance is conditioned by |mean| * std.
        var_err = np.abs(mean64) * np.sqrt(np.maximum(1 / invstd64**2 - 1e-5, 0)) + 1
    close(y, y64, dtype, ys, what=what)
    close(mean, mean64, dtype, xa, what=what)
    close(invstd, invstd64, dtype, np.nan_to_num(invstd64**3 * var_err), what=what)
    close(rm, rm64, dtype, xa, what=what)
    close(rv, rv64, dtype, np.nan_to_num(var_err), what=what)
    return x, mean, invstd, w


def check_bn_backward(x, axis, mean, invstd, w, training, seed):
    dtype, shape = x.dtype, x.shape
    dy = data(shape, dtype, seed + 2)
    got = bnfast.batch_norm_backward(dy, x, mean, invstd, w, training=training, axis=axis)
    want = ref.batch_norm_backward(*f64(dy, x, mean, invstd, w), training=training, axis=axis)
    what = f"shape {shape} axis {axis} training {training}"
    m = rest_count(shape, axis)
    cs = channel_shape(shape, axis)
    xhat = np.abs(x.astype(np.float64) - mean.reshape(cs)) * invstd.reshape(cs)
    sums = m * (np.abs(dy).max(initial=0) + 1) * (xhat.max(initial=0) + 1)
    close(got[0], want[0], dtype, np.abs(want[0]).max(initial=0) + 1, what=what)
    close(got[1], want[1], dtype, sums, what=what)
    close(got[2], want[2], dtype, m * np.abs(dy).max(initial=0) + 1, what=what)


def test_batch_norm_train_and_backward(isa, dtype):
    for i, (shape, axis) in enumerate(CASES):
        res = check_bn_train(shape, axis, dtype, i)
        if res is not None:
            x, mean, invstd, w = res
            if rest_count(shape, axis) == 0:  # PyTorch's statistics of nothing
                assert np.isnan(mean).all() and np.isnan(invstd).all()
            check_bn_backward(x, axis, mean, invstd, w, True, i)


def test_batch_norm_eval_and_backward(isa, dtype):
    for i, (shape, axis) in enumerate(CASES):
        x = data(shape, dtype, i)
        w, b, rm, rv = bn_params(shape[axis], dtype, i)
        y, mean, invstd = bnfast.batch_norm(x, rm, rv, w, b, axis=axis)
        y64 = ref.batch_norm_eval(*f64(x, rm, rv, w, b), axis=axis)
        scale = np.abs(x.astype(np.float64)).max(initial=0) * 3 + 2
        close(y, y64, dtype, scale, what=f"shape {shape} axis {axis}")
        assert np.array_equal(mean, rm)
        check_bn_backward(x, axis, mean, invstd, w, False, i)


# ---- softmax -------------------------------------------------------------------------------


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_and_backward(isa, dtype, log):
    fwd, bwd = (
        (bnfast.log_softmax, bnfast.log_softmax_backward)
        if log
        else (bnfast.softmax, bnfast.softmax_backward)
    )
    rfwd, rbwd = (
        (ref.log_softmax, ref.log_softmax_backward) if log else (ref.softmax, ref.softmax_backward)
    )
    for i, (shape, axis) in enumerate([((), -1), ((), 0), *CASES]):
        x = data(shape, dtype, i) * 4
        what = f"shape {shape} axis {axis}"
        y = fwd(x, axis=axis)
        assert y.shape == shape and y.dtype == dtype, what
        close(y, rfwd(*f64(x), axis=axis), dtype, 16, ulps=16, what=what)
        dy = data(shape, dtype, i + 1)
        dx = bwd(y, dy, axis=axis)
        assert dx.shape == shape, what
        scale = (np.abs(dy).sum(axis=axis, keepdims=True) if x.ndim else abs(dy)) + 1
        close(dx, rbwd(*f64(y, dy), axis=axis), dtype, scale, ulps=32, what=what)


# ---- cross-entropy -------------------------------------------------------------------------

REDUCTIONS = ("mean", "sum", "none")


def class_target(shape, axis, seed):
    rows = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    k = shape[axis]
    t = np.random.default_rng(seed).integers(0, max(k, 1), rows)
    t.reshape(-1)[::3] = -100  # some rows ignored; with no classes, every row must be
    return np.full(rows, -100) if k == 0 else t


def check_ce(x, t, axis, reduction, **kw):
    dtype = x.dtype
    loss, grad = bnfast.softmax_cross_entropy(x, t, reduction=reduction, axis=axis, **kw)
    w = kw.pop("weight", None)
    rl, rg = ref.softmax_cross_entropy(
        *f64(x),
        t if t.dtype.kind != "f" else f64(t)[0],
        *f64(w),
        reduction=reduction,
        axis=axis,
        **kw,
    )
    what = f"shape {x.shape} axis {axis} {reduction} {t.dtype}"
    assert loss.shape == rl.shape and grad.shape == x.shape, what
    rows = max(1, t.size if t.dtype.kind != "f" else rest_count(x.shape, axis))
    mag = np.abs(x).max(initial=0) + math.log(x.shape[axis] + 1) + 1
    close(loss, rl, dtype, mag * (rows if reduction == "sum" else 1), ulps=32, what=what)
    close(grad, rg, dtype, 1, ulps=32, what=what)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softmax_cross_entropy(isa, dtype, reduction):
    for i, (shape, axis) in enumerate(CASES):
        x = data(shape, dtype, i) * 3
        k = shape[axis]
        check_ce(x, class_target(shape, axis, i), axis, reduction, label_smoothing=0.1)
        w = np.random.default_rng(i).uniform(0.5, 2, k).astype(dtype)
        check_ce(x, class_target(shape, axis, i), axis, reduction, weight=w)
        p = ref.softmax(data(shape, np.float64, i + 1), axis).astype(dtype)
        check_ce(x, p, axis, reduction)
        if k == 0 and rest_count(shape, axis):
            with pytest.raises(IndexError, match="target"):  # no class index is in range
                bnfast.softmax_cross_entropy(x, class_target(shape, axis, i) + 100, axis=axis)


def test_unbatched_cross_entropy(isa, dtype):
    """(K,) logits and a 0-d target: class axis 0 by default (PyTorch's rule), a 0-d loss for
    every reduction, and a per-row grad_output that is 0-d (an array or a number)."""
    for k in (1, 7, 17, 65):
        x = data((k,), dtype, k)
        for reduction in REDUCTIONS:
            check_ce(x, np.array(k // 2), 0, reduction)
            loss, grad = bnfast.softmax_cross_entropy(x, np.array(k // 2), reduction=reduction)
            assert loss.shape == () and grad.shape == (k,)
        _, g1 = bnfast.softmax_cross_entropy(x, np.array(0), reduction="none", grad_output=2.0)
        _, g2 = bnfast.softmax_cross_entropy(
            x, np.array(0), reduction="none", grad_output=np.array(2.0, dtype)
        )
        _, g0 = bnfast.softmax_cross_entropy(x, np.array(0), reduction="none")
        assert np.array_equal(g1, g2) and np.array_equal(g1, g0 * dtype.type(2))


def test_sigmoid_binary_cross_entropy(isa, dtype):
    for i, (shape, _) in enumerate([((), 0), *CASES]):
        x = data(shape, dtype, i) * 3
        y = (np.random.default_rng(i).random(shape) < 0.5).astype(dtype)
        pw = np.full(shape[-1:] or (1,), 2.0, dtype)[: (shape[-1] if shape else 1)]
        for reduction in REDUCTIONS:
            loss, grad = bnfast.sigmoid_binary_cross_entropy(
                x, y, pos_weight=pw if shape else None, reduction=reduction
            )
            with np.errstate(invalid="ignore"):
                rl, rg = ref.sigmoid_binary_cross_entropy(
                    *f64(x, y), pos_weight=f64(pw)[0] if shape else None, reduction=reduction
                )
            what = f"shape {shape} {reduction}"
            assert loss.shape == rl.shape and grad.shape == shape, what
            n = x.size if reduction == "sum" else 1
            close(loss, rl, dtype, (np.abs(x).max(initial=0) * 3 + 3) * n, ulps=32, what=what)
            close(grad, rg, dtype, 3, ulps=32, what=what)


# ---- optimizers ----------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda p, g: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, grads=g),
    "momentum": lambda p, g: Momentum(p, lr=0.1, beta=0.9, grads=g),
    "rmsprop": lambda p, g: RMSprop(p, lr=0.01, centered=True, momentum=0.5, grads=g),
    "adam": lambda p, g: Adam(p, lr=0.01, amsgrad=True, grads=g),
    "adamw": lambda p, g: AdamW(p, lr=0.01, grads=g),
}


def test_every_optimizer_is_swept():
    assert set(OPTIMIZERS) == set(bnfast.optim.OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_with_empty_parameters(isa, dtype, name):
    """An empty parameter changes nothing for the others (bitwise), and a list of only empty
    parameters is a step that does nothing."""
    for i, n in enumerate(LENGTHS):
        shapes = [(n,), (0,), (3, n), (n, 0), (2, 0, 3)]
        params = [data(s, dtype, i + j) for j, s in enumerate(shapes)]
        grads = [data(s, dtype, 100 + i + j) for j, s in enumerate(shapes)]
        alone = [k for k, p in enumerate(params) if p.size]
        full = OPTIMIZERS[name]([p.copy() for p in params], [g.copy() for g in grads])
        part = OPTIMIZERS[name]([params[k].copy() for k in alone], [grads[k] for k in alone])
        for _ in range(2):
            full.step()
            part.step()
        for k, j in enumerate(alone):
            assert np.array_equal(full.params[j], part.params[k]), f"{name} shape {shapes[j]}"
        assert all(full.params[k].shape == shapes[k] for k in range(len(shapes)))
    empty = OPTIMIZERS[name]([np.empty(0, dtype)], [np.empty(0, dtype)])
    empty.step()
    assert empty.params[0].shape == (0,)


def test_clip_grad_norm_of_empty_gradients(isa, dtype):
    for n in LENGTHS:
        grads = [data((n,), dtype, n), np.empty((0, 3), dtype), data((2, n), dtype, n + 1)]
        want, want_norm = ref.clip_grad_norm([g.astype(np.float64) for g in grads], 1.0)
        norm = clip_grad_norm(grads, 1.0)
        assert norm == pytest.approx(want_norm, rel=1e-5)
        for g, w in zip(grads, want):
            close(g, w, dtype, what=f"n {n}")
    assert clip_grad_norm([np.empty(0, dtype)], 1.0) == 0.0
    assert clip_grad_norm([], 1.0) == 0.0


# ---- layers --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 3), (2, 3, 0), (0, 3, 2, 2), (5, 0), (1, 0)])
def test_layers_on_empty_inputs(isa, dtype, shape):
    """bnfast.nn layers answer as the functions do: an empty output and gradient, zero
    parameter gradients, running statistics untouched; one value per channel (1, 0) still
    refused in training."""
    x = np.empty(shape, dtype)
    bn = nn.BatchNorm(shape[1], dtype=dtype)
    if rest_count(shape, 1) == 1:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bn.forward(x)
        return
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    y = bn.forward(x)
    dx = bn.backward(np.empty(shape, dtype))
    assert y.shape == dx.shape == shape
    assert np.array_equal(bn.running_mean, rm) and np.array_equal(bn.running_var, rv)
    assert not bn.dweight.any() and not bn.dbias.any()
    bn.eval()
    assert bn.forward(x).shape == shape
    for layer in (nn.Softmax(axis=1), nn.LogSoftmax(axis=-1)):
        assert layer.forward(x).shape == shape
        assert layer.backward(np.empty(shape, dtype)).shape == shape


# ---- invalid inputs: one factor at a time from a valid base case ---------------------------


def _bn_call(**kw):
    c = 3
    args = {
        "x": np.ones((4, c), np.float32) + np.arange(4, dtype=np.float32)[:, None],
        "running_mean": np.zeros(c, np.float32),
        "running_var": np.ones(c, np.float32),
        "weight": np.ones(c, np.float32),
        "bias": np.zeros(c, np.float32),
        "training": True,
    }
    args.update(kw)
    return bnfast.batch_norm(**args)


def _strided(n, dtype=np.float32):
    return np.zeros(2 * n, dtype)[::2]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


_BN_BAD = [
    *[
        ({name: np.ones(n, np.float32)}, ValueError, name)
        for name in ("weight", "bias", "running_mean", "running_var")
        for n in (2, 4)
    ],
    *[
        ({name: np.ones(3, np.float64)}, TypeError, name)
        for name in ("weight", "bias", "running_mean", "running_var")
    ],
    ({"running_mean": _strided(3)}, ValueError, "running_mean must be C-contiguous"),
    ({"running_var": _readonly(np.ones(3, np.float32))}, ValueError, "running_var is read-only"),
    ({"out": _readonly(np.ones((4, 3), np.float32))}, ValueError, "out is read-only"),
    ({"out": np.ones((4, 2), np.float32)}, ValueError, "out must have shape"),
    ({"out": np.ones((3, 4), np.float32).T}, ValueError, "out must be C-contiguous"),
    ({"axis": 2}, ValueError, "axis 2 is out of bounds"),
    ({"axis": -3}, ValueError, "axis -3 is out of bounds"),
    ({"x": np.ones((1, 3), np.float32)}, ValueError, "more than 1 value per channel"),
    (
        {
            "x": np.ones((1, 0), np.float32),
            "weight": None,
            "bias": None,
            "running_mean": None,
            "running_var": None,
        },
        ValueError,
        "more than 1 value per channel",
    ),
    ({"x": np.ones((4, 3), np.int32)}, TypeError, "x must be float32, float64 or bfloat16"),
    ({"x": np.float32(1.0)}, ValueError, "axis 1 is out of bounds"),
]


@pytest.mark.parametrize(("kw", "exc", "match"), _BN_BAD, ids=[m for _, _, m in _BN_BAD])
def test_batch_norm_refuses_naming_the_argument(isa, kw, exc, match):
    before = {k: v.copy() for k, v in kw.items() if isinstance(v, np.ndarray) and v.flags.writeable}
    with pytest.raises(exc, match=match):
        _bn_call(**kw)
    assert all(np.array_equal(kw[k], v) for k, v in before.items()), "written before refusing"


def test_outputs_overlapping_inputs_are_refused(isa):
    buf = np.arange(20, dtype=np.float32)
    x = buf[:12].reshape(4, 3)
    with pytest.raises(ValueError, match="out overlaps x"):
        bnfast.batch_norm(x, training=True, out=buf[3:15].reshape(4, 3))
    with pytest.raises(ValueError, match="out overlaps x"):
        bnfast.softmax(x, out=buf[1:13].reshape(4, 3))
    with pytest.raises(ValueError, match="out overlaps logits"):
        bnfast.softmax_cross_entropy(x, np.zeros(4, np.int64), out=x)
    with pytest.raises(ValueError, match="running_mean overlaps x"):
        bnfast.batch_norm(x, buf[:3], np.ones(3, np.float32), training=True)
    p = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        SGD([p[:4], p[2:6]], lr=0.1, grads=[np.ones(4, np.float32)] * 2).step()


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"weight": np.ones(3, np.float32)}, ValueError, "weight must have shape"),
        ({"weight": np.ones(5, np.float32)}, ValueError, "weight must have shape"),
        ({"target": np.zeros(3, np.int64)}, ValueError, "class target must have shape"),
        ({"target": np.full(4, 4)}, IndexError, "target"),
        ({"target": np.full(4, -1)}, IndexError, "target"),
        ({"target": np.ones((4, 4), np.float32), "ignore_index": 0}, ValueError, "ignore_index"),
        ({"target": np.ones((4, 3), np.float32)}, ValueError, "probability target"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"reduction": "none", "grad_output": np.ones(3, np.float32)}, ValueError, "grad_output"),
        ({"reduction": "none", "grad_output": np.ones(4)}, TypeError, "grad_output"),
        ({"out": _readonly(np.ones((4, 4), np.float32))}, ValueError, "out is read-only"),
        ({"axis": 2}, ValueError, "axis 2 is out of bounds"),
    ],
)
def test_cross_entropy_refuses_naming_the_argument(isa, kw, exc, match):
    args = {"logits": np.ones((4, 4), np.float32), "target": np.arange(4)}
    with pytest.raises(exc, match=match):
        bnfast.softmax_cross_entropy(**{**args, **kw})


# ---- pairwise: shape x ISA x dtype x layout ------------------------------------------------


def layout(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "strided" and a.ndim:
        base = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
        base[..., ::2] = a
        return base[..., ::2]
    if kind == "fortran" and a.ndim:  # (numpy makes a 0-d array 1-d here)
        return np.asfortranarray(a)
    if kind == "readonly":
        return _readonly(a)
    return a


@given(
    shape=st.lists(st.sampled_from(LENGTHS[:6]), min_size=1, max_size=4).map(tuple),
    axis_pick=st.integers(0, 3),
    isa=st.sampled_from(bnfast.available_isas()),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["contiguous", "strided", "fortran", "readonly"]),
    seed=st.integers(0, 2**16),
)
def test_pairwise_shape_isa_dtype_layout(shape, axis_pick, isa, dtype, kind, seed):
    """Inputs of any layout are copied where needed: the same answers as contiguous ones."""
    axis = axis_pick % len(shape)
    x = data(shape, dtype, seed)
    xl = layout(x, kind)
    with bnfast.use_isa(isa), warnings.catch_warnings():
        for fn in (bnfast.softmax, bnfast.log_softmax):
            assert np.array_equal(fn(xl, axis=axis), fn(x, axis=axis))
        w, b, rm, rv = bn_params(shape[axis], dtype, seed)
        got = bnfast.batch_norm(xl, rm, rv, layout(w, kind), b, axis=axis)
        assert all(
            np.array_equal(g, h, equal_nan=True)
            for g, h in zip(got, bnfast.batch_norm(x, rm, rv, w, b, axis=axis))
        )
        if rest_count(shape, axis) != 1:
            check_bn_train(shape, axis, np.dtype(dtype), seed)
        t = class_target(shape, axis, seed)
        got = bnfast.softmax_cross_entropy(xl, layout(t, kind), axis=axis, reduction="none")
        want = bnfast.softmax_cross_entropy(x, t, axis=axis, reduction="none")
        assert all(np.array_equal(g, h) for g, h in zip(got, want))


# ---- the measuring bindings ----------------------------------------------------------------


def test_vmath_and_membench_on_every_length(isa, dtype):
    from bnfast import _core

    for n in LENGTHS:
        x = data((n,), dtype, n)
        with np.errstate(all="ignore"):
            close(_core.vmath_exp(x), np.exp(x.astype(np.float64)), dtype, ulps=4)
            close(_core.vmath_log(np.abs(x)), np.log(np.abs(x.astype(np.float64))), dtype, ulps=4)
        out = np.zeros(n, dtype)
        assert _core.membench([x, x], [], "read") == pytest.approx(2 * float(x.sum()), rel=1e-4)
        _core.membench([x], [out], "update")
        assert np.array_equal(out, x)


# ---- the table's answers against PyTorch's own -------------------------------------------


@pytest.mark.parametrize("shape", [(3, 0), (0, 3), (2, 3, 0), (0, 3, 2, 2), (0,), (1, 0), (1, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_pytorch_on_empty_and_tiny(isa, shape, training):
    torch = pytest.importorskip("torch")
    if shape == (0,) and training:
        pytest.skip("PyTorch has no channel axis in 1-D: (0,) is a batch of 0 there, 1 x 0 here")
    c = shape[1] if len(shape) > 1 else shape[0]
    x = np.ones(shape, np.float32)
    rm, rv = np.arange(c, dtype=np.float32), np.full(c, 2.0, np.float32)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    axis = 1 if len(shape) > 1 else 0
    try:
        want = torch.nn.functional.batch_norm(torch.from_numpy(x), trm, trv, training=training)
    except ValueError:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bnfast.batch_norm(x, rm, rv, training=training, axis=axis)
        return
    got = bnfast.batch_norm(x, rm, rv, training=training, axis=axis).out
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(rm, trm.numpy())
    np.testing.assert_array_equal(rv, trv.numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("shape", "prob"),
    [
        ((0, 5), False),
        ((0, 5), True),
        ((3, 0), False),
        ((3, 0), True),
        ((2, 4, 0), False),
        ((4,), False),
        ((4,), True),
    ],
)
def test_losses_match_pytorch_on_empty_and_unbatched(isa, reduction, shape, prob):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = data(shape, np.float32, 0)
    ax = 1 if len(shape) > 1 else 0
    t = (
        ref.softmax(data(shape, np.float64, 1), ax).astype(np.float32)
        if prob
        else np.asarray(
            class_target(shape, ax, 0)
            if shape[ax] == 0
            else np.zeros(shape[:ax] + shape[ax + 1 :], np.int64)
        )
    )
    loss, _ = bnfast.softmax_cross_entropy(x, t, reduction=reduction)
    want = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), reduction=reduction)
    np.testing.assert_allclose(loss, want.numpy(), rtol=1e-5)
    y = np.ones(shape, np.float32)
    loss, _ = bnfast.sigmoid_binary_cross_entropy(x, y, reduction=reduction)
    want = F.binary_cross_entropy_with_logits(
        torch.from_numpy(x), torch.from_numpy(y), reduction=reduction
    )
    np.testing.assert_allclose(loss, want.numpy(), rtol=1e-5)
