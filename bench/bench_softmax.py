"""Fused softmax cross-entropy loss + gradient: each ISA, the NumPy reference and PyTorch.

Run: ``pytest bench/bench_softmax.py --benchmark-only --benchmark-group-by=group``.
One group per shape; PyTorch (``F.cross_entropy`` forward + backward, same thread count) is
included when it is installed. GB/s counts the logits read and the gradient written.
"""

from __future__ import annotations

import numpy as np
import pytest

import bnfast
from bnfast import reference as R

SHAPES = [(256, 10), (4096, 1000), (65536, 10)]

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # optional peer
    torch = None


def _data(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, shape[1], shape[0])
    return x, t


def _gbps(benchmark, x):
    benchmark.extra_info["GB/s"] = 2 * x.nbytes / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("isa", bnfast.available_isas())
def test_xent_bnfast(benchmark, shape, isa):
    benchmark.group = f"softmax_xent {shape[0]}x{shape[1]} f32"
    x, t = _data(shape)
    out = np.empty_like(x)
    with bnfast.use_isa(isa):
        benchmark(bnfast.softmax_cross_entropy, x, t, out=out)
    _gbps(benchmark, x)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_xent_numpy_reference(benchmark, shape):
    benchmark.group = f"softmax_xent {shape[0]}x{shape[1]} f32"
    x, t = _data(shape)
    benchmark(R.softmax_cross_entropy, x, t)
    _gbps(benchmark, x)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_xent_torch(benchmark, shape):
    benchmark.group = f"softmax_xent {shape[0]}x{shape[1]} f32"
    x, t = _data(shape)
    torch.set_num_threads(bnfast.get_num_threads())
    xt = torch.from_numpy(x).requires_grad_(True)
    tt = torch.from_numpy(t)

    def step():
        xt.grad = None
        TF.cross_entropy(xt, tt).backward()
        return xt.grad

    benchmark(step)
    _gbps(benchmark, x)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_bnfast(benchmark, shape):
    benchmark.group = f"softmax {shape[0]}x{shape[1]} f32"
    x, _ = _data(shape)
    out = np.empty_like(x)
    benchmark(bnfast.softmax, x, out=out)
    _gbps(benchmark, x)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_numpy_reference(benchmark, shape):
    benchmark.group = f"softmax {shape[0]}x{shape[1]} f32"
    x, _ = _data(shape)
    benchmark(R.softmax, x)
    _gbps(benchmark, x)
