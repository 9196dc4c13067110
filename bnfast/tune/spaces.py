"""Search spaces: each parameter samples on its own scale through a warp of the unit interval.

A parameter maps a unit coordinate ``u`` in ``[0, 1]`` to a value (:meth:`Param.unwarp`) and a
value back to ``u`` (:meth:`Param.warp`). Sampling is ``unwarp(U(0, 1))``; coarse-to-fine zooms
into a sub-box of the unit cube; plots put log-scaled parameters on a log axis. Sampling, zooming
and plotting therefore all happen in the same warped space, where "each decade equally likely"
is simply "uniform".

A space is either a dict ``{name: Param}`` (sampled in insertion order) or a callable
``space(suggest) -> dict`` that asks for parameters by run (define-by-run), which allows
conditional parameters::

    def space(suggest):
        n_layers = suggest("layers", IntUniform(2, 4))
        return {"layers": n_layers,
                **{f"units{i}": suggest(f"units{i}", IntUniform(50, 100)) for i in range(n_layers)}}
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

__all__ = [
    "Choice",
    "IntUniform",
    "LogUniform",
    "OneMinusLogUniform",
    "Param",
    "PowerOfTwo",
    "Space",
    "Uniform",
    "grid_points",
    "sample",
    "scales",
]

Box = dict[str, tuple[float, float]]


class Param:
    """A hyperparameter: a warp between the unit interval and its values.

    Subclasses define :meth:`unwarp` (``u`` in [0, 1] -> value) and :meth:`warp` (value -> ``u``).
    """

    #: plots use a log axis for the value (LogUniform, PowerOfTwo).
    log_scale: bool = False
    #: the axis plots draw it on, stored with a study: "linear", "int", "log", "log2",
    #: "one-minus-log" (log axis of 1 - value) or "choice".
    scale: str = "linear"
    #: coarse-to-fine may shrink this parameter's interval (False for unordered choices).
    ordered: bool = True

    def unwarp(self, u: float) -> Any:
        raise NotImplementedError

    def warp(self, value: Any) -> float:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, low: float = 0.0, high: float = 1.0) -> Any:
        """Draw a value with its unit coordinate uniform in ``[low, high]``."""
        return self.unwarp(low + (high - low) * rng.random())

    def grid(self, n: int) -> list[Any]:
        """``n`` values evenly spaced in warped space (distinct values only)."""
        if n < 1:
            raise ValueError(f"grid size must be >= 1, got {n}")
        us = [0.5] if n == 1 else np.linspace(0.0, 1.0, n).tolist()
        out: list[Any] = []
        for u in us:
            v = self.unwarp(u)
            if v not in out:
                out.append(v)
        return out

    def describe(self) -> str:
        return repr(self)


def _check_unit(u: float) -> float:
    u = float(u)
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"unit coordinate must lie in [0, 1], got {u}")
    return u


class Uniform(Param):
    """``x ~ U(a, b)``; warp ``u = (x - a) / (b - a)``."""

    def __init__(self, a: float, b: float) -> None:
        a, b = float(a), float(b)
        if not (math.isfinite(a) and math.isfinite(b)) or not a < b:
            raise ValueError(f"Uniform needs finite a < b, got a={a}, b={b}")
        self.a, self.b = a, b

    def unwarp(self, u: float) -> float:
        return self.a + (self.b - self.a) * _check_unit(u)

    def warp(self, value: Any) -> float:
        return min(1.0, max(0.0, (float(value) - self.a) / (self.b - self.a)))

    def __repr__(self) -> str:
        return f"Uniform({self.a!r}, {self.b!r})"


class IntUniform(Param):
    """Integer ``k`` uniform on ``{a, ..., b}`` (hidden units 50-100, layers 2-4).

    The unit interval is cut into ``b - a + 1`` equal bins, ``k = a + floor(u (b - a + 1))``;
    ``warp(k)`` is the centre of ``k``'s bin, so ``unwarp(warp(k)) == k``.
    """

    scale = "int"

    def __init__(self, a: int, b: int) -> None:
        if int(a) != a or int(b) != b or not a <= b:
            raise ValueError(f"IntUniform needs integers a <= b, got a={a}, b={b}")
        self.a, self.b = int(a), int(b)

    @property
    def size(self) -> int:
        return self.b - self.a + 1

    def unwarp(self, u: float) -> int:
        return self.a + min(int(_check_unit(u) * self.size), self.size - 1)

    def warp(self, value: Any) -> float:
        k = int(value)
        if not self.a <= k <= self.b:
            raise ValueError(f"{value} is outside [{self.a}, {self.b}]")
        return (k - self.a + 0.5) / self.size

    def __repr__(self) -> str:
        return f"IntUniform({self.a}, {self.b})"


class PowerOfTwo(Param):
    """A power of two ``2^k`` with ``k`` uniform on ``{log2 a, ..., log2 b}`` (mini-batch sizes)."""

    log_scale = True
    scale = "log2"

    def __init__(self, a: int, b: int) -> None:
        for x in (a, b):
            if int(x) != x or x < 1 or int(x) & (int(x) - 1):
                raise ValueError(f"PowerOfTwo bounds must be powers of two, got {x}")
        if not a <= b:
            raise ValueError(f"PowerOfTwo needs a <= b, got a={a}, b={b}")
        self.a, self.b = int(a), int(b)
        self._exp = IntUniform(self.a.bit_length() - 1, self.b.bit_length() - 1)

    def unwarp(self, u: float) -> int:
        return 1 << self._exp.unwarp(u)

    def warp(self, value: Any) -> float:
        v = int(value)
        if v < 1 or v & (v - 1):
            raise ValueError(f"{value} is not a power of two")
        return self._exp.warp(v.bit_length() - 1)

    def __repr__(self) -> str:
        return f"PowerOfTwo({self.a}, {self.b})"


class LogUniform(Param):
    """``alpha = 10^r`` with ``r ~ U(log10 a, log10 b)``: each decade equally likely.

    ``LogUniform(1e-4, 1)`` draws ``r ~ U(-4, 0)``, ``alpha = 10^r``: as many samples in
    ``[1e-4, 1e-3]`` as in ``[0.1, 1]`` (uniform sampling would put 90% in the last decade).
    Warp: ``u = (log10 alpha - log10 a) / (log10 b - log10 a)``.
    """

    log_scale = True
    scale = "log"

    def __init__(self, a: float, b: float) -> None:
        a, b = float(a), float(b)
        if not (0.0 < a < b < math.inf):
            raise ValueError(f"LogUniform needs 0 < a < b, got a={a}, b={b}")
        self.a, self.b = a, b
        self._lo, self._hi = math.log10(a), math.log10(b)

    def unwarp(self, u: float) -> float:
        r = self._lo + (self._hi - self._lo) * _check_unit(u)
        return min(self.b, max(self.a, 10.0**r))

    def warp(self, value: Any) -> float:
        r = math.log10(float(value))
        return min(1.0, max(0.0, (r - self._lo) / (self._hi - self._lo)))

    def __repr__(self) -> str:
        return f"LogUniform({self.a!r}, {self.b!r})"


class OneMinusLogUniform(Param):
    """``beta = 1 - 10^r`` with ``r ~ U(log10(1 - b), log10(1 - a))``: log scale in ``1 - beta``.

    For momentum and averaging coefficients, where the sensitivity grows as ``beta -> 1``
    (``1 / (1 - beta)`` is the averaging window: 0.9 -> 10 steps, 0.999 -> 1000 steps).
    ``OneMinusLogUniform(0.9, 0.999)`` draws ``r ~ U(-3, -1)``, ``beta = 1 - 10^r``, so half
    of the samples lie above 0.99 (sampling ``beta`` uniformly on [0.9, 0.999] would put
    about 9% there). Warp: ``u = (log10(1 - beta) - log10(1 - a)) / (log10(1 - b) - log10(1 - a))``,
    increasing in ``beta`` (``u = 0`` is ``a``, ``u = 1`` is ``b``).
    """

    scale = "one-minus-log"

    def __init__(self, a: float, b: float) -> None:
        a, b = float(a), float(b)
        if not (-math.inf < a < b < 1.0):
            raise ValueError(f"OneMinusLogUniform needs a < b < 1, got a={a}, b={b}")
        self.a, self.b = a, b
        self._r0, self._r1 = math.log10(1.0 - a), math.log10(1.0 - b)

    def unwarp(self, u: float) -> float:
        r = self._r0 + (self._r1 - self._r0) * _check_unit(u)
        return min(self.b, max(self.a, 1.0 - 10.0**r))

    def warp(self, value: Any) -> float:
        r = math.log10(1.0 - float(value))
        return min(1.0, max(0.0, (r - self._r0) / (self._r1 - self._r0)))

    def __repr__(self) -> str:
        return f"OneMinusLogUniform({self.a!r}, {self.b!r})"


class Choice(Param):
    """One of a list of options, each equally likely (bins of the unit interval, like IntUniform).

    Choices are unordered: coarse-to-fine does not shrink them. Options should be JSON values
    (str, int, float, bool, None) so that trials can be stored.
    """

    ordered = False
    scale = "choice"

    def __init__(self, options: Sequence[Any]) -> None:
        self.options = list(options)
        if not self.options:
            raise ValueError("Choice needs at least one option")

    def unwarp(self, u: float) -> Any:
        k = len(self.options)
        return self.options[min(int(_check_unit(u) * k), k - 1)]

    def warp(self, value: Any) -> float:
        try:
            i = self.options.index(value)
        except ValueError:
            raise ValueError(f"{value!r} is not one of {self.options!r}") from None
        return (i + 0.5) / len(self.options)

    def grid(self, n: int) -> list[Any]:
        return list(self.options)

    def __repr__(self) -> str:
        return f"Choice({self.options!r})"


Space = Union[Mapping[str, Param], Callable[[Callable[[str, Param], Any]], Mapping[str, Any]]]


def _native(v: Any) -> Any:
    """NumPy scalars to Python scalars (JSON storage)."""
    return v.item() if isinstance(v, np.generic) else v


def sample(
    space: Space, rng: np.random.Generator, box: Box | None = None
) -> tuple[dict[str, Any], dict[str, float], dict[str, Param]]:
    """Draw one configuration.

    Each parameter consumes exactly one uniform draw from ``rng`` in the order it is asked for,
    so the same ``rng`` state gives the same unit coordinates whatever the box.

    Returns
    -------
    params : dict
        The values (what the objective receives).
    unit : dict
        Each parameter's warped coordinate ``warp(value)``.
    used : dict
        The :class:`Param` of each parameter that was drawn.
    """
    box = box or {}
    unit: dict[str, float] = {}
    used: dict[str, Param] = {}

    def suggest(name: str, param: Param) -> Any:
        if not isinstance(param, Param):
            raise TypeError(f"parameter {name!r}: expected a Param, got {type(param).__name__}")
        if name in used:
            raise ValueError(f"parameter {name!r} was asked for twice")
        lo, hi = box.get(name, (0.0, 1.0))
        value = _native(param.sample(rng, lo, hi))
        used[name] = param
        unit[name] = param.warp(value)
        return value

    if callable(space) and not isinstance(space, Mapping):
        params = {k: _native(v) for k, v in dict(space(suggest)).items()}
    elif isinstance(space, Mapping):
        params = {name: suggest(name, p) for name, p in space.items()}
    else:
        raise TypeError("space must be a dict of Params or a callable space(suggest)")
    return params, unit, used


def grid_points(space: Space, points: int | Mapping[str, int] = 3, by_axis: bool = False) -> Any:
    """The Cartesian grid of a dict space, ``points`` values per continuous parameter.

    Discrete parameters contribute at most ``points`` values (all options of a Choice).
    ``by_axis``: return ``[(name, values), ...]`` instead of the product.
    """
    if not isinstance(space, Mapping):
        raise TypeError("grid search needs a dict space (define-by-run spaces have no grid)")
    axes = []
    for name, p in space.items():
        n = points[name] if isinstance(points, Mapping) else points
        axes.append([_native(v) for v in p.grid(int(n))])
    if by_axis:
        return list(zip(space, axes))
    return [dict(zip(space, combo)) for combo in itertools.product(*axes)]


def describe(space: Space) -> str:
    """A stable text description (stored with a study to detect a changed space on resume)."""
    if isinstance(space, Mapping):
        return "{" + ", ".join(f"{k!r}: {p.describe()}" for k, p in space.items()) + "}"
    mod = getattr(space, "__module__", "?")
    return f"<define-by-run {mod}.{getattr(space, '__qualname__', repr(space))}>"


def scales(space: Mapping[str, Param]) -> dict[str, str]:
    """Each parameter's plot axis (:attr:`Param.scale`), stored with a study for reports."""
    return {name: p.scale for name, p in space.items()}
