"""Calls every _core binding (and the public wrappers) a few times, error paths included.

Run under valgrind by tools/valgrind_leaks.sh: any memory bnfast allocates and loses shows up
as a "definitely lost" record with a _core frame. Usage: python tools/leak_check.py [repeats]
"""

from __future__ import annotations

import ast
import contextlib
import sys
from functools import partial

import numpy as np

import bnfast
from bnfast import _core
from bnfast.optim import Adam, clip_grad_norm, global_norm


def calls(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 33)).astype(dtype)
    x4 = rng.standard_normal((2, 5, 7, 40)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    w = np.ones(33, dtype)
    rm, rv = np.zeros(33, dtype), np.ones(33, dtype)
    t = rng.integers(0, 33, 64)
    p, g = [rng.standard_normal(1000).astype(dtype)], [rng.standard_normal(1000).astype(dtype)]
    s = [[np.zeros(1000, dtype)] for _ in range(3)]
    ints = np.zeros(x.shape, np.int32)
    out = np.empty_like(x)
    _, mean, invstd = bnfast.batch_norm(x, training=True)
    return [
        lambda: bnfast.batch_norm(x, rm, rv, w, w, training=True, out=out),
        lambda: bnfast.batch_norm(x4, training=True),
        lambda: bnfast.batch_norm(x, rm, rv, w, w),
        lambda: bnfast.batch_norm_backward(dy, x, mean, invstd, w),
        lambda: bnfast.softmax(x),
        lambda: bnfast.log_softmax(x4, axis=1),
        lambda: bnfast.softmax_backward(x, dy),
        lambda: bnfast.log_softmax_backward(x, dy),
        lambda: bnfast.softmax_cross_entropy(x, t, w, label_smoothing=0.1),
        lambda: bnfast.softmax_cross_entropy(x, bnfast.softmax(dy), reduction="none"),
        lambda: bnfast.sigmoid_binary_cross_entropy(x, dy > 0, pos_weight=w),
        lambda: _core.sgd_update(p, g, s[0], 0.1, 0.9, 0.0, 0.0, False, False),
        lambda: _core.momentum_update(p, g, s[0], 0.1, 0.9),
        lambda: _core.rmsprop_update(p, g, *s, 0.1, 0.9, 1e-8, 0.0, 0.5, True),
        lambda: _core.adam_update(p, g, *s, 2, 0.1, 0.9, 0.99, 1e-8, 0.0, True, True),
        lambda: Adam([p[0].copy()], lr=0.1).step(g),
        lambda: clip_grad_norm([g[0].copy()], 0.1),
        lambda: global_norm(g),
        lambda: _core.vmath_exp(x),
        lambda: _core.vmath_log(np.abs(x)),
        # Error paths: every exception must free what the call allocated.
        lambda: _core.batch_norm_train(ints, 1, None, None, None, None, 0.1, 1e-5, None),
        lambda: _core.batch_norm_eval(x, 1, w, None, rm, rv, 1e-5, w),
        lambda: _core.log_softmax(x, 7, None),
        lambda: _core.softmax_cross_entropy(x, t + 40, 1, None, -100, "mean", 0.0, None, None),
        lambda: _core.softmax_cross_entropy(x, t, 1, None, -100, "avg", 0.0, None, None),
        lambda: _core.sigmoid_binary_cross_entropy(x, ints, None, None, "mean", None, None),
        lambda: _core.adam_update(p, g, s[0], s[0], None, 2, 0.1, 0.9, 0.99, 1e-8, 0, False, True),
        lambda: _core.global_norm([ints]),
        lambda: _core.set_isa("nope"),
        # Every binding, listed by _core itself, with arguments of the right count but wrong kind.
        *(partial(fn, *[junk] * n) for fn, n in bindings() for junk in (None, ints, "x")),
    ]


def bindings():
    """Every function of _core with its number of parameters (from the signature pybind11 writes
    as the first line of its docstring)."""
    for name, fn in sorted(vars(_core).items()):
        if not name.startswith("_") and callable(fn):
            header = ast.parse(f"def {fn.__doc__.splitlines()[0]}: ...").body[0]
            yield fn, len(header.args.args)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for isa in bnfast.available_isas():
        with bnfast.use_isa(isa):
            for dtype in (np.float32, np.float64):
                for fn in calls(dtype):
                    for _ in range(repeats):
                        with contextlib.suppress(TypeError, ValueError, IndexError, RuntimeError):
                            fn()
    print(f"leak_check: ran every binding {repeats} times on {bnfast.available_isas()}")


if __name__ == "__main__":
    main()
