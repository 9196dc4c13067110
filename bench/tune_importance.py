"""Which hyperparameter mattered on the digits network (issue 20): fANOVA importance over the
course's whole space, with its spread over study seeds. A benchmark script, not a test.

    python bench/tune_importance.py [--trials 40] [--epochs 5] [--seeds 5] [--workers 2]

For each optimizer (momentum: lr, decay, beta, hidden, layers, batch_size; Adam: lr, decay,
beta1, beta2, eps, hidden, layers, batch_size), runs ``--seeds`` random-search studies of
``--trials`` trials on the scalar ISA and prints each parameter's share of the validation
accuracy's variance (:func:`bnfast.tune.results.importance`): mean, standard deviation over
seeds, and the median rank.
"""

from __future__ import annotations

import argparse
import functools
import statistics

from bnfast.tune import Study, digits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--isa", default="scalar")
    p.add_argument("--storage", default=":memory:")
    a = p.parse_args()
    for opt in ("momentum", "adam"):
        space = digits.course_space(opt)
        settings = digits.settings(a.epochs, isa=a.isa, optimizer=opt)
        objective = functools.partial(digits.objective, **settings)
        runs = []
        for seed in range(a.seeds):
            s = Study(space, a.storage, name=f"importance-{opt}-{seed}", seed=seed,
                      objective_version=digits.VERSION, settings=settings)  # fmt: skip
            s.optimize(objective, a.trials, workers=a.workers)
            runs.append(s.importance())
        print(f"\n{opt}: {a.trials} trials x {a.seeds} seeds, {a.epochs} epochs, ISA {a.isa}")
        print(f"{'parameter':<11} {'share':>6} {'sd':>6} {'rank':>5}")
        ranks = {n: [list(r).index(n) + 1 for r in runs] for n in space}
        rows = sorted(space, key=lambda n: -statistics.mean(r[n] for r in runs))
        for n in rows:
            v = [r[n] for r in runs]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            rank = statistics.median(ranks[n])
            print(f"{n:<11} {statistics.mean(v):6.1%} {sd:6.1%} {rank:5g}")


if __name__ == "__main__":
    main()
