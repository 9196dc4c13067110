"""Search strategies: which parameters trial ``i`` gets.

Trial ``i`` draws from its own random stream ``SeedSequence(study_seed, spawn_key=(i,))``
(the same as ``SeedSequence(study_seed).spawn(i + 1)[i]``): its first child samples the
parameters, its second gives the trial's training seed. Nothing depends on the worker count or
on the order in which trials finish, and a resumed or extended study continues the stream
(trial 50 of a study run twice is the same trial 50).

Coarse-to-fine adds stages: stage ``s`` samples its trials in a box of the warped (unit) space
computed from the trials of stages ``< s``, which are all finished before stage ``s`` starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bnfast.tune.spaces import Box, Param, Space, grid_points, sample
from bnfast.tune.storage import TrialRecord

__all__ = [
    "CoarseToFine",
    "GridSearch",
    "RandomSearch",
    "Strategy",
    "get_strategy",
    "trial_streams",
]


def trial_streams(seed: int, number: int) -> tuple[np.random.Generator, int]:
    """Trial ``number``'s parameter generator and training seed, from ``(seed, number)`` only."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(number),))
    param_ss, train_ss = ss.spawn(2)
    return np.random.default_rng(param_ss), int(train_ss.generate_state(1, np.uint32)[0])


def _ordered_unit(unit: Mapping[str, float], used: Mapping[str, Param]) -> dict[str, float]:
    # Only ordered parameters have a meaningful coordinate for zooming and plotting.
    return {k: float(u) for k, u in unit.items() if used[k].ordered}


class Strategy:
    """Base class."""

    name = "strategy"

    def total(self, n_trials: int | None, space: Space) -> int:
        """How many trials a request for ``n_trials`` runs."""
        if n_trials is None:
            raise ValueError(f"{self.name} needs n_trials")
        if n_trials < 0:
            raise ValueError(f"n_trials must be >= 0, got {n_trials}")
        return int(n_trials)

    def stage(self, number: int) -> int:
        return 0

    def box(
        self,
        stage: int,
        previous: Box,
        finished: Sequence[TrialRecord],
        maximize: bool,
    ) -> Box:
        """The box of ``stage`` (> 0) from the previous box and the trials of earlier stages."""
        return {}

    def params(
        self, number: int, space: Space, rng: np.random.Generator, box: Box
    ) -> tuple[dict[str, Any], dict[str, float]]:
        params, unit, used = sample(space, rng, box)
        return params, _ordered_unit(unit, used)

    def describe(self) -> str:
        return repr(self)


class RandomSearch(Strategy):
    """Independent draws from the whole space."""

    name = "random"

    def __repr__(self) -> str:
        return "RandomSearch()"


class GridSearch(Strategy):
    """The Cartesian grid (kept for comparison with random search), in a fixed order.

    Parameters
    ----------
    points : int or dict
        Values per continuous parameter, evenly spaced in warped space.
    """

    name = "grid"

    def __init__(self, points: int | Mapping[str, int] = 3) -> None:
        self.points = points
        self._cache: tuple[int, list[dict[str, Any]]] | None = None

    def _grid(self, space: Space) -> list[dict[str, Any]]:
        if self._cache is None or self._cache[0] != id(space):
            self._cache = (id(space), grid_points(space, self.points))
        return self._cache[1]

    def total(self, n_trials: int | None, space: Space) -> int:
        n = len(self._grid(space))
        return n if n_trials is None else min(super().total(n_trials, space), n)

    def params(
        self, number: int, space: Space, rng: np.random.Generator, box: Box
    ) -> tuple[dict[str, Any], dict[str, float]]:
        params = dict(self._grid(space)[number])
        assert isinstance(space, Mapping)
        return params, _ordered_unit({k: space[k].warp(v) for k, v in params.items()}, space)

    def __repr__(self) -> str:
        return f"GridSearch(points={self.points!r})"


class CoarseToFine(Strategy):
    """Stages of random trials, each zoomed around the best trials so far.

    After each stage, the box (in warped space) becomes the bounding box of the ``top_k`` best
    complete trials so far, padded on each side by ``padding`` times the previous box's width
    and clipped to the original ``[0, 1]``. Unordered choices are not zoomed. Each trial records
    its stage; the boxes are stored with the study.

    Parameters
    ----------
    trials_per_stage : int
        Trials ``s * trials_per_stage ...`` form stage ``s``; a longer run adds stages.
    top_k : int
        How many of the best trials define the next box.
    padding : float
        Margin added on each side, as a fraction of the previous box's width.
    """

    name = "coarse-to-fine"

    def __init__(self, trials_per_stage: int = 20, top_k: int = 5, padding: float = 0.1) -> None:
        if trials_per_stage < 1 or top_k < 1 or padding < 0:
            raise ValueError("CoarseToFine needs trials_per_stage >= 1, top_k >= 1, padding >= 0")
        self.trials_per_stage = int(trials_per_stage)
        self.top_k = int(top_k)
        self.padding = float(padding)

    def stage(self, number: int) -> int:
        return number // self.trials_per_stage

    def box(
        self,
        stage: int,
        previous: Box,
        finished: Sequence[TrialRecord],
        maximize: bool,
    ) -> Box:
        done = [
            t
            for t in finished
            if t.stage < stage and t.status == "complete" and t.value is not None
        ]
        if not done:
            return dict(previous)
        sign = -1.0 if maximize else 1.0
        best = sorted(done, key=lambda t: (sign * t.value, t.number))[: self.top_k]
        box = dict(previous)
        names = {k for t in best for k in t.unit}
        for name in sorted(names):
            us = [t.unit[name] for t in best if name in t.unit]
            lo_prev, hi_prev = previous.get(name, (0.0, 1.0))
            pad = self.padding * (hi_prev - lo_prev)
            lo, hi = max(0.0, min(us) - pad), min(1.0, max(us) + pad)
            box[name] = (lo, hi)
        return box

    def __repr__(self) -> str:
        return (
            f"CoarseToFine(trials_per_stage={self.trials_per_stage}, top_k={self.top_k}, "
            f"padding={self.padding})"
        )


def get_strategy(strategy: str | Strategy, **kwargs: Any) -> Strategy:
    """A strategy object from a name (``"random"``, ``"grid"``, ``"coarse-to-fine"``) or itself."""
    if isinstance(strategy, Strategy):
        return strategy
    table = {
        "random": RandomSearch,
        "grid": GridSearch,
        "coarse-to-fine": CoarseToFine,
        "coarse_to_fine": CoarseToFine,
    }
    if strategy not in table:
        raise ValueError(f"unknown strategy {strategy!r}; choose from random, grid, coarse-to-fine")
    return table[strategy](**kwargs)
