"""The study: a named search stored in SQLite, and the driver loop that runs it."""

from __future__ import annotations

import copy
import csv
import math
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
    SerialExecutor,
    crosses_processes,
    executor_width,
    make_executor,
    run_trial,
)
from bnfast.tune.spaces import Box, Space, describe, scales
from bnfast.tune.storage import Storage, TrialRecord, _dumps
from bnfast.tune.strategies import Strategy, get_strategy, trial_streams

__all__ = ["Study", "StudyMismatch", "coarse_to_fine", "grid_search", "random_search"]


class StudyMismatch(ValueError):
    """A stored study of the same name was made with another seed, direction, strategy, space,
    objective version, objective setting or pruner: resuming it would mix trials that are not
    comparable."""


_NEW_STUDY = (
    "start a new study under another name (bnfast tune --study NAME; Study(name=...)) or in "
    "another file (--storage FILE)"
)


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
    settings : dict, optional
        Every other setting that changes a trial's result: the objective's fixed arguments
        (``epochs``, ``data_seed``...), the ISA it runs on (see
        :func:`bnfast.tune.digits.settings`). JSON values.
    metric : str
        The score's name, for tables and plot axes (``"validation accuracy"``).

    Reopening an existing study resumes it: the seed, direction, strategy, space, objective
    version, settings (and the pruner, checked by :meth:`optimize`) must match what is stored;
    otherwise a :class:`StudyMismatch` (a ValueError) names the first difference.
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
        settings: Mapping[str, Any] | None = None,
        metric: str = "score",
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        self.space = space
        self.storage = storage if isinstance(storage, Storage) else Storage(storage or ":memory:")
        self.name = name
        self.seed = int(seed)
        self.direction = direction
        self.objective_version = objective_version
        self.settings = _normal(dict(settings or {}))
        self.metric = metric
        self.strategy = get_strategy(strategy) if space is not None or strategy != "panda" else None
        if self.strategy is not None:
            self.strategy = copy.copy(self.strategy)
            self.strategy.seed = self.seed
        strategy_text = "panda" if self.strategy is None else self.strategy.describe()
        space_text = "" if space is None else describe(space)
        stored = self.storage.get_study(name)
        if stored is None:
            meta: dict[str, Any] = {"settings": self.settings, "metric": metric}
            if objective_version is not None:
                meta["objective_version"] = objective_version
            if isinstance(space, Mapping):
                meta["scales"] = scales(space)
            self.storage.create_study(name, self.seed, direction, strategy_text, space_text, meta)
            self.meta = meta
        else:
            self.meta = stored["meta"]
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
                        f"not {mine!r}; {_NEW_STUDY}"
                    )
            self._check_settings(stored["meta"])

    def _check_settings(self, meta: Mapping[str, Any]) -> None:
        where = f"study {self.name!r} in {self.storage.path}"
        if "settings" not in meta:
            if self.settings:
                raise StudyMismatch(
                    f"{where} was stored before its settings were recorded, so its trials may "
                    f"have run with other settings than {_settings_text(self.settings)}; "
                    + _NEW_STUDY
                )
            return
        theirs = meta["settings"]
        for key in sorted(set(theirs) | set(self.settings)):
            a, b = theirs.get(key, "(not set)"), self.settings.get(key, "(not set)")
            if a != b:
                raise StudyMismatch(
                    f"{where} was run with {key}={a!r}, not {key}={b!r}: its stored trials "
                    f"would be reused as if run with {key}={b!r}; " + _NEW_STUDY
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
        self.meta = info["meta"]
        self.settings = info["meta"].get("settings", {})
        self.metric = info["meta"].get("metric", "score")
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

    # export
    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per trial: number, stage, status, value, ``params_<name>`` columns,
        ``metrics_<name>`` columns, seed, attempts, started, finished, duration, worker, error."""
        trials = self.trials()
        params: list[str] = []
        metrics: list[str] = []
        for t in trials:
            params += [k for k in t.params if k not in params]
            metrics += [k for k in t.metrics if k not in metrics]
        out = []
        for t in trials:
            row: dict[str, Any] = {"number": t.number, "stage": t.stage, "status": t.status,
                                   "value": t.value}  # fmt: skip
            row.update({f"params_{k}": t.params.get(k) for k in params})
            row.update({f"metrics_{k}": t.metrics.get(k) for k in metrics})
            row.update(seed=t.seed, attempts=t.attempts, started=t.started, finished=t.finished,
                       duration=t.duration, worker=t.worker, error=t.error)  # fmt: skip
            out.append(row)
        return out

    def trials_dataframe(self) -> Any:
        """The trials as a :class:`pandas.DataFrame` (the columns of :meth:`rows`); needs pandas."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "trials_dataframe needs pandas (pip install pandas); Study.to_csv does not"
            ) from e
        return pd.DataFrame(self.rows()).set_index("number")

    def to_csv(self, path: str | Path) -> Path:
        """Write every trial (the columns of :meth:`rows`) to a CSV file; returns the path."""
        rows = self.rows()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number"])
            w.writeheader()
            w.writerows(rows)
        return path

    def importance(self, **kwargs: Any) -> dict[str, float]:
        """Each parameter's share of the score's variance (see
        :func:`bnfast.tune.results.importance`; needs scikit-learn)."""
        from bnfast.tune.results import importance

        return importance(self.trials(), **kwargs)

    # ask and tell
    def ask(self) -> TrialRecord:
        """The next trial's parameters for an objective run elsewhere; stored as ``running``.

        The trial gets the next number and the strategy's parameters and seed for that number
        (the same as :meth:`optimize` would give it). Report its result with :meth:`tell`.
        Coarse-to-fine computes a stage's box from the trials finished when its first trial
        is asked: tell every trial of a stage before asking for the next stage's.
        """
        if self.strategy is None or self.space is None:
            raise ValueError("this study has no space or strategy to ask from")
        number = self.next_number()
        stage = self.strategy.stage(number)
        box = self.stages().get(stage) if stage else {}
        if box is None:
            box = self._stage_box(stage)
        rng, seed = trial_streams(self.seed, number)
        params, unit = self.strategy.params(number, self.space, rng, box)
        rec = TrialRecord(number=number, stage=stage, params=params, unit=unit, seed=seed,
                          status="running", started=time.time(), attempts=1)  # fmt: skip
        self.storage.put_trial(self.name, rec)
        return rec

    def tell(
        self,
        trial: TrialRecord | int,
        value: float | None = None,
        *,
        status: str = "complete",
        metrics: Mapping[str, Any] | None = None,
        curve: list[tuple[int, float]] | None = None,
        error: str | None = None,
    ) -> TrialRecord:
        """Record the result of an asked trial (``status`` complete, pruned or failed).

        A complete trial needs a finite ``value``; a non-finite one records a failed trial.
        """
        number = trial if isinstance(trial, int) else trial.number
        rec = self.storage.trial(self.name, number)
        if rec is None:
            raise ValueError(f"study {self.name!r} has no trial {number}: ask() for one")
        if rec.done:
            raise ValueError(f"trial {number} of study {self.name!r} is already {rec.status}")
        if status not in ("complete", "pruned", "failed"):
            raise ValueError(f"status must be complete, pruned or failed, got {status!r}")
        if status == "complete" and (value is None or not math.isfinite(float(value))):
            status, error = "failed", error or f"non-finite value {value!r}"
            value = None
        rec.status, rec.value = status, None if value is None else float(value)
        rec.metrics, rec.curve, rec.error = dict(metrics or {}), list(curve or []), error
        rec.finished = time.time()
        rec.duration = None if rec.started is None else rec.finished - rec.started
        self.storage.put_trial(self.name, rec)
        return rec

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
        threads: int | str | None = "auto",
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
            Runs the trials; not shut down here. Default: in this process, or with ``workers``
            a local process pool (:func:`make_executor`; the script that starts one needs an
            ``if __name__ == "__main__":`` guard and an objective importable from a module).
        workers : int, optional
            Local worker processes when no ``executor`` is given (1 or None: in process).
        pruner : Pruner, optional
            Early stopping from the reported curves.
        max_in_flight : int, optional
            Trials submitted at once (default: the executor's worker count).
        progress : bool or file
            Draw one progress bar (on stderr for True): trials done, best so far, ETA.
        threads : int, None or "auto"
            The thread budget of each trial (:func:`bnfast.tune.runner.thread_budget`: BLAS,
            OpenMP and bnfast's kernels). ``"auto"``: 1 when trials run in other processes (a
            process pool, Dask), no limit in process; None: no limit.
        """
        if self.strategy is None or self.space is None:
            raise ValueError("this study has no space or strategy to optimize")
        total = self.strategy.total(n_trials, self.space)
        self._check_pruner(pruner)
        existing = {t.number: t for t in self.trials()}
        todo = [i for i in range(total) if not (i in existing and existing[i].done)]
        if not todo:
            return self
        owned = executor is None
        if threads == "auto":
            pool = workers is not None and int(workers) > 1
            remote = not owned and crosses_processes(executor)  # type: ignore[arg-type]
            threads = 1 if (owned and pool) or remote else None
        if owned:
            ex = SerialExecutor() if workers is None else make_executor(workers, threads)  # type: ignore[arg-type]
        else:
            ex = executor
        assert ex is not None
        self._threads = threads
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
                    self.maximize, self._threads,
                )  # fmt: skip
                pending[fut] = rec
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: pending[f].number):
                rec = pending.pop(fut)
                try:
                    res = fut.result()
                except Exception as e:  # the executor failed (a worker died, pickling...)
                    hint = ""
                    if isinstance(e, BrokenProcessPool):
                        hint = (
                            " (a process pool needs the objective importable from a module and "
                            "the script's code under `if __name__ == '__main__':`; in a notebook "
                            "run in process: workers=None)"
                        )
                    res = {
                        "status": "failed",
                        "error": f"{type(e).__name__}: {e}{hint}",
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
                ex = make_executor(width, self._threads)
                broken = False
        return ex

    def _check_pruner(self, pruner: Pruner | None) -> None:
        """The pruner changes results (which trials stop early): part of the identity."""
        mine = None if pruner is None else repr(pruner)
        if "pruner" not in self.meta:
            if self.trials():
                return  # stored before pruners were recorded
            self.meta["pruner"] = mine
            self.storage.set_meta(self.name, self.meta)
        elif self.meta["pruner"] != mine:
            raise StudyMismatch(
                f"study {self.name!r} in {self.storage.path} was run with pruner="
                f"{self.meta['pruner']!r}, not pruner={mine!r}; " + _NEW_STUDY
            )

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


def _normal(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as stored (JSON values, sorted keys), so stored and new ones compare equal."""
    import json

    return dict(sorted(json.loads(_dumps(settings)).items()))


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in settings.items())


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
        self.start, self.run_done = time.perf_counter(), 0

    def update(self, rec: TrialRecord | None = None) -> None:
        if rec is not None:
            self.done += 1
            self.run_done += 1
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
        eta = "-"
        if self.run_done:
            left = (time.perf_counter() - self.start) / self.run_done * (self.total - self.done)
            eta = f"{int(left) // 60}m{int(left) % 60:02d}s"
        self.out.write(
            f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total}"
            f"  best {best}  pruned {self.pruned}  failed {self.failed}  ETA {eta}"
        )
        self.out.flush()

    def close(self) -> None:
        if self.out is not None:
            self.out.write("\n")
            self.out.flush()


def random_search(objective: Objective, space: Space, n_trials: int, **kwargs: Any) -> Study:
    """Random search: ``Study(space, strategy="random", ...).optimize(objective, n_trials)``.

    Keyword arguments go to :class:`Study` (storage, name, seed, direction, objective_version,
    settings, metric) or to :meth:`Study.optimize` (executor, workers, pruner, max_in_flight,
    progress, threads).
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
    study_keys = {"storage", "name", "seed", "direction", "objective_version", "settings", "metric"}
    return (
        {k: v for k, v in kwargs.items() if k in study_keys},
        {k: v for k, v in kwargs.items() if k not in study_keys},
    )
