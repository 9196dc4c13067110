"""The study: a named search stored in SQLite, and the driver loop that runs it."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import IO, Any

from bnfast.tune.pruning import Pruner
from bnfast.tune.runner import (
    Objective,
    executor_width,
    make_executor,
    run_trial,
)
from bnfast.tune.spaces import Box, Space, describe
from bnfast.tune.storage import Storage, TrialRecord
from bnfast.tune.strategies import Strategy, get_strategy, trial_streams

__all__ = ["Study", "StudyMismatch", "coarse_to_fine", "grid_search", "random_search"]


class StudyMismatch(ValueError):
    """A stored study of the same name was made with another seed, direction, strategy, space
    or objective version: resuming it would mix trials that are not comparable."""


class Study:
    """A named search over ``space`` with one strategy, stored in ``storage``.

    Parameters
    ----------
    space : dict of Param, or callable
        The search space (see :mod:`bnfast.tune.spaces`); None for a panda-only study.
    storage : str, Path or Storage, optional
        The SQLite file (created if missing). Default: in memory.
    name : str
        The study's name inside the file (a file can hold several studies).
    seed : int
        With the trial number, determines each trial's parameters and training seed.
    direction : {"maximize", "minimize"}
    strategy : str or Strategy
        ``"random"``, ``"grid"``, ``"coarse-to-fine"`` or a :class:`Strategy`.
    objective_version : str, optional
        The objective's version (e.g. :data:`bnfast.tune.digits.VERSION`): when the objective
        changes what it computes, its trials are no longer comparable with stored ones.

    Reopening an existing study resumes it: the seed, direction, strategy, space and objective
    version must match what is stored (a :class:`StudyMismatch`, a ValueError, otherwise: use
    another ``name``).
    """

    def __init__(
        self,
        space: Space | None,
        storage: str | Path | Storage | None = None,
        *,
        name: str = "study",
        seed: int = 0,
        direction: str = "maximize",
        strategy: str | Strategy = "random",
        objective_version: str | None = None,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        self.space = space
        self.storage = storage if isinstance(storage, Storage) else Storage(storage or ":memory:")
        self.name = name
        self.seed = int(seed)
        self.direction = direction
        self.objective_version = objective_version
        self.strategy = get_strategy(strategy) if space is not None or strategy != "panda" else None
        strategy_text = "panda" if self.strategy is None else self.strategy.describe()
        space_text = "" if space is None else describe(space)
        stored = self.storage.get_study(name)
        if stored is None:
            meta = {} if objective_version is None else {"objective_version": objective_version}
            self.storage.create_study(name, self.seed, direction, strategy_text, space_text, meta)
        else:
            theirs = stored["meta"].get("objective_version")
            if theirs != objective_version:
                raise StudyMismatch(
                    f"study {name!r} in {self.storage.path} was run by objective version "
                    f"{_version_text(theirs)}, not {_version_text(objective_version)}: its "
                    "trials are not comparable with this objective's. Start a new study in another "
                    "storage file (bnfast tune --storage FILE) or under another name "
                    "(--study NAME)"
                )
            for key, mine in (
                ("seed", self.seed),
                ("direction", direction),
                ("strategy", strategy_text),
                ("space", space_text),
            ):
                if stored[key] != mine:
                    raise StudyMismatch(
                        f"study {name!r} in {self.storage.path} has {key} {stored[key]!r}, "
                        f"not {mine!r}; use another study name to start a new search"
                    )

    @classmethod
    def load(cls, storage: str | Path | Storage, name: str | None = None) -> Study:
        """Open a stored study read-only-ish (for reports): no space or objective needed."""
        if not isinstance(storage, Storage) and not Path(str(storage)).exists():
            raise FileNotFoundError(storage)
        st = storage if isinstance(storage, Storage) else Storage(storage)
        names = st.study_names()
        if not names:
            raise ValueError(f"no study in {st.path}")
        if name is None:
            name = names[-1]
        info = st.get_study(name)
        if info is None:
            raise ValueError(f"no study {name!r} in {st.path}; it has {names}")
        self = cls.__new__(cls)
        self.space, self.storage, self.name = None, st, name
        self.seed, self.direction, self.strategy = info["seed"], info["direction"], None
        self.objective_version = info["meta"].get("objective_version")
        return self

    def close(self) -> None:
        """Close the storage."""
        self.storage.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    # results
    def trials(self, status: str | None = None) -> list[TrialRecord]:
        """All stored trials by number (optionally only one status)."""
        ts = self.storage.trials(self.name)
        return ts if status is None else [t for t in ts if t.status == status]

    @property
    def best_trial(self) -> TrialRecord:
        done = [t for t in self.trials("complete") if t.value is not None]
        if not done:
            raise ValueError(f"study {self.name!r} has no complete trial")
        sign = -1.0 if self.maximize else 1.0
        return min(done, key=lambda t: (sign * t.value, t.number))

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best_trial.params

    def stages(self) -> dict[int, Box]:
        return self.storage.stages(self.name)

    def events(self, number: int | None = None) -> list[dict[str, Any]]:
        return self.storage.events(self.name, number)

    # the driver
    def optimize(
        self,
        objective: Objective,
        n_trials: int | None = None,
        *,
        executor: Executor | None = None,
        workers: int | None = None,
        pruner: Pruner | None = None,
        max_in_flight: int | None = None,
        progress: bool | IO[str] = False,
    ) -> Study:
        """Run trials ``0 .. n_trials-1`` that are not finished yet (the total, not extra ones).

        Running again with the same arguments resumes: complete, pruned and failed trials are
        kept; trials left ``running`` by a killed driver run again with the same parameters.
        A larger ``n_trials`` continues the stream.

        Parameters
        ----------
        objective : callable
            ``objective(params, report)``; picklable for process pools and Dask.
        n_trials : int
            The total number of trials (grid search: at most the grid size; None: the grid).
        executor : concurrent.futures.Executor, optional
            Runs the trials; not shut down here. Default: :func:`make_executor` (``workers``
            processes, the cores by default; in process for 1).
        pruner : Pruner, optional
            Early stopping from the reported curves.
        max_in_flight : int, optional
            Trials submitted at once (default: the executor's worker count).
        progress : bool or file
            Draw a progress bar (on stderr for True).
        """
        if self.strategy is None or self.space is None:
            raise ValueError("this study has no space or strategy to optimize")
        total = self.strategy.total(n_trials, self.space)
        existing = {t.number: t for t in self.trials()}
        todo = [i for i in range(total) if not (i in existing and existing[i].done)]
        if not todo:
            return self
        owned = executor is None
        ex = make_executor(workers) if owned else executor
        assert ex is not None
        width = max(1, int(max_in_flight or executor_width(ex)))
        bar = _Progress(progress, total, self)
        bar.update()
        try:
            stages = sorted({self.strategy.stage(i) for i in todo})
            for stage in stages:
                box = self._stage_box(stage)
                queue = [i for i in todo if self.strategy.stage(i) == stage]
                ex = self._run_stage(objective, queue, stage, box, ex, owned, width, pruner, bar)
        except BaseException:
            if owned:
                ex.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        if owned:
            ex.shutdown(wait=True)
        return self

    def _stage_box(self, stage: int) -> Box:
        """The box of ``stage``, recomputed from the stored trials (and stored)."""
        assert self.strategy is not None
        box: Box = {}
        if stage > 0:
            finished = self.trials()
            for s in range(1, stage + 1):
                box = self.strategy.box(s, box, finished, self.maximize)
        self.storage.put_stage(self.name, stage, box)
        return box

    def _run_stage(
        self,
        objective: Objective,
        queue: list[int],
        stage: int,
        box: Box,
        ex: Executor,
        owned: bool,
        width: int,
        pruner: Pruner | None,
        bar: _Progress,
    ) -> Executor:
        assert self.strategy is not None and self.space is not None
        pending: dict[Future, TrialRecord] = {}
        curves: list[list[tuple[int, float]]] = []
        if pruner is not None:
            curves = [t.curve for t in self.trials() if t.status in ("complete", "pruned")]
        queue = list(queue)
        broken = False
        while queue or pending:
            while queue and len(pending) < width:
                number = queue.pop(0)
                rng, seed = trial_streams(self.seed, number)
                params, unit = self.strategy.params(number, self.space, rng, box)
                old = self.storage.trial(self.name, number)
                rec = TrialRecord(
                    number=number,
                    stage=stage,
                    params=params,
                    unit=unit,
                    seed=seed,
                    status="running",
                    started=time.time(),
                    attempts=(old.attempts if old else 0) + 1,
                )
                self.storage.put_trial(self.name, rec)
                others = list(curves) if pruner is not None else []
                fut = ex.submit(
                    run_trial, objective, number, stage, seed, params, pruner, others,
                    self.maximize,
                )  # fmt: skip
                pending[fut] = rec
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: pending[f].number):
                rec = pending.pop(fut)
                try:
                    res = fut.result()
                except Exception as e:  # the executor failed (a worker died, pickling...)
                    res = {
                        "status": "failed",
                        "error": f"{type(e).__name__}: {e}",
                        "finished": time.time(),
                    }
                    broken = broken or isinstance(e, BrokenProcessPool)
                for key, value in res.items():
                    setattr(rec, key, value)
                self.storage.put_trial(self.name, rec)
                if pruner is not None and rec.status in ("complete", "pruned"):
                    curves.append(rec.curve)
                bar.update(rec)
            if broken and owned:
                # A worker died (a crash in native code, out of memory): the trials in flight
                # are recorded as failed above; carry on with a fresh pool.
                ex.shutdown(wait=False, cancel_futures=True)
                ex = make_executor(width)
                broken = False
        return ex

    # panda
    def panda(self, factory: Any, params: Mapping[str, Any], **kwargs: Any) -> Any:
        """Start watching one model (see :class:`bnfast.tune.panda.Panda`)."""
        from bnfast.tune.panda import Panda

        return Panda(self, factory, params, **kwargs)

    def next_number(self) -> int:
        ts = self.trials()
        return ts[-1].number + 1 if ts else 0


def _version_text(version: str | None) -> str:
    return "(none recorded)" if version is None else repr(version)


class _Progress:
    """A one-line text progress bar: done/total, best score, failures and prunes."""

    def __init__(self, out: bool | IO[str], total: int, study: Study) -> None:
        self.out: IO[str] | None = sys.stderr if out is True else (out or None)
        self.total, self.study = total, study
        ts = [t for t in study.trials() if t.number < total]
        self.done = sum(t.done for t in ts)
        self.failed = sum(t.status == "failed" for t in ts)
        self.pruned = sum(t.status == "pruned" for t in ts)
        vals = [t.value for t in ts if t.status == "complete" and t.value is not None]
        self.best = (max if study.maximize else min)(vals) if vals else None

    def update(self, rec: TrialRecord | None = None) -> None:
        if rec is not None:
            self.done += 1
            self.failed += rec.status == "failed"
            self.pruned += rec.status == "pruned"
            if rec.status == "complete" and rec.value is not None:
                better = self.best is None or (
                    rec.value > self.best if self.study.maximize else rec.value < self.best
                )
                self.best = rec.value if better else self.best
        if self.out is None:
            return
        width = 30
        fill = int(width * self.done / self.total) if self.total else width
        best = "-" if self.best is None else f"{self.best:.4g}"
        self.out.write(
            f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total}"
            f"  best {best}  pruned {self.pruned}  failed {self.failed}"
        )
        self.out.flush()

    def close(self) -> None:
        if self.out is not None:
            self.out.write("\n")
            self.out.flush()


def random_search(objective: Objective, space: Space, n_trials: int, **kwargs: Any) -> Study:
    """Random search: ``Study(space, strategy="random", ...).optimize(objective, n_trials)``.

    Keyword arguments go to :class:`Study` (storage, name, seed, direction, objective_version)
    or to :meth:`Study.optimize` (executor, workers, pruner, max_in_flight, progress).
    """
    study_kw, run_kw = _split(kwargs)
    return Study(space, strategy="random", **study_kw).optimize(objective, n_trials, **run_kw)


def grid_search(
    objective: Objective, space: Space, points: int | Mapping[str, int] = 3, **kwargs: Any
) -> Study:
    """Grid search over ``points`` values per continuous parameter (every grid point)."""
    from bnfast.tune.strategies import GridSearch

    study_kw, run_kw = _split(kwargs)
    return Study(space, strategy=GridSearch(points), **study_kw).optimize(objective, None, **run_kw)


def coarse_to_fine(
    objective: Objective,
    space: Space,
    stages: int = 3,
    trials_per_stage: int = 20,
    top_k: int = 5,
    padding: float = 0.1,
    **kwargs: Any,
) -> Study:
    """Coarse-to-fine search: ``stages`` stages of ``trials_per_stage`` random trials."""
    from bnfast.tune.strategies import CoarseToFine

    study_kw, run_kw = _split(kwargs)
    strategy = CoarseToFine(trials_per_stage, top_k, padding)
    return Study(space, strategy=strategy, **study_kw).optimize(
        objective, stages * trials_per_stage, **run_kw
    )


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    study_keys = {"storage", "name", "seed", "direction", "objective_version"}
    return (
        {k: v for k, v in kwargs.items() if k in study_keys},
        {k: v for k, v in kwargs.items() if k not in study_keys},
    )
