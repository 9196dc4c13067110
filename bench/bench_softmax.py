"""Fused softmax cross-entropy loss + gradient (the ``softmax_cross_entropy`` cases of
``bnfast bench``): each ISA, the NumPy reference and PyTorch; plain softmax at the same shapes.

Run: ``pytest bench/bench_softmax.py --benchmark-only --benchmark-group-by=group``.
One group per shape; PyTorch (``F.cross_entropy`` forward + backward, same thread count) is
included when it is installed. GB/s counts the logits read and the gradient written.
"""

from __future__ import annotations

import numpy as np
import pytest

import bnfast
from bnfast import reference as R
from bnfast.bench import cases

CASES = [c for c in cases() if c.kernel == "softmax_cross_entropy"]
SHAPES = [c.dims for c in CASES]


@pytest.mark.parametrize("case", CASES)
def test_softmax_cross_entropy(case, impl, time_case):
    time_case(case, impl)


@pytest.mark.parametrize("peer", ["bnfast", "numpy"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax(benchmark, shape, peer, record_bandwidth):
    benchmark.group = f"softmax {shape[0]}x{shape[1]} f32"
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if peer == "numpy":
        benchmark(R.softmax, x)
    else:
        benchmark(bnfast.softmax, x, out=np.empty_like(x))
    record_bandwidth(benchmark, 2 * x.nbytes)
