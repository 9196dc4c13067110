from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import bnfast
from bnfast import _core

# The ISA fixture switches the kernel table for a whole test, hypothesis examples included.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(params=bnfast.available_isas())
def isa(request: pytest.FixtureRequest):
    """Runs the test once per ISA this machine supports, with that ISA active."""
    with bnfast.use_isa(request.param):
        yield request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request: pytest.FixtureRequest):
    return np.dtype(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def threads():
    """Restores the thread count after a test changes it; runs even small inputs threaded."""
    n = bnfast.get_num_threads()
    limit = _core.get_parallel_min_bytes()
    _core.set_parallel_min_bytes(0)
    yield
    _core.set_parallel_min_bytes(limit)
    bnfast.set_num_threads(n)
