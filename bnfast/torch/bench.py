"""The PyTorch side of ``bnfast bench``: PyTorch's peers of the kernel cases, and the
bnfast.torch drop-ins beside PyTorch's own, at the reference shapes.

Peers (:func:`batch_norm_peer`, :func:`softmax_cross_entropy_peer`, :func:`optimizer_peer`)
wrap the NumPy arrays of a :mod:`bnfast.bench.cases` case and return ``(call, variant)``:
PyTorch's fastest honest variant (``.out`` ops into preallocated tensors, ``fused=True``
optimizers, else ``foreach=True``). Only this package imports torch.

The drop-in cases serve ``bench/bench_torch.py`` (pytest-benchmark) and
``bnfast bench --torch-dropin``::

    for kernel, shape in CASES:
        for impl in impls(kernel):
            run = make(kernel, shape, impl)   # allocates the inputs once
            run()                             # one timed call

``impl`` is ``"torch"`` (PyTorch's module, function or optimizer as a user writes it),
``"torch-fused"`` (PyTorch's ``fused=True`` optimizer, where it has one on the CPU) or
``"bnfast.torch"`` (the drop-in); on :data:`COMPILED_CASES` also ``"torch-compiled"``
(``torch.compile`` of PyTorch's modules) and ``"bnfast.torch-compiled"`` (``torch.compile`` of
the converted model, whose graph calls the ``torch.ops.bnfast`` operators). A compiled case
compiles (inductor, ``fullgraph=True``) on its first call, which ``make`` makes.
``convnet_step`` (only in :data:`COMPILED_CASES`) is one training step of a small conv net
(conv, batch norm, ReLU twice, pooling, linear, cross-entropy, SGD with momentum; the optimizer
runs eagerly in every variant). Every case runs what a training loop runs: module calls
with autograd, ``loss`` and its gradient through ``torch.autograd.grad``, ``optimizer.step()``.
Their ids are those of :mod:`bnfast.bench.cases`: ``batch_norm_train`` and ``batch_norm_eval``
are module forwards, ``batch_norm_backward`` a training forward and its backward,
``softmax_cross_entropy`` the loss and its gradient.
Set the thread count of both libraries (``bnfast.set_num_threads``, ``torch.set_num_threads``)
before timing; ratios are only meaningful within one run.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import bnfast.torch as bt
from bnfast._arrays import is_bfloat16

__all__ = [
    "AUTOCAST_CASES",
    "BN_SHAPES",
    "CASES",
    "COMPILED_CASES",
    "COMPILED_IMPLS",
    "IMPLS",
    "OPT_SIZES",
    "XENT_SHAPES",
    "batch_norm_peer",
    "impls",
    "kernel_share",
    "make",
    "nbytes",
    "optimizer_peer",
    "set_num_threads",
    "softmax_cross_entropy_peer",
    "version",
]

IMPLS = ("torch", "torch-fused", "bnfast.torch")
COMPILED_IMPLS = ("torch-compiled", "bnfast.torch-compiled")
BN_SHAPES = [(256, 1024), (8192, 1024), (32, 64, 56, 56), ("nhwc", 32, 64, 56, 56)]
XENT_SHAPES = [(256, 10), (4096, 1000), (65536, 10)]
OPT_SIZES = [(100_000,), (10_000_000,)]
_OPT_SPLIT = 10  # parameters per model: the total split into this many tensors

CASES: list[tuple[str, tuple]] = (
    [
        (k, s)
        for k in ("batch_norm_train", "batch_norm_eval", "batch_norm_backward")
        for s in BN_SHAPES
    ]
    + [("softmax_cross_entropy", s) for s in XENT_SHAPES]
    + [(k, s) for k in ("sgd_momentum", "adam", "adamw", "rmsprop") for s in OPT_SIZES]
)


# The cases timed compiled as well (``bnfast bench --torch-dropin``).
COMPILED_CASES: list[tuple[str, tuple]] = [
    ("batch_norm_backward", (8192, 1024)),
    ("batch_norm_backward", (32, 64, 56, 56)),
    ("softmax_cross_entropy", (65536, 10)),
    ("softmax_cross_entropy", (4096, 1000)),
    ("convnet_step", (64, 3, 32, 32)),
]

# The conv-net training step under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (eager):
# PyTorch's and the converted model's, with the share of the step bnfast's kernels take.
AUTOCAST_CASES: list[tuple[str, tuple]] = [("convnet_step_autocast", (64, 3, 32, 32))]


def impls(kernel: str) -> tuple[str, ...]:
    """The implementations to compare for ``kernel`` (PyTorch has no fused CPU RMSprop)."""
    if kernel in ("sgd_momentum", "adam", "adamw"):
        return IMPLS
    return ("torch", "bnfast.torch")


def nbytes(kernel: str, shape: tuple) -> int:
    """Bytes a kernel must move at least (float32), for GB/s."""
    n = 1
    for d in shape:
        if isinstance(d, int):
            n *= d
    per_elem = {
        "batch_norm_train": 3,  # read x twice (statistics, normalize), write y
        "batch_norm_eval": 2,
        "batch_norm_backward": 3 + 4,  # training forward + backward: read dy, x twice, write dx
        "softmax_cross_entropy": 2,  # read logits, write the gradient
        "sgd_momentum": 5,
        "rmsprop": 5,
        "adam": 7,
        "adamw": 7,
    }[kernel]
    return 4 * n * per_elem


def set_num_threads(n: int) -> None:
    """PyTorch's intra-op thread count (set it with bnfast's before timing)."""
    torch.set_num_threads(n)


def version() -> str:
    """PyTorch's version string."""
    return torch.__version__


# --- peers of the bnfast.bench cases ---------------------------------------------------------


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor over ``a``'s memory; bfloat16 arrays (ml_dtypes) become torch.bfloat16."""
    if is_bfloat16(a.dtype):
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def batch_norm_peer(
    kernel: str, x, dy, axis, w, b, rm, rv, mean, invstd
) -> tuple[Callable[[], Any], str]:
    """PyTorch's native batch norm into preallocated outputs (its ``.out`` overloads)."""

    def channels_first(a: np.ndarray) -> Any:
        t = _tensor(a)
        # channels-last data as an NCHW tensor in torch.channels_last memory format: no copy
        return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)) if axis in (-1, a.ndim - 1) else t

    tx = channels_first(x)
    tw, tb, trm, trv = (torch.from_numpy(a.copy()) for a in (w, b, rm, rv))
    out = torch.empty_like(tx)  # keeps tx's strides
    sm, si = torch.empty_like(tw), torch.empty_like(tw)
    aten = torch.ops.aten
    if kernel in ("batch_norm_train", "batch_norm_eval"):
        training = kernel == "batch_norm_train"

        def fwd() -> object:
            return aten.native_batch_norm.out(
                tx, tw, tb, trm, trv, training, 0.1, 1e-5, out=out, save_mean=sm, save_invstd=si
            )

        return fwd, "aten.native_batch_norm.out"
    tdy = channels_first(dy)
    tm, ti = torch.from_numpy(mean), torch.from_numpy(invstd)
    dw, db = torch.empty_like(tw), torch.empty_like(tw)

    def bwd() -> object:
        return aten.native_batch_norm_backward.out(
            tdy,
            tx,
            tw,
            trm,
            trv,
            tm,
            ti,
            True,
            1e-5,
            [True, True, True],
            out0=out,
            out1=dw,
            out2=db,
        )

    return bwd, "aten.native_batch_norm_backward.out"


def softmax_cross_entropy_peer(x: np.ndarray, t: np.ndarray) -> tuple[Callable[[], Any], str]:
    """``F.cross_entropy`` and its backward."""
    xt = _tensor(x).requires_grad_(True)
    tt = torch.from_numpy(t)

    def step() -> object:
        xt.grad = None
        F.cross_entropy(xt, tt).backward()
        return xt.grad

    return step, "F.cross_entropy + backward"


def optimizer_peer(
    cls: str, params: list[np.ndarray], grads: list[np.ndarray], kwargs: dict[str, Any]
) -> tuple[Callable[[], Any], str]:
    """``torch.optim.<cls>`` over copies of ``params``: ``fused=True`` where PyTorch has a fused
    CPU kernel, else ``foreach=True``."""
    tp = [_tensor(p.copy()).requires_grad_(True) for p in params]
    for t, g in zip(tp, grads):
        t.grad = _tensor(g)
    for kw in ({"fused": True}, {"foreach": True}):
        try:
            opt = getattr(torch.optim, cls)(tp, **kwargs, **kw)
            with torch.no_grad():
                opt.step()  # allocates the state; raises if the variant has no CPU kernel
        except (RuntimeError, TypeError, ValueError):
            continue
        return opt.step, ", ".join(f"{k}=True" for k in kw)
    opt = getattr(torch.optim, cls)(tp, **kwargs)
    return opt.step, "default"


# --- the drop-ins ------------------------------------------------------------------------------


def _bn_input(shape: tuple, gen: torch.Generator) -> tuple[torch.Tensor, torch.nn.Module]:
    nhwc = shape[0] == "nhwc"
    dims = shape[1:] if nhwc else shape
    x = torch.randn(dims, generator=gen)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    bn = torch.nn.BatchNorm1d(dims[1]) if len(dims) == 2 else torch.nn.BatchNorm2d(dims[1])
    return x, bn


def _optimizer(kernel: str, impl: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    ns = bt.optim if impl == "bnfast.torch" else torch.optim
    kw: dict[str, Any] = {"fused": True} if impl == "torch-fused" else {}
    if kernel == "sgd_momentum":
        return ns.SGD(params, lr=0.01, momentum=0.9, **kw)
    if kernel == "rmsprop":
        return ns.RMSprop(params, lr=0.01, **kw)
    cls = ns.Adam if kernel == "adam" else ns.AdamW
    return cls(params, lr=1e-3, **kw)


def _compile(fn: Any) -> Any:
    return torch.compile(fn, fullgraph=True, dynamic=False)


def _convnet(channels: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.BatchNorm2d(64),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )


def _convnet_step(
    shape: tuple, impl: str, gen: torch.Generator, autocast: bool = False
) -> Callable[[], Any]:
    torch.manual_seed(0)
    net = _convnet(shape[1])
    bnfast_impl = impl.startswith("bnfast.torch")
    if bnfast_impl:
        bt.convert(net)
    ce = bt.functional.cross_entropy if bnfast_impl else F.cross_entropy

    def loss_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return ce(net(x), t)

    fn = _compile(loss_fn) if impl.endswith("-compiled") else loss_fn
    opt = (bt.optim if bnfast_impl else torch.optim).SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(shape, generator=gen)
    t = torch.randint(0, 10, (shape[0],), generator=gen)

    def step() -> Any:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fn(x, t)
        loss.backward()
        opt.step()
        return loss

    step()  # compiles (a compiled impl), allocates the optimizer state
    return step


def make(kernel: str, shape: tuple, impl: str) -> Callable[[], Any]:
    """Allocate the inputs of one case and return the call to time."""
    compiled = impl in COMPILED_IMPLS
    if compiled and (kernel, shape) not in COMPILED_CASES:
        raise ValueError(f"no {impl!r} implementation of {kernel!r} at {shape}")
    if not compiled and impl not in impls(kernel):
        raise ValueError(f"no {impl!r} implementation of {kernel!r}")
    drop_in = impl.startswith("bnfast.torch")
    gen = torch.Generator().manual_seed(0)
    if kernel in ("convnet_step", "convnet_step_autocast"):
        return _convnet_step(shape, impl, gen, autocast=kernel == "convnet_step_autocast")
    if kernel.startswith("batch_norm_"):
        x, bn = _bn_input(shape, gen)
        if drop_in:
            bn = bt.convert(copy.deepcopy(bn))
        if kernel == "batch_norm_eval":
            bn.eval()
        if kernel != "batch_norm_backward":

            def forward() -> Any:
                with torch.no_grad():
                    return bn(x)

            return forward
        x.requires_grad_(True)
        dy = torch.randn(x.shape, generator=gen).contiguous(
            memory_format=torch.channels_last if shape[0] == "nhwc" else torch.contiguous_format
        )
        inputs = (x, bn.weight, bn.bias)
        module = _compile(bn) if compiled else bn
        if compiled:
            torch.autograd.grad(module(x), inputs, dy)  # compiles
        return lambda: torch.autograd.grad(module(x), inputs, dy)
    if kernel == "softmax_cross_entropy":
        logits = torch.randn(shape, generator=gen, requires_grad=True)
        target = torch.randint(0, shape[1], (shape[0],), generator=gen)
        fn = bt.functional.cross_entropy if drop_in else F.cross_entropy
        if compiled:
            fn = _compile(fn)
            torch.autograd.grad(fn(logits, target), logits)  # compiles
        return lambda: torch.autograd.grad(fn(logits, target), logits)
    total = shape[0]
    params = [torch.randn(total // _OPT_SPLIT, generator=gen) for _ in range(_OPT_SPLIT)]
    for p in params:
        p.requires_grad_(True)
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = _optimizer(kernel, impl, params)
    opt.step()  # state allocated outside the timing
    return opt.step


# _core's functions that are not kernels (configuration, introspection).
_NOT_KERNELS = {
    "active_isa", "available_isas", "compiled_isas", "empty_kernel_slots", "get_num_threads",
    "get_parallel_min_bytes", "set_isa", "set_num_threads", "set_parallel_min_bytes",
    "swap_thread_parallel_min_bytes",
}  # fmt: skip


def kernel_share(step: Callable[[], Any], steps: int = 5) -> float:
    """The share of ``step``'s wall time spent inside bnfast's kernels (``bnfast._core``
    calls), over ``steps`` calls: each kernel entry point is wrapped with a timer meanwhile
    (callers look them up on the module at every call)."""
    import time

    from bnfast import _core

    spent = [0.0]
    saved = {
        n: f
        for n, f in vars(_core).items()
        if callable(f) and not n.startswith("_") and n not in _NOT_KERNELS
    }

    def timed(f: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        return call

    try:
        for n, f in saved.items():
            setattr(_core, n, timed(f))
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - t0
    finally:
        for n, f in saved.items():
            setattr(_core, n, f)
    return spent[0] / total
