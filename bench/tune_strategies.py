"""Search strategies at equal budgets on the digits objective (issue 20). A benchmark script.

    python bench/tune_strategies.py [--seeds 10] [--epochs 10] [--workers 2]

For each study seed: random search and Sobol (60 trials; their first 30 trials are the 30-trial
study, as trial ``i`` does not depend on the budget), coarse-to-fine with 3 stages of 10 and of
20 trials, and Optuna's RandomSampler and TPESampler when Optuna is installed. Reports the best
validation accuracy, the test accuracy of the chosen configuration retrained with three new
seeds (mean), wall time per study and the framework's overhead per trial (wall time times
workers, less the trials' own time, per trial). Means and standard deviations over seeds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np

from bnfast.tune import CoarseToFine, Study, digits


def retrain(params: dict, settings: dict, seeds: int = 3) -> float:
    """Mean test accuracy of ``params`` trained with ``seeds`` fresh seeds."""
    import bnfast
    from bnfast.tune.digits import DigitsModel, _data

    d = _data(settings["data_seed"])
    with bnfast.use_isa(settings["isa"]):
        return _retrain(params, settings, seeds, d, DigitsModel)


def _retrain(params, settings, seeds, d, DigitsModel) -> float:
    accs = []
    for k in range(seeds):
        m = DigitsModel(params, seed=10_000 + k, data_seed=settings["data_seed"])
        for epoch in range(1, settings["epochs"] + 1):
            m.train_epoch(params, epoch)
        m.net.eval()
        accs.append(float(np.mean(np.argmax(m.net.forward(d.X_test), axis=1) == d.y_test)))
    return statistics.mean(accs)


def ours(strategy, budget, seed, objective, settings, workers):
    t0 = time.perf_counter()
    s = Study(digits.space(), seed=seed, strategy=strategy, settings=settings,
              objective_version=digits.VERSION).optimize(objective, budget, workers=workers)  # fmt: skip
    wall = time.perf_counter() - t0
    return s.trials(), wall


def optuna_run(sampler_name, budget, seed, objective, settings):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = getattr(optuna.samplers, sampler_name)(seed=seed)

    class _R:
        def __init__(self, s):
            self.seed = s

        def __call__(self, *a):
            pass

    def f(trial):
        p = {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
             "beta1": 1 - trial.suggest_float("one_minus_beta1", 1e-3, 1e-1, log=True),
             "hidden": trial.suggest_int("hidden", 50, 100),
             "layers": trial.suggest_int("layers", 2, 4),
             "batch_size": 2 ** trial.suggest_int("log2_batch", 4, 8)}  # fmt: skip
        trial.set_user_attr("params", p)
        return objective(p, _R(seed * 1000 + trial.number))

    t0 = time.perf_counter()
    st = optuna.create_study(direction="maximize", sampler=sampler)
    st.optimize(f, n_trials=budget)
    wall = time.perf_counter() - t0
    best = st.best_trial
    return (
        best.value,
        best.user_attrs["params"],
        wall,
        sum(t.duration.total_seconds() for t in st.trials),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--isa", default="scalar")
    a = p.parse_args()
    settings = digits.settings(a.epochs, isa=a.isa)
    objective = functools.partial(digits.objective, **settings)
    width = a.workers or 1
    rows: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}

    def add(label, budget, trials, wall):
        done = [t for t in trials if t.status == "complete"]
        best = max(done, key=lambda t: (t.value, -t.number))
        own = sum(t.duration or 0.0 for t in trials)
        over = (wall * width - own) / len(trials)
        test = retrain(best.params, settings)
        rows.setdefault((label, budget), []).append((best.value, test, wall, over))

    for seed in range(a.seeds):
        for label, strategy in (("random", "random"), ("sobol", "sobol")):
            trials, wall = ours(strategy, 60, seed, objective, settings, a.workers)
            add(label, 60, trials, wall)
            firsts = trials[:30]
            add(label, 30, firsts, wall * sum(t.duration or 0 for t in firsts) /
                sum(t.duration or 0 for t in trials))  # fmt: skip
        for budget in (30, 60):
            trials, wall = ours(CoarseToFine(budget // 3, 5, 0.1), budget, seed, objective,
                                settings, a.workers)  # fmt: skip
            add("coarse-to-fine", budget, trials, wall)
        try:
            import optuna  # noqa: F401
        except ImportError:
            pass
        else:
            for name in ("RandomSampler", "TPESampler"):
                for budget in (30, 60):
                    v, params, wall, own = optuna_run(name, budget, seed, objective, settings)
                    rows.setdefault((f"optuna {name}", budget), []).append(
                        (v, retrain(params, settings), wall, (wall - own) / budget)
                    )
        print(f"after seed {seed}:", flush=True)
        table(rows, a, width, seed + 1)


def table(rows, a, width, seeds) -> None:
    def ms(xs):
        return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

    print(f"\ndigits, {a.epochs} epochs, ISA {a.isa}, {seeds} seeds, workers {width}")
    print(
        "| strategy | trials | best val. acc. | test acc. (retrained) | wall s | overhead ms/trial |"
    )
    print("|---|--:|--:|--:|--:|--:|")
    for (label, budget), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        v, t, w, o = (ms([x[i] for x in r]) for i in range(4))
        print(f"| {label} | {budget} | {v[0]:.4f} ± {v[1]:.4f} | {t[0]:.4f} ± {t[1]:.4f} | "
              f"{w[0]:.1f} | {1000 * o[0]:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
