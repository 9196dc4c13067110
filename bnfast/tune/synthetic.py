"""Synthetic objectives with known optima, for tests, examples and the CLI's ``--objective``.

They live in the package (not in a test file) so that worker processes can import them.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from bnfast.tune.spaces import Choice, IntUniform, LogUniform, OneMinusLogUniform, Uniform

__all__ = ["QUADRATIC_SPACE", "flaky", "quadratic", "slow_logged", "thread_info"]

#: The optimum of :func:`quadratic` is lr = 1e-2, x = 0.3, units = 70, act = "relu".
QUADRATIC_SPACE = {
    "lr": LogUniform(1e-4, 1.0),
    "beta": OneMinusLogUniform(0.9, 0.999),
    "x": Uniform(0.0, 1.0),
    "units": IntUniform(50, 100),
    "act": Choice(["relu", "tanh"]),
}


def quadratic(params: dict[str, Any], report: Any, steps: int = 4) -> float:
    """A smooth score peaking at 1 at lr = 1e-2, x = 0.3 (log scale in lr), seeded noise-free.

    Reports a learning curve rising towards the final score over ``steps`` steps.
    """
    d = (math.log10(params["lr"]) + 2.0) ** 2 / 4.0 + (params.get("x", 0.3) - 0.3) ** 2
    d += ((params.get("units", 70) - 70) / 50.0) ** 2
    d += 0.05 * (params.get("act", "relu") != "relu")
    score = math.exp(-4.0 * d)
    for step in range(1, steps + 1):
        report(step, score * (1.0 - 0.5**step))
    return score


def flaky(params: dict[str, Any], report: Any) -> float:
    """:func:`quadratic`, but raises for x > 0.7 (a failing trial)."""
    if params["x"] > 0.7:
        raise RuntimeError(f"diverged at x={params['x']:.3f}")
    return quadratic(params, report)


def thread_info(params: dict[str, Any], report: Any) -> dict[str, Any]:
    """:func:`quadratic`, with the thread limits the trial runs under as metrics: ``blas`` and
    ``openmp`` (the largest of the loaded libraries', via threadpoolctl), ``bnfast``
    (:func:`bnfast.get_num_threads`), ``pid``."""
    import numpy as np  # noqa: F401 - loads the BLAS
    from threadpoolctl import threadpool_info

    import bnfast

    info = threadpool_info()
    out: dict[str, Any] = {"score": quadratic(params, report), "pid": os.getpid()}
    for api in ("blas", "openmp"):
        out[api] = max([i["num_threads"] for i in info if i["user_api"] == api], default=0)
    out["bnfast"] = bnfast.get_num_threads()
    return out


def slow_logged(params: dict[str, Any], report: Any) -> float:
    """:func:`quadratic` after sleeping ``$BNFAST_TUNE_SLEEP`` seconds; appends the trial number
    to the file ``$BNFAST_TUNE_LOG`` when it finishes (to count executions in tests), and
    ``started <pid>`` to ``$BNFAST_TUNE_LOG.pids`` when it starts."""
    log = os.environ.get("BNFAST_TUNE_LOG")
    if log:
        with open(log + ".pids", "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("BNFAST_TUNE_SLEEP", "0.05")))
    score = quadratic(params, report)
    if log:
        with open(log, "a") as f:
            f.write(f"{report.number}\n")
    return score
