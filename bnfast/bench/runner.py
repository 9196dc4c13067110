"""The run: every selected case at each thread count, beside its speed of light; the drop-ins."""

from __future__ import annotations

import datetime
import fnmatch
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import bnfast
from bnfast import _core
from bnfast.bench.cases import CACHE_BYTES, Impl, cases, torch_peers
from bnfast.bench.report import case_line
from bnfast.bench.timing import MemPool, interleaved, overhead, sol_items, sol_time

__all__ = ["dropin", "run"]


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
    tb = torch_peers()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None if tb is None else tb.version(),
        "bnfast": bnfast.__version__,
        "isas": bnfast.available_isas(),
        "openmp": bool(_core.openmp),
    }


def _match(value: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, pat) for pat in patterns)


def _set_threads(n: int) -> None:
    bnfast.set_num_threads(n)
    tb = torch_peers()
    if tb is not None:
        tb.set_num_threads(n)


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
        Glob patterns (``fnmatch``) selecting case ids (``batch_norm_train``, ``adam``...),
        shape labels (``8192x1024``, ``nchw-*``, ``1e7/100``...) and implementations
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
    pool = MemPool()
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
            sol = sol_items(case.passes, pool)
            sol.update(sol_items(case.floor, pool, "floor"))
            for nt in threads:
                _set_threads(nt)
                samples = interleaved({**built, **sol}, rounds, min_sample)
                med = {k: statistics.median(v) for k, v in samples.items()}
                sol_t, sol_how = sol_time(case.passes, med)
                # Ratios are medians of per-round ratios: samples of one round ran within
                # moments of each other, so drift between rounds cancels.
                sol_rounds = [
                    sol_time(case.passes, {k: v[i] for k, v in samples.items()})[0]
                    for i in range(rounds)
                ]
                floor_t = sol_time(case.floor, med, "floor")[0] if case.floor else None
                floor_rounds = [
                    sol_time(case.floor, {k: v[i] for k, v in samples.items()}, "floor")[0]
                    for i in range(rounds)
                    if case.floor
                ]
                base = {
                    "kernel": case.kernel,
                    "shape": case.shape,
                    "dtype": case.dtype,
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
                    progress(case_line(rows, case, nt))
            del built
    finally:
        bnfast.set_num_threads(old_threads)
        _core.set_isa(old_isa)
        tb = torch_peers()
        if tb is not None:
            tb.set_num_threads(old_threads)
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
    compiled: bool = False,
) -> list[dict[str, Any]]:
    """The ``bnfast.torch`` drop-ins beside PyTorch's own (``bnfast.torch.bench`` cases).

    Each row: kernel, shape, threads, median seconds of ``torch``, ``torch-fused`` (where
    PyTorch has a fused CPU optimizer) and ``bnfast.torch``, and the speed-up of the drop-in
    over PyTorch's fastest eager variant (median of per-round ratios). With ``compiled``, the
    ``COMPILED_CASES`` rows also time ``torch-compiled`` and ``bnfast.torch-compiled``
    (``torch.compile`` of PyTorch's modules and of the converted model; each compiles first,
    ~10-30 s) and give ``compiled_speedup``, the one over the other. Empty without PyTorch.
    """
    tb = torch_peers()
    if tb is None:
        return []
    ncpu = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    old = bnfast.get_num_threads()
    both = {k: ("torch", "bnfast.torch") for k in ("convnet_step", "convnet_step_autocast")}
    cases = list(tb.CASES) + list(tb.AUTOCAST_CASES)
    if compiled:
        cases += [c for c in tb.COMPILED_CASES if c not in cases]
    try:
        for kernel, shape in cases:
            if not _match(kernel, kernels):
                continue
            names = list(both.get(kernel) or tb.impls(kernel))
            if compiled and (kernel, shape) in tb.COMPILED_CASES:
                names += tb.COMPILED_IMPLS
            items = {impl: Impl(tb.make(kernel, shape, impl)) for impl in names}
            for nt in list(threads) if threads else sorted({1, ncpu}):
                _set_threads(nt)
                samples = interleaved(items, rounds, min_sample)
                theirs = [k for k in samples if k in ("torch", "torch-fused")]
                best = min(theirs, key=lambda k: statistics.median(samples[k]))
                extra = {}
                if kernel == "convnet_step_autocast":
                    extra["kernel_share"] = tb.kernel_share(items["bnfast.torch"].fn)
                if "torch-compiled" in samples:
                    extra["compiled_speedup"] = statistics.median(
                        a / b
                        for a, b in zip(samples["torch-compiled"], samples["bnfast.torch-compiled"])
                    )
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
                        **extra,
                    }
                )
                if progress:
                    progress(
                        f"drop-in {kernel} {rows[-1]['shape']} t={nt}: x{rows[-1]['speedup']:.2f}"
                    )
    finally:
        bnfast.set_num_threads(old)
    return rows
