"""``bnfast bench``: every kernel against its speed of light, NumPy and PyTorch, in one process.

For each kernel and reference shape, at 1 thread and at all cores, the bench times bnfast (each
ISA), the NumPy reference (:mod:`bnfast.reference`) and PyTorch on the CPU when it is importable
(its fastest honest variant: outputs preallocated with ``.out`` ops, ``fused=True`` optimizers,
``foreach=True`` where no fused kernel exists), plus the *speed of light*: bnfast's membench
kernels (``_core.membench``) moving the same arrays in the same way (same number of arrays
read, written fresh or updated in place, same sizes), measured in the same run.

Bandwidth on a shared machine drifts (2x within minutes on the 2-core VM this was written
on), so implementations are interleaved: every round times one sample of each, in a rotating
order, and a row reports the median over rounds. Compare rows only within one run.

Bytes that must move (float32, 4 bytes, n elements):

==============  =====================  ==================================================
kernel          bytes                  why
==============  =====================  ==================================================
bn_eval         2·4n                   read x, write y
bn_train        3·4n (2·4n)            statistics read x; normalize reads x, writes y.
                                       One pass (2·4n) when a channel's data fits in cache
                                       (NCHW: its N planes), so normalize reads it from there
bn_backward     5·4n (3·4n)            Σdy, Σdy·x̂ read dy, x; dx reads dy, x, writes dx.
                                       One pass (3·4n) under the same cache rule
softmax_xent    2·4·N·K + 8N           read logits, write the gradient, read int64 targets
sgd             3·4n                   read g; read and write w
sgd_momentum    5·4n                   read g; read and write w, the momentum buffer
rmsprop         5·4n                   read g; read and write w, the square average
adam, adamw     7·4n                   read g; read and write w, m, v
==============  =====================  ==================================================

Its speed of light is the sum of the membench passes with the same pattern: e.g. ``bn_train``
(8192, 1024) is "read 1 array" + "read 1, write 1 fresh"; a fresh output takes the faster of
plain and non-temporal stores; an optimizer over 100 tensors is measured against one
contiguous array of the same total size.

Cross-entropy also gets a *compute floor*: membench's ``exp`` pass, which reads the logits and
writes their exp with bnfast's vectorized exp and nothing else, measured in the same rounds.
Any softmax computes one exp per logit, so where the floor is slower than the speed of light
(few classes), the kernel is bound by arithmetic, not by memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import bnfast
from bnfast import _core
from bnfast import reference as R
from bnfast._arrays import aligned_empty

__all__ = ["Case", "Impl", "Pass", "add_parser", "cases", "main", "overhead", "run"]

F32 = np.dtype(np.float32)
CACHE_BYTES = 512 * 1024  # data a kernel may keep in cache between two passes (half an L2)


# --- the registry ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pass:
    """One membench pass: ``k`` arrays read, ``m`` written (``mode``) over ``n`` elements.

    ``mode`` is ``"read"``, ``"write"`` (fresh outputs: the faster of plain and non-temporal
    stores), ``"update"`` (in place) or ``"exp"`` (fresh outputs holding the exp of the input,
    a compute floor).
    """

    k: int
    m: int
    mode: str
    n: int
    dtype: str = "float32"

    @property
    def label(self) -> str:
        what = {"read": "", "write": f"w{self.m}", "update": f"u{self.m}", "exp": f"w{self.m} exp"}[
            self.mode
        ]
        dt = "" if self.dtype == "float32" else f" {self.dtype}"
        return f"r{self.k}{what}{dt}"

    @property
    def nbytes(self) -> int:
        per = self.k + (2 if self.mode == "update" else 1) * self.m
        return per * self.n * np.dtype(self.dtype).itemsize


@dataclasses.dataclass
class Impl:
    """One implementation of a case: a zero-argument callable, run with ``isa`` active."""

    fn: Callable[[], object]
    isa: str | None = None
    variant: str = ""


@dataclasses.dataclass(frozen=True)
class Case:
    """A kernel at one shape: bytes that must move, its speed-of-light passes, its builders.

    ``build()`` allocates the data and returns ``{implementation name: Impl}``; it is called
    once per case and the arrays are dropped when the case is done.
    """

    kernel: str
    shape: str
    nbytes: int
    formula: str
    passes: tuple[Pass, ...]
    build: Callable[[], dict[str, Impl]]
    large: bool = False
    floor: tuple[Pass, ...] = ()  # compute floor (see the module docstring), if any

    @property
    def pattern(self) -> str:
        return " + ".join(p.label for p in self.passes)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _bnfast_impls(fn: Callable[[], object], variant: str = "") -> dict[str, Impl]:
    return {f"bnfast-{isa}": Impl(fn, isa, variant) for isa in bnfast.available_isas()}


def _ref(*names: str) -> Callable[..., Any] | None:
    """The first of ``names`` that bnfast.reference has (names differ between versions)."""
    for name in names:
        if hasattr(R, name):
            return getattr(R, name)
    return None


# Batch norm -------------------------------------------------------------------------------------


def _bn_one_pass(shape: tuple[int, ...], axis: int) -> bool:
    """Whether a channel's data fits in cache, so a second pass over it costs no memory traffic.

    With the channel axis not last (NCHW), one channel is N planes of H*W contiguous values; a
    kernel can take its statistics and normalize it while it is in cache. Otherwise (N, C) and
    channels-last interleave all channels: the whole array must fit.
    """
    axis %= len(shape)
    n = math.prod(shape)
    inner = math.prod(shape[axis + 1 :])
    per_channel = n // shape[axis] if inner > 1 else n
    return per_channel * F32.itemsize <= CACHE_BYTES


def _bn_case(kind: str, label: str, shape: tuple[int, ...], axis: int, large: bool) -> Case:
    n = math.prod(shape)
    one = _bn_one_pass(shape, axis)
    if kind == "eval":
        passes, formula = (Pass(1, 1, "write", n),), "2·4n: read x, write y"
    elif kind == "train":
        if one:
            passes, formula = (Pass(1, 1, "write", n),), "2·4n: read x, write y (one pass)"
        else:
            passes = (Pass(1, 0, "read", n), Pass(1, 1, "write", n))
            formula = "3·4n: read x (stats); read x, write y"
    else:
        if one:
            passes = (Pass(2, 1, "write", n),)
            formula = "3·4n: read dy, x, write dx (one pass)"
        else:
            passes = (Pass(2, 0, "read", n), Pass(2, 1, "write", n))
            formula = "5·4n: read dy, x (sums); read dy, x, write dx"
    nbytes = sum(p.nbytes for p in passes)

    def build() -> dict[str, Impl]:
        rng = np.random.default_rng(0)
        x = rng.normal(1.0, 2.0, shape).astype(F32)
        c = shape[axis]
        w, b = rng.uniform(0.5, 1.5, c).astype(F32), rng.normal(0, 0.1, c).astype(F32)
        rm, rv = np.zeros(c, F32), np.ones(c, F32)
        out = aligned_empty(shape, F32)
        dy = rng.normal(size=shape).astype(F32) if kind == "backward" else None
        res = bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis)
        mean, invstd = res.mean, res.invstd
        if kind == "train":
            impls = _bnfast_impls(
                lambda: bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis, out=out)
            )
            impls["numpy"] = Impl(lambda: R.batch_norm_train(x, rm, rv, w, b, axis=axis))
        elif kind == "eval":
            impls = _bnfast_impls(
                lambda: bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=axis, out=out)
            )
            impls["numpy"] = Impl(lambda: R.batch_norm_eval(x, rm, rv, w, b, axis=axis))
        else:
            impls = _bnfast_impls(
                lambda: bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, out=out)
            )
            impls["numpy"] = Impl(lambda: R.batch_norm_backward(dy, x, mean, invstd, w, axis=axis))
        torch = _torch()
        if torch is not None:
            impls["torch"] = _bn_torch(torch, kind, x, dy, axis, w, b, rm, rv, mean, invstd)
        return impls

    return Case(f"bn_{kind}", label, nbytes, formula, passes, build, large)


def _bn_torch(torch, kind, x, dy, axis, w, b, rm, rv, mean, invstd) -> Impl:
    """PyTorch's native batch norm into preallocated outputs (its ``.out`` overloads)."""

    def channels_first(a: np.ndarray) -> Any:
        t = torch.from_numpy(a)
        # channels-last data as an NCHW tensor in torch.channels_last memory format: no copy
        return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)) if axis in (-1, a.ndim - 1) else t

    tx = channels_first(x)
    tw, tb, trm, trv = (torch.from_numpy(a.copy()) for a in (w, b, rm, rv))
    out = torch.empty_like(tx)  # keeps tx's strides
    sm, si = torch.empty_like(tw), torch.empty_like(tw)
    aten = torch.ops.aten
    if kind in ("train", "eval"):
        training = kind == "train"

        def fwd() -> object:
            return aten.native_batch_norm.out(
                tx, tw, tb, trm, trv, training, 0.1, 1e-5, out=out, save_mean=sm, save_invstd=si
            )

        return Impl(fwd, variant="aten.native_batch_norm.out")
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

    return Impl(bwd, variant="aten.native_batch_norm_backward.out")


# Softmax cross-entropy --------------------------------------------------------------------------


def _xent_case(rows: int, classes: int, large: bool) -> Case:
    n = rows * classes
    passes = (Pass(1, 1, "write", n), Pass(1, 0, "read", rows, "float64"))
    nbytes = 2 * 4 * n + 8 * rows
    formula = "2·4·N·K + 8N: read logits, write grad, read int64 targets"

    def build() -> dict[str, Impl]:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, classes)).astype(F32)
        t = rng.integers(0, classes, rows)
        impls: dict[str, Impl] = {}
        fn = getattr(bnfast, "softmax_cross_entropy", None)
        if fn is not None:
            if "out" in inspect.signature(fn).parameters:
                out = aligned_empty(x.shape, F32)
                impls.update(_bnfast_impls(lambda: fn(x, t, out=out), "out="))
            else:
                impls.update(_bnfast_impls(lambda: fn(x, t)))
        ref = _ref("softmax_cross_entropy")
        if ref is not None:
            impls["numpy"] = Impl(lambda: ref(x, t))
        torch = _torch()
        if torch is not None:
            xt = torch.from_numpy(x).requires_grad_(True)
            tt = torch.from_numpy(t)
            ce = torch.nn.functional.cross_entropy

            def step() -> object:
                xt.grad = None
                ce(xt, tt).backward()
                return xt.grad

            impls["torch"] = Impl(step, variant="F.cross_entropy + backward")
        return impls

    floor = (Pass(1, 1, "exp", n),)
    return Case("softmax_xent", f"{rows}x{classes}", nbytes, formula, passes, build, large, floor)


# Optimizers -------------------------------------------------------------------------------------

# name: (arrays updated in place besides w, bnfast constructor kwargs, torch class, kwargs)
_OPTIMIZERS: dict[str, tuple[int, str, dict[str, Any]]] = {
    "sgd": (0, "SGD", {"lr": 0.01}),
    "sgd_momentum": (1, "SGD", {"lr": 0.01, "momentum": 0.9}),
    "rmsprop": (1, "RMSprop", {"lr": 0.01}),
    "adam": (2, "Adam", {"lr": 1e-3}),
    "adamw": (2, "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
}


def _numpy_optimizer(name: str) -> Callable[[list, list, list], None] | None:
    """One step of the NumPy reference over every tensor (it returns new arrays: discarded)."""
    sgd, rms = _ref("sgd", "sgd_update"), _ref("rmsprop", "rmsprop_update")
    adam = _ref("adam", "adam_update")
    if name.startswith("sgd") and sgd is not None:
        mom = _OPTIMIZERS[name][2].get("momentum", 0.0)
        return lambda ps, gs, ss: [
            sgd(p, g, s[0] if s else None, 0.01, momentum=mom) for p, g, s in zip(ps, gs, ss)
        ]
    if name == "rmsprop" and rms is not None:
        return lambda ps, gs, ss: [rms(p, g, s[0], None, None, 0.01) for p, g, s in zip(ps, gs, ss)]
    if name.startswith("adam") and adam is not None:
        dec = name == "adamw"
        wd = _OPTIMIZERS[name][2].get("weight_decay", 0.0)
        return lambda ps, gs, ss: [
            adam(p, g, s[0], s[1], None, 10, 1e-3, weight_decay=wd, decoupled=dec)
            for p, g, s in zip(ps, gs, ss)
        ]
    return None


def _optim_case(name: str, total: int, split: int, large: bool) -> Case:
    state, cls, kwargs = _OPTIMIZERS[name]
    passes = (Pass(1, 1 + state, "update", total),)
    nbytes = passes[0].nbytes
    formula = f"{3 + 2 * state}·4n: read g; read and write w" + (
        f" and {state} state array{'s' if state > 1 else ''}" if state else ""
    )
    label = f"{total:.0e}".replace("+0", "").replace("+", "") + (f"/{split}" if split > 1 else "")

    def build() -> dict[str, Impl]:
        rng = np.random.default_rng(0)
        per = total // split
        params = [rng.standard_normal(per, dtype=F32) for _ in range(split)]
        grads = [1e-3 * rng.standard_normal(per, dtype=F32) for _ in range(split)]
        impls: dict[str, Impl] = {}
        optim = getattr(bnfast, "optim", None)
        if optim is not None and hasattr(optim, cls):
            opt = getattr(optim, cls)(params, grads=grads, **kwargs)
            opt.step()  # allocates the state outside the timing
            impls.update(_bnfast_impls(opt.step))
        step = _numpy_optimizer(name)
        if step is not None:
            states = [[np.abs(g) for _ in range(state)] for g in grads]
            impls["numpy"] = Impl(lambda: step(params, grads, states))
        torch = _torch()
        if torch is not None:
            tp = [torch.from_numpy(p.copy()).requires_grad_(True) for p in params]
            for t, g in zip(tp, grads):
                t.grad = torch.from_numpy(g)
            impls["torch"] = _torch_optimizer(torch, cls, tp, kwargs)
        return impls

    return Case(name, label, nbytes, formula, passes, build, large)


def _torch_optimizer(torch, cls: str, params: list, kwargs: dict[str, Any]) -> Impl:
    """``fused=True`` where PyTorch has a fused CPU kernel, else ``foreach=True``."""
    for kw in ({"fused": True}, {"foreach": True}):
        try:
            opt = getattr(torch.optim, cls)(params, **kwargs, **kw)
            with torch.no_grad():
                opt.step()  # allocates the state; raises if the variant has no CPU kernel
        except (RuntimeError, TypeError, ValueError):
            continue
        return Impl(opt.step, variant=", ".join(f"{k}=True" for k in kw))
    opt = getattr(torch.optim, cls)(params, **kwargs)
    return Impl(opt.step, variant="default")


# The reference shapes ---------------------------------------------------------------------------


def cases(quick: bool = False) -> list[Case]:
    """Every case of the bench: the reference shapes, or tiny ones with ``quick``."""
    if quick:
        bn = [("64x32", (64, 32), 1), ("nchw-4x8x6x6", (4, 8, 6, 6), 1)]
        bn += [("nhwc-2x5x5x8", (2, 5, 5, 8), -1)]
        xent = [(32, 10), (16, 100)]
        optim = [(1000, 1), (1000, 10)]
    else:
        bn = [("256x1024", (256, 1024), 1), ("8192x1024", (8192, 1024), 1)]
        bn += [("nchw-32x64x56x56", (32, 64, 56, 56), 1)]
        bn += [("nhwc-32x56x56x64", (32, 56, 56, 64), -1)]
        xent = [(256, 10), (4096, 1000), (65536, 10)]
        optim = [(100_000, 1), (10_000_000, 1), (10_000_000, 100)]
    out: list[Case] = []
    for kind in ("train", "eval", "backward"):
        for label, shape, axis in bn:
            out.append(_bn_case(kind, label, shape, axis, math.prod(shape) >= 1 << 22))
    for rows, classes in xent:
        out.append(_xent_case(rows, classes, rows * classes >= 1 << 22))
    for name in _OPTIMIZERS:
        for total, split in optim:
            out.append(_optim_case(name, total, split, total >= 1 << 22))
    return out


# --- timing ------------------------------------------------------------------------------------


def _call_time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(
    items: dict[str, Impl], rounds: int, min_sample: float, max_number: int = 100_000
) -> dict[str, list[float]]:
    """Seconds per call of each item: ``rounds`` samples each, items interleaved.

    A sample is ``number`` back-to-back calls (enough to last ``min_sample`` seconds); each
    round visits every item once, starting one item later than the round before.
    """
    numbers: dict[str, int] = {}
    for name, it in items.items():
        _core.set_isa(it.isa or bnfast.available_isas()[-1])
        it.fn()  # warm up: first-touch page faults, lazy state, caches
        t = min(_call_time(it.fn) for _ in range(2))
        numbers[name] = max(1, min(max_number, math.ceil(min_sample / max(t, 1e-9))))
    names = list(items)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            it, number = items[name], numbers[name]
            _core.set_isa(it.isa or bnfast.available_isas()[-1])
            fn = it.fn
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - t0) / number)
    return samples


class _MemPool:
    """membench arrays, reused across cases of the same size (64-byte aligned, filled)."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[int, str], list[np.ndarray]] = {}

    def get(self, n: int, dtype: str, count: int) -> list[np.ndarray]:
        key = (n, dtype)
        have = self.arrays.setdefault(key, [])
        while len(have) < count:
            a = aligned_empty((n,), np.dtype(dtype))
            a.fill(0.5)  # touch every page now, and no denormals
            have.append(a)
        return have[:count]

    def keep_only(self, keys: set[tuple[int, str]]) -> None:
        for key in list(self.arrays):
            if key not in keys:
                del self.arrays[key]


def _sol_items(passes: Sequence[Pass], pool: _MemPool, tag: str = "sol") -> dict[str, Impl]:
    """Timed membench items for the passes: a fresh-output pass as plain and as NT stores."""
    isa = bnfast.available_isas()[-1]
    items: dict[str, Impl] = {}
    for p in passes:
        arrays = pool.get(p.n, p.dtype, p.k + p.m)
        reads, writes = arrays[: p.k], arrays[p.k :]
        modes = ["write", "write_nt"] if p.mode == "write" else [p.mode]
        for mode in modes:

            def fn(reads=reads, writes=writes, mode=mode) -> object:
                return _core.membench(reads, writes, mode)

            items[f"{tag}:{p.label}:{mode}"] = Impl(fn, isa, mode)
    return items


def _sol_time(passes: Sequence[Pass], med: dict[str, float], tag: str = "sol") -> tuple[float, str]:
    total, how = 0.0, []
    for p in passes:
        modes = ["write", "write_nt"] if p.mode == "write" else [p.mode]
        best = min(modes, key=lambda m: med[f"{tag}:{p.label}:{m}"])
        total += med[f"{tag}:{p.label}:{best}"]
        how.append(f"{p.label}{' nt' if best == 'write_nt' else ''}")
    return total, " + ".join(how)


def _match(value: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, pat) for pat in patterns)


def _set_threads(n: int) -> None:
    bnfast.set_num_threads(n)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(n)


# --- per-call overhead ---------------------------------------------------------------------------


def overhead(samples: int = 7, number: int = 2000) -> list[dict[str, Any]]:
    """Median time of one call of each binding on a tiny input (1 thread, best ISA), in µs.

    Both the public function and the raw ``_core`` binding it calls where that is one call.
    """
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(F32)
    c = x.shape[1]
    w, b, rm, rv = np.ones(c, F32), np.zeros(c, F32), np.zeros(c, F32), np.ones(c, F32)
    out = np.empty_like(x)
    m, s = x.mean(0), 1 / x.std(0)
    fns: dict[str, Callable[[], object]] = {
        "batch_norm(training=True)": lambda: bnfast.batch_norm(
            x, rm, rv, w, b, training=True, out=out
        ),
        "_core.batchnorm_fwd_train": lambda: _core.batchnorm_fwd_train(
            x, 1, w, b, rm, rv, 0.1, 1e-5, out
        ),
        "batch_norm(training=False)": lambda: bnfast.batch_norm(x, rm, rv, w, b, out=out),
        "_core.batchnorm_fwd_eval": lambda: _core.batchnorm_fwd_eval(x, 1, w, b, rm, rv, 1e-5, out),
        "batch_norm_backward": lambda: bnfast.batch_norm_backward(x, x, m, s, w, out=out),
        "_core.batchnorm_backward": lambda: _core.batchnorm_backward(x, x, 1, m, s, w, True, out),
        "_core.membench (r1w1, 32 floats)": lambda: _core.membench([x], [out], "write"),
        "numpy.add(x, x, out=) (for scale)": lambda: np.add(x, x, out=out),
    }
    ce = getattr(bnfast, "softmax_cross_entropy", None)
    if ce is not None:
        t = np.arange(x.shape[0]) % c
        fns["softmax_cross_entropy"] = lambda: ce(x, t)
        fns["_core.softmax_xent"] = lambda: _core.softmax_xent(
            x, t, 1, None, -100, 1, 0.0, 1.0, out
        )
    p1, g1, s1, s2 = (np.full(32, v, F32) for v in (0.5, 0.1, 0.0, 0.0))
    fns["_core.sgd_update (1 tensor)"] = lambda: _core.sgd_update(
        [p1], [g1], None, 0.1, 0.0, 0.0, 0.0, False, True
    )
    fns["_core.adam_update (1 tensor)"] = lambda: _core.adam_update(
        [p1], [g1], [s1], [s2], None, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False
    )
    optim = getattr(bnfast, "optim", None)
    for name, (_, cls, kwargs) in _OPTIMIZERS.items():
        if optim is not None and hasattr(optim, cls):
            opt = getattr(optim, cls)([np.zeros(32, F32)], grads=[np.ones(32, F32)], **kwargs)
            opt.step()
            fns[f"optim.{cls}({name}).step"] = opt.step
    old = bnfast.get_num_threads()
    bnfast.set_num_threads(1)
    try:
        items = {k: Impl(f) for k, f in fns.items()}
        for it in items.values():
            it.fn()
        rows = []
        per: dict[str, list[float]] = {k: [] for k in items}
        for _ in range(samples):
            for k, it in items.items():
                f = it.fn
                t0 = time.perf_counter()
                for _ in range(number):
                    f()
                per[k].append((time.perf_counter() - t0) / number)
        for k, ts in per.items():
            rows.append({"binding": k, "median_us": statistics.median(ts) * 1e6})
        return rows
    finally:
        bnfast.set_num_threads(old)


# --- the run ------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    torch = _torch()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "bnfast": bnfast.__version__,
        "isas": bnfast.available_isas(),
        "openmp": bool(_core.openmp),
    }


def run(
    kernels: Sequence[str] | None = None,
    shapes: Sequence[str] | None = None,
    impls: Sequence[str] | None = None,
    threads: Sequence[int] | None = None,
    quick: bool = False,
    rounds: int | None = None,
    min_sample: float | None = None,
    with_overhead: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the bench; returns what ``--json`` writes.

    Parameters
    ----------
    kernels, shapes, impls : sequence of str, optional
        Glob patterns (``fnmatch``) selecting kernel names (``bn_train``, ``adam``...), shape
        labels (``8192x1024``, ``nchw-*``, ``1e7/100``...) and implementations
        (``bnfast-avx512``, ``numpy``, ``torch``); default all.
    threads : sequence of int, optional
        Thread counts (default 1 and all cores).
    quick : bool
        Tiny shapes, 3 rounds, short samples: a smoke test, not a measurement.
    rounds : int, optional
        Samples per implementation (default 11, quick 3).
    min_sample : float, optional
        Seconds each sample lasts at least (default 2 ms, quick 0.2 ms).
    with_overhead : bool
        Also time each binding on a tiny input.
    progress : callable, optional
        Called with a line of text after each case.

    Returns
    -------
    dict
        ``machine``, ``settings``, ``rows`` (one per case, thread count and implementation;
        the speed of light is the implementation ``speed-of-light``), ``overhead``.
    """
    rounds = rounds or (3 if quick else 11)
    min_sample = min_sample if min_sample is not None else (2e-4 if quick else 2e-3)
    ncpu = os.cpu_count() or 1
    threads = list(threads) if threads else sorted({1, ncpu})
    selected = [c for c in cases(quick) if _match(c.kernel, kernels) and _match(c.shape, shapes)]
    old_threads, old_isa = bnfast.get_num_threads(), bnfast.active_isa()
    pool = _MemPool()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for case in selected:
            built = {k: v for k, v in case.build().items() if _match(k, impls)}
            no_kernel = not any(k.startswith("bnfast-") for k in built)
            if no_kernel and _match("bnfast-*", impls) and case.kernel not in skipped:
                skipped.append(case.kernel)
            if not built:
                continue
            pool.keep_only({(p.n, p.dtype) for p in case.passes + case.floor})
            sol = _sol_items(case.passes, pool)
            sol.update(_sol_items(case.floor, pool, "floor"))
            for nt in threads:
                _set_threads(nt)
                samples = _interleaved({**built, **sol}, rounds, min_sample)
                med = {k: statistics.median(v) for k, v in samples.items()}
                sol_t, sol_how = _sol_time(case.passes, med)
                # Ratios are medians of per-round ratios: samples of one round ran within
                # moments of each other, so drift between rounds cancels.
                sol_rounds = [
                    _sol_time(case.passes, {k: v[i] for k, v in samples.items()})[0]
                    for i in range(rounds)
                ]
                floor_t = _sol_time(case.floor, med, "floor")[0] if case.floor else None
                floor_rounds = [
                    _sol_time(case.floor, {k: v[i] for k, v in samples.items()}, "floor")[0]
                    for i in range(rounds)
                    if case.floor
                ]
                base = {
                    "kernel": case.kernel,
                    "shape": case.shape,
                    "dtype": "float32",
                    "threads": nt,
                    "bytes": case.nbytes,
                    "bytes_formula": case.formula,
                    "sol_pattern": case.pattern,
                    "floor_pattern": " + ".join(p.label for p in case.floor) or None,
                    "large": case.large,
                }

                def ratio(num: list[float] | None, den: list[float]) -> float | None:
                    if not num:
                        return None
                    return statistics.median(a / b for a, b in zip(num, den))

                entries = [("speed-of-light", sol_t, sol_how, sol_rounds)]
                entries += [(k, med[k], built[k].variant, samples[k]) for k in built]
                for name, t, variant, raw in entries:
                    rows.append(
                        {
                            **base,
                            "impl": name,
                            "variant": variant,
                            "median_s": t,
                            "samples_s": raw,
                            "gbps": case.nbytes / t / 1e9,
                            "sol_s": sol_t,
                            "sol_share": ratio(sol_rounds, raw),
                            "floor_s": floor_t,
                            "floor_share": ratio(floor_rounds, raw),
                            "vs_numpy": ratio(samples.get("numpy"), raw),
                            "vs_torch": ratio(samples.get("torch"), raw),
                        }
                    )
                if progress:
                    progress(_case_line(rows, case, nt))
            del built
    finally:
        bnfast.set_num_threads(old_threads)
        _core.set_isa(old_isa)
        torch = _torch()
        if torch is not None:
            torch.set_num_threads(old_threads)
    return {
        "machine": _machine(),
        "settings": {
            "quick": quick,
            "rounds": rounds,
            "min_sample_s": min_sample,
            "threads": threads,
            "cache_bytes_rule": CACHE_BYTES,
        },
        "rows": rows,
        "skipped": skipped,
        "overhead": overhead(samples=3, number=200)
        if with_overhead and quick
        else (overhead() if with_overhead else []),
    }


def dropin(
    threads: Sequence[int] | None = None,
    rounds: int = 7,
    min_sample: float = 2e-3,
    kernels: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The ``bnfast.torch`` drop-ins beside PyTorch's own (``bnfast.torch.bench`` cases).

    Each row: kernel, shape, threads, median seconds of ``torch``, ``torch-fused`` (where
    PyTorch has a fused CPU optimizer) and ``bnfast.torch``, and the speed-up of the drop-in
    over PyTorch's fastest variant (median of per-round ratios). Empty without PyTorch.
    """
    if _torch() is None:
        return []
    from bnfast.torch import bench as tb

    ncpu = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    old = bnfast.get_num_threads()
    try:
        for kernel, shape in tb.CASES:
            if not _match(kernel, kernels):
                continue
            items = {impl: Impl(tb.make(kernel, shape, impl)) for impl in tb.impls(kernel)}
            for nt in list(threads) if threads else sorted({1, ncpu}):
                _set_threads(nt)
                samples = _interleaved(items, rounds, min_sample)
                theirs = [k for k in samples if k != "bnfast.torch"]
                best = min(theirs, key=lambda k: statistics.median(samples[k]))
                rows.append(
                    {
                        "kernel": kernel,
                        "shape": "x".join(map(str, shape)),
                        "threads": nt,
                        **{k: statistics.median(v) for k, v in samples.items()},
                        "speedup": statistics.median(
                            a / b for a, b in zip(samples[best], samples["bnfast.torch"])
                        ),
                        "vs": best,
                    }
                )
                if progress:
                    progress(
                        f"drop-in {kernel} {rows[-1]['shape']} t={nt}: x{rows[-1]['speedup']:.2f}"
                    )
    finally:
        bnfast.set_num_threads(old)
    return rows


def format_dropin(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`dropin` rows."""
    lines = [
        "| step | shape | thr | PyTorch | PyTorch fused | bnfast.torch | speed-up |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        fused = r.get("torch-fused")
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {r['threads']} | {_fmt_time(r['torch'])} | "
            f"{'' if fused is None else _fmt_time(fused)} | {_fmt_time(r['bnfast.torch'])} | "
            f"{r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


# --- output --------------------------------------------------------------------------------------


def _fmt_time(t: float) -> str:
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} µs"


def _fmt_ratio(r: float | None) -> str:
    return "" if r is None else f"{r:.2f}x"


def _case_line(rows: list[dict[str, Any]], case: Case, nt: int) -> str:
    mine = [r for r in rows if r["kernel"] == case.kernel and r["shape"] == case.shape]
    mine = [r for r in mine if r["threads"] == nt]
    parts = [f"{r['impl']} {_fmt_time(r['median_s'])}" for r in mine]
    return f"{case.kernel} {case.shape} t={nt}: " + ", ".join(parts)


def _groups(result: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, dict[str, Any]]]:
    """Rows by (kernel, shape, threads), then by implementation."""
    groups: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for r in result["rows"]:
        groups.setdefault((r["kernel"], r["shape"], r["threads"]), {})[r["impl"]] = r
    return groups


def _best(g: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    mine = [r for k, r in g.items() if k.startswith("bnfast-")]
    return min(mine, key=lambda r: r["median_s"]) if mine else None


def _compact_lines(result: dict[str, Any]) -> list[str]:
    """One line per case and thread count: the fastest bnfast ISA beside SOL, NumPy, PyTorch."""
    head = ("| kernel | shape | thr | SOL | bnfast (best ISA) | GB/s | % SOL | NumPy | PyTorch "
            "| vs NumPy | vs PyTorch |")  # fmt: skip
    lines = [head, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for (kernel, shape, nt), g in _groups(result).items():
        sol = g["speed-of-light"]
        best = _best(g)
        np_r, t_r = g.get("numpy"), g.get("torch")

        def t(r: dict[str, Any] | None) -> str:
            return "" if r is None else _fmt_time(r["median_s"])

        cells = [kernel, shape, str(nt), t(sol)]
        if best is None:
            cells += ["", "", "", t(np_r), t(t_r), "", ""]
        else:
            isa = best["impl"].removeprefix("bnfast-")
            cells += [f"{t(best)} ({isa})", f"{best['gbps']:.1f}",
                      f"{100 * best['sol_share']:.0f}", t(np_r), t(t_r),
                      _fmt_ratio(best["vs_numpy"]), _fmt_ratio(best["vs_torch"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _floor_lines(result: dict[str, Any]) -> list[str]:
    """The cases with a compute floor: SOL, floor and the fastest bnfast ISA."""
    lines = []
    for (kernel, shape, nt), g in _groups(result).items():
        best = _best(g)
        if best is None or best.get("floor_s") is None:
            continue
        sol = g["speed-of-light"]["median_s"]
        lines.append(f"| {kernel} | {shape} | {nt} | {_fmt_time(sol)} | "
                     f"{_fmt_time(best['floor_s'])} ({best['floor_pattern']}) | "
                     f"{_fmt_time(best['median_s'])} | {100 * best['sol_share']:.0f} | "
                     f"{100 * best['floor_share']:.0f} |")  # fmt: skip
    if not lines:
        return []
    return [
        "",
        "Compute floor (bnfast's exp of every logit and nothing else; % = floor / bnfast):",
        "",
        "| kernel | shape | thr | SOL | compute floor | bnfast | % SOL | % floor |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
        *lines,
    ]


def format_table(result: dict[str, Any], all_rows: bool = False) -> str:
    """A Markdown table (one line per case and thread count, or every row with ``all_rows``),
    then the byte formulas and the per-call overheads."""
    head = "| kernel | shape | thr | impl | median | GB/s | % SOL | vs NumPy | vs PyTorch |"
    lines = [head, "|---|---|--:|---|--:|--:|--:|--:|--:|"]
    if not all_rows:
        lines = _compact_lines(result)
    for r in result["rows"] if all_rows else []:
        impl = r["impl"] + (f" ({r['variant']})" if r["impl"] == "speed-of-light" else "")
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {r['threads']} | {impl} | "
            f"{_fmt_time(r['median_s'])} | {r['gbps']:.1f} | {100 * r['sol_share']:.0f} | "
            f"{_fmt_ratio(r['vs_numpy'])} | {_fmt_ratio(r['vs_torch'])} |"
        )
    lines += _floor_lines(result)
    formulas: dict[str, str] = {}
    for r in result["rows"]:
        formulas.setdefault(f"{r['kernel']} {r['shape']}", f"{r['bytes_formula']} "
                            f"= {r['bytes'] / 1e6:.2f} MB; SOL {r['sol_pattern']}")  # fmt: skip
    lines += ["", "Bytes that must move (n elements, float32) and speed-of-light pattern:"]
    lines += [f"- {k}: {v}" for k, v in formulas.items()]
    if result.get("skipped"):
        lines += ["", "No bnfast kernel in this build for: " + ", ".join(result["skipped"])]
    if result.get("overhead"):
        lines += ["", "| per-call overhead (tiny input, 1 thread) | median |", "|---|--:|"]
        lines += [f"| {o['binding']} | {o['median_us']:.2f} µs |" for o in result["overhead"]]
    m = result["machine"]
    lines += [
        "",
        f"{m['date']} on {m['cpu']} ({m['cpus']} CPUs), bnfast {m['bnfast']}, NumPy {m['numpy']}"
        + (f", PyTorch {m['torch']}" if m["torch"] else ", no PyTorch")
        + ". vs X = median over rounds of X's time / this row's time (above 1: faster than X);"
        " % SOL = the same with the speed of light.",
    ]
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    """Geometric means over the large shapes of the best bnfast ISA, per thread count."""
    out = []
    for nt in result["settings"]["threads"]:
        best: dict[tuple[str, str], dict[str, Any]] = {}
        for r in result["rows"]:
            if r["threads"] != nt or not r["impl"].startswith("bnfast-"):
                continue
            key = (r["kernel"], r["shape"])
            if key not in best or r["median_s"] < best[key]["median_s"]:
                best[key] = r
        for what, field in (("% SOL", "sol_share"), ("vs NumPy", "vs_numpy"),
                            ("vs PyTorch", "vs_torch")):  # fmt: skip
            for scope, rows in (("large", [r for r in best.values() if r["large"]]),
                                ("all", list(best.values()))):  # fmt: skip
                vals = [r[field] for r in rows if r[field]]
                if vals:
                    g = math.exp(sum(math.log(v) for v in vals) / len(vals))
                    shown = f"{100 * g:.0f}%" if field == "sol_share" else f"{g:.2f}x"
                    out.append(f"threads={nt} {scope} shapes, geomean {what}: {shown}")
    return "\n".join(out)


# --- command line --------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _threads_arg(text: str) -> list[int]:
    try:
        vals = [int(s) for s in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return vals


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--kernels", type=_csv, default=None, metavar="GLOBS",
                   help="comma-separated kernel globs: bn_train,bn_eval,bn_backward,"
                   "softmax_xent,sgd,sgd_momentum,rmsprop,adam,adamw (default all)")  # fmt: skip
    p.add_argument("--shapes", type=_csv, default=None, metavar="GLOBS",
                   help="shape label globs, e.g. 8192x1024,nchw-*,1e7* (default all)")  # fmt: skip
    p.add_argument("--impls", type=_csv, default=None, metavar="GLOBS",
                   help="implementation globs: bnfast-avx512,bnfast-*,numpy,torch")  # fmt: skip
    p.add_argument("--threads", type=_threads_arg, default=None, metavar="N,M",
                   help="thread counts (default 1 and all cores)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=None,
                   help="samples per implementation, interleaved (default 11; quick 3)")  # fmt: skip
    p.add_argument("--min-sample-ms", type=float, default=None,
                   help="each sample lasts at least this long (default 2; quick 0.2)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny shapes, few rounds: a smoke run")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--all-rows", action="store_true",
                   help="print every implementation (each ISA), not only the fastest bnfast")  # fmt: skip
    p.add_argument("--no-overhead", action="store_true", help="skip the per-call overheads")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--torch-dropin", action="store_true",
                   help="also time the bnfast.torch drop-ins beside PyTorch's own modules, "
                        "cross_entropy and optimizers (needs PyTorch)")  # fmt: skip
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``bnfast`` command's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="time every kernel vs its speed of light, NumPy and PyTorch",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _configure(p)
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    """Run ``bnfast bench`` with parsed arguments; prints the table, writes ``--json``."""

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(
        kernels=args.kernels,
        shapes=args.shapes,
        impls=args.impls,
        threads=args.threads,
        quick=args.quick,
        rounds=args.rounds,
        min_sample=None if args.min_sample_ms is None else args.min_sample_ms / 1e3,
        with_overhead=not args.no_overhead,
        progress=None if args.quiet else progress,
    )
    print(format_table(result, all_rows=args.all_rows))
    s = summary(result)
    if s:
        print("\n" + s)
    if args.torch_dropin:
        if _torch() is None:
            print("\n--torch-dropin: PyTorch is not installed", file=sys.stderr)
        else:
            result["dropin"] = dropin(
                threads=args.threads,
                kernels=args.kernels,
                progress=None if args.quiet else progress,
            )
            print("\nPyTorch drop-in (bnfast.torch) vs PyTorch, training-loop calls:\n")
            print(format_dropin(result["dropin"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0
