"""Shared fixtures for the benchmark suites (run: pytest bench/ --benchmark-group-by=group).

The suites time the cases of ``bnfast bench`` (:func:`bnfast.bench.cases`): the same case ids,
shapes, builders and byte counts. A test takes ``case`` (parametrized by its module), ``impl``
(each bnfast ISA, NumPy, PyTorch if installed: see :func:`pytest_generate_tests`) and
``time_case``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import pytest

import bnfast
from bnfast.bench import Case, Impl
from bnfast.bench.cases import torch_peers

HAVE_TORCH = importlib.util.find_spec("torch") is not None
IMPLS = [f"bnfast-{isa}" for isa in bnfast.available_isas()] + ["numpy"]
if HAVE_TORCH:
    IMPLS.append("torch")
THREADS = int(os.environ.get("BNFAST_BENCH_THREADS", "1"))

_built: dict[tuple[str, str], dict[str, Impl]] = {}  # the last case built, kept for its peers


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """A case's test id is ``<case id>-<shape>``, as in ``bnfast bench``'s table."""
    return f"{val.kernel}-{val.shape}" if isinstance(val, Case) else None


@pytest.hookimpl(trylast=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test of ``case`` runs each implementation (bnfast ISAs, NumPy, PyTorch if installed),
    parametrized innermost so the implementations of one case run together on one build."""
    if "case" in metafunc.fixturenames and "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", IMPLS)


@pytest.fixture
def record_bandwidth():
    """``record_bandwidth(benchmark, nbytes)``: bytes moved and GB/s (median) in extra_info."""

    def record(benchmark, nbytes: int) -> None:
        benchmark.extra_info["bytes"] = nbytes
        median = benchmark.stats.stats.median if benchmark.stats else None
        if median:
            benchmark.extra_info["GB/s"] = round(nbytes / median / 1e9, 2)

    return record


@pytest.fixture
def time_case(benchmark, record_bandwidth):
    """``time_case(case, impl)``: one implementation of a case, its ISA active, PyTorch at
    bnfast's thread count; the group is the case, GB/s counts the case's bytes."""

    def run(case: Case, impl: str) -> None:
        key = (case.kernel, case.shape)
        if key not in _built:
            _built.clear()
            _built[key] = case.build()
        it = _built[key][impl]
        benchmark.group = f"{case.kernel} {case.shape} f32"
        if it.variant:
            benchmark.extra_info["variant"] = it.variant
        tb = torch_peers()
        if tb is not None:
            tb.set_num_threads(bnfast.get_num_threads())
        with bnfast.use_isa(it.isa) if it.isa else contextlib.nullcontext():
            benchmark(it.fn)
        record_bandwidth(benchmark, case.nbytes)

    return run


@pytest.fixture
def bench_threads():
    """bnfast and PyTorch at ``BNFAST_BENCH_THREADS`` threads (default 1) during the test."""
    tb = torch_peers()
    n_bnfast, n_torch = bnfast.get_num_threads(), THREADS
    if tb is not None:
        import torch

        n_torch = torch.get_num_threads()
        tb.set_num_threads(THREADS)
    bnfast.set_num_threads(THREADS)
    yield THREADS
    bnfast.set_num_threads(n_bnfast)
    if tb is not None:
        tb.set_num_threads(n_torch)
