"""bnfast's kernels as PyTorch operators: opcheck, torch.compile, torch.export (needs torch).

``torch.ops.bnfast.*`` are what tracing sees; eager calls keep the direct path (test_torch.py).
Compiles are slow here (~10 s each with inductor on a loaded 2-core machine), so inductor runs
once (the training loop) and the graph checks use ``aot_eager`` or a recording backend, which
run AOTAutograd (functionalization, the joint graph) without generating code.
"""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.library import opcheck  # noqa: E402

import bnfast.torch as bt  # noqa: E402
from bnfast.testing import assert_close  # noqa: E402
from bnfast.torch import FallbackWarning, _ops  # noqa: E402

ops = torch.ops.bnfast
DTYPES = [torch.float32, torch.float64]
pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_fallback_warnings")


@pytest.fixture(scope="module", autouse=True)
def no_compile_cache():
    """Every compile here compiles: PyTorch's on-disk caches key the graph, not the autograd
    formula registered for an operator, so a cached backward of an earlier bnfast would pass."""
    with (
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        yield


def close(actual, expected, ulps=64, msg=""):
    a, e = actual.detach().numpy(), expected.detach().numpy()
    assert a.shape == e.shape, msg
    assert_close(a, e, a.dtype, ulps=ulps, err_msg=msg)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- opcheck over a generated set of inputs ---------------------------------------------------

_BN_SHAPES = [
    ((6, 4), None),
    ((4, 3, 5), None),
    ((2, 3, 4, 4), None),
    ((2, 3, 4, 4), torch.channels_last),
    ((2, 3, 2, 3, 3), torch.channels_last_3d),
]


def _bn_cases():
    """Every shape and layout in both dtypes with everything requiring grad; the other
    requires_grad/affine/statistics combinations on a few (each opcheck costs ~1-2 s here)."""
    for (shape, fmt), dt in itertools.product(_BN_SHAPES, DTYPES):
        yield shape, fmt, dt, True, True, True
    for (shape, fmt), combo in itertools.product(
        [_BN_SHAPES[0], _BN_SHAPES[3]], [(False, True, False), (True, False, True)]
    ):
        yield (shape, fmt, torch.float64, *combo)
    yield (*_BN_SHAPES[2], torch.float32, False, False, True)
    # bfloat16 data with float32 parameters (the mixed batch norm autocast runs)
    for shape, fmt in (_BN_SHAPES[0], _BN_SHAPES[3]):
        yield shape, fmt, torch.bfloat16, True, True, True


def _bn_args(shape, fmt, dt, grad_x, affine, stats):
    g = _gen()
    x = (torch.randn(shape, generator=g) * 2 + 1).to(dt)
    dt = torch.float32 if dt == torch.bfloat16 else dt  # the parameters' dtype
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    x.requires_grad_(grad_x)
    c = shape[1]
    w = b = rm = rv = None
    if affine:
        w = torch.randn(c, generator=g, dtype=dt, requires_grad=True)
        b = torch.randn(c, generator=g, dtype=dt, requires_grad=True)
    if stats:
        rm, rv = torch.randn(c, generator=g, dtype=dt), torch.rand(c, generator=g, dtype=dt) + 0.5
    return x, w, b, rm, rv


def _bn_id(case):
    shape, fmt, dt, grad_x, affine, stats = case
    layout = "cl" if fmt is not None else "c"
    return f"{'x'.join(map(str, shape))}-{layout}-{str(dt)[6:]}-g{grad_x:d}a{affine:d}s{stats:d}"


_BN = list(_bn_cases())


@pytest.mark.parametrize("case", _BN, ids=map(_bn_id, _BN))
def test_opcheck_batch_norm(case):
    x, w, b, rm, rv = _bn_args(*case)
    dt = case[2]
    opcheck(ops.batch_norm_train.default, (x, w, b, rm, rv, 0.1, 1e-5))
    if rm is not None:
        opcheck(ops.batch_norm_eval.default, (x, w, b, rm, rv, 1e-5))
    with torch.no_grad():
        _, mean, invstd = ops.batch_norm_train(x, w, b, None, None, 0.1, 1e-5)
    dy = torch.randn(x.shape, generator=_gen(1), dtype=x.dtype)
    wd = None if w is None else w.detach()
    for training in (True, False) if dt == torch.float64 else (True,):
        opcheck(ops.batch_norm_backward.default, (dy, x.detach(), mean, invstd, wd, training))
    y = ops.batch_norm_train(x.detach(), wd, None, None, None, 0.1, 1e-5)[0]
    opcheck(ops.batch_norm_backward.default, (dy, x.detach(), mean, invstd, wd, True, y))
    # channels-last stays channels-last
    y = ops.batch_norm_train(x, w, b, rm, rv, 0.1, 1e-5)[0]
    assert y.stride() == x.stride()


def test_batch_norm_ops_match_pytorch():
    g = _gen()
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last
    )
    w, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    rm2, rv2 = rm.clone(), rv.clone()
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    ws = [w.clone().requires_grad_(), w.clone().requires_grad_()]
    y = ops.batch_norm_train(xs[0], ws[0], b, rm, rv, 0.1, 1e-5)[0]
    e = F.batch_norm(xs[1], rm2, rv2, ws[1], b, True, 0.1, 1e-5)
    close(y, e)
    close(rm, rm2)
    close(rv, rv2)
    dy = torch.randn(x.shape, generator=g, dtype=x.dtype)
    close(torch.autograd.grad(y, xs[0], dy)[0], torch.autograd.grad(e, xs[1], dy)[0], ulps=256)
    y = ops.batch_norm_eval(xs[0], ws[0], b, rm, rv, 1e-5)[0]
    e = F.batch_norm(xs[1], rm, rv, ws[1], b, False, 0.1, 1e-5)
    close(y, e)
    close(torch.autograd.grad(y, ws[0], dy)[0], torch.autograd.grad(e, ws[1], dy)[0], ulps=256)


def _ce_cases():
    shapes = [(6, 5), (5,), (3, 4, 2)]
    yield from itertools.product(
        shapes, DTYPES, ["index", "weighted", "prob", "prob-grad"], ["mean", "sum", "none"]
    )


_CE = list(_ce_cases())


@pytest.mark.parametrize(
    "case", _CE, ids=[f"{'x'.join(map(str, s))}-{str(d)[6:]}-{k}-{r}" for s, d, k, r in _CE]
)
def test_opcheck_cross_entropy(case):
    shape, dt, kind, reduction = case
    g = _gen()
    x = torch.randn(shape, generator=g, dtype=dt, requires_grad=True)
    k = shape[1] if len(shape) > 1 else shape[0]
    weight, ignore, smoothing = None, -100, 0.0
    if kind.startswith("prob"):
        t = torch.softmax(torch.randn(shape, generator=g, dtype=dt), 1 if len(shape) > 1 else 0)
        t.requires_grad_(kind == "prob-grad")
        smoothing = 0.2
    else:
        t = torch.randint(0, k, shape[:1] + shape[2:] if len(shape) > 1 else (), generator=g)
        if kind == "weighted":
            weight = torch.rand(k, generator=g, dtype=dt) + 0.5
            if t.dim():
                t.view(-1)[0] = 1
                ignore, smoothing = 1, 0.1
    args = (x, t, weight, ignore, reduction, smoothing)
    opcheck(ops.cross_entropy.default, args)
    loss = ops.cross_entropy(*args)[0]
    expected = F.cross_entropy(
        x, t, weight, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing
    )
    close(loss, expected, ulps=256)
    if t.requires_grad:
        go = torch.rand(loss.shape, generator=g, dtype=dt)
        for a, e in zip(
            torch.autograd.grad(loss, (x, t), go), torch.autograd.grad(expected, (x, t), go)
        ):
            close(a, e, ulps=256)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape,dim", [((5, 7), 1), ((5, 7), 0), ((2, 3, 4), 1), ((6,), 0)])
def test_opcheck_softmax(shape, dim, dt):
    g = _gen()
    x = torch.randn(shape, generator=g, dtype=dt, requires_grad=True)
    dy = torch.randn(shape, generator=g, dtype=dt)
    for op, ref in ((ops.softmax, torch.softmax), (ops.log_softmax, torch.log_softmax)):
        opcheck(op.default, (x, dim))
        y, e = op(x, dim), ref(x, dim)
        close(y, e)
        close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(e, x, dy)[0], ulps=256)
    y = torch.softmax(x.detach(), dim)
    opcheck(ops.softmax_backward.default, (y, dy, dim))
    opcheck(ops.log_softmax_backward.default, (y.log(), dy, dim))


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", ["none", "weight", "pos_weight", "both"])
def test_opcheck_sigmoid_bce(weights, reduction, dt):
    g = _gen()
    x = torch.randn(6, 4, generator=g, dtype=dt, requires_grad=True)
    t = (torch.rand(6, 4, generator=g) > 0.5).to(dt)
    w = torch.rand(6, 1, generator=g, dtype=dt) if weights in ("weight", "both") else None
    pw = torch.rand(4, generator=g, dtype=dt) + 0.5 if weights in ("pos_weight", "both") else None
    args = (x, t, w, pw, reduction)
    opcheck(ops.binary_cross_entropy_with_logits.default, args)
    loss = ops.binary_cross_entropy_with_logits(*args)[0]
    e = F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=pw)
    close(loss, e, ulps=256)
    go = torch.rand(loss.shape, generator=g, dtype=dt)
    close(torch.autograd.grad(loss, x, go)[0], torch.autograd.grad(e, x, go)[0], ulps=256)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    "reduction,dt",
    [("mean", torch.float32), ("none", torch.bfloat16)],
    ids=["mean-f32", "none-bf16"],
)
def test_compiled_cross_entropy_gradient_equals_eager(reduction, dt):
    """The compiled backward scales the saved gradient by the upstream gradient (inductor's
    in-place pass): bit for bit the eager gradient, for an upstream 1 and any other."""
    g = _gen()
    x = torch.randn(6, 5, generator=g).to(dt).requires_grad_()
    t = torch.randint(0, 5, (6,), generator=g)
    fn = torch.compile(bt.functional.cross_entropy, fullgraph=True, dynamic=False)
    loss = fn(x, t, reduction=reduction)
    eager = bt.functional.cross_entropy(x, t, reduction=reduction)
    assert torch.equal(loss, eager)
    ones = torch.ones_like(loss)  # the eager backward skips the scaling by it
    for go in (ones, torch.rand(loss.shape, generator=g) + 0.5, torch.rand(loss.shape) + 0.5):
        dx = torch.autograd.grad(fn(x, t, reduction=reduction), x, go)[0]
        assert dx.dtype == dt
        assert torch.equal(dx, torch.autograd.grad(eager, x, go, retain_graph=True)[0])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_opcheck_bfloat16_losses_and_softmax(reduction):
    """bfloat16 logits: float32 losses (and class weights), bfloat16 gradients."""
    g = _gen()
    x = torch.randn(6, 5, generator=g).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, 5, (6,), generator=g)
    w = torch.rand(5, generator=g) + 0.5
    args = (x, t, w, -100, reduction, 0.1)
    opcheck(ops.cross_entropy.default, args)
    loss, grad = ops.cross_entropy(*args)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    tb = (torch.rand(6, 5, generator=g) > 0.5).to(torch.bfloat16)
    opcheck(ops.binary_cross_entropy_with_logits.default, (x, tb, None, None, reduction))
    for name in ("softmax", "log_softmax"):
        opcheck(getattr(ops, name).default, (x, 1))


def test_every_operator_checked():
    names = {op._qualname for op in _ops.OPS}
    assert names == {
        "bnfast::batch_norm_train",
        "bnfast::batch_norm_eval",
        "bnfast::batch_norm_backward",
        "bnfast::cross_entropy",
        "bnfast::softmax",
        "bnfast::log_softmax",
        "bnfast::softmax_backward",
        "bnfast::log_softmax_backward",
        "bnfast::binary_cross_entropy_with_logits",
    }
    schema = ops.batch_norm_train.default._schema
    mutated = [a.name for a in schema.arguments if a.alias_info and a.alias_info.is_write]
    assert mutated == ["running_mean", "running_var"]


# ---- torch.compile of converted models ---------------------------------------------------------


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


class WithLoss(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return bt.functional.cross_entropy(self.net(x), t)


def _batches(n, batch=16, seed=0, size=8):
    g = _gen(seed)
    return [
        (
            torch.randn(batch, 3, size, size, generator=g),
            torch.randint(0, 10, (batch,), generator=g),
        )
        for _ in range(n)
    ]


def _bnfast_calls(graph):
    """The bnfast operators an FX graph calls (directly or through auto_functionalized)."""
    found = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        for target in (node.target, *node.args[:1]):
            name = str(target)
            if name.startswith("bnfast."):
                found.append(name.split(".")[1])
    return found


class Recorder:
    """A backend that runs AOTAutograd and keeps the forward and backward graphs."""

    def __init__(self):
        self.graphs = []
        self.frames = 0

    def __call__(self, gm, example_inputs):
        from functorch.compile import make_boxed_func
        from torch._functorch.aot_autograd import aot_module_simplified

        self.frames += 1

        def keep(g, _):
            self.graphs.append(g.graph)
            return make_boxed_func(g)

        return aot_module_simplified(gm, example_inputs, fw_compiler=keep, bw_compiler=keep)

    def calls(self):
        return [name for g in self.graphs for name in _bnfast_calls(g)]


def _sgd(model):
    return bt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


STEPS = 100


# Importing inductor imports torch.utils.mkldnn, which warns about its own use of script_method.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_training_matches_eager():
    """torch.compile(fullgraph=True, inductor) of a converted conv net with BN and CE: the
    generated code calls bnfast's operators, and 100 SGD steps give the eager model's losses."""
    from torch._inductor.utils import run_and_get_code

    # float64: in float32 inductor's own kernels (convolution, pooling) round differently from
    # eager's, and 100 SGD steps carry that ~1e-3 apart, with or without bnfast.
    eager = WithLoss(bt.convert(_net())).double()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)
    opts = _sgd(eager), _sgd(compiled_model)
    batches = [(x.double(), t) for x, t in _batches(STEPS)]

    def step(fn, opt, x, t):
        opt.zero_grad()
        loss = fn(x, t)
        loss.backward()
        opt.step()
        return loss.detach()

    loss, codes = run_and_get_code(step, compiled, opts[1], *batches[0])
    code = "\n".join(codes)
    for op in ("batch_norm_train", "batch_norm_backward", "cross_entropy"):
        assert f"torch.ops.bnfast.{op}" in code, op
    losses = [loss], [step(eager, opts[0], *batches[0])]
    for x, t in batches[1:]:
        losses[0].append(step(compiled, opts[1], x, t))
        losses[1].append(step(eager, opts[0], x, t))
    close(torch.stack(losses[0]), torch.stack(losses[1]), ulps=1 << 16, msg="losses")
    bn_c, bn_e = compiled_model.net[1], eager.net[1]
    close(bn_c.running_mean, bn_e.running_mean, ulps=1 << 20)
    close(bn_c.running_var, bn_e.running_var, ulps=1 << 20)
    assert int(bn_c.num_batches_tracked) == STEPS


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_batch_norm_backward_gets_dy_in_x_layout():
    """Inductor lays the convolutions' outputs (batch norm's ``x``) out channels-last: the
    kernel before each batch-norm backward (ReLU, pooling backward) writes ``dy`` in that layout
    too, so the operator copies neither (the generated code shows the strides)."""
    import re

    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(WithLoss(bt.convert(_net())), fullgraph=True)
    x, t = _batches(1)[0]
    _, codes = run_and_get_code(lambda: compiled(x, t).backward())
    (code,) = [c for c in codes if "batch_norm_backward.default(" in c]  # the backward's
    calls = re.findall(r"(buf\d+) = torch\.ops\.bnfast\.batch_norm_backward\.default\((\w+),", code)
    assert len(calls) == 2, code
    for out, dy in calls:
        dy_strides = re.search(rf"\b{dy} = empty_strided_cpu\(\([\d, ]+\), \(([\d, ]+)\)", code)
        dx = f"buf{int(out[3:]) + 1}"
        dx_strides = re.search(rf"assert_size_stride\({dx}, \([\d, ]+\), \(([\d, ]+)\)", code)
        assert dy_strides and dx_strides, (out, dy)
        c = 8  # the net's channels: channels-last strides end in (..., c)
        assert dy_strides[1] == dx_strides[1] and dx_strides[1].split(", ")[1] == "1", code
        assert dx_strides[1].endswith(f", {c}"), dx_strides[1]


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_relu_masks_are_recomputed_not_stored():
    """The batch-norm backward takes the forward's output ``y``, so the partitioner keeps ``y``
    and recomputes each following ReLU's mask from it in the backward, where it would otherwise
    store the masks as bool tensors (which inductor writes an element at a time)."""
    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(WithLoss(bt.convert(_net())), fullgraph=True)
    x, t = _batches(1)[0]
    _, codes = run_and_get_code(lambda: compiled(x, t).backward())
    code = "\n".join(codes)
    assert code.count("torch.ops.bnfast.batch_norm_backward.default(") == 2, code
    assert "torch.bool" not in code and "bool*" not in code, code


def test_compiled_graph_calls_bnfast_without_falling_back():
    rec = Recorder()
    model = WithLoss(bt.convert(_net()))
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend=rec, fullgraph=True)
    x, t = _batches(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        loss = compiled(x, t)
        loss.backward()
    expected = eager(x, t)
    expected.backward()
    close(loss, expected)
    close(model.net[0].weight.grad, eager.net[0].weight.grad, ulps=256)
    calls = rec.calls()
    assert calls.count("batch_norm_train") == 2
    assert calls.count("batch_norm_backward") == 2
    assert calls.count("cross_entropy") == 1
    # The running statistics are updated in place: the same values as eager.
    close(model.net[1].running_var, eager.net[1].running_var)


def test_compiled_channels_last_and_eval():
    rec = Recorder()
    model = bt.convert(_net()).to(memory_format=torch.channels_last)
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend=rec, fullgraph=True)
    x = _batches(1)[0][0].contiguous(memory_format=torch.channels_last).requires_grad_()
    y = compiled(x)
    e = eager(x)
    close(y, e)
    close(torch.autograd.grad(y.sum(), x)[0], torch.autograd.grad(e.sum(), x)[0], ulps=256)
    model.eval()
    eager.eval()
    with torch.no_grad():
        close(compiled(x), eager(x))
    assert "batch_norm_eval" in rec.calls()


def test_dynamic_batch_size_no_recompile():
    rec = Recorder()
    model = WithLoss(bt.convert(_net()))
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend=rec, fullgraph=True, dynamic=True)
    frames = None
    for n in (4, 6, 9, 13):
        x, t = _batches(1, batch=n, seed=n)[0]
        loss = compiled(x, t)
        loss.backward()
        expected = eager(x, t)
        expected.backward()
        close(loss, expected, msg=f"batch {n}")
        frames = rec.frames if frames is None else frames
        assert rec.frames == frames, f"recompiled for batch {n}"
    assert "batch_norm_train" in rec.calls()


def test_compiled_unservable_falls_back_silently():
    """What the kernels cannot serve compiles to PyTorch's own op (no warning, same answer)."""
    rec = Recorder()
    bn = bt.convert(nn.BatchNorm1d(3)).double()
    x = torch.randn(3, 5, dtype=torch.float64).T  # (5, 3), neither contiguous nor channels-last
    eager = copy.deepcopy(bn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        y = torch.compile(bn, backend=rec, fullgraph=True)(x)
    with pytest.warns(FallbackWarning, match="neither contiguous"):
        close(y, eager(x))
    assert "batch_norm_train" not in rec.calls()
    close(bn.running_var, eager.running_var)


# PyTorch's own pytree deprecation, from deep-copying the program in run_decompositions.
@pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated:FutureWarning")
def test_export_eval_and_train():
    model = bt.convert(_net()).eval()
    x = _batches(1, batch=4)[0][0]
    ep = torch.export.export(model, (x,))
    assert _bnfast_calls(ep.graph).count("batch_norm_eval") == 2
    assert "aten.batch_norm" not in str(ep.graph)
    with torch.no_grad():
        close(ep.module()(x), model(x))
    # Training mode: the mutation of the running statistics is declared, so the functional
    # (decomposed) program returns them as mutated buffers.
    model.train()
    ep = torch.export.export(model, (x,))
    assert _bnfast_calls(ep.graph).count("batch_norm_train") == 2
    ep = ep.run_decompositions()
    assert _bnfast_calls(ep.graph).count("batch_norm_train") == 2
    mutated = set(ep.graph_signature.buffers_to_mutate.values())
    assert {"1.running_mean", "1.running_var", "5.running_mean", "5.running_var"} <= mutated


# Dynamo's resume after the graph break at loss.backward() reads hasattr(loss, "grad") of the
# non-leaf loss, which warns (PyTorch's own doing, with any optimizer).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_optimizer_step_in_compiled_function_equals_eager(opt_name):
    """The bnfast optimizer step runs eagerly behind a graph break; results are the eager step's."""
    results = []
    for compile_it in (False, True):
        model = bt.convert(
            nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
        )
        torch.manual_seed(0)
        for p in model.parameters():
            p.data.normal_()
        kw = {"momentum": 0.9} if opt_name == "SGD" else {}
        opt = getattr(bt.optim, opt_name)(model.parameters(), lr=0.01, **kw)

        def step(x, t, model=model, opt=opt):
            opt.zero_grad()
            loss = bt.functional.cross_entropy(model(x), t)
            loss.backward()
            opt.step()
            return loss.detach()

        fn = torch.compile(step, backend="aot_eager") if compile_it else step
        g = _gen(1)
        losses = [fn(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g))]
        losses += [fn(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g))]
        results.append((torch.stack(losses), [p.detach().clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace(_method)?` is deprecated:DeprecationWarning")
def test_jit_trace_still_falls_back_with_warning():
    model = bt.convert(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))).eval()
    x = torch.randn(5, 4)
    with pytest.warns(FallbackWarning, match="TorchScript/tracing"):
        traced = torch.jit.trace(model, (x,))
    with torch.no_grad():
        close(traced(x), model(x))
