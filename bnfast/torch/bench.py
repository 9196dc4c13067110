"""Benchmark cases: the bnfast.torch drop-ins beside PyTorch's own, at the reference shapes.

One registry serves ``bench/bench_torch.py`` (pytest-benchmark) and ``bnfast bench``::

    for kernel, shape in CASES:
        for impl in impls(kernel):
            run = make(kernel, shape, impl)   # allocates the inputs once
            run()                             # one timed call

``impl`` is ``"torch"`` (PyTorch's module, function or optimizer as a user writes it),
``"torch-fused"`` (PyTorch's ``fused=True`` optimizer, where it has one on the CPU) or
``"bnfast.torch"`` (the drop-in). Every case runs what a training loop runs: module calls
with autograd, ``loss`` and its gradient through ``torch.autograd.grad``, ``optimizer.step()``.
Set the thread count of both libraries (``bnfast.set_num_threads``, ``torch.set_num_threads``)
before timing; ratios are only meaningful within one run.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F

import bnfast.torch as bt

__all__ = ["BN_SHAPES", "CASES", "IMPLS", "OPT_SIZES", "XENT_SHAPES", "impls", "make", "nbytes"]

IMPLS = ("torch", "torch-fused", "bnfast.torch")
BN_SHAPES = [(256, 1024), (8192, 1024), (32, 64, 56, 56), ("nhwc", 32, 64, 56, 56)]
XENT_SHAPES = [(256, 10), (4096, 1000), (65536, 10)]
OPT_SIZES = [(100_000,), (10_000_000,)]
_OPT_SPLIT = 10  # parameters per model: the total split into this many tensors

CASES: list[tuple[str, tuple]] = (
    [(k, s) for k in ("bn-train-fwd", "bn-eval-fwd", "bn-train-fwd-bwd") for s in BN_SHAPES]
    + [("xent-fwd-bwd", s) for s in XENT_SHAPES]
    + [(k, s) for k in ("sgd_momentum", "adam", "adamw", "rmsprop") for s in OPT_SIZES]
)


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
        "bn-train-fwd": 3,  # read x twice (statistics, normalize), write y
        "bn-eval-fwd": 2,
        "bn-train-fwd-bwd": 3 + 4,  # + backward: read dy, x twice, write dx
        "xent-fwd-bwd": 2,  # read logits, write the gradient
        "sgd_momentum": 5,
        "rmsprop": 5,
        "adam": 7,
        "adamw": 7,
    }[kernel]
    return 4 * n * per_elem


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


def make(kernel: str, shape: tuple, impl: str) -> Callable[[], Any]:
    """Allocate the inputs of one case and return the call to time."""
    if impl not in impls(kernel):
        raise ValueError(f"no {impl!r} implementation of {kernel!r}")
    drop_in = impl == "bnfast.torch"
    gen = torch.Generator().manual_seed(0)
    if kernel.startswith("bn-"):
        x, bn = _bn_input(shape, gen)
        if drop_in:
            bn = bt.convert(copy.deepcopy(bn))
        if kernel == "bn-eval-fwd":
            bn.eval()
        if kernel != "bn-train-fwd-bwd":

            def forward() -> Any:
                with torch.no_grad():
                    return bn(x)

            return forward
        x.requires_grad_(True)
        dy = torch.randn(x.shape, generator=gen).contiguous(
            memory_format=torch.channels_last if shape[0] == "nhwc" else torch.contiguous_format
        )
        inputs = (x, bn.weight, bn.bias)
        return lambda: torch.autograd.grad(bn(x), inputs, dy)
    if kernel == "xent-fwd-bwd":
        logits = torch.randn(shape, generator=gen, requires_grad=True)
        target = torch.randint(0, shape[1], (shape[0],), generator=gen)
        fn = bt.functional.cross_entropy if drop_in else F.cross_entropy
        return lambda: torch.autograd.grad(fn(logits, target), logits)
    total = shape[0]
    params = [torch.randn(total // _OPT_SPLIT, generator=gen) for _ in range(_OPT_SPLIT)]
    for p in params:
        p.requires_grad_(True)
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = _optimizer(kernel, impl, params)
    opt.step()  # state allocated outside the timing
    return opt.step
