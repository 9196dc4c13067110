"""Hyperparameter search: the right scales, random and coarse-to-fine, one model or many.

- Spaces (:mod:`bnfast.tune.spaces`): :class:`Uniform`, :class:`IntUniform`, :class:`Choice`,
  :class:`PowerOfTwo`, :class:`LogUniform` (learning rates), :class:`OneMinusLogUniform`
  (momentum and averaging betas); a dict of them or a define-by-run callable.
- Strategies: :func:`grid_search`, :func:`random_search`, :class:`QuasiRandomSearch` (Sobol,
  Halton), :func:`coarse_to_fine`; trial ``i``'s parameters and seed depend only on the study
  seed and ``i``.
- Caviar: :meth:`Study.optimize` runs ``objective(params, report)`` on any
  :class:`concurrent.futures.Executor` (in process by default, ``workers=N`` local processes
  with one thread each, Dask beyond one machine), with optional pruning
  (:class:`MedianPruner`, :class:`SuccessiveHalving`); or :meth:`Study.ask` /
  :meth:`Study.tell` for objectives run elsewhere.
- A study's identity: seed, direction, strategy, space, objective version and settings
  (epochs, ISA...) and pruner; reopening with another is a :class:`StudyMismatch`.
- Panda: :class:`Panda` trains one model epoch by epoch, watched, with hyperparameter changes
  and rewinds to checkpoints recorded in the study.
- Storage in one SQLite file, resumable; results tables, plots, CSV and pandas export and
  hyperparameter importance (:mod:`bnfast.tune.results`).

The digits network objective (:mod:`bnfast.tune.digits`) and the batch-norm experiment
(:mod:`bnfast.tune.experiment`) are imported on demand.
"""

from bnfast.tune.panda import Panda
from bnfast.tune.pruning import MedianPruner, Pruner, SuccessiveHalving, TrialPruned
from bnfast.tune.runner import Report, SerialExecutor, dask_executor, make_executor
from bnfast.tune.spaces import (
    Choice,
    IntUniform,
    LogUniform,
    OneMinusLogUniform,
    Param,
    PowerOfTwo,
    Uniform,
)
from bnfast.tune.storage import Storage, TrialRecord
from bnfast.tune.strategies import (
    CoarseToFine,
    GridSearch,
    QuasiRandomSearch,
    RandomSearch,
    Strategy,
)
from bnfast.tune.study import Study, StudyMismatch, coarse_to_fine, grid_search, random_search

__all__ = [
    "Choice",
    "CoarseToFine",
    "GridSearch",
    "IntUniform",
    "LogUniform",
    "MedianPruner",
    "OneMinusLogUniform",
    "Panda",
    "Param",
    "PowerOfTwo",
    "Pruner",
    "QuasiRandomSearch",
    "RandomSearch",
    "Report",
    "SerialExecutor",
    "Storage",
    "Strategy",
    "Study",
    "StudyMismatch",
    "SuccessiveHalving",
    "TrialPruned",
    "TrialRecord",
    "Uniform",
    "coarse_to_fine",
    "dask_executor",
    "grid_search",
    "make_executor",
    "random_search",
]
