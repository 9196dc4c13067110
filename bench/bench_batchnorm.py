"""Batch norm: training forward, eval forward, backward at the reference shapes (float32).

Bytes that must move (n = elements, 4 bytes each): train forward reads x twice and writes y
(3 * 4n; the stats pass reads x, the normalize pass reads x and writes y); eval forward reads x
and writes y (2 * 4n); backward reads x and dy twice and writes dx (5 * 4n).
"""

from __future__ import annotations

import numpy as np
import pytest

import bnfast
from bnfast import reference as ref

SHAPES = {"256x1024": (256, 1024), "8192x1024": (8192, 1024), "nchw-32x64x56x56": (32, 64, 56, 56)}


def setup(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, shape).astype(np.float32)
    c = shape[1]
    return (
        x,
        np.ones(c, np.float32),
        np.zeros(c, np.float32),
        np.zeros(c, np.float32),
        np.ones(c, np.float32),
    )


def torch_fns():
    import torch

    torch.set_num_threads(bnfast.get_num_threads())
    return torch


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_train_forward(benchmark, impl, shape, record_bandwidth):
    x, w, b, rm, rv = setup(shape)
    benchmark.group = f"bn-train-fwd-{'x'.join(map(str, shape))}"
    out = np.empty_like(x)
    if impl == "numpy":
        benchmark(ref.batch_norm_train, x, rm, rv, w, b)
    elif impl == "torch":
        torch = torch_fns()
        tx = torch.from_numpy(x)
        trm, trv, tw, tb = map(torch.from_numpy, (rm, rv, w, b))
        benchmark(torch.batch_norm, tx, tw, tb, trm, trv, True, 0.1, 1e-5, False)
    else:
        benchmark(bnfast.batch_norm, x, rm, rv, w, b, training=True, out=out)
    record_bandwidth(benchmark, 3 * x.nbytes)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_eval_forward(benchmark, impl, shape, record_bandwidth):
    x, w, b, rm, rv = setup(shape)
    benchmark.group = f"bn-eval-fwd-{'x'.join(map(str, shape))}"
    out = np.empty_like(x)
    if impl == "numpy":
        benchmark(ref.batch_norm_eval, x, rm, rv, w, b)
    elif impl == "torch":
        torch = torch_fns()
        args = [torch.from_numpy(a) for a in (x, w, b, rm, rv)]
        benchmark(
            torch.batch_norm, args[0], args[1], args[2], args[3], args[4], False, 0.1, 1e-5, False
        )
    else:
        benchmark(bnfast.batch_norm, x, rm, rv, w, b, training=False, out=out)
    record_bandwidth(benchmark, 2 * x.nbytes)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_backward(benchmark, impl, shape, record_bandwidth):
    x, w, b, rm, rv = setup(shape)
    benchmark.group = f"bn-backward-{'x'.join(map(str, shape))}"
    dy = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    res = bnfast.batch_norm(x, rm, rv, w, b, training=True)
    out = np.empty_like(x)
    if impl == "numpy":
        benchmark(ref.batch_norm_backward, dy, x, res.mean, res.invstd, w)
    elif impl == "torch":
        torch = torch_fns()
        tx = torch.from_numpy(x).requires_grad_(True)
        tw = torch.from_numpy(w.copy()).requires_grad_(True)
        tb = torch.from_numpy(b.copy()).requires_grad_(True)
        y = torch.nn.functional.batch_norm(tx, None, None, tw, tb, True)
        tdy = torch.from_numpy(dy)
        benchmark(lambda: torch.autograd.grad(y, (tx, tw, tb), tdy, retain_graph=True))
    else:
        benchmark(bnfast.batch_norm_backward, dy, x, res.mean, res.invstd, w, out=out)
    record_bandwidth(benchmark, 5 * x.nbytes)
