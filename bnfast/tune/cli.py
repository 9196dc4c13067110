"""``bnfast tune``: search the digits network (or any objective), report, watch one model.

Modes (one per call):

- search (default): ``bnfast tune --trials 50 --strategy coarse-to-fine --workers 4
  --storage runs.db``. Rerunning the same command resumes the study, a larger ``--trials``
  extends it; ``--scheduler ADDRESS`` runs the trials on a Dask cluster (``local`` starts a
  LocalCluster). Strategies: random, grid, sobol, halton, coarse-to-fine.
- ``--report runs.db``: the summary, best trials and hyperparameter importance of a stored
  study (``--plot DIR``, ``--csv FILE`` too).
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


DESCRIPTION = """\
Hyperparameter search on the digits network (or any objective): random, grid, Sobol/Halton
or coarse-to-fine search over many models in parallel, a report of a stored study, one model
trained and watched epoch by epoch (panda), or the batch-norm learning-rate experiment.
Every trial is stored in SQLite: rerunning the same command resumes the study, a larger
--trials extends it, and a changed setting (--epochs, --isa, the strategy...) is refused."""


def _epilog() -> str:
    from bnfast.tune import digits

    params = "\n".join(f"  {k:<11} {p!r}" for k, p in digits.space().items())
    return f"""\
The digits objective tunes (trained with Adam, batch norm on, --epochs epochs, scored by
validation accuracy):
{params}

examples:
  bnfast tune --trials 30 --strategy coarse-to-fine --workers 2 --storage runs.db
  bnfast tune --trials 60 --strategy coarse-to-fine --workers 2 --storage runs.db  # extend
  bnfast tune --strategy sobol --trials 32 --isa scalar --storage sobol.db
  bnfast tune --strategy coarse-to-fine --sampler sobol --trials 48 --storage runs.db
  bnfast tune --space course --trials 40 --epochs 5 --storage runs.db  # then --report
  bnfast tune --report runs.db --plot plots/ --csv trials.csv
  bnfast tune --panda --params lr=0.01 --change 3:lr=0.001 --epochs 6
  bnfast tune --experiment batchnorm --trials 40 --epochs 5 --isa scalar --storage bn.db

Workers run each trial under a budget of --threads-per-worker threads (BLAS, OpenMP and
bnfast's kernels), 1 by default: --workers N on N cores."""


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = DESCRIPTION
    p.epilog = _epilog()
    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, default=30, help="total trials (default 30)")
    g.add_argument(
        "--strategy",
        choices=["random", "grid", "sobol", "halton", "coarse-to-fine"],
        default="random",
        help="search strategy (default random)",
    )
    g.add_argument(
        "--stages", type=int, default=3,
        help="coarse-to-fine: stages the first run's --trials is split into; a later run with "
        "more --trials adds stages of the same size (default 3)",
    )  # fmt: skip
    g.add_argument(
        "--top-k", type=int, default=5, help="coarse-to-fine: best trials per box (default 5)"
    )
    g.add_argument(
        "--padding", type=float, default=0.1,
        help="coarse-to-fine: box padding, a fraction of the previous box (default 0.1)",
    )  # fmt: skip
    g.add_argument(
        "--sampler", choices=["random", "sobol", "halton"], default="random",
        help="coarse-to-fine: how each stage samples its box (default random)",
    )  # fmt: skip
    g.add_argument(
        "--grid-points", type=int, default=3, help="grid: values per parameter (default 3)"
    )
    g.add_argument(
        "--workers", type=int, default=None,
        help="local worker processes (default: the cores; 1 runs in process)",
    )  # fmt: skip
    g.add_argument(
        "--threads-per-worker", type=int, default=1, metavar="N",
        help="BLAS/OpenMP/bnfast threads of each worker (default 1)",
    )  # fmt: skip
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="Dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster",
    )
    g.add_argument("--storage", default="runs.db", help="SQLite file (default runs.db)")
    g.add_argument("--study", default=None, help="study name (default: objective-strategy)")
    g.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    g.add_argument("--epochs", type=int, default=10, help="digits: epochs per trial (default 10)")
    g.add_argument(
        "--isa", default=None, metavar="NAME",
        help="digits: the kernels' instruction set (scalar, avx2, avx512, neon; default: the "
        "best this CPU has). Part of the study: scores differ between ISAs",
    )  # fmt: skip
    g.add_argument(
        "--prune", choices=["none", "median", "halving"], default="none",
        help="early stopping (default none)",
    )  # fmt: skip
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    g.add_argument("--objective", metavar="MODULE:NAME", default=None, help="objective to search")
    g.add_argument(
        "--space", metavar="MODULE:NAME", default=None,
        help="the objective's space (a dict); for digits, 'course' searches the course's whole "
        "space (lr, decay, Adam's beta1, beta2, eps, hidden, layers, batch_size)",
    )  # fmt: skip
    g.add_argument("--minimize", action="store_true", help="lower scores are better")
    r = p.add_argument_group("results")
    r.add_argument("--report", metavar="DB", default=None, help="show a stored study and exit")
    r.add_argument("--top", type=int, default=10, help="rows in the table of best trials (10)")
    r.add_argument("--plot", metavar="DIR", default=None, help="write plots (needs matplotlib)")
    r.add_argument("--csv", metavar="FILE", default=None, help="--report: write every trial")
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
    m.add_argument(
        "--target", type=float, default=0.95, help="experiment target accuracy (default 0.95)"
    )
    p.set_defaults(func=run)
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tune`` on ``bnfast``'s subparsers (the caller dispatches to ``args.func``)."""
    p = subparsers.add_parser(
        "tune",
        help="hyperparameter search (random, coarse-to-fine, panda) on the digits network",
    )
    return _configure(p)


def _load(ref: str) -> Any:
    mod, sep, name = ref.partition(":")
    if not sep:
        raise SystemExit(f"expected MODULE:NAME, got {ref!r}")
    return getattr(importlib.import_module(mod), name)


def _objective(args: argparse.Namespace) -> dict[str, Any]:
    """The objective, its space, label, version and settings (Study's keyword arguments)."""
    import functools

    if args.objective:
        obj = _load(args.objective)
        if args.space:
            space = _load(args.space)
        else:
            space = importlib.import_module(args.objective.partition(":")[0]).SPACE
        label = args.objective.partition(":")[2]
        return {"objective": obj, "space": space, "label": label, "objective_version": None,
                "settings": None, "metric": "score"}  # fmt: skip
    from bnfast.tune import digits

    settings = digits.settings(args.epochs, isa=args.isa)
    if args.space not in (None, "course"):
        raise SystemExit("bnfast tune: --space needs --objective (or 'course' for digits)")
    space = digits.course_space() if args.space == "course" else digits.space()
    label = "digits-course" if args.space == "course" else "digits"
    return {"objective": functools.partial(digits.objective, **settings), "space": space,
            "label": label, "objective_version": digits.VERSION, "settings": settings,
            "metric": digits.METRIC}  # fmt: skip


def _strategy(args: argparse.Namespace, name: str) -> Any:
    from bnfast.tune import CoarseToFine, GridSearch, QuasiRandomSearch
    from bnfast.tune.storage import Storage

    if args.strategy == "coarse-to-fine":
        per_stage = max(1, -(-args.trials // max(1, args.stages)))
        if os.path.exists(args.storage):
            # Extending a stored study: its stages keep their size, more trials add stages.
            with Storage(args.storage) as st:
                info = st.get_study(name)
            stored = CoarseToFine.parse(info["strategy"]) if info else None
            if stored is not None:
                per_stage = stored.trials_per_stage
        return CoarseToFine(per_stage, args.top_k, args.padding, args.sampler)
    if args.strategy == "grid":
        return GridSearch(args.grid_points)
    if args.strategy in ("sobol", "halton"):
        return QuasiRandomSearch(args.strategy)
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
                n_workers=_workers(self.args),
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


def _workers(args: argparse.Namespace) -> int:
    return args.workers or os.cpu_count() or 1


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
        if args.csv:
            path = args.csv
            if len(names) > 1:
                root, ext = os.path.splitext(args.csv)
                path = f"{root}-{name}{ext or '.csv'}"
            study.to_csv(path)
            print(f"wrote {path}")
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
            plot=plot, executor=ex, workers=_workers(args), progress=_progress(args),
            isa=args.isa, threads=_threads(args, ex),
        )  # fmt: skip
    print(text)
    if plot:
        print(f"wrote {plot}")
    return 0


def _threads(args: argparse.Namespace, executor: Any) -> int | None:
    """The thread budget of each trial: none in process (--workers 1), else the option."""
    return None if executor is None and _workers(args) == 1 else args.threads_per_worker


def run(args: argparse.Namespace) -> int:
    """Run ``bnfast tune`` from parsed arguments."""
    from bnfast.tune.study import StudyMismatch

    if args.isa is not None:
        import bnfast

        try:
            with bnfast.use_isa(args.isa):  # an unknown or unavailable ISA fails here
                pass
        except (ValueError, RuntimeError) as exc:
            print(f"bnfast tune: --isa: {exc}", file=sys.stderr)
            return 2
    try:
        return _run(args)
    except StudyMismatch as exc:
        print(f"bnfast tune: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `bnfast tune --report runs.db | head`: the reader left; say nothing more.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141


def _run(args: argparse.Namespace) -> int:
    if args.report:
        return _report(args)
    if args.panda:
        return _panda(args)
    if args.experiment:
        return _experiment(args)
    from bnfast.tune import Study
    from bnfast.tune.results import save_plots, summary

    obj = _objective(args)
    name = args.study or f"{obj['label']}-{args.strategy}"
    strategy = _strategy(args, name)
    study = Study(obj["space"], args.storage, name=name, seed=args.seed, strategy=strategy,
                  direction="minimize" if args.minimize else "maximize",
                  objective_version=obj["objective_version"], settings=obj["settings"],
                  metric=obj["metric"])  # fmt: skip
    with _Executor(args) as ex:
        try:
            study.optimize(obj["objective"], args.trials, executor=ex, workers=_workers(args),
                           pruner=_pruner(args), progress=_progress(args),
                           threads=_threads(args, ex))  # fmt: skip
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
    parser = _configure(argparse.ArgumentParser(prog="bnfast tune"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
