"""Search strategies: which parameters trial ``i`` gets.

Trial ``i`` draws from its own random stream ``SeedSequence(study_seed, spawn_key=(i,))``
(the same as ``SeedSequence(study_seed).spawn(i + 1)[i]``): its first child samples the
parameters, its second gives the trial's training seed. Nothing depends on the worker count or
on the order in which trials finish, and a resumed or extended study continues the stream
(trial 50 of a study run twice is the same trial 50).

Quasi-random search (Sobol, Halton; scrambled, :mod:`scipy.stats.qmc`) gives trial ``i`` the
``i``-th point of one low-discrepancy sequence seeded by the study seed, on the same warped
scales: again nothing depends on the worker count. A Sobol sequence is balanced at powers of
two: the strategy draws the sequence in power-of-two blocks (``random_base2``, so SciPy never
warns) and trial ``i`` takes point ``i``, so a study of ``n`` trials is the first ``n`` points
of the sequence and extending it continues the sequence; choose 16, 32, 64... trials for the
balance property.

Coarse-to-fine adds stages: stage ``s`` samples its trials in a box of the warped (unit) space
computed from the trials of stages ``< s``, which are all finished before stage ``s`` starts.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bnfast.tune.spaces import Box, Param, Space, grid_points, sample
from bnfast.tune.storage import TrialRecord

__all__ = [
    "CoarseToFine",
    "GridSearch",
    "QuasiRandomSearch",
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
    #: the study's seed (set by :class:`bnfast.tune.Study`), for strategies that draw a sequence
    #: shared by all trials.
    seed: int = 0

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
    """The Cartesian grid (kept for comparison with random search), in an order that covers
    every axis early.

    Trial ``n`` takes the grid point whose index along axis ``j`` is
    ``(d_j + d_0 + ... + d_{j-1}) mod k_j``, where ``d`` are the mixed-radix digits of ``n``
    (``d_0`` fastest): the first ``max k_j`` trials walk the diagonal, so every value of every
    axis is tried within them, and the whole grid is still visited once. Asking for fewer trials
    than grid points warns (a truncated grid is a poor design: prefer random search).

    Parameters
    ----------
    points : int or dict
        Values per continuous parameter, evenly spaced in warped space.
    """

    name = "grid"

    def __init__(self, points: int | Mapping[str, int] = 3) -> None:
        self.points = points
        self._cache: tuple[int, list[tuple[str, list[Any]]]] | None = None

    def _grid(self, space: Space) -> list[tuple[str, list[Any]]]:
        if self._cache is None or self._cache[0] != id(space):
            axes = grid_points(space, self.points, by_axis=True)
            self._cache = (id(space), axes)
        return self._cache[1]

    def total(self, n_trials: int | None, space: Space) -> int:
        axes = self._grid(space)
        n = math.prod(len(values) for _, values in axes)
        if n_trials is None:
            return n
        want = super().total(n_trials, space)
        if want < n:
            warnings.warn(
                f"grid search: {want} trials cover {want} of the {n} grid points (in an order "
                "that tries every value of every axis early); random search covers each axis "
                "better at the same budget",
                UserWarning,
                stacklevel=4,
            )
        return min(want, n)

    def params(
        self, number: int, space: Space, rng: np.random.Generator, box: Box
    ) -> tuple[dict[str, Any], dict[str, float]]:
        axes = self._grid(space)
        params, rest, shift = {}, int(number), 0
        for name, values in axes:
            k = len(values)
            digit, rest = rest % k, rest // k
            params[name] = values[(digit + shift) % k]
            shift += digit
        assert isinstance(space, Mapping)
        return params, _ordered_unit({k: space[k].warp(v) for k, v in params.items()}, space)

    def __repr__(self) -> str:
        return f"GridSearch(points={self.points!r}, order='covering')"


class _Coordinates:
    """Stands in for a Generator in :func:`sample`: ``random()`` returns fixed coordinates."""

    def __init__(self, point: np.ndarray) -> None:
        self._point, self._i = point, 0

    def random(self) -> float:
        if self._i >= len(self._point):
            raise ValueError("quasi-random search: the space asked for more parameters than it has")
        u = float(self._point[self._i])
        self._i += 1
        return u


@functools.lru_cache(maxsize=16)
def _qmc_block(kind: str, seed: int, dim: int, m: int) -> np.ndarray:
    """The first ``2**m`` points of the scrambled sequence of ``kind`` seeded by ``seed``."""
    from scipy.stats import qmc

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x514D43]))
    if kind == "sobol":
        return qmc.Sobol(dim, scramble=True, seed=rng).random_base2(m)
    return qmc.Halton(dim, scramble=True, seed=rng).random(1 << m)


def qmc_point(kind: str, seed: int, dim: int, number: int) -> np.ndarray:
    """Point ``number`` of the scrambled Sobol or Halton sequence in ``dim`` dimensions."""
    if kind not in ("sobol", "halton"):
        raise ValueError(f"unknown quasi-random sequence {kind!r}; choose sobol or halton")
    m = max(0, int(number).bit_length())  # the power-of-two block holding ``number``
    return _qmc_block(kind, int(seed), int(dim), m)[int(number)]


def _space_dim(space: Space) -> int:
    if not isinstance(space, Mapping):
        raise TypeError(
            "quasi-random search needs a dict space (the sequence's dimension is fixed; "
            "define-by-run spaces may ask for a varying number of parameters)"
        )
    return len(space)


class QuasiRandomSearch(Strategy):
    """Scrambled Sobol or Halton points (:mod:`scipy.stats.qmc`) on the warped scales.

    Trial ``i`` takes point ``i`` of one sequence seeded by the study seed, coordinate ``j``
    for the ``j``-th parameter of the (dict) space. See the module docstring on powers of two.
    """

    name = "quasi-random"

    def __init__(self, kind: str = "sobol") -> None:
        if kind not in ("sobol", "halton"):
            raise ValueError(f"unknown quasi-random sequence {kind!r}; choose sobol or halton")
        self.kind = kind

    def params(
        self, number: int, space: Space, rng: np.random.Generator, box: Box
    ) -> tuple[dict[str, Any], dict[str, float]]:
        point = qmc_point(self.kind, self.seed, _space_dim(space), number)
        params, unit, used = sample(space, _Coordinates(point), box)  # type: ignore[arg-type]
        return params, _ordered_unit(unit, used)

    def __repr__(self) -> str:
        return f"QuasiRandomSearch({self.kind!r})"


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
    sampler : {"random", "sobol", "halton"}
        How each stage samples its box: independent draws, or the points of one scrambled
        quasi-random sequence (trial ``i`` takes point ``i``) mapped into the box.

    A study extended with more trials adds stages of the same size.
    """

    name = "coarse-to-fine"

    def __init__(
        self,
        trials_per_stage: int = 20,
        top_k: int = 5,
        padding: float = 0.1,
        sampler: str = "random",
    ) -> None:
        if trials_per_stage < 1 or top_k < 1 or padding < 0:
            raise ValueError("CoarseToFine needs trials_per_stage >= 1, top_k >= 1, padding >= 0")
        if sampler not in ("random", "sobol", "halton"):
            raise ValueError(f"unknown sampler {sampler!r}; choose random, sobol or halton")
        self.trials_per_stage = int(trials_per_stage)
        self.top_k = int(top_k)
        self.padding = float(padding)
        self.sampler = sampler

    _PATTERN = re.compile(
        r"CoarseToFine\(trials_per_stage=(\d+), top_k=(\d+), padding=([^,)]+)"
        r"(?:, sampler='(\w+)')?\)"
    )

    @classmethod
    def parse(cls, text: str) -> CoarseToFine | None:
        """The strategy a study stored as ``text`` (its :meth:`describe`), or None."""
        m = cls._PATTERN.fullmatch(text)
        if m is None:
            return None
        return cls(int(m[1]), int(m[2]), float(m[3]), m[4] or "random")

    def params(
        self, number: int, space: Space, rng: np.random.Generator, box: Box
    ) -> tuple[dict[str, Any], dict[str, float]]:
        if self.sampler == "random":
            return super().params(number, space, rng, box)
        point = qmc_point(self.sampler, self.seed, _space_dim(space), number)
        params, unit, used = sample(space, _Coordinates(point), box)  # type: ignore[arg-type]
        return params, _ordered_unit(unit, used)

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
        sampler = "" if self.sampler == "random" else f", sampler={self.sampler!r}"
        return (
            f"CoarseToFine(trials_per_stage={self.trials_per_stage}, top_k={self.top_k}, "
            f"padding={self.padding}{sampler})"
        )


def get_strategy(strategy: str | Strategy, **kwargs: Any) -> Strategy:
    """A strategy object from a name (``"random"``, ``"grid"``, ``"coarse-to-fine"``) or itself."""
    if isinstance(strategy, Strategy):
        return strategy
    table: dict[str, Any] = {
        "random": RandomSearch,
        "grid": GridSearch,
        "sobol": functools.partial(QuasiRandomSearch, "sobol"),
        "halton": functools.partial(QuasiRandomSearch, "halton"),
        "coarse-to-fine": CoarseToFine,
        "coarse_to_fine": CoarseToFine,
    }
    if strategy not in table:
        raise ValueError(
            f"unknown strategy {strategy!r}; choose from random, grid, sobol, halton, "
            "coarse-to-fine"
        )
    return table[strategy](**kwargs)
