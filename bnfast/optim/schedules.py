r"""Learning-rate schedules: the course's decays, plus step, cosine and linear warm-up.

A schedule is a function of a counter :math:`e` (``epoch``) that starts at 0. Attach it to an
optimizer (pass the optimizer first, or call :meth:`LRSchedule.attach`) and call
:meth:`LRSchedule.step` once per epoch, or once per iteration to decay per mini-batch: each
call advances the counter and sets ``optimizer.lr``. Attaching sets ``optimizer.lr`` to the
value at the current counter, so the first epoch runs at :math:`\alpha_0`. ``lr0``
(:math:`\alpha_0`) defaults to the optimizer's learning rate when the schedule is attached.

=========================  ======================================================================
:class:`InverseTimeDecay`  :math:`\alpha_0 / (1 + \text{decay\_rate}\cdot e)`
:class:`ExponentialDecay`  :math:`\alpha_0 \cdot \text{base}^{e}` (the course's 0.95)
:class:`InverseSqrtDecay`  :math:`\alpha_0 \cdot k / \sqrt{\max(e, 1)}`
:class:`Staircase`         discrete steps: ``values[j]`` from ``boundaries[j-1]`` on
:class:`StepDecay`         :math:`\alpha_0 \cdot \gamma^{\lfloor e / \text{step\_size}\rfloor}`
:class:`CosineDecay`       :math:`\eta_{min} + (\alpha_0 - \eta_{min})(1 + \cos(\pi\min(e, T)/T))/2`
:class:`LinearWarmup`      linear ramp over ``warmup`` steps, then another schedule (or constant)
=========================  ======================================================================
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CosineDecay",
    "ExponentialDecay",
    "InverseSqrtDecay",
    "InverseTimeDecay",
    "LRSchedule",
    "LinearWarmup",
    "Staircase",
    "StepDecay",
]


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or (
        not isinstance(value, (int, float)) and not hasattr(value, "__float__")
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


class LRSchedule:
    """Base class: a counter, :math:`\\alpha_0`, an optional optimizer, and ``value(epoch)``.

    Parameters
    ----------
    optimizer : Optimizer, optional
        Its ``lr`` is set at attach time and by every :meth:`step`.
    lr0 : float, optional
        Initial learning rate; by default the optimizer's ``lr`` when attached.
    """

    def __init__(self, optimizer: Any = None, *, lr0: float | None = None) -> None:
        self.lr0: float | None = None if lr0 is None else _finite(lr0, "lr0")
        self.epoch = 0
        self.optimizer: Any = None
        if optimizer is not None:
            self.attach(optimizer)

    def value(self, epoch: int) -> float:
        """The learning rate at counter value ``epoch`` (pure: changes nothing)."""
        raise NotImplementedError

    def __call__(self, epoch: int) -> float:
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        epoch = int(epoch)
        if self.lr0 is None:
            raise ValueError("lr0 is unknown: pass lr0= or attach the schedule to an optimizer")
        return float(self.value(epoch))

    @property
    def lr(self) -> float:
        """The learning rate at the current counter."""
        return self(self.epoch)

    def attach(self, optimizer: Any) -> LRSchedule:
        """Drive ``optimizer.lr`` from now on; sets it to the current value. Returns self."""
        if self.lr0 is None:
            self.lr0 = _finite(optimizer.lr, "optimizer.lr")
        self.optimizer = optimizer
        optimizer.lr = self.lr
        return self

    def step(self) -> float:
        """Advance the counter by one (an epoch, or an iteration) and set ``optimizer.lr``."""
        lr = self(self.epoch + 1)
        self.epoch += 1
        if self.optimizer is not None:
            self.optimizer.lr = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        """The counter and ``lr0`` (the schedule's parameters come from its constructor)."""
        return {"epoch": self.epoch, "lr0": self.lr0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        lr0 = state["lr0"]
        self.lr0 = None if lr0 is None else _finite(lr0, "lr0")
        self.epoch = epoch
        if self.optimizer is not None:
            self.optimizer.lr = self.lr

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr0={self.lr0}, epoch={self.epoch})"


class InverseTimeDecay(LRSchedule):
    r"""The course's :math:`\alpha = \alpha_0 / (1 + \text{decay\_rate}\cdot e)`."""

    def __init__(
        self, optimizer: Any = None, decay_rate: float = 1.0, *, lr0: float | None = None
    ) -> None:
        self.decay_rate = _finite(decay_rate, "decay_rate")
        if self.decay_rate < 0:
            raise ValueError(f"decay_rate must be >= 0, got {self.decay_rate}")
        super().__init__(optimizer, lr0=lr0)

    def value(self, epoch: int) -> float:
        return self.lr0 / (1.0 + self.decay_rate * epoch)


class ExponentialDecay(LRSchedule):
    r"""The course's exponential decay :math:`\alpha = \alpha_0 \cdot \text{base}^e`."""

    def __init__(
        self, optimizer: Any = None, base: float = 0.95, *, lr0: float | None = None
    ) -> None:
        self.base = _finite(base, "base")
        if self.base <= 0:
            raise ValueError(f"base must be > 0, got {self.base}")
        super().__init__(optimizer, lr0=lr0)

    def value(self, epoch: int) -> float:
        return self.lr0 * self.base**epoch


class InverseSqrtDecay(LRSchedule):
    r"""The course's :math:`\alpha = \alpha_0 \cdot k / \sqrt{e}`, with :math:`e = 0` read as 1.

    The formula has no value at :math:`e = 0` (before the first epoch ends); it takes the
    epoch-1 value :math:`\alpha_0 k`, so the rate never rises.
    """

    def __init__(self, optimizer: Any = None, k: float = 1.0, *, lr0: float | None = None) -> None:
        self.k = _finite(k, "k")
        super().__init__(optimizer, lr0=lr0)

    def value(self, epoch: int) -> float:
        return self.lr0 * self.k / math.sqrt(max(epoch, 1))


class Staircase(LRSchedule):
    """Discrete staircase: the rate is ``values[j]`` for ``boundaries[j-1] <= e < boundaries[j]``.

    ``values`` has one more entry than ``boundaries`` (increasing counter values); ``lr0`` is
    ``values[0]``. Example: ``Staircase(opt, [10, 20], [0.1, 0.05, 0.01])``.
    """

    def __init__(
        self, optimizer: Any = None, boundaries: Sequence[int] = (), values: Sequence[float] = ()
    ) -> None:
        self.boundaries = [int(b) for b in boundaries]
        self.values = [_finite(v, "values") for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError("values must have exactly one more entry than boundaries")
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:])) or any(
            b < 0 for b in self.boundaries
        ):
            raise ValueError("boundaries must be increasing and >= 0")
        super().__init__(optimizer, lr0=self.values[0])

    def value(self, epoch: int) -> float:
        j = sum(1 for b in self.boundaries if epoch >= b)
        return self.values[j]


class StepDecay(LRSchedule):
    r"""PyTorch's StepLR: :math:`\alpha_0 \cdot \gamma^{\lfloor e / \text{step\_size} \rfloor}`."""

    def __init__(
        self,
        optimizer: Any = None,
        step_size: int = 1,
        gamma: float = 0.1,
        *,
        lr0: float | None = None,
    ) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be an int >= 1, got {step_size!r}")
        self.step_size = step_size
        self.gamma = _finite(gamma, "gamma")
        super().__init__(optimizer, lr0=lr0)

    def value(self, epoch: int) -> float:
        return self.lr0 * self.gamma ** (epoch // self.step_size)


class CosineDecay(LRSchedule):
    r"""Cosine annealing from :math:`\alpha_0` to ``eta_min`` over ``t_max`` steps, then flat.

    :math:`\eta_{min} + (\alpha_0 - \eta_{min})(1 + \cos(\pi \min(e, T) / T)) / 2`
    (PyTorch's CosineAnnealingLR closed form, held at ``eta_min`` after :math:`T`).
    """

    def __init__(
        self,
        optimizer: Any = None,
        t_max: int = 1,
        eta_min: float = 0.0,
        *,
        lr0: float | None = None,
    ) -> None:
        if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1:
            raise ValueError(f"t_max must be an int >= 1, got {t_max!r}")
        self.t_max = t_max
        self.eta_min = _finite(eta_min, "eta_min")
        super().__init__(optimizer, lr0=lr0)

    def value(self, epoch: int) -> float:
        e = min(epoch, self.t_max)
        cos = math.cos(math.pi * e / self.t_max)
        return self.eta_min + (self.lr0 - self.eta_min) * (1 + cos) / 2


class LinearWarmup(LRSchedule):
    r"""Linear warm-up over ``warmup`` steps, then ``then`` (shifted to start at 0) or constant.

    For :math:`e < W`: :math:`\alpha_0 (s + (1 - s) e / W)` with ``start_factor`` :math:`s`
    (PyTorch's LinearLR default, 1/3); from :math:`e = W` on: ``then(e - W)``, or
    :math:`\alpha_0`. ``then`` is a schedule that is not attached to an optimizer; its
    ``lr0`` defaults to this schedule's.
    """

    def __init__(
        self,
        optimizer: Any = None,
        warmup: int = 1,
        start_factor: float = 1.0 / 3.0,
        then: LRSchedule | None = None,
        *,
        lr0: float | None = None,
    ) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
        self.warmup = warmup
        self.start_factor = _finite(start_factor, "start_factor")
        if then is not None and then.optimizer is not None:
            raise ValueError("then must not be attached to an optimizer")
        self.then = then
        super().__init__(optimizer, lr0=lr0)

    def attach(self, optimizer: Any) -> LRSchedule:
        if self.lr0 is None:
            self.lr0 = _finite(optimizer.lr, "optimizer.lr")
        return super().attach(optimizer)

    def value(self, epoch: int) -> float:
        if epoch < self.warmup:
            s = self.start_factor
            return self.lr0 * (s + (1 - s) * epoch / self.warmup)
        if self.then is None:
            return self.lr0
        if self.then.lr0 is None:
            self.then.lr0 = self.lr0
        return self.then(epoch - self.warmup)
