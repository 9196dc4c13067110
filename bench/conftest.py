"""Shared fixtures for the benchmark suites (run: pytest bench/ --benchmark-group-by=group)."""

from __future__ import annotations

import importlib.util

import pytest

import bnfast

HAVE_TORCH = importlib.util.find_spec("torch") is not None
IMPLS = [f"bnfast-{isa}" for isa in bnfast.available_isas()] + ["numpy"]
if HAVE_TORCH:
    IMPLS.append("torch")


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest):
    """One implementation per run: each bnfast ISA (made active), NumPy, PyTorch if installed."""
    name = request.param
    if name.startswith("bnfast-"):
        with bnfast.use_isa(name.removeprefix("bnfast-")):
            yield name
    else:
        yield name


@pytest.fixture
def record_bandwidth():
    """``record_bandwidth(benchmark, nbytes)``: bytes moved and GB/s (median) in extra_info."""

    def record(benchmark, nbytes: int) -> None:
        benchmark.extra_info["bytes"] = nbytes
        median = benchmark.stats.stats.median if benchmark.stats else None
        if median:
            benchmark.extra_info["GB/s"] = round(nbytes / median / 1e9, 2)

    return record
