"""Benchmark (not a test): N tuning workers on N cores against one, with and without the
per-worker thread budget (issue 20, defect 1).

    python bench/tune_workers.py [--trials 12] [--epochs 10] [--workers 2]

Runs the digits objective for the same trials in process (1 worker), with ``--workers``
processes at one thread each (the default budget), and with ``--workers`` processes left
unlimited (``threads=None``: every worker's BLAS and OpenMP on every core, the old behaviour).
Prints wall time, summed trial time and the best score (the same in every row).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

from bnfast.tune import Study, digits


def run(
    trials: int, epochs: int, workers: int | None, threads: object
) -> tuple[float, float, float]:
    objective = functools.partial(digits.objective, **digits.settings(epochs))
    t0 = time.perf_counter()
    s = Study(digits.space(), seed=0).optimize(objective, trials, workers=workers, threads=threads)
    wall = time.perf_counter() - t0
    ts = s.trials()
    return wall, sum(t.duration or 0.0 for t in ts), s.best_trial.value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    rows = [
        ("1 worker, in process", None, "auto"),
        (f"{a.workers} workers, 1 thread each", a.workers, "auto"),
        (f"{a.workers} workers, unlimited threads", a.workers, None),
    ]
    print(f"{a.trials} digits trials x {a.epochs} epochs, {os.cpu_count()} cores, "
          f"best of {a.repeat}")  # fmt: skip
    print(f"{'configuration':<34} {'wall s':>7} {'trial s':>8} {'best':>7}")
    for label, workers, threads in rows:
        best = min(run(a.trials, a.epochs, workers, threads) for _ in range(a.repeat))
        print(f"{label:<34} {best[0]:7.2f} {best[1]:8.2f} {best[2]:7.4f}")


if __name__ == "__main__":
    main()
