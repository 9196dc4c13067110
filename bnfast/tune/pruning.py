"""Early stopping of poor trials from their learning curves.

A trial reports ``report(step, value)``; after each report the pruner compares the trial with
the curves of trials that had finished when it was submitted (a snapshot shipped with the
trial, so the decision is made inside the worker, with any executor and no messages back to
the driver). A pruned trial stops with :class:`TrialPruned` and is stored as ``pruned`` with
its curve and its last reported value.

Decisions depend on which trials had finished at submission, so with several workers the set
of pruned trials can depend on timing; the parameters and seeds never do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MedianPruner", "Pruner", "SuccessiveHalving", "TrialPruned"]

Curve = Sequence[tuple[int, float]]


class TrialPruned(Exception):
    """Raised by ``report`` when the pruner stops a trial (an objective may also raise it)."""


class Pruner:
    """Base class: ``should_prune(step, curve, others, maximize)``."""

    def should_prune(
        self, step: int, curve: Curve, others: Sequence[Curve], maximize: bool
    ) -> bool:
        raise NotImplementedError


def _at(curve: Curve, step: int) -> float | None:
    for s, v in curve:
        if s == step and v is not None and math.isfinite(v):
            return v
    return None


def _best_so_far(curve: Curve, step: int, maximize: bool) -> float | None:
    vals = [v for s, v in curve if s <= step and v is not None and math.isfinite(v)]
    if not vals:
        return None
    return max(vals) if maximize else min(vals)


class MedianPruner(Pruner):
    """Median rule: stop a trial whose best value so far at step ``s`` is worse than the median
    of the other trials' values at step ``s``.

    Parameters
    ----------
    n_startup_trials : int
        Do not prune until this many other curves reach the step.
    n_warmup_steps : int
        Do not prune at steps below this.
    """

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0) -> None:
        self.n_startup_trials = int(n_startup_trials)
        self.n_warmup_steps = int(n_warmup_steps)

    def should_prune(
        self, step: int, curve: Curve, others: Sequence[Curve], maximize: bool
    ) -> bool:
        if step < self.n_warmup_steps:
            return False
        peers = sorted(v for c in others if (v := _at(c, step)) is not None)
        if len(peers) < max(1, self.n_startup_trials):
            return False
        own = _best_so_far(curve, step, maximize)
        if own is None:
            return True  # only NaNs so far
        n = len(peers)
        median = peers[n // 2] if n % 2 else 0.5 * (peers[n // 2 - 1] + peers[n // 2])
        return own < median if maximize else own > median

    def __repr__(self) -> str:
        return f"MedianPruner({self.n_startup_trials}, {self.n_warmup_steps})"


class SuccessiveHalving(Pruner):
    """Asynchronous successive halving: at the rungs ``min_step * eta**k`` a trial goes on only
    if its value is among the best ``1/eta`` of the values reached at that rung.

    Parameters
    ----------
    min_step : int
        The first rung.
    eta : int
        Keep ``1/eta`` of the trials at each rung (eta >= 2).
    min_peers : int
        Decide at a rung only once this many other curves reach it.
    """

    def __init__(self, min_step: int = 1, eta: int = 3, min_peers: int | None = None) -> None:
        if eta < 2 or min_step < 1:
            raise ValueError("SuccessiveHalving needs eta >= 2 and min_step >= 1")
        self.min_step, self.eta = int(min_step), int(eta)
        self.min_peers = self.eta if min_peers is None else int(min_peers)

    def is_rung(self, step: int) -> bool:
        r = self.min_step
        while r < step:
            r *= self.eta
        return r == step

    def should_prune(
        self, step: int, curve: Curve, others: Sequence[Curve], maximize: bool
    ) -> bool:
        if not self.is_rung(step):
            return False
        peers = [v for c in others if (v := _at(c, step)) is not None]
        if len(peers) < self.min_peers:
            return False
        own = _at(curve, step)
        if own is None:
            return True
        vals = sorted([*peers, own], reverse=maximize)
        keep = max(1, len(vals) // self.eta)
        cutoff = vals[keep - 1]
        return own < cutoff if maximize else own > cutoff

    def __repr__(self) -> str:
        return f"SuccessiveHalving(min_step={self.min_step}, eta={self.eta})"
