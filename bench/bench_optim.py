"""Optimizer steps over 1e5 and 1e7 float32 parameters: each ISA, the NumPy reference, PyTorch.

Run: ``pytest bench/bench_optim.py --benchmark-only`` (add ``-k adam`` etc. to narrow).
Groups are ``<optimizer> n=<total> x<tensors>``: the same total as one tensor and split into
100 tensors. Every kernel runs at ``BNFAST_BENCH_THREADS`` threads (default 1); PyTorch, if
installed, runs at the same count with its fastest CPU variant (``fused=True`` where it has a
fused CPU kernel, else ``foreach=True``). ``extra_info["GB/s"]`` counts the bytes a step must
move: each array read once and each updated array written once.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import bnfast
from bnfast import reference as R
from bnfast.optim import SGD, Adam, AdamW, Momentum, RMSprop, clip_grad_norm

try:
    import torch
except ImportError:  # optional peer
    torch = None

THREADS = int(os.environ.get("BNFAST_BENCH_THREADS", "1"))
TOTALS = [100_000, 10_000_000]
SPLITS = [1, 100]

# name: (bnfast constructor, float32 arrays moved per element, PyTorch constructor)
OPTIMIZERS = {
    "sgd_momentum": (lambda p, g: SGD(p, 0.01, momentum=0.9, grads=g), 5),
    "momentum_course": (lambda p, g: Momentum(p, 0.01, beta=0.9, grads=g), 5),
    "rmsprop": (lambda p, g: RMSprop(p, 0.01, grads=g), 5),
    "adam": (lambda p, g: Adam(p, 1e-3, grads=g), 7),
    "adamw": (lambda p, g: AdamW(p, 1e-3, grads=g), 7),
}


def _numpy_step(name: str):
    """One step of the float32 NumPy reference over every tensor (results discarded)."""

    def run(params, grads, states):
        for p, g, s in zip(params, grads, states):
            if name == "sgd_momentum":
                R.sgd(p, g, s, 0.01, momentum=0.9)
            elif name == "momentum_course":
                R.momentum_course(p, g, s, 0.01, 0.9)
            elif name == "rmsprop":
                R.rmsprop(p, g, s, None, None, 0.01)
            else:
                R.adam(p, g, s, s, None, 10, 1e-3, decoupled=name == "adamw", weight_decay=1e-2)

    return run


def _torch_optimizer(name: str, params):
    for kw in ({"fused": True}, {"foreach": True}):
        try:
            if name == "sgd_momentum":
                return torch.optim.SGD(params, lr=0.01, momentum=0.9, **kw), kw
            if name == "momentum_course":  # same traffic: SGD with dampening = beta
                return torch.optim.SGD(params, lr=0.01, momentum=0.9, dampening=0.9, **kw), kw
            if name == "rmsprop":
                return torch.optim.RMSprop(params, lr=0.01, **kw), kw
            if name == "adam":
                return torch.optim.Adam(params, lr=1e-3, **kw), kw
            return torch.optim.AdamW(params, lr=1e-3, **kw), kw
        except (RuntimeError, TypeError, ValueError):
            continue
    raise RuntimeError(f"no fused or foreach PyTorch variant for {name}")


def _arrays(total: int, split: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(total // split, dtype=np.float32) for _ in range(split)]


PEERS = [*bnfast.available_isas(), "numpy", *(["torch"] if torch is not None else [])]


@pytest.fixture(autouse=True)
def _threads():
    n = bnfast.get_num_threads()
    bnfast.set_num_threads(THREADS)
    if torch is not None:
        torch.set_num_threads(THREADS)
    yield
    bnfast.set_num_threads(n)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("split", SPLITS, ids=lambda s: f"x{s}")
@pytest.mark.parametrize("total", TOTALS, ids=lambda n: f"n={n:.0e}")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step(benchmark, name, total, split, peer):
    make, arrays = OPTIMIZERS[name]
    benchmark.group = f"{name} n={total:.0e} x{split}"
    benchmark.extra_info["threads"] = THREADS
    params, grads = _arrays(total, split, 0), _arrays(total, split, 1)
    for g in grads:
        g *= 1e-3
    if peer == "numpy":
        states = [np.abs(g) for g in grads]
        step = _numpy_step(name)
        benchmark(step, params, grads, states)
    elif peer == "torch":
        tp = [torch.from_numpy(p).requires_grad_(True) for p in params]
        for t, g in zip(tp, grads):
            t.grad = torch.from_numpy(g)
        opt, kw = _torch_optimizer(name, tp)
        benchmark.extra_info["torch"] = f"{torch.__version__} {kw}"
        opt.step()  # allocate the state outside the timing
        benchmark(opt.step)
    else:
        with bnfast.use_isa(peer):
            opt = make(params, grads)
            opt.step()
            benchmark(opt.step)
    benchmark.extra_info["GB/s"] = arrays * 4 * total / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("peer", [*bnfast.available_isas(), "numpy"])
@pytest.mark.parametrize("split", SPLITS, ids=lambda s: f"x{s}")
@pytest.mark.parametrize("total", TOTALS, ids=lambda n: f"n={n:.0e}")
def test_clip_grad_norm(benchmark, total, split, peer):
    benchmark.group = f"clip_grad_norm n={total:.0e} x{split}"
    grads = _arrays(total, split, 1)
    if peer == "numpy":
        benchmark(R.clip_grad_norm, grads, 1.0)
    else:
        with bnfast.use_isa(peer):
            benchmark(clip_grad_norm, grads, 1.0)
    # One read for the norm, one read and one write to scale.
    benchmark.extra_info["GB/s"] = 3 * 4 * total / benchmark.stats.stats.median / 1e9
