"""The bnfast.torch drop-ins beside PyTorch's own modules, functions and optimizers.

Run: ``pytest bench/bench_torch.py --benchmark-only --benchmark-group-by=group``. One group per
kernel and shape (the cases of :mod:`bnfast.torch.bench`, shared with ``bnfast bench``); the
peers are ``torch`` (what a PyTorch user writes), ``torch-fused`` (PyTorch's ``fused=True``
optimizers) and ``bnfast.torch``. Both libraries use ``BNFAST_BENCH_THREADS`` threads
(default 1). GB/s counts the bytes each kernel must move at least (float32).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from bnfast.torch import bench as B  # noqa: E402

pytestmark = pytest.mark.usefixtures("bench_threads")


def _id(kernel: str, shape: tuple) -> str:
    return f"{kernel}-{'x'.join(map(str, shape))}"


PARAMS = [
    pytest.param(kernel, shape, impl, id=f"{_id(kernel, shape)}-{impl}")
    for kernel, shape in B.CASES
    for impl in B.impls(kernel)
]


@pytest.mark.parametrize(("kernel", "shape", "impl"), PARAMS)
def test_torch_dropin(benchmark, kernel, shape, impl, record_bandwidth):
    benchmark.group = f"torch {_id(kernel, shape)} f32"
    benchmark.extra_info["torch"] = torch.__version__
    benchmark(B.make(kernel, shape, impl))
    record_bandwidth(benchmark, B.nbytes(kernel, shape))
