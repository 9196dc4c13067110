"""Timing: interleaved rounds, the membench speed of light and compute floors, per-call overhead.

Bandwidth on a shared machine drifts, so every round times one sample of each implementation
(and of each membench pass) in a rotating order; a sample is enough back-to-back calls to last
``min_sample`` seconds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import bnfast
from bnfast import _core
from bnfast._arrays import aligned_empty
from bnfast.bench.cases import F32, OPTIMIZER_CASES, Impl, Pass

__all__ = ["MemPool", "interleaved", "overhead", "sol_items", "sol_time"]


def _call_time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
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


class MemPool:
    """membench arrays, reused across cases of the same size (64-byte aligned, filled)."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[int, str], list[np.ndarray]] = {}

    def get(self, n: int, dtype: str, count: int) -> list[np.ndarray]:
        key = (n, dtype)
        have = self.arrays.setdefault(key, [])
        while len(have) < count:
            # bfloat16 arrays move the bytes of float32 ones half their length (membench runs
            # float32 and float64: moving the bytes is what it measures).
            a = aligned_empty(((n + 1) // 2,), np.float32) if dtype == "bfloat16" else None
            if a is None:
                a = aligned_empty((n,), np.dtype(dtype))
            a.fill(0.5)  # touch every page now, and no denormals
            have.append(a)
        return have[:count]

    def keep_only(self, keys: set[tuple[int, str]]) -> None:
        for key in list(self.arrays):
            if key not in keys:
                del self.arrays[key]


def sol_items(passes: Sequence[Pass], pool: MemPool, tag: str = "sol") -> dict[str, Impl]:
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


def sol_time(passes: Sequence[Pass], med: dict[str, float], tag: str = "sol") -> tuple[float, str]:
    """The passes' total time (each fresh-output pass at its faster store) and how it was had."""
    total, how = 0.0, []
    for p in passes:
        modes = ["write", "write_nt"] if p.mode == "write" else [p.mode]
        best = min(modes, key=lambda m: med[f"{tag}:{p.label}:{m}"])
        total += med[f"{tag}:{p.label}:{best}"]
        how.append(f"{p.label}{' nt' if best == 'write_nt' else ''}")
    return total, " + ".join(how)


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
    t = np.arange(x.shape[0]) % c
    p1, g1, s1, s2 = (np.full(32, v, F32) for v in (0.5, 0.1, 0.0, 0.0))
    fns: dict[str, Callable[[], object]] = {
        "batch_norm(training=True)": lambda: bnfast.batch_norm(
            x, rm, rv, w, b, training=True, out=out
        ),
        "_core.batch_norm_train": lambda: _core.batch_norm_train(
            x, 1, w, b, rm, rv, 0.1, 1e-5, out
        ),
        "batch_norm(training=False)": lambda: bnfast.batch_norm(x, rm, rv, w, b, out=out),
        "_core.batch_norm_eval": lambda: _core.batch_norm_eval(x, 1, w, b, rm, rv, 1e-5, out),
        "batch_norm_backward": lambda: bnfast.batch_norm_backward(x, x, m, s, w, out=out),
        "_core.batch_norm_backward": lambda: _core.batch_norm_backward(x, x, 1, m, s, w, True, out),
        "_core.membench (r1w1, 32 floats)": lambda: _core.membench([x], [out], "write"),
        "numpy.add(x, x, out=) (for scale)": lambda: np.add(x, x, out=out),
        "softmax_cross_entropy": lambda: bnfast.softmax_cross_entropy(x, t),
        "_core.softmax_cross_entropy": lambda: _core.softmax_cross_entropy(
            x, t, 1, None, -100, "mean", 0.0, 1.0, out
        ),
        "_core.sgd_update (1 tensor)": lambda: _core.sgd_update(
            [p1], [g1], None, 0.1, 0.0, 0.0, 0.0, False, True
        ),
        "_core.adam_update (1 tensor)": lambda: _core.adam_update(
            [p1], [g1], [s1], [s2], None, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False
        ),
    }
    for name, (_, key, kwargs) in OPTIMIZER_CASES.items():
        cls = bnfast.optim.OPTIMIZERS[key]
        opt = cls([np.zeros(32, F32)], grads=[np.ones(32, F32)], **kwargs)
        opt.step()
        fns[f"optim.{cls.__name__}({name}).step"] = opt.step
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
