"""bnfast.torch on empty, degenerate and invalid inputs, against PyTorch's own answers.

Each case runs the same call through ``torch.nn.functional`` (or a ``torch.nn`` module) and
through the drop-in, and holds values (NaN where PyTorch gives NaN), shapes, strides, gradients,
running statistics and exceptions (class and message) equal. The served cases must not fall back
to PyTorch: no :class:`~bnfast.torch.FallbackWarning`.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import bnfast.torch as bt  # noqa: E402
from bnfast.torch import FallbackWarning  # noqa: E402

DTYPES = [torch.float32, torch.float64]
DT_IDS = ["f32", "f64"]
pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_fallback_warnings")


@pytest.fixture(params=DTYPES, ids=DT_IDS)
def dt(request):
    return request.param


@contextlib.contextmanager
def served():
    """The calls inside run bnfast's kernels: a FallbackWarning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        yield


def layout(t):
    """The strides; of an empty tensor (whose strides along empty axes mean nothing), whether it
    is contiguous and whether channels-last."""
    if t.numel():
        return t.stride()
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    return t.is_contiguous(), fmt is not None and t.is_contiguous(memory_format=fmt)


def same(actual, expected, msg=""):
    """Equal values (NaN where NaN), shapes, dtypes and layouts; None where None."""
    if expected is None:
        assert actual is None, msg
        return
    torch.testing.assert_close(actual, expected, equal_nan=True, msg=msg)
    assert layout(actual) == layout(expected), msg


def error_of(fn, *args, **kw):
    """The class and message of the exception ``fn(*args, **kw)`` raises."""
    try:
        fn(*args, **kw)
    except Exception as e:
        return type(e), str(e)
    pytest.fail("no exception")


# ---- batch norm ---------------------------------------------------------------------------

CL = torch.channels_last
EMPTY_BN = [((3, 0), None), ((0, 3), None), ((2, 3, 0), None), ((0, 3, 2, 2), None)]
EMPTY_BN += [((0, 3, 2, 2), CL), ((2, 3, 0, 2), None), ((0, 3, 2, 2, 2), None), ((0,), None)]
EMPTY_BN_IDS = ["x".join(map(str, s)) + ("-cl" if f else "") for s, f in EMPTY_BN]


def bn_stats(c, dtype):
    """The running statistics every setup starts from (new tensors each call)."""
    g = torch.Generator().manual_seed(7)
    return torch.randn(c, dtype=dtype, generator=g), torch.rand(c, dtype=dtype, generator=g) + 1


def bn_functional(fn, x, stats, affine, training):
    """``fn`` (PyTorch's batch_norm or bnfast's) forward and backward on fresh copies of one
    setup; returns the output, the gradients of x, weight and bias, and the running statistics."""
    c = x.shape[1] if x.dim() > 1 else 0
    w = torch.linspace(0.5, 2, c, dtype=x.dtype).requires_grad_() if affine else None
    b = torch.linspace(-1, 1, c, dtype=x.dtype).requires_grad_() if affine else None
    rm, rv = bn_stats(c, x.dtype) if stats else (None, None)
    xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    y = fn(xi, rm, rv, w, b, training, 0.3, 1e-4)
    y.backward(torch.ones_like(y))
    return y, xi.grad, *(None if t is None else t.grad for t in (w, b)), rm, rv


@pytest.mark.parametrize(("shape", "fmt"), EMPTY_BN, ids=EMPTY_BN_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_empty_input(shape, fmt, training, dt):
    """An empty input gives an empty output of its shape and layout; running statistics stay
    as they were; the input's gradient is empty and the weight's and bias's are zeros."""
    x = torch.empty(shape, dtype=dt)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    c = shape[1] if len(shape) > 1 else 0
    for stats in (True, False):
        # PyTorch indexes weight[0] for an empty input: an IndexError without channels.
        for affine in (True, False) if c else (False,):
            msg = f"stats={stats} affine={affine}"
            ref = bn_functional(F.batch_norm, x, stats, affine, training)
            with served():
                new = bn_functional(bt.functional.batch_norm, x, stats, affine, training)
            for a, e in zip(new, ref):
                same(a, e, msg)
            if stats:  # untouched, as PyTorch leaves them
                for a, e in zip(new[-2:], bn_stats(c, dt)):
                    same(a, e, msg)
            with served(), torch.no_grad():  # the path without autograd's Function
                y = bt.functional.batch_norm(x, *bn_stats(c, dt), training=training)
            same(y, ref[0], msg)


@pytest.mark.parametrize(
    ("cls", "shape", "fmt"),
    [
        (torch.nn.BatchNorm1d, (0, 3), None),
        (torch.nn.BatchNorm1d, (2, 3, 0), None),
        (torch.nn.BatchNorm1d, (0, 3, 4), None),
        (torch.nn.BatchNorm2d, (0, 3, 2, 2), None),
        (torch.nn.BatchNorm2d, (0, 3, 2, 2), CL),
        (torch.nn.BatchNorm3d, (0, 3, 2, 2, 2), torch.channels_last_3d),
    ],
    ids=["1d-0x3", "1d-2x3x0", "1d-0x3x4", "2d", "2d-cl", "3d-cl"],
)
@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False}], ids=str)
def test_batch_norm_modules_empty_input(cls, shape, fmt, kw, dt, gen):
    ref = cls(3, dtype=dt, **kw)
    with torch.no_grad():
        ref.running_mean.uniform_(-1, 1, generator=gen)
        ref.running_var.uniform_(0.5, 2, generator=gen)
    new = bt.convert(copy.deepcopy(ref))
    x = torch.empty(shape, dtype=dt)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    for training in (True, True, False):
        ref.train(training)
        new.train(training)
        outs = []
        for m in (ref, new):
            xi = x.clone(memory_format=torch.preserve_format).requires_grad_()
            with served() if m is new else contextlib.nullcontext():
                y = m(xi)
            y.backward(torch.ones_like(y))
            outs.append((y, xi.grad))
        for a, e in zip(outs[1], outs[0]):
            same(a, e, f"training={training}")
        for (name, a), e in zip(new.named_parameters(), ref.parameters()):
            same(a.grad, e.grad, name)
        for (name, a), e in zip(new.named_buffers(), ref.buffers()):
            assert torch.equal(a, e), name  # running statistics untouched, the count counted


@pytest.mark.parametrize("shape", [(1, 0), (1, 3), (1, 3, 1)], ids=str)
def test_batch_norm_one_value_per_channel(shape, dt):
    """Training with one value per channel is PyTorch's ValueError; evaluation serves it."""
    x = torch.randn(shape, dtype=dt)
    rm, rv = torch.zeros(shape[1], dtype=dt), torch.ones(shape[1], dtype=dt)
    ref = error_of(F.batch_norm, x, rm, rv, training=True)
    assert ref[0] is ValueError and "more than 1 value per channel" in ref[1]
    with served():
        assert error_of(bt.functional.batch_norm, x, rm, rv, training=True) == ref
        # (PyTorch indexes the weight without channels: an IndexError, bnfast's output empty.)
        m = bt.nn.BatchNorm1d(shape[1], affine=shape[1] > 0, dtype=dt)
        assert error_of(m, x) == ref
        same(bt.functional.batch_norm(x, rm, rv), F.batch_norm(x, rm, rv))
        same(m.eval()(x), F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias))


@pytest.mark.parametrize("eps", [0.0, -1e-5, 0])
def test_batch_norm_eps_not_positive(eps, dt, gen):
    """PyTorch's ValueErrors: eps <= 0 in training, eps < 0 in evaluation; eps = 0 is allowed
    in evaluation. The running statistics are not touched by a rejected call."""
    x = torch.randn(4, 3, 2, dtype=dt, generator=gen)
    rm, rv = torch.zeros(3, dtype=dt), torch.ones(3, dtype=dt)
    for training in (True, False):
        if training or eps < 0:
            args = (x, rm, rv, None, None, training, 0.1, eps)
            ref = error_of(F.batch_norm, *args)
            with served():
                new = error_of(bt.functional.batch_norm, *args)
            assert ref[0] is ValueError and "batch_norm eps must be" in ref[1]
            assert new == ref
            assert torch.equal(rm, torch.zeros(3, dtype=dt))
            assert torch.equal(rv, torch.ones(3, dtype=dt))
        else:
            with served():
                same(bt.functional.batch_norm(x, rm, rv, eps=eps), F.batch_norm(x, rm, rv, eps=eps))
    ref = torch.nn.BatchNorm1d(3, eps=eps, dtype=dt)
    new = bt.convert(copy.deepcopy(ref))
    for training in (True, False):
        ref.train(training)
        new.train(training)
        if training or eps < 0:
            with served():
                assert error_of(new, x) == error_of(ref, x)
        else:
            with served():
                same(new(x), ref(x))
        for a, e in zip(new.buffers(), ref.buffers()):
            assert torch.equal(a, e)


# ---- cross-entropy --------------------------------------------------------------------------


def ce_run(fn, x, t, go_seed=3, **kw):
    """``fn`` forward and backward (a random upstream gradient) on fresh copies of x and t
    (t requiring grad when it is a probability target); returns loss, x.grad, t.grad."""
    xi = x.detach().clone().requires_grad_()
    ti = t.detach().clone().requires_grad_(t.dtype.is_floating_point)
    loss = fn(xi, ti, **kw)
    go = torch.randn(loss.shape, dtype=loss.dtype, generator=torch.Generator().manual_seed(go_seed))
    loss.backward(go)
    return loss.detach(), xi.grad, ti.grad


def ce_same(x, t, **kw):
    ref = ce_run(F.cross_entropy, x, t, **kw)
    with served():
        new = ce_run(bt.functional.cross_entropy, x, t, **kw)
    for a, e, name in zip(new, ref, ("loss", "input grad", "target grad")):
        same(a, e, f"{name} {kw}")
    return new


def idx(*shape, fill=0):
    return torch.full(shape, fill, dtype=torch.long)


EMPTY_CE = [
    ((0, 5), idx(0), {}),
    ((0, 5), idx(0), {"weight": True, "label_smoothing": 0.2}),
    ((0, 5), "probs", {}),
    ((0, 5), "probs", {"weight": True, "label_smoothing": 0.2}),
    ((3, 0), idx(3, fill=-100), {}),
    ((3, 0), idx(3, fill=7), {"ignore_index": 7, "weight": True}),
    ((3, 0), "probs", {}),
    ((3, 0), "probs", {"label_smoothing": 0.1}),
    ((2, 4, 0), idx(2, 0), {}),
    ((2, 4, 0), "probs", {}),
    ((0, 4, 3), idx(0, 3), {}),
    ((0,), "probs", {}),
]


EMPTY_CE_IDS = [
    "N0",
    "N0-weight-smoothing",
    "N0-probs",
    "N0-probs-weight-smoothing",
    "C0-ignored",
    "C0-ignored-weight",
    "C0-probs",
    "C0-probs-smoothing",
    "2x4x0",
    "2x4x0-probs",
    "0x4x3",
    "1d-C0-probs",
]


@pytest.mark.parametrize(("shape", "target", "kw"), EMPTY_CE, ids=EMPTY_CE_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_empty(shape, target, kw, reduction, dt):
    """No rows: NaN for "mean", 0 for "sum", empty for "none"; no classes, every target ignored
    or a probability target: 0 (-0) per row, NaN for "mean". Gradients empty."""
    x = torch.empty(shape, dtype=dt)
    t = torch.empty(shape, dtype=dt) if isinstance(target, str) else target
    k = shape[1] if len(shape) > 1 else shape[0]
    kw = dict(kw, reduction=reduction)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(k, dtype=dt) + 0.5
    ce_same(x, t, **kw)


@pytest.mark.parametrize("ignore_index", [0, 1, 7, -1, -5, -100])
def test_cross_entropy_probability_target_ignore_index(ignore_index, dt, gen):
    """A non-negative ignore_index with a probability target is PyTorch's RuntimeError (before
    PyTorch's dtype promotion: also for a target of the other dtype); negative ones are served."""
    x = torch.randn(4, 3, dtype=dt, generator=gen)
    t = torch.softmax(torch.randn(4, 3, dtype=dt, generator=gen), 1)
    if ignore_index >= 0:
        other = t.to(torch.float32 if dt == torch.float64 else torch.float64)
        for target in (t, other):
            ref = error_of(F.cross_entropy, x, target, ignore_index=ignore_index)
            assert ref == (RuntimeError, "ignore_index is not supported for floating point target")
            with served():
                new = error_of(bt.functional.cross_entropy, x, target, ignore_index=ignore_index)
            assert new == ref
    else:
        for reduction in ("none", "mean", "sum"):
            ce_same(x, t, ignore_index=ignore_index, reduction=reduction)


@pytest.mark.parametrize("shape", [(6, 5), (5,), (3, 4, 2)], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("option", ["plain", "weight", "smoothing", "both", "full-smoothing"])
def test_cross_entropy_probability_target_grad(shape, reduction, option, dt, gen):
    """A probability target that requires grad gets PyTorch's gradient,
    ``-(1 - smoothing) * weight * log_softmax(x)`` scaled by the upstream gradient (divided by
    the number of rows for "mean"), for every reduction; served, not run by PyTorch."""
    axis = 1 if len(shape) > 1 else 0
    x = torch.randn(shape, dtype=dt, generator=gen) * 3
    t = torch.softmax(torch.randn(shape, dtype=dt, generator=gen), axis)
    kw: dict = {"reduction": reduction}
    if option in ("weight", "both"):
        kw["weight"] = torch.rand(shape[axis], dtype=dt, generator=gen) + 0.1
    if option in ("smoothing", "both"):
        kw["label_smoothing"] = 0.15
    if option == "full-smoothing":
        kw["label_smoothing"] = 1.0
    ce_same(x, t, **kw)
    # The target alone requiring grad: no input gradient; the same target gradient.
    tr = t.clone().requires_grad_()
    with served():
        loss = bt.functional.cross_entropy(x, tr, **kw)
    go = torch.ones_like(loss)
    loss.backward(go)
    te = t.clone().requires_grad_()
    F.cross_entropy(x, te, **kw).backward(go)
    same(tr.grad, te.grad)


def test_cross_entropy_target_grad_costs_nothing_otherwise(gen):
    """Only a target that requires grad makes backward keep the input and weight."""
    x = torch.randn(6, 5, generator=gen, requires_grad=True)
    t = torch.softmax(torch.randn(6, 5, generator=gen), 1)
    w = torch.rand(5, generator=gen)
    with served():
        assert len(bt.functional.cross_entropy(x, t, w).grad_fn.saved_tensors) == 1
        loss = bt.functional.cross_entropy(x, t.requires_grad_(), w)
    assert len(loss.grad_fn.saved_tensors) == 3
