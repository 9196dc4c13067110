"""Fuzzing every public function and every _core binding with hostile arguments (hypothesis).

The contract for each call: a correct result or a clear Python exception (TypeError,
ValueError, IndexError); never a crash, never an out-of-bounds access (tools/sanitize.sh runs
this file under ASan/UBSan), never a partly written output after an exception.

"Correct" here means: bitwise the result of the same call on clean inputs (aligned C-contiguous
copies of the same values, no ``out``, no aliasing); the per-family tests check those against
the NumPy reference. Every test runs on every ISA (the ``isa`` fixture), so the sanitizer
jobs fuzz each path. Arrays come in every dtype (float16/32/64, big-endian floats, ints, bool,
complex, object) and memory layout (C, Fortran, sliced, negative strides, zero-stride broadcast
views, read-only, misaligned, very large strides, zero-size), and outputs may alias inputs.
"""

from __future__ import annotations

import ast
import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import _core, nn
from bnfast.optim import SGD, Adam, AdamW, Momentum, RMSprop, clip_grad_norm, global_norm

CLEAR = (TypeError, ValueError, IndexError)


@pytest.fixture(autouse=True)
def _quiet():
    """Casting NaN/inf and arithmetic on them warn; here only crashes and wrong results count."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


DTYPES = [
    np.float32,
    np.float64,
    np.float32,
    np.float64,  # floats twice as often: most calls should get past the dtype checks
    np.float16,
    np.dtype(">f4"),
    np.dtype(">f8"),
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex64,
    object,
]
LAYOUTS = [
    "C",
    "C",
    "F",
    "sliced",
    "negative",
    "broadcast",
    "readonly",
    "unaligned",
    "big_stride",
]
NOT_ARRAYS = [None, "abc", 3, 2.5, [1.0, 2.0], {"a": 1}, object(), b"xx"]


def layout_array(values: np.ndarray, dtype: Any, layout: str) -> np.ndarray:
    """An array equal to ``values`` (cast to ``dtype``) in the given memory layout."""
    dtype = np.dtype(dtype)
    v = values.astype(dtype) if dtype.kind != "O" else values.astype(object)
    if layout == "F":
        return np.asfortranarray(v)
    if layout == "sliced" and v.ndim:
        base = np.zeros(tuple(2 * n + 1 for n in v.shape), dtype)
        view = base[tuple(slice(1, None, 2) for _ in v.shape)]
        view[...] = v
        return view
    if layout == "negative" and v.ndim:
        base = np.ascontiguousarray(v[tuple(slice(None, None, -1) for _ in v.shape)])
        return base[tuple(slice(None, None, -1) for _ in v.shape)]
    if layout == "broadcast" and v.ndim and v.size:
        # Zero strides on every axis but the last: each row repeats the first one.
        return np.broadcast_to(v[tuple([slice(0, 1)] * (v.ndim - 1))], v.shape)
    if layout == "readonly":
        v = v.copy()
        v.setflags(write=False)
        return v
    if layout == "unaligned" and dtype.itemsize > 1 and dtype.kind != "O":
        raw = np.zeros(v.nbytes + 1, np.uint8)
        u = np.frombuffer(raw.data, dtype=dtype, count=v.size, offset=1).reshape(v.shape)
        raw[1:] = np.frombuffer(np.ascontiguousarray(v).tobytes(), np.uint8)
        return u
    if layout == "big_stride" and v.ndim and v.size:
        base = np.zeros((v.shape[0] * 4096, *v.shape[1:]), dtype)
        view = base[::4096]
        view[...] = v
        return view
    return np.ascontiguousarray(v) if v.ndim else v.copy()


@st.composite
def values(draw, shape: tuple[int, ...]) -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    v = np.asarray(rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e-3, 30.0])))
    if v.size and draw(st.booleans()):
        flat = v.reshape(-1)
        specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, 1e-300])
        idx = rng.integers(0, v.size, min(3, v.size))
        flat[idx] = rng.choice(specials, len(idx))
    return v


@st.composite
def shapes(draw, min_dims: int = 0, max_dims: int = 4) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(0, 6), min_size=min_dims, max_size=max_dims)))


@st.composite
def hostile(draw, shape: tuple[int, ...] | None = None, nonarray: bool = True) -> Any:
    """An array of ``shape`` (or a random one) in a random dtype and layout, or not an array."""
    if nonarray and draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from(NOT_ARRAYS))
    if shape is None:
        shape = draw(shapes())
    return layout_array(
        draw(values(shape)), draw(st.sampled_from(DTYPES)), draw(st.sampled_from(LAYOUTS))
    )


def clean(a: Any) -> Any:
    """An aligned C-contiguous copy of an ndarray (other arguments as they are)."""
    if isinstance(a, np.ndarray):
        return np.array(a, order="C", copy=True)
    if isinstance(a, list):
        return [clean(x) for x in a]
    return a


def as_list(r: Any) -> list:
    if isinstance(r, tuple):
        return [np.asarray(x) for x in r]
    if isinstance(r, list):
        return [np.asarray(x) for x in r]
    return [np.asarray(r)]


def _bytes(a: np.ndarray) -> bytes:
    # Object arrays hold pointers: compare the objects' reprs instead.
    return repr(a.tolist()).encode() if a.dtype.kind == "O" else a.tobytes()


def bitwise(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        u.dtype == v.dtype and u.shape == v.shape and _bytes(u) == _bytes(v) for u, v in zip(a, b)
    )


def snapshot(arrays: list) -> list:
    return [(a, a.copy()) for a in arrays if isinstance(a, np.ndarray) and a.dtype.kind != "O"]


def unchanged(snap: list) -> bool:
    return all(a.tobytes() == s.tobytes() for a, s in snap)


def check(
    call: Callable[[], Any],
    written: list,
    expected: Callable[[], Any] | None,
    after: Callable[[], list] = list,
    expected_after: Callable[[], list] = list,
) -> None:
    """Runs ``call``. On a clear exception, the arrays in ``written`` must be unchanged; on
    success, its outputs (and ``after()``, e.g. arrays updated in place) must equal bitwise
    those of ``expected`` (the same call on clean inputs), which must then succeed too."""
    want = None
    if expected is not None:
        try:
            want = as_list(expected()) + list(expected_after())
        except CLEAR:
            want = CLEAR
    snap = snapshot(written)
    try:
        got = as_list(call())
    except CLEAR:
        assert unchanged(snap), "an output was written before the exception"
        return
    if expected is None:
        return
    assert want is not CLEAR, "the clean call raised but the hostile one succeeded"
    assert bitwise(got + list(after()), want), "result differs from the clean inputs' result"


def maybe_out(draw, like: Any) -> Any:
    """None, an exact alias of ``like``, a hostile array of its shape, or garbage."""
    kind = draw(st.sampled_from(["none", "none", "alias", "fresh", "hostile", "garbage"]))
    shape = like.shape if isinstance(like, np.ndarray) else (3,)
    if kind == "alias":
        return like
    if kind == "fresh" and isinstance(like, np.ndarray) and like.dtype.kind == "f":
        return np.zeros(shape, like.dtype.newbyteorder("="))
    if kind == "hostile":
        return draw(hostile(shape))
    if kind == "garbage":
        return draw(hostile())
    return None


def channels(x: Any, axis: int) -> int:
    if isinstance(x, np.ndarray) and x.ndim and -x.ndim <= axis < x.ndim:
        return x.shape[axis]
    return 3


def param(draw, c: int, optional: bool = True) -> Any:
    if optional and draw(st.booleans()):
        return None
    if draw(st.integers(0, 7)) == 0:
        return draw(hostile())  # any shape: usually wrong
    return draw(hostile((c,)))


def fresh_copy(a: Any) -> Any:
    return clean(a) if isinstance(a, np.ndarray) else a


# ---- batch norm ----------------------------------------------------------------------------


@given(data=st.data())
def test_fuzz_batch_norm(isa, data):
    draw = data.draw
    x = draw(hostile())
    axis = draw(st.integers(-3, 3))
    c = channels(x, axis)
    training = draw(st.booleans())
    rm, rv, w, b = (param(draw, c) for _ in range(4))
    momentum = draw(st.sampled_from([0.1, 0.0, 1.0, float("nan"), -1.0]))
    eps = draw(st.sampled_from([1e-5, 0.0, -1.0, float("inf")]))
    out = maybe_out(draw, x)
    crm, crv = fresh_copy(rm), fresh_copy(rv)

    def expected():
        return bnfast.batch_norm(
            clean(x), crm, crv, clean(w), clean(b), training, momentum, eps, axis=axis
        )

    check(
        lambda: bnfast.batch_norm(x, rm, rv, w, b, training, momentum, eps, axis=axis, out=out),
        [rm, rv, out],
        None if out is x else expected,
        lambda: [np.asarray(a) for a in (rm, rv) if a is not None],
        lambda: [np.asarray(a) for a in (crm, crv) if a is not None],
    )


@given(data=st.data())
def test_fuzz_batch_norm_backward(isa, data):
    draw = data.draw
    x = draw(hostile())
    axis = draw(st.integers(-3, 3))
    c = channels(x, axis)
    dy = draw(hostile(x.shape if isinstance(x, np.ndarray) else None))
    mean, invstd, w = param(draw, c, False), param(draw, c, False), param(draw, c)
    training = draw(st.booleans())
    out = maybe_out(draw, draw(st.sampled_from([x, dy])))
    check(
        lambda: bnfast.batch_norm_backward(dy, x, mean, invstd, w, training, axis, out),
        [out],
        None
        if out is x or out is dy
        else lambda: bnfast.batch_norm_backward(
            clean(dy), clean(x), clean(mean), clean(invstd), clean(w), training, axis
        ),
    )


# ---- softmax -------------------------------------------------------------------------------


@pytest.mark.parametrize("log", [False, True])
@given(data=st.data())
def test_fuzz_softmax(isa, log, data):
    draw = data.draw
    fn = bnfast.log_softmax if log else bnfast.softmax
    x = draw(hostile())
    axis = draw(st.integers(-4, 4))
    out = maybe_out(draw, x)
    check(
        lambda: fn(x, axis=axis, out=out),
        [out],
        None if out is x else lambda: fn(clean(x), axis=axis),
    )


@pytest.mark.parametrize("log", [False, True])
@given(data=st.data())
def test_fuzz_softmax_backward(isa, log, data):
    draw = data.draw
    fn = bnfast.log_softmax_backward if log else bnfast.softmax_backward
    y = draw(hostile())
    dy = draw(hostile(y.shape if isinstance(y, np.ndarray) else None))
    axis = draw(st.integers(-4, 4))
    out = maybe_out(draw, draw(st.sampled_from([y, dy])))
    check(
        lambda: fn(y, dy, axis, out),
        [out],
        None if out is y or out is dy else lambda: fn(clean(y), clean(dy), axis),
    )


@given(data=st.data())
def test_fuzz_softmax_cross_entropy(isa, data):
    draw = data.draw
    x = draw(hostile())
    axis = draw(st.integers(-3, 3))
    k = channels(x, axis)
    if isinstance(x, np.ndarray) and x.ndim and -x.ndim <= axis < x.ndim:
        rows = x.shape[: axis % x.ndim] + x.shape[axis % x.ndim + 1 :]
    else:
        rows = (3,)
    kind = draw(st.sampled_from(["labels", "labels", "probs", "hostile"]))
    if kind == "labels":
        seed = draw(st.integers(0, 2**32 - 1))
        t = np.random.default_rng(seed).integers(-1, k + 1 if draw(st.booleans()) else k, rows)
        t[t == -1] = -100
        t = (
            layout_array(t, draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int8])), "C")
            if draw(st.booleans())
            else layout_array(t, np.int64, draw(st.sampled_from(LAYOUTS)))
        )
    elif kind == "probs":
        t = draw(hostile(x.shape if isinstance(x, np.ndarray) else None))
    else:
        t = draw(hostile())
    w = param(draw, k)
    reduction = draw(st.sampled_from(["mean", "sum", "none", "bogus"]))
    smoothing = draw(st.sampled_from([0.0, 0.1, 1.0, -0.5, 2.0]))
    grad_output = draw(st.sampled_from([None, 2.0, "hostile"]))
    if grad_output == "hostile":
        grad_output = draw(hostile(rows))
    ignore_index = draw(st.sampled_from([-100, 0, 1, True]))
    out = maybe_out(draw, x)
    kw = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": smoothing}
    check(
        lambda: bnfast.softmax_cross_entropy(
            x, t, w, **kw, grad_output=grad_output, axis=axis, out=out
        ),
        [out],
        None
        if out is x or out is t
        else lambda: bnfast.softmax_cross_entropy(
            clean(x), clean(t), clean(w), **kw, grad_output=clean(grad_output), axis=axis
        ),
    )


@given(data=st.data())
def test_fuzz_sigmoid_binary_cross_entropy(isa, data):
    draw = data.draw
    x = draw(hostile())
    shape = x.shape if isinstance(x, np.ndarray) else None
    y = draw(hostile(shape))
    c = shape[-1] if shape else 1
    w = draw(st.sampled_from([None, "full", "last"]))
    w = None if w is None else draw(hostile(shape if w == "full" else (c,)))
    pw = param(draw, c)
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    grad_output = draw(st.sampled_from([None, 0.5, "hostile"]))
    if grad_output == "hostile":
        grad_output = draw(hostile(shape))
    out = maybe_out(draw, x)
    check(
        lambda: bnfast.sigmoid_binary_cross_entropy(
            x, y, w, reduction=reduction, pos_weight=pw, grad_output=grad_output, out=out
        ),
        [out],
        None
        if out is x
        else lambda: bnfast.sigmoid_binary_cross_entropy(
            clean(x),
            clean(y),
            clean(w),
            reduction=reduction,
            pos_weight=clean(pw),
            grad_output=clean(grad_output),
        ),
    )


# ---- optimizers ----------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "momentum": lambda p: Momentum(p, lr=0.1, beta=0.9),
    "rmsprop": lambda p: RMSprop(p, lr=0.01, centered=True, momentum=0.5),
    "adam": lambda p: Adam(p, lr=0.01, amsgrad=True),
    "adamw": lambda p: AdamW(p, lr=0.01),
}


def test_every_optimizer_is_fuzzed():
    assert set(OPTIMIZERS) == set(bnfast.optim.OPTIMIZERS)


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@given(data=st.data())
def test_fuzz_optimizer_step(isa, kind, data):
    draw = data.draw
    n = draw(st.integers(0, 3))
    params = [draw(hostile(draw(shapes(1, 2)), nonarray=False)) for _ in range(n)]
    grads = [draw(hostile(p.shape)) if draw(st.integers(0, 3)) else draw(hostile()) for p in params]
    if n and draw(st.integers(0, 5)) == 0:
        grads[0] = params[-1]  # a gradient aliasing a parameter
    try:
        opt = OPTIMIZERS[kind](params)
    except CLEAR:
        return
    ref = OPTIMIZERS[kind]([clean(p) for p in params])
    for _ in range(2):
        state = [a for v in opt.state.values() for a in v]
        check(
            lambda opt=opt: opt.step(grads),
            params + state,
            lambda ref=ref: ref.step([clean(g) for g in grads]),
            lambda opt=opt: [*opt.params, *(a for v in opt.state.values() for a in v)],
            lambda ref=ref: [*ref.params, *(a for v in ref.state.values() for a in v)],
        )


@given(data=st.data())
def test_fuzz_clip_grad_norm_and_global_norm(isa, data):
    draw = data.draw
    grads = [
        draw(hostile(nonarray=draw(st.integers(0, 9)) == 0)) for _ in range(draw(st.integers(0, 3)))
    ]
    if grads and draw(st.integers(0, 5)) == 0:
        grads.append(grads[0])  # the same array twice
    max_norm = draw(st.sampled_from([1.0, 0.0, 1e-3, -1.0, float("nan"), float("inf")]))
    nonfinite = draw(st.booleans())
    copies = [clean(g) for g in grads]
    check(
        lambda: global_norm(grads),
        [],
        lambda: global_norm(copies),
    )
    snap = snapshot(grads)
    try:
        got = clip_grad_norm(grads, max_norm, error_if_nonfinite=nonfinite)
    except (*CLEAR, RuntimeError):
        assert unchanged(snap)
        return
    want = clip_grad_norm(copies, max_norm, error_if_nonfinite=nonfinite)
    assert bitwise(as_list(got) + as_list(grads), as_list(want) + as_list(copies))


# ---- layers and losses ---------------------------------------------------------------------


@given(data=st.data())
def test_fuzz_layers(isa, data):
    draw = data.draw
    c = draw(st.integers(1, 5))
    layer = draw(
        st.sampled_from(
            [
                lambda: nn.BatchNorm(c, axis=1),
                lambda: nn.BatchNorm(c, axis=-1, dtype=np.float64),
                lambda: nn.Linear(c, 3, rng=0),
                lambda: nn.Softmax(axis=-1),
                lambda: nn.LogSoftmax(axis=0),
                lambda: nn.ReLU(),
                lambda: nn.Tanh(),
            ]
        )
    )()
    if draw(st.booleans()):
        layer.eval()
    ref = copy.deepcopy(layer)
    x = draw(hostile(draw(st.sampled_from([(4, c), (3, c, 2), (c,), (0, c), None]))))
    try:
        y = np.array(layer.forward(x))
    except CLEAR:
        with pytest.raises(CLEAR):
            ref.forward(clean(x))
        return
    assert bitwise([y], [np.array(ref.forward(clean(x)))])
    dy = draw(hostile(y.shape))
    try:
        dx = np.array(layer.backward(dy))
    except CLEAR:
        return
    assert bitwise([dx], [np.array(ref.backward(clean(dy)))])


@given(data=st.data())
def test_fuzz_losses(isa, data):
    draw = data.draw
    k = draw(st.integers(1, 5))
    loss = draw(
        st.sampled_from(
            [
                lambda: nn.SoftmaxCrossEntropy(),
                lambda: nn.SoftmaxCrossEntropy(weight=np.ones(k), label_smoothing=0.2),
                lambda: nn.SigmoidBinaryCrossEntropy(pos_weight=np.full(k, 2.0)),
            ]
        )
    )()
    ref = copy.deepcopy(loss)
    x = draw(hostile(draw(st.sampled_from([(4, k), (0, k), None]))))
    n = x.shape[0] if isinstance(x, np.ndarray) and x.ndim else 4
    if isinstance(loss, nn.SoftmaxCrossEntropy):
        t = draw(st.sampled_from([np.arange(n) % k, np.full(n, k), None]))
        t = draw(hostile((n,))) if t is None else t
    else:
        t = draw(hostile((n, k)))
    try:
        v = loss(x, t)
    except CLEAR:
        return
    w = ref(clean(x), clean(t))
    assert bitwise(as_list(v), as_list(w))
    assert bitwise([loss.backward()], [ref.backward()])


# ---- _core directly ------------------------------------------------------------------------


def _core_arg(draw) -> Any:
    kind = draw(st.sampled_from(["array", "array", "list", "none", "scalar", "junk"]))
    if kind == "array":
        return draw(hostile(draw(st.sampled_from([(3,), (2, 3), (0, 3), (3, 0), ()]))))
    if kind == "list":
        return [draw(hostile((3,), nonarray=False)) for _ in range(draw(st.integers(0, 2)))]
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(st.sampled_from([0, 1, -1, 2, 2**40, -(2**62), 0.5, -1.0, float("nan"), True]))
    return draw(st.sampled_from(NOT_ARRAYS))


def _core_arity() -> dict[str, int]:
    """Every function of _core with its number of parameters, from the signature pybind11 writes
    as the first line of its docstring (the module itself is the list)."""
    arity = {}
    for name, fn in sorted(vars(_core).items()):
        if not name.startswith("_") and callable(fn):
            header = ast.parse(f"def {fn.__doc__.splitlines()[0]}: ...").body[0]
            arity[name] = len(header.args.args)  # type: ignore[attr-defined]
    return arity


CORE_ARITY = _core_arity()


@pytest.mark.parametrize("name", list(CORE_ARITY))
@given(data=st.data())
def test_fuzz_core_directly(isa, threads, name, data):
    """Random argument tuples straight into _core: results or clear errors, nothing written
    on error. (A few calls succeed by chance; their values are not checked here.)"""
    draw = data.draw
    arity = CORE_ARITY[name] + draw(st.sampled_from([0, 0, 0, -1, 1]))
    args = [_core_arg(draw) for _ in range(max(arity, 0))]
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    arrays += [a for lst in args if isinstance(lst, list) for a in lst]
    snap = snapshot(arrays)
    # The call may change the ISA, the thread count or the parallel thresholds: restore them.
    state = (_core.get_num_threads(), _core.get_parallel_min_bytes())
    thread_limit = _core.swap_thread_parallel_min_bytes(-1)
    _core.swap_thread_parallel_min_bytes(thread_limit)
    try:
        getattr(_core, name)(*args)
    except (*CLEAR, RuntimeError):
        assert unchanged(snap), "an array was written before the exception"
    finally:
        _core.set_isa(isa)
        _core.set_num_threads(state[0])
        _core.set_parallel_min_bytes(state[1])
        _core.swap_thread_parallel_min_bytes(thread_limit)


def test_core_list_subclass_returning_fresh_arrays():
    """A list whose items are created on access: _core must keep each one alive while the
    kernel runs (else it writes freed memory; tools/sanitize.sh would report it)."""

    class Fresh(list):
        def __getitem__(self, i):
            return np.ones(1000, np.float32)

    lst = Fresh([None, None])
    _core.sgd_update(lst, Fresh([None, None]), None, 0.1, 0.0, 0.0, 0.0, False, True)
    assert _core.global_norm(Fresh([None])) == pytest.approx(np.sqrt(1000))
    _core.clip_grad_norm(Fresh([None, None]), 1.0, False)
