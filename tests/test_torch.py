"""bnfast.torch against PyTorch's own modules, functions and optimizers (needs torch installed).

Every comparison runs the same inputs through PyTorch and through the drop-in, in float32 and
float64, and holds values, gradients, running statistics and optimizer state together within
a tolerance derived from the dtype. PyTorch runs on one thread here: on a 2-core machine its
OpenMP pool and bnfast's otherwise fight over the cores and slow the file down a lot.
"""

from __future__ import annotations

import concurrent.futures
import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import bnfast.torch as bt  # noqa: E402
from bnfast import _core  # noqa: E402
from bnfast.testing import assert_close  # noqa: E402
from bnfast.torch import FallbackWarning, _fallback  # noqa: E402

DTYPES = [torch.float32, torch.float64]
DT_IDS = ["f32", "f64"]
pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_fallback_warnings")


@pytest.fixture(params=DTYPES, ids=DT_IDS)
def dt(request):
    return request.param


def close(actual, expected, ulps=64, scale=None, msg=""):
    """Dtype-derived tolerance; ``scale`` is the size of the terms summed into ``expected``."""
    a = actual.detach().numpy()
    e = expected.detach().numpy()
    assert a.shape == e.shape, msg
    assert a.dtype == e.dtype, msg
    assert_close(a, e, a.dtype, ulps=ulps, scale=scale, err_msg=msg)


# ---- packaging ----------------------------------------------------------------------------


def test_import_bnfast_does_not_import_torch():
    code = "import sys, bnfast, bnfast.nn, bnfast.optim; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )  # outside the source tree: import the installed package
    assert out.stdout.strip() == "False"


def test_clear_import_error_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import bnfast.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )  # outside the source tree: import the installed package
    assert "bnfast.torch needs PyTorch" in out.stdout


def test_public_names():
    assert bt.nn.functional is bt.functional
    assert {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "convert"} <= set(bt.nn.__all__)
    assert set(bt.optim.__all__) == {"SGD", "Adam", "AdamW", "RMSprop"}
    assert issubclass(FallbackWarning, UserWarning)


# ---- batch norm ---------------------------------------------------------------------------

BN_CASES = [
    (torch.nn.BatchNorm1d, (9, 5), None),
    (torch.nn.BatchNorm1d, (4, 5, 7), None),
    (torch.nn.BatchNorm2d, (3, 5, 6, 7), None),
    (torch.nn.BatchNorm2d, (3, 5, 6, 7), torch.channels_last),
    (torch.nn.BatchNorm2d, (2, 17, 1, 33), None),
    (torch.nn.BatchNorm3d, (2, 3, 4, 5, 6), None),
    (torch.nn.BatchNorm3d, (2, 3, 4, 5, 6), torch.channels_last_3d),
]
BN_IDS = [f"{c.__name__}-{'x'.join(map(str, s))}-{f or 'contig'}" for c, s, f in BN_CASES]


def layout(t, fmt):
    if fmt is None:
        return t.contiguous()
    return t.contiguous(memory_format=fmt)


def bn_pair(cls, c, dt, gen, **kw):
    ref = cls(c, dtype=dt, **kw)
    with torch.no_grad():
        if ref.weight is not None:
            ref.weight.uniform_(0.5, 2, generator=gen)
        if ref.bias is not None:
            ref.bias.uniform_(-1, 1, generator=gen)
        if ref.running_mean is not None:
            ref.running_mean.uniform_(-1, 1, generator=gen)
            ref.running_var.uniform_(0.5, 2, generator=gen)
    return ref, bt.convert(copy.deepcopy(ref))


def run_both(ref, new, x, g):
    """Forward + backward through both modules; returns (y, dx) of each."""
    outs = []
    for m in (ref, new):
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = m(xi)
        y.backward(g)
        outs.append((y, xi.grad))
    return outs


def check_bn_state(ref, new, msg=""):
    for name, p in ref.named_parameters():
        q = dict(new.named_parameters())[name]
        close(q, p, msg=msg)
        if p.grad is not None:
            scale = float(p.grad.abs().max()) + 10
            close(q.grad, p.grad, ulps=256, scale=scale, msg=f"{msg} {name}.grad")
    for name, b in ref.named_buffers():
        nb = dict(new.named_buffers())[name]
        if b.dtype == torch.long:
            assert int(nb) == int(b), msg
        else:
            close(nb, b, msg=f"{msg} {name}")


@pytest.mark.parametrize(("cls", "shape", "fmt"), BN_CASES, ids=BN_IDS)
def test_batch_norm_matches_torch(cls, shape, fmt, dt, gen):
    ref, new = bn_pair(cls, shape[1], dt, gen)
    assert type(new).__name__ == cls.__name__ and type(new).__module__ == "bnfast.torch.nn"
    for step, training in enumerate([True, True, False, True]):
        ref.train(training)
        new.train(training)
        x = layout(torch.randn(shape, dtype=dt, generator=gen) * 3 + 2, fmt)
        g = layout(torch.randn(shape, dtype=dt, generator=gen), fmt)
        (y0, dx0), (y1, dx1) = run_both(ref, new, x, g)
        msg = f"step {step} training={training}"
        close(y1, y0, msg=msg)
        assert y1.stride() == y0.stride(), msg  # the output keeps the input's memory format
        close(dx1, dx0, ulps=256, scale=float(dx0.abs().max()) + 1, msg=msg)
        check_bn_state(ref, new, msg)
        ref.zero_grad()
        new.zero_grad()


@pytest.mark.parametrize(
    "kw",
    [
        {"affine": False},
        {"bias": False},
        {"track_running_stats": False},
        {"momentum": None},
        {"momentum": 0.5, "eps": 1e-3},
    ],
    ids=["no-affine", "no-bias", "no-running-stats", "cumulative", "momentum-eps"],
)
def test_batch_norm_options(kw, dt, gen):
    ref, new = bn_pair(torch.nn.BatchNorm2d, 4, dt, gen, **kw)
    for training in (True, True, False):
        ref.train(training)
        new.train(training)
        x = torch.randn(3, 4, 5, 6, dtype=dt, generator=gen) + 1
        g = torch.randn(3, 4, 5, 6, dtype=dt, generator=gen)
        (y0, dx0), (y1, dx1) = run_both(ref, new, x, g)
        close(y1, y0)
        close(dx1, dx0, ulps=256, scale=float(dx0.abs().max()) + 1)
        check_bn_state(ref, new)
        ref.zero_grad()
        new.zero_grad()


def test_batch_norm_functional_matches_torch(dt, gen):
    x = torch.randn(6, 3, 5, dtype=dt, generator=gen)
    w, b = torch.rand(3, dtype=dt, generator=gen) + 0.5, torch.randn(3, dtype=dt, generator=gen)
    rm0, rv0 = torch.zeros(3, dtype=dt), torch.ones(3, dtype=dt)
    rm1, rv1 = rm0.clone(), rv0.clone()
    y0 = F.batch_norm(x, rm0, rv0, w, b, True, 0.3, 1e-4)
    y1 = bt.functional.batch_norm(x, rm1, rv1, w, b, True, 0.3, 1e-4)
    close(y1, y0)
    close(rm1, rm0)
    close(rv1, rv0)
    close(bt.functional.batch_norm(x, rm1, rv1, w, b), F.batch_norm(x, rm0, rv0, w, b))
    close(
        bt.functional.batch_norm(x, None, None, training=True),
        F.batch_norm(x, None, None, None, None, True),
    )


def test_batch_norm_writes_running_stats_in_place(gen):
    m = bt.nn.BatchNorm1d(4)
    ptrs = (m.running_mean.data_ptr(), m.running_var.data_ptr())
    m(torch.randn(8, 4, generator=gen))
    assert (m.running_mean.data_ptr(), m.running_var.data_ptr()) == ptrs
    assert int(m.num_batches_tracked) == 1
    assert not torch.equal(m.running_mean, torch.zeros(4))


def test_batch_norm_errors_like_torch():
    for m in (torch.nn.BatchNorm1d(3), bt.nn.BatchNorm1d(3)):
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            m(torch.randn(1, 3))
        with pytest.raises(ValueError, match="expected 2D or 3D input"):
            m(torch.randn(2, 3, 4, 5))
    with pytest.raises(RuntimeError):
        bt.functional.batch_norm(torch.randn(4, 3), None, None)  # eval without statistics


@pytest.mark.parametrize("fmt", [None, torch.channels_last], ids=["contig", "channels_last"])
def test_batch_norm_no_grad_and_inference_mode(fmt, gen):
    """Without anything to differentiate the kernels run without autograd's Function; the
    output is the same, in the input's memory format, with the running statistics updated."""
    ref, new = bn_pair(torch.nn.BatchNorm2d, 3, torch.float32, gen)
    x = layout(torch.randn(2, 3, 4, 5, generator=gen), fmt)
    for mode in (torch.no_grad, torch.inference_mode):
        for training in (True, False):
            ref.train(training)
            new.train(training)
            with mode():
                y0, y1 = ref(x), new(x)
            close(y1, y0)
            assert y1.stride() == y0.stride() and y1.grad_fn is None
            check_bn_state(ref, new)


def test_torch_threads_lowers_the_rule_on_this_thread_only():
    """bnfast.torch runs its kernels with threads from 512 KiB moved, on the calling thread
    only, restored on the way out (exceptions and nesting too); a lower process setting wins."""
    base = _core.get_parallel_min_bytes()
    low = _fallback.torch_threads.MIN_BYTES
    try:
        for process in (4 << 20, 0):
            _core.set_parallel_min_bytes(process)
            with _fallback.torch_threads():
                assert _core.get_parallel_min_bytes() == min(process, low)
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    assert pool.submit(_core.get_parallel_min_bytes).result() == process
                with pytest.raises(ZeroDivisionError), _fallback.torch_threads():
                    _ = 1 / 0
                assert _core.get_parallel_min_bytes() == min(process, low)
            assert _core.get_parallel_min_bytes() == process
        assert _core.swap_thread_parallel_min_bytes(-5) == -1  # no override was left behind
    finally:
        _core.set_parallel_min_bytes(base)


def test_batch_norm_cached_views_follow_every_change(gen):
    """The modules keep NumPy views of their parameters and running statistics between calls;
    every change that makes them stale must be seen, and every call still match PyTorch's."""
    ref, new = bn_pair(torch.nn.BatchNorm1d, 6, torch.float64, gen)
    base = torch.rand(12, dtype=torch.float64, generator=gen) + 0.5
    big = [base, base.clone()]  # ref's and new's

    def new_memory(m):  # the same Parameter over new storage
        m.weight.data = m.weight.data * 2

    def new_parameter(m):
        m.bias = torch.nn.Parameter(m.bias.detach() + 1)

    def in_place(m):  # the same memory, new values
        with torch.no_grad():
            m.running_var.mul_(3)

    def view_of_larger(m):
        m.weight.data = big[m is new][:6]

    def strided_same_pointer(m):  # same data_ptr as before, every other element
        m.weight.data = big[m is new][::2]

    def to_float(m):  # (after float64: float32 results agree to float32's precision)
        m.float()

    changes = {2: new_memory, 4: new_parameter, 5: in_place, 6: view_of_larger}
    changes.update({7: strided_same_pointer, 8: view_of_larger, 9: to_float})
    for step in range(11):
        if step in changes:
            for m in (ref, new):
                changes[step](m)
        training = step % 3 != 2
        ref.train(training)
        new.train(training)
        x = torch.randn(5, 6, dtype=ref.weight.dtype, generator=gen)
        g = torch.randn(5, 6, dtype=ref.weight.dtype, generator=gen)
        with warnings.catch_warnings():
            if step == 7:  # a strided weight: PyTorch's function runs
                warnings.simplefilter("ignore", FallbackWarning)
            (y0, dx0), (y1, dx1) = run_both(ref, new, x, g)
            with torch.no_grad():  # the path without autograd's Function
                y2 = new(x)
            y3 = ref(x)
        msg = f"step {step}"
        close(y1, y0, msg=msg)
        close(y2, y3, msg=msg)
        close(dx1, dx0, ulps=256, scale=float(dx0.abs().max()) + 1, msg=msg)
        check_bn_state(ref, new, msg)
        ref.zero_grad()
        new.zero_grad()
    match = "float32 while the input is torch.float64"
    with pytest.warns(FallbackWarning, match=match), pytest.raises(RuntimeError, match="mixed"):
        new(torch.randn(5, 6, dtype=torch.float64, generator=gen))  # PyTorch's answer
    copied = copy.deepcopy(new)  # the views are of this module's memory, not for copies
    assert "_bnfast_params" in vars(new) and "_bnfast_params" not in vars(copied)
    x = torch.randn(5, 6, generator=gen)
    close(copied(x), ref(x))


def test_batch_norm_grad_of_parameters_only(gen):
    """An input without grad still runs autograd's Function when the affine parameters need
    gradients; with none needing them (frozen layer) no graph is recorded."""
    ref, new = bn_pair(torch.nn.BatchNorm2d, 3, torch.float32, gen)
    x = torch.randn(4, 3, 2, 2, generator=gen)
    g = torch.randn(4, 3, 2, 2, generator=gen)
    for frozen in ("bias", "weight"):
        for m in (ref, new):
            m.requires_grad_(True)
            getattr(m, frozen).requires_grad_(False)
            m(x).backward(g)
        check_bn_state(ref, new, f"{frozen} frozen")
        ref.zero_grad()
        new.zero_grad()
    for m in (ref, new):
        m.requires_grad_(False)
    y = new(x)
    assert y.grad_fn is None and not y.requires_grad
    close(y, ref(x))


def test_batch_norm_retain_graph(gen):
    m = bt.nn.BatchNorm1d(3)
    x = torch.randn(5, 3, generator=gen, requires_grad=True)
    g = torch.randn(5, 3, generator=gen)
    y = m(x)
    y.backward(g, retain_graph=True)
    first = x.grad.clone()
    y.backward(g)
    close(x.grad, 2 * first)


# ---- convert and state_dict -----------------------------------------------------------------


def small_cnn(dt):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False, dtype=dt),
        torch.nn.BatchNorm2d(8, dtype=dt),
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, bias=False, dtype=dt)),
        torch.nn.BatchNorm2d(8, momentum=None, dtype=dt),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 16, bias=False, dtype=dt),
        torch.nn.BatchNorm1d(16, dtype=dt),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 10, dtype=dt),
    )


def test_convert_keeps_identity_and_state(gen):
    torch.manual_seed(0)
    model = small_cnn(torch.float32)
    model(torch.randn(4, 3, 8, 8))  # non-trivial running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    hooks = []
    model[1].register_forward_hook(lambda *a: hooks.append(1))
    assert bt.convert(model) is model
    assert list(model.parameters()) == params  # same objects: optimizers stay valid
    kinds = [
        type(m) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert kinds == [bt.nn.BatchNorm2d, bt.nn.BatchNorm2d, bt.nn.BatchNorm1d]
    assert isinstance(model[1], torch.nn.BatchNorm2d)
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    model(torch.randn(4, 3, 8, 8))
    assert hooks == [1]
    assert bt.convert(model) is model  # idempotent
    single = torch.nn.BatchNorm1d(3)
    assert type(bt.convert(single)) is bt.nn.BatchNorm1d
    assert "BatchNorm2d(8, eps=1e-05" in repr(model)


def test_state_dict_round_trip(dt, gen):
    ref, new = bn_pair(torch.nn.BatchNorm2d, 4, dt, gen)
    new(torch.randn(3, 4, 2, 2, dtype=dt, generator=gen))
    sd = new.state_dict()
    assert list(sd) == list(ref.state_dict())
    plain = torch.nn.BatchNorm2d(4, dtype=dt)
    plain.load_state_dict(sd)
    back = bt.nn.BatchNorm2d(4, dtype=dt)
    back.load_state_dict(plain.state_dict())
    for k, v in sd.items():
        assert torch.equal(back.state_dict()[k], v), k
    # A checkpoint from before num_batches_tracked existed loads as in PyTorch.
    old = copy.copy(sd)
    del old["num_batches_tracked"]
    old._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    back.load_state_dict(old)


# ---- cross-entropy --------------------------------------------------------------------------

CE_SHAPES = [(16, 10), (7, 3), (10,), (4, 5, 3), (33, 1000)]


def ce_both(x, t, go=None, **kw):
    outs = []
    for fn in (F.cross_entropy, bt.functional.cross_entropy):
        xi = x.detach().clone().requires_grad_()
        loss = fn(xi, t, **kw)
        loss.backward(torch.ones_like(loss) if go is None else go)
        outs.append((loss, xi.grad))
    return outs


def class_target(shape, gen, k=None):
    k = shape[1] if len(shape) > 1 else shape[0]
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    return torch.randint(0, k, tshape, generator=gen)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("option", ["plain", "weight", "ignore", "smoothing", "all", "probs"])
def test_cross_entropy_matches_torch(shape, reduction, option, dt, gen):
    x = torch.randn(shape, dtype=dt, generator=gen) * 3
    k = shape[1] if len(shape) > 1 else shape[0]
    kw: dict = {"reduction": reduction}
    if option == "probs":
        t = torch.softmax(
            torch.randn(shape, dtype=dt, generator=gen), dim=1 if len(shape) > 1 else 0
        )
    else:
        t = class_target(shape, gen)
    if option in ("weight", "all"):
        kw["weight"] = torch.rand(k, dtype=dt, generator=gen) + 0.1
    if option in ("ignore", "all") and t.dim() > 0:
        t.view(-1)[::3] = 1
        kw["ignore_index"] = 1
    if option in ("smoothing", "all", "probs"):
        kw["label_smoothing"] = 0.15
    go = None
    if reduction == "none":
        rows = shape[:1] + shape[2:] if len(shape) > 1 else ()
        go = torch.randn(rows, dtype=dt, generator=gen)
    elif option == "plain":
        go = torch.tensor(2.5, dtype=dt)  # an upstream scale other than 1
    (l0, d0), (l1, d1) = ce_both(x, t, go, **kw)
    close(l1, l0, scale=float(l0.detach().abs().max()) + 1)
    close(d1, d0, scale=1)


def test_cross_entropy_target_dtypes_and_all_ignored(dt, gen):
    x = torch.randn(6, 4, dtype=dt, generator=gen)
    t = torch.randint(0, 4, (6,), generator=gen)
    for fn in (F.cross_entropy, bt.functional.cross_entropy):
        with pytest.raises(RuntimeError, match="Long or Byte"):
            fn(x, t.to(torch.int32))  # PyTorch's own error
    ign = torch.full((6,), -100)
    (l0, _d0), (l1, d1) = ce_both(x, ign)
    assert torch.isnan(l0) and torch.isnan(l1)  # nothing to average: NaN, as in PyTorch
    assert torch.equal(d1, torch.zeros_like(d1))


def test_cross_entropy_grad_through_linear_and_retain_graph(dt, gen):
    lin0 = torch.nn.Linear(5, 4, dtype=dt)
    lin1 = copy.deepcopy(lin0)
    x = torch.randn(8, 5, dtype=dt, generator=gen)
    t = class_target((8, 4), gen)
    l0 = F.cross_entropy(lin0(x), t)
    l1 = bt.functional.cross_entropy(lin1(x), t)
    for _ in range(2):  # the saved gradient must survive the first backward unchanged
        l0.backward(retain_graph=True)
        l1.backward(retain_graph=True)
    close(lin1.weight.grad, lin0.weight.grad, scale=1)
    close(lin1.bias.grad, lin0.bias.grad, scale=1)


def test_cross_entropy_errors(gen):
    x = torch.randn(4, 3, generator=gen)
    with pytest.raises(IndexError):
        bt.functional.cross_entropy(x, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="reduction"):
        bt.functional.cross_entropy(x, torch.tensor([0, 1, 2, 0]), reduction="avg")
    with pytest.raises((ValueError, RuntimeError)):
        bt.functional.cross_entropy(x, torch.tensor([0, 1, 2]))  # PyTorch's own error


# ---- fallbacks ----------------------------------------------------------------------------


def expect_fallback(match, fn, *args, **kw):
    with pytest.warns(FallbackWarning, match=match):
        out = fn(*args, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one-time: the second call is silent
        fn(*args, **kw)
    return out


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda x: x.to(torch.float16), "dtype torch.float16"),
        (lambda x: x[:, :, ::2], "neither contiguous nor channels-last"),
        (lambda x: x.transpose(2, 3), "neither contiguous nor channels-last"),
    ],
    ids=["f16", "strided", "permuted"],
)
def test_batch_norm_fallback(make, match, gen):
    ref = torch.nn.BatchNorm2d(4)
    new = bt.convert(copy.deepcopy(ref))
    x = make(torch.randn(3, 4, 8, 4, generator=gen))
    if x.dtype != torch.float32:
        ref, new = ref.to(x.dtype), new.to(x.dtype)
    y1 = expect_fallback(match, new, x)
    y0 = ref(x)
    ref(x)
    assert torch.equal(y1, y0)
    assert torch.equal(new.running_mean, ref.running_mean)


def test_batch_norm_fallback_transposed_1d(gen):
    """(N, C, L) over (N, L, C) memory: PyTorch returns a contiguous output, which would need a
    copy of the kernel's; so PyTorch runs it."""
    ref = torch.nn.BatchNorm1d(5)
    new = bt.convert(copy.deepcopy(ref))
    x = torch.randn(4, 7, 5, generator=gen).transpose(1, 2)
    y1 = expect_fallback("neither contiguous nor channels-last", new, x)
    y0 = ref(x)
    ref(x)
    assert torch.equal(y1, y0) and y1.stride() == y0.stride()


def test_batch_norm_fallback_mixed_dtypes(gen):
    m = bt.nn.BatchNorm1d(3)  # float32 parameters
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    match = "float32 while the input is torch.float64"
    with pytest.warns(FallbackWarning, match=match), pytest.raises(RuntimeError, match="mixed"):
        m(x)  # PyTorch's answer: an error


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_fallback(training, dt, gen):
    ref, new = bn_pair(torch.nn.BatchNorm2d, 3, dt, gen)
    ref.train(training)
    new.train(training)
    x = torch.randn(2, 3, 4, 5, dtype=dt, generator=gen).contiguous(
        memory_format=torch.channels_last
    )
    grads = []
    for m in (ref, new):
        xi = x.clone().requires_grad_()
        if m is new:
            with pytest.warns(FallbackWarning, match="grad_output is not laid out like the input"):
                m(xi).sum().backward()  # an expanded (stride-0) gradient
        else:
            m(xi).sum().backward()
        grads.append((xi.grad, m.weight.grad, m.bias.grad))
    for a, b in zip(grads[1], grads[0]):
        close(a, b, ulps=256, scale=float(b.abs().max()) + 10)


def test_cross_entropy_fallbacks(gen):
    x = torch.randn(6, 5, generator=gen)
    t = torch.randint(0, 5, (6,), generator=gen)
    cases = [
        ((x.half(), t), {}, "dtype torch.float16"),
        ((x.t().contiguous().t(), t), {}, "input is not contiguous"),
        ((x, t[::1].repeat(2)[::2]), {}, "target is not contiguous"),
        ((x, t.to(torch.uint8)), {}, "target has dtype torch.uint8"),
        ((x, torch.softmax(x, 1).double()), {}, "probability target is torch.float64"),
        ((x.double(), torch.softmax(x, 1)), {}, "probability target is torch.float32"),
    ]
    for args, kw, match in cases:
        y1 = expect_fallback(match, bt.functional.cross_entropy, *args, **kw)
        assert torch.equal(y1, F.cross_entropy(*args, **kw)), match
    with pytest.raises(RuntimeError, match="expected scalar type"):  # PyTorch's own error
        bt.functional.cross_entropy(x, t, weight=torch.ones(5, dtype=torch.float64))
    with pytest.warns(UserWarning) as rec:
        loss = bt.functional.cross_entropy(x, t, size_average=False)
    kinds = {type(w.message) for w in rec}
    assert kinds == {FallbackWarning, UserWarning}  # ours, and PyTorch's deprecation warning
    assert torch.equal(loss, F.cross_entropy(x, t, reduction="sum"))


def test_fallback_warnings_are_once_per_reason(gen):
    m = bt.nn.BatchNorm1d(3).to(torch.float16)
    x = torch.randn(4, 3, generator=gen)
    with pytest.warns(FallbackWarning) as rec:
        for _ in range(3):
            m(x.half())
    assert len(rec) == 1


# ---- optimizers ---------------------------------------------------------------------------

OPT_CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "amsgrad": True, "eps": 1e-6}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "centered": True}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1, "centered": True}),
]
OPT_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(OPT_CASES)]


def make_params(dt, gen):
    shapes = [(7,), (3, 4), (2, 3, 4, 5), ()]
    ps = [torch.randn(s, dtype=dt, generator=gen) for s in shapes]
    ps[2] = ps[2].contiguous(memory_format=torch.channels_last)  # runs in place too
    a = [p.clone(memory_format=torch.preserve_format).requires_grad_() for p in ps]
    b = [p.clone(memory_format=torch.preserve_format).requires_grad_() for p in ps]
    return a, b


def set_grads(pa, pb, gen, skip=()):
    for i, (a, b) in enumerate(zip(pa, pb)):
        if i in skip:
            a.grad = b.grad = None
            continue
        g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
        a.grad = torch.empty_like(a).copy_(g)
        b.grad = torch.empty_like(b).copy_(g)


def check_optimizers(o0, o1, pa, pb, msg=""):
    for i, (a, b) in enumerate(zip(pa, pb)):
        close(b, a, ulps=128, scale=1, msg=f"{msg} param {i}")
    s0, s1 = o0.state_dict(), o1.state_dict()
    assert s1["param_groups"] == s0["param_groups"], msg
    assert s1["state"].keys() == s0["state"].keys(), msg
    for i, st in s0["state"].items():
        assert s1["state"][i].keys() == st.keys(), f"{msg} state {i}"
        for k, v in st.items():
            w = s1["state"][i][k]
            assert w.dtype == v.dtype and w.stride() == v.stride(), f"{msg} {i}.{k}"
            close(w, v, ulps=128, scale=1, msg=f"{msg} state {i}.{k}")


@pytest.mark.parametrize(("name", "hp"), OPT_CASES, ids=OPT_IDS)
def test_optimizer_matches_torch(name, hp, dt, gen):
    pa, pb = make_params(dt, gen)
    o0 = getattr(torch.optim, name)(pa, **hp)
    o1 = getattr(bt.optim, name)(pb, **hp)
    assert isinstance(o1, getattr(torch.optim, name))
    for step in range(5):
        # Parameter 1 gets its first gradient at step 2 (SGD's buffer and Adam's count start later).
        set_grads(pa, pb, gen, skip=(1,) if step < 2 else ())
        o0.step()
        o1.step()
        check_optimizers(o0, o1, pa, pb, f"step {step}")


@pytest.mark.parametrize(("name", "hp"), OPT_CASES[1::2], ids=OPT_IDS[1::2])
def test_optimizer_cached_views_follow_every_change(name, hp, gen):
    """The drop-in keeps each group's views between steps; every change that makes them stale
    (a parameter's memory or layout, its gradient appearing or gone, state replaced or loaded,
    gradients kept between steps) must be seen, and the steps still match PyTorch's."""
    shapes = [(7,), (4, 4), (2, 3, 4, 5), ()]
    pa = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    pb = [p.detach().clone().requires_grad_() for p in pa]
    o0 = getattr(torch.optim, name)(pa, **hp)
    o1 = getattr(bt.optim, name)(pb, **hp)

    def both(fn):
        fn(pa, o0)
        fn(pb, o1)

    def new_memory(ps, o):
        ps[0].data = ps[0].data.clone()

    def new_layout(ps, o):  # same memory, transposed: a stale view would update it wrongly
        ps[1].data = ps[1].data.t()  # (its state is now laid out unlike it: PyTorch steps it)

    def replace_state(ps, o):
        for k, v in list(o.state[ps[2]].items()):
            o.state[ps[2]][k] = v.clone()

    def reload(ps, o):
        o.load_state_dict(copy.deepcopy(o.state_dict()))

    # Steps 1, 3, 8 and 9 reuse the views; the others must notice the change and rebuild them.
    changes = {2: new_memory, 6: replace_state, 7: reload, 10: new_layout}
    for step in range(11):
        if step in changes:
            both(changes[step])
        if step in (8, 9):  # gradients kept and accumulated into (zero_grad(set_to_none=False))
            for ps in (pa, pb):
                for p in ps:
                    p.grad.mul_(0.5)
        else:
            set_grads(pa, pb, gen, skip=(3,) if step == 4 else ())
        o0.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackWarning)
            o1.step()
        check_optimizers(o0, o1, pa, pb, f"step {step}")


@pytest.mark.parametrize(("name", "hp"), OPT_CASES[1::2], ids=OPT_IDS[1::2])
def test_optimizer_state_dict_round_trip(name, hp, gen):
    """A checkpoint moves between PyTorch's optimizer and the drop-in both ways, mid-run."""
    pa, pb = make_params(torch.float32, gen)
    o0 = getattr(torch.optim, name)(pa, **hp)
    o1 = getattr(bt.optim, name)(pb, **hp)
    for _ in range(2):
        set_grads(pa, pb, gen)
        o0.step()
        o1.step()
    o1b = getattr(bt.optim, name)(pb, **hp)
    o1b.load_state_dict(o0.state_dict())  # PyTorch -> bnfast
    o0b = getattr(torch.optim, name)(pa, **hp)
    o0b.load_state_dict(o1.state_dict())  # bnfast -> PyTorch
    for _ in range(2):
        set_grads(pa, pb, gen)
        o0b.step()
        o1b.step()
    check_optimizers(o0b, o1b, pa, pb)


def test_optimizer_groups_schedulers_closures_hooks(gen):
    pa, pb = make_params(torch.float64, gen)

    def groups(ps):
        return [
            {"params": ps[:2]},
            {"params": ps[2:], "lr": 0.03, "betas": (0.5, 0.9)},
        ]

    o0 = torch.optim.Adam(groups(pa), lr=0.01)
    o1 = bt.optim.Adam(groups(pb), lr=0.01)
    s0 = torch.optim.lr_scheduler.StepLR(o0, 1, gamma=0.5)
    s1 = torch.optim.lr_scheduler.StepLR(o1, 1, gamma=0.5)
    calls = []
    o1.register_step_pre_hook(lambda *a: calls.append("pre"))
    o1.register_step_post_hook(lambda *a: calls.append("post"))
    for _ in range(3):
        set_grads(pa, pb, gen)
        assert o1.step(lambda: torch.tensor(1.5)) == torch.tensor(1.5)
        o0.step()
        s0.step()
        s1.step()
    assert calls == ["pre", "post"] * 3
    check_optimizers(o0, o1, pa, pb)
    o1.zero_grad()
    assert all(p.grad is None for p in pb)


@pytest.mark.parametrize(
    ("name", "hp", "match"),
    [
        ("SGD", {"lr": 0.1, "maximize": True}, "maximize=True"),
        ("Adam", {"lr": 0.1, "maximize": True}, "maximize=True"),
        ("RMSprop", {"lr": 0.1, "alpha": 1.5}, "alpha must be in"),
        ("SGD", {"lr": 0.1, "momentum": 0.9, "dtype": torch.float16}, "dtype torch.float16"),
        ("AdamW", {"lr": 0.1, "strided": True}, "not laid out densely"),
    ],
    ids=["sgd-maximize", "adam-maximize", "rmsprop-alpha", "f16", "strided"],
)
def test_optimizer_fallback(name, hp, match, gen):
    hp = dict(hp)
    dt = hp.pop("dtype", torch.float32)
    strided = hp.pop("strided", False)
    base = torch.randn(6, 4, generator=gen).to(dt)
    pa = [torch.randn(5, generator=gen).to(dt), base.clone()]
    pb = [t.clone() for t in pa]
    if strided:
        pa[1], pb[1] = pa[1][:, ::2], pb[1][:, ::2]
    pa = [p.requires_grad_() for p in pa]
    pb = [p.requires_grad_() for p in pb]
    o0 = getattr(torch.optim, name)(pa, **hp)
    o1 = getattr(bt.optim, name)(pb, **hp)
    for step in range(3):
        set_grads(pa, pb, gen)
        o0.step()
        if step == 0:
            with pytest.warns(FallbackWarning, match=match):
                o1.step()
        else:
            o1.step()  # once only
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True)


def test_optimizer_fallback_only_for_the_group_that_needs_it(gen):
    pa, pb = make_params(torch.float32, gen)
    g0 = [{"params": pa[:2]}, {"params": pa[2:], "maximize": True}]
    g1 = [{"params": pb[:2]}, {"params": pb[2:], "maximize": True}]
    o0, o1 = torch.optim.SGD(g0, lr=0.1, momentum=0.5), bt.optim.SGD(g1, lr=0.1, momentum=0.5)
    for step in range(2):
        set_grads(pa, pb, gen)
        o0.step()
        if step == 0:
            with pytest.warns(FallbackWarning, match="maximize=True"):
                o1.step()
        else:
            o1.step()
    check_optimizers(o0, o1, pa, pb)


# ---- training end to end --------------------------------------------------------------------


def mlp(dt):
    return torch.nn.Sequential(
        torch.nn.Linear(20, 32, bias=False, dtype=dt),
        torch.nn.BatchNorm1d(32, dtype=dt),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 5, dtype=dt),
    )


@pytest.mark.parametrize("arch", ["mlp", "cnn", "cnn-channels-last"])
@pytest.mark.parametrize("opt", ["SGD", "Adam", "RMSprop"])
def test_training_matches_torch(arch, opt, dt):
    torch.manual_seed(0)
    ref = mlp(dt) if arch == "mlp" else small_cnn(dt)
    new = bt.convert(copy.deepcopy(ref))
    fmt = torch.channels_last if arch == "cnn-channels-last" else torch.contiguous_format
    ref, new = ref.to(memory_format=fmt), new.to(memory_format=fmt)
    hp = {"SGD": {"lr": 0.05, "momentum": 0.9}, "Adam": {"lr": 1e-3}, "RMSprop": {"lr": 1e-3}}[opt]
    o0 = getattr(torch.optim, opt)(ref.parameters(), **hp)
    o1 = getattr(bt.optim, opt)(new.parameters(), **hp)
    g = torch.Generator().manual_seed(7)
    losses0, losses1 = [], []
    for _ in range(4):
        shape = (16, 20) if arch == "mlp" else (8, 3, 8, 8)
        x = torch.randn(shape, dtype=dt, generator=g)
        if x.dim() == 4:
            x = x.contiguous(memory_format=fmt)
        t = torch.randint(0, 5 if arch == "mlp" else 10, (shape[0],), generator=g)
        for model, o, fn, losses in (
            (ref, o0, F.cross_entropy, losses0),
            (new, o1, bt.functional.cross_entropy, losses1),
        ):
            o.zero_grad()
            loss = fn(model(x), t)
            loss.backward()
            o.step()
            losses.append(loss.item())
    tol = 1e-4 if dt == torch.float32 else 1e-10
    np.testing.assert_allclose(losses1, losses0, rtol=tol, atol=tol)
    for (k, a), b in zip(ref.state_dict().items(), new.state_dict().values()):
        if a.is_floating_point():
            np.testing.assert_allclose(
                b.numpy(), a.numpy(), rtol=tol * 10, atol=tol * 10, err_msg=k
            )
    new.eval()
    ref.eval()
    x = torch.randn(shape, dtype=dt, generator=g)
    np.testing.assert_allclose(
        new(x).detach().numpy(), ref(x).detach().numpy(), rtol=tol * 10, atol=tol * 10
    )
