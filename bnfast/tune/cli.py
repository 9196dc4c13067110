"""``bnfast tune``: search the digits network (or any objective), report, watch one model.

Modes (one per call):

- search (default): ``bnfast tune --trials 50 --strategy coarse-to-fine --workers 4
  --storage runs.db``. Rerunning the same command resumes the study; ``--scheduler ADDRESS``
  runs the trials on a Dask cluster (``local`` starts a LocalCluster).
- ``--report runs.db``: the summary and best trials of a stored study (``--plot DIR`` too).
- ``--panda``: train one model epoch by epoch with ``--params``, applying ``--change
  EPOCH:name=value`` after that epoch (``--interactive`` to ask after each epoch).
- ``--experiment batchnorm``: the batch norm vs no batch norm learning-rate experiment.

The digits objective needs the network layers, trainer and data; ``--objective MODULE:NAME``
with ``--space MODULE:NAME`` searches any importable objective instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

__all__ = ["add_parser", "main", "run"]


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, default=30, help="total trials (default 30)")
    g.add_argument(
        "--strategy",
        choices=["random", "grid", "coarse-to-fine"],
        default="random",
        help="search strategy (default random)",
    )
    g.add_argument("--stages", type=int, default=3, help="coarse-to-fine stages (default 3)")
    g.add_argument("--top-k", type=int, default=5, help="coarse-to-fine: best trials per box")
    g.add_argument("--padding", type=float, default=0.1, help="coarse-to-fine box padding")
    g.add_argument("--grid-points", type=int, default=3, help="grid values per parameter")
    g.add_argument("--workers", type=int, default=None, help="local worker processes (cores)")
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="Dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster",
    )
    g.add_argument("--storage", default="runs.db", help="SQLite file (default runs.db)")
    g.add_argument("--study", default=None, help="study name (default: objective-strategy)")
    g.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    g.add_argument("--epochs", type=int, default=10, help="digits: epochs per trial")
    g.add_argument(
        "--prune", choices=["none", "median", "halving"], default="none", help="early stopping"
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    g.add_argument("--objective", metavar="MODULE:NAME", default=None, help="objective to search")
    g.add_argument("--space", metavar="MODULE:NAME", default=None, help="its space (a dict)")
    g.add_argument("--minimize", action="store_true", help="lower scores are better")
    r = p.add_argument_group("results")
    r.add_argument("--report", metavar="DB", default=None, help="show a stored study and exit")
    r.add_argument("--top", type=int, default=10, help="rows in the table of best trials")
    r.add_argument("--plot", metavar="DIR", default=None, help="write plots (needs matplotlib)")
    m = p.add_argument_group("panda and the experiment")
    m.add_argument("--panda", action="store_true", help="train and watch one model")
    m.add_argument("--params", nargs="*", default=[], metavar="NAME=VALUE", help="panda params")
    m.add_argument(
        "--change", action="append", default=[], metavar="EPOCH:NAME=VALUE",
        help="panda: set NAME=VALUE after EPOCH (repeatable)",
    )  # fmt: skip
    m.add_argument("--interactive", action="store_true", help="panda: ask after each epoch")
    m.add_argument(
        "--experiment", choices=["batchnorm"], default=None,
        help="batch norm vs none: fraction of sampled learning rates reaching --target",
    )  # fmt: skip
    m.add_argument("--target", type=float, default=0.95, help="experiment target accuracy")
    p.set_defaults(func=run)
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tune`` on ``bnfast``'s subparsers (the caller dispatches to ``args.func``)."""
    p = subparsers.add_parser(
        "tune",
        help="hyperparameter search (random, coarse-to-fine, panda) on the digits network",
        description=__doc__.split("\n\n")[0],
    )
    return _configure(p)


def _load(ref: str) -> Any:
    mod, sep, name = ref.partition(":")
    if not sep:
        raise SystemExit(f"expected MODULE:NAME, got {ref!r}")
    return getattr(importlib.import_module(mod), name)


def _objective(args: argparse.Namespace) -> tuple[Any, Any, str, str | None]:
    """The objective, its space, its label and its version (None for a user's objective)."""
    import functools

    if args.objective:
        obj = _load(args.objective)
        if args.space:
            space = _load(args.space)
        else:
            space = importlib.import_module(args.objective.partition(":")[0]).SPACE
        return obj, space, args.objective.partition(":")[2], None
    from bnfast.tune import digits

    objective = functools.partial(digits.objective, epochs=args.epochs)
    return objective, digits.space(), "digits", digits.VERSION


def _strategy(args: argparse.Namespace) -> Any:
    from bnfast.tune import CoarseToFine, GridSearch

    if args.strategy == "coarse-to-fine":
        per_stage = max(1, -(-args.trials // max(1, args.stages)))
        return CoarseToFine(per_stage, args.top_k, args.padding)
    if args.strategy == "grid":
        return GridSearch(args.grid_points)
    return "random"


def _pruner(args: argparse.Namespace) -> Any:
    from bnfast.tune import MedianPruner, SuccessiveHalving

    return {"none": None, "median": MedianPruner(), "halving": SuccessiveHalving()}[args.prune]


class _Executor:
    """The executor from --scheduler/--workers, closed on exit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.executor, self._close = args, None, []

    def __enter__(self) -> Any:
        from bnfast.tune import dask_executor

        address = self.args.scheduler
        if address is None:
            return None  # Study.optimize makes (and closes) a local pool of --workers
        if address == "local":
            import distributed

            cluster = distributed.LocalCluster(
                n_workers=self.args.workers or os.cpu_count() or 1,
                threads_per_worker=1,
                dashboard_address=None,
            )
            self._close.append(cluster)
            address = cluster
        self.executor, client = dask_executor(address)
        self._close.insert(0, client)
        return self.executor

    def __exit__(self, *exc: object) -> None:
        for c in self._close:
            c.close()


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def _report(args: argparse.Namespace) -> int:
    from bnfast.tune import Study
    from bnfast.tune.results import save_plots, summary
    from bnfast.tune.storage import Storage

    st = Storage(args.report) if os.path.exists(args.report) else None
    if st is None:
        print(f"no such file: {args.report}", file=sys.stderr)
        return 2
    names = [args.study] if args.study else st.study_names()
    if not names:
        print(f"no study in {args.report}", file=sys.stderr)
        return 2
    for i, name in enumerate(names):
        study = Study.load(st, name)
        if i:
            print()
        print(summary(study, args.top))
        if args.plot:
            out = os.path.join(args.plot, name) if len(names) > 1 else args.plot
            for path in save_plots(study, out):
                print(f"wrote {path}")
    return 0


def _panda(args: argparse.Namespace) -> int:
    from bnfast.tune import Study, digits
    from bnfast.tune.panda import parse_assignment

    params = {**digits.DEFAULTS, **dict(parse_assignment(a) for a in args.params)}
    changes: dict[int, dict[str, Any]] = {}
    for c in args.change:
        epoch, _, assign = c.partition(":")
        name, value = parse_assignment(assign)
        changes.setdefault(int(epoch), {})[name] = value
    study = Study(None, args.storage, name=args.study or "digits-panda", seed=args.seed,
                  strategy="panda", objective_version=digits.VERSION)  # fmt: skip
    panda = study.panda(digits.DigitsModel, params)
    print(f"panda: trial {panda.number} of study {study.name!r} in {args.storage}: {params}")
    if args.interactive:
        rec = panda.interact(args.epochs)
    else:
        for epoch in range(args.epochs):
            if epoch in changes:
                panda.set(**changes[epoch])
            panda.run(1)
        rec = panda.finish()
    print(f"final validation accuracy {rec.value:.4f}")
    if args.plot:
        from bnfast.tune.results import save_plots

        for path in save_plots(study, args.plot):
            print(f"wrote {path}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from bnfast.tune.experiment import batchnorm_experiment

    plot = os.path.join(args.plot, "batchnorm_lr.png") if args.plot else None
    with _Executor(args) as ex:
        _, text = batchnorm_experiment(
            args.trials, args.epochs, args.target, storage=args.storage, seed=args.seed,
            plot=plot, executor=ex, workers=args.workers, progress=_progress(args),
        )  # fmt: skip
    print(text)
    if plot:
        print(f"wrote {plot}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``bnfast tune`` from parsed arguments."""
    from bnfast.tune.study import StudyMismatch

    try:
        return _run(args)
    except StudyMismatch as exc:
        print(f"bnfast tune: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.report:
        return _report(args)
    if args.panda:
        return _panda(args)
    if args.experiment:
        return _experiment(args)
    from bnfast.tune import Study
    from bnfast.tune.results import save_plots, summary

    objective, space, label, version = _objective(args)
    strategy = _strategy(args)
    name = args.study or f"{label}-{args.strategy}"
    study = Study(space, args.storage, name=name, seed=args.seed, strategy=strategy,
                  direction="minimize" if args.minimize else "maximize",
                  objective_version=version)  # fmt: skip
    with _Executor(args) as ex:
        try:
            study.optimize(objective, args.trials, executor=ex, workers=args.workers,
                           pruner=_pruner(args), progress=_progress(args))  # fmt: skip
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: rerun the same command to resume {args.storage}", file=sys.stderr
            )
            return 130
    print(summary(study, args.top))
    if args.plot:
        for path in save_plots(study, args.plot):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bnfast.tune.cli`` (the same as ``bnfast tune``)."""
    parser = _configure(argparse.ArgumentParser(prog="bnfast tune", description=__doc__))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
