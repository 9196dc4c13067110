"""Optimizer steps: the optimizer cases of ``bnfast bench`` (``sgd``, ``sgd_momentum``,
``rmsprop``, ``adam``, ``adamw`` over 1e5 and 1e7 float32 parameters, 1e7 also split into 100
tensors), each ISA beside the NumPy reference and PyTorch; the course's ``Momentum`` and
``clip_grad_norm`` at the same sizes.

Run: ``pytest bench/bench_optim.py --benchmark-only`` (add ``-k adam`` etc. to narrow).
Every kernel runs at ``BNFAST_BENCH_THREADS`` threads (default 1); PyTorch, if installed, runs
at the same count with its fastest CPU variant (``fused=True`` where it has a fused CPU kernel,
else ``foreach=True``). GB/s counts the bytes a step must move: each array read once and each
updated array written once.
"""

from __future__ import annotations

import numpy as np
import pytest

import bnfast
from bnfast import reference as R
from bnfast.bench import cases
from bnfast.bench.cases import OPTIMIZER_CASES, torch_peers
from bnfast.optim import Momentum, clip_grad_norm

pytestmark = pytest.mark.usefixtures("bench_threads")

CASES = [c for c in cases() if c.kernel in OPTIMIZER_CASES]
SIZES = [c.dims for c in CASES if c.kernel == "sgd"]  # (total, tensors)
PEERS = [*bnfast.available_isas(), "numpy", *(["torch"] if torch_peers() else [])]


def _id(size: tuple[int, int]) -> str:
    return f"n={size[0]:.0e}-x{size[1]}"


def _arrays(total: int, split: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(total // split, dtype=np.float32) for _ in range(split)]


@pytest.mark.parametrize("case", CASES)
def test_optimizer_step(case, impl, time_case):
    time_case(case, impl)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("size", SIZES, ids=_id)
def test_momentum_course(benchmark, size, peer, record_bandwidth):
    total, split = size
    benchmark.group = f"momentum_course {_id(size)}"
    params, grads = _arrays(total, split, 0), _arrays(total, split, 1)
    for g in grads:
        g *= 1e-3
    if peer == "numpy":
        states = [np.abs(g) for g in grads]
        benchmark(
            lambda: [
                R.momentum_course(p, g, s, 0.01, 0.9) for p, g, s in zip(params, grads, states)
            ]
        )
    elif peer == "torch":  # same traffic: SGD with dampening = beta
        kwargs = {"lr": 0.01, "momentum": 0.9, "dampening": 0.9}
        step, variant = torch_peers().optimizer_peer("SGD", params, grads, kwargs)
        benchmark.extra_info["variant"] = variant
        benchmark(step)
    else:
        with bnfast.use_isa(peer):
            opt = Momentum(params, 0.01, beta=0.9, grads=grads)
            opt.step()  # allocate the state outside the timing
            benchmark(opt.step)
    record_bandwidth(benchmark, 5 * 4 * total)


@pytest.mark.parametrize("peer", [*bnfast.available_isas(), "numpy"])
@pytest.mark.parametrize("size", SIZES, ids=_id)
def test_clip_grad_norm(benchmark, size, peer, record_bandwidth):
    total, split = size
    benchmark.group = f"clip_grad_norm {_id(size)}"
    grads = _arrays(total, split, 1)
    if peer == "numpy":
        benchmark(R.clip_grad_norm, grads, 1.0)
    else:
        with bnfast.use_isa(peer):
            benchmark(clip_grad_norm, grads, 1.0)
    # One read for the norm, one read and one write to scale.
    record_bandwidth(benchmark, 3 * 4 * total)
