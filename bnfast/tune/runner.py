"""Running trials: the worker side and the executors ("caviar": many models in parallel).

The objective protocol is ``objective(params, report)``: ``params`` is a dict of values,
``report(step, value)`` records a point of the learning curve (and may stop the trial through
the pruner, raising :class:`~bnfast.tune.pruning.TrialPruned`). ``report`` also carries the
trial's identity: ``report.number``, ``report.stage``, ``report.seed`` (the training seed,
from the study seed and the trial number only) and ``report.rng()``. The objective returns the
score, or a dict with a ``"score"`` key and other metrics, or None (the last reported value).

Any :class:`concurrent.futures.Executor` runs trials: :class:`SerialExecutor` (in process, the
Python API's default), a local process pool (:func:`make_executor`, ``bnfast tune``'s default,
one worker per core), a thread pool, or a Dask cluster through :func:`dask_executor`. The
objective and its results must be picklable for executors that cross processes.

Thread budget: N worker processes on N cores each running NumPy's BLAS and bnfast's OpenMP on
every core oversubscribe the machine (two workers ran slower than one). Every trial in a worker
process therefore runs under a budget of ``threads`` threads (default 1): BLAS and OpenMP
limited through ``threadpoolctl`` and bnfast's own pool through :func:`bnfast.set_num_threads`,
restored after the trial. Set it with ``Study.optimize(threads=...)`` or
``bnfast tune --threads-per-worker N`` (``workers * threads`` should not exceed the cores).

Orphans: a process-pool worker exits when its driver dies (``kill -9`` included): a thread in
each worker watches the parent process.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from bnfast.tune.pruning import Pruner, TrialPruned

__all__ = [
    "Report",
    "SerialExecutor",
    "crosses_processes",
    "dask_executor",
    "make_executor",
    "run_trial",
    "thread_budget",
]

Objective = Callable[[dict, "Report"], Any]


class Report:
    """The ``report`` callable handed to an objective."""

    def __init__(
        self,
        number: int,
        stage: int,
        seed: int,
        params: dict[str, Any],
        pruner: Pruner | None = None,
        others: Sequence[Sequence[tuple[int, float]]] = (),
        maximize: bool = True,
    ) -> None:
        self.number, self.stage, self.seed, self.params = number, stage, seed, params
        self.curve: list[tuple[int, float]] = []
        self._pruner, self._others, self._maximize = pruner, others, maximize

    def __call__(self, step: int, value: float) -> None:
        """Record ``value`` at ``step``; raises TrialPruned if the pruner stops the trial."""
        step, value = int(step), float(value)
        if self.curve and step <= self.curve[-1][0]:
            raise ValueError(f"report steps must increase: {step} after {self.curve[-1][0]}")
        self.curve.append((step, value))
        if self._pruner is not None and self._pruner.should_prune(
            step, self.curve, self._others, self._maximize
        ):
            raise TrialPruned(f"pruned at step {step} by {self._pruner!r}")

    def rng(self) -> np.random.Generator:
        """A generator seeded with this trial's training seed."""
        return np.random.default_rng(self.seed)


def run_trial(
    objective: Objective,
    number: int,
    stage: int,
    seed: int,
    params: dict[str, Any],
    pruner: Pruner | None = None,
    others: Sequence[Sequence[tuple[int, float]]] = (),
    maximize: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one trial (in a worker); never raises for a failing objective.

    ``threads``: run under :func:`thread_budget` (None: no limit). Returns a dict with ``status`` (complete, pruned or failed), ``value``, ``metrics``,
    ``curve``, ``error``, ``started``, ``finished``, ``duration`` and ``worker``.
    """
    report = Report(number, stage, seed, dict(params), pruner, others, maximize)
    started = time.time()
    t0 = time.perf_counter()
    status, value, metrics, error = "complete", None, {}, None
    try:
        with thread_budget(threads):
            out = objective(dict(params), report)
        if isinstance(out, dict):
            metrics = {k: v for k, v in out.items() if k != "score"}
            if "score" not in out:
                raise ValueError("an objective returning a dict must include 'score'")
            out = out["score"]
        if out is None:
            if not report.curve:
                raise ValueError("the objective returned None and reported nothing")
            out = report.curve[-1][1]
        value = float(out)
        if not math.isfinite(value):
            raise ValueError(f"the objective returned a non-finite score {value}")
    except TrialPruned as e:
        status, error = "pruned", str(e) or None
        value = report.curve[-1][1] if report.curve else None
    except Exception:
        status, value, error = "failed", None, traceback.format_exc()
    return {
        "status": status,
        "value": value,
        "metrics": metrics,
        "curve": report.curve,
        "error": error,
        "started": started,
        "finished": time.time(),
        "duration": time.perf_counter() - t0,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


@contextlib.contextmanager
def thread_budget(threads: int | None) -> Iterator[None]:
    """Limit BLAS, OpenMP and bnfast's kernels to ``threads`` threads inside the block.

    Uses ``threadpoolctl`` (installed with scikit-learn; the ``tune`` extra) for the BLAS and
    OpenMP libraries already loaded, and :func:`bnfast.set_num_threads`; both are restored on
    exit. The limits are per process: use it in worker processes, not in threads of one.
    None does nothing.
    """
    if threads is None:
        yield
        return
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        else:
            stack.enter_context(threadpool_limits(limits=threads))
        try:
            import bnfast
        except ImportError:  # pragma: no cover - a user's objective without the kernels
            pass
        else:
            previous = bnfast.get_num_threads()
            bnfast.set_num_threads(threads)
            stack.callback(bnfast.set_num_threads, previous)
        yield


def _init_worker(threads: int | None, parent: int) -> None:
    """Process-pool worker start: the thread environment for its children, and a watchdog
    that ends the worker when the driver (``parent``) is gone."""
    if threads is not None:
        for name in _BLAS_ENV:
            os.environ[name] = str(int(threads))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int, interval: float = 0.2) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent:  # reparented: the driver died (kill -9 included)
            os._exit(1)


class SerialExecutor(Executor):
    """Runs each task in the calling process at submission (no pickling; for debugging)."""

    _max_workers = 1

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            f.set_exception(e)
        return f


def make_executor(workers: int | None = None, threads: int | None = 1) -> Executor:
    """A local executor: ``workers`` processes (default: the cores), or in process for 1.

    The pool uses the ``spawn`` start method: workers import the objective by name, so the
    search behaves the same on Linux, macOS and Windows and never forks a threaded driver.
    Its workers exit when the driver dies, and set the BLAS/OpenMP environment variables to
    ``threads`` for any process they start (the trials themselves run under
    :func:`thread_budget`, applied by :meth:`bnfast.tune.Study.optimize`).
    """
    n = (os.cpu_count() or 1) if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    if n == 1:
        return SerialExecutor()
    return ProcessPoolExecutor(
        max_workers=n,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, os.getpid()),
    )


def crosses_processes(executor: Executor) -> bool:
    """Whether ``executor`` runs trials in other processes (a process pool, Dask)."""
    return isinstance(executor, ProcessPoolExecutor) or hasattr(executor, "_client")


def dask_executor(address: Any) -> tuple[Executor, Any]:
    """``distributed.Client(address).get_executor()`` and the client (close it when done).

    ``address`` is a scheduler address (``"tcp://scheduler:8786"``) or a cluster object
    (``distributed.LocalCluster()``). Needs the ``tune-dask`` extra.
    """
    try:
        import distributed
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "a Dask scheduler needs the 'distributed' package: pip install 'bnfast[tune-dask]'"
        ) from e
    client = distributed.Client(address)
    return client.get_executor(pure=False), client


def executor_width(executor: Executor) -> int:
    """How many trials to keep in flight on ``executor``."""
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(executor, "_client", None)  # distributed's ClientExecutor
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:
            pass
    return os.cpu_count() or 1
