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


# ---- bnfast.torch tests: each module opts in with
# pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_fallback_warnings")


@pytest.fixture(scope="module")
def one_torch_thread():
    """PyTorch on one thread for a module's tests (comparisons are bitwise per thread count)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fresh_fallback_warnings():
    """Each test sees bnfast.torch's one-time fallback warnings afresh (else a check that a
    call was served could pass only because the warning was given earlier)."""
    from bnfast.torch import _fallback

    _fallback._warned.clear()
    yield
    _fallback._warned.clear()


@pytest.fixture
def gen():
    import torch

    return torch.Generator().manual_seed(1234)
