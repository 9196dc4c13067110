r"""The course's worked example: minimize :math:`J(w) = w^2 - 10w + 25 = (w - 5)^2`.

As the course writes it, the cost's coefficients are the data, ``x = [1, -10, 25]``, so
:math:`J(w) = x_0 w^2 + x_1 w + x_2` and :math:`dJ/dw = 2 x_0 w + x_1`. ``w`` is a float32
scalar that starts at 0; each optimizer takes 1000 steps at learning rate 0.01, every update
done by the bnfast kernels. Values reached (float32, any ISA):

=====================================  ===========
gradient descent                       4.999988
momentum (beta = 0.9)                  4.999993
RMSprop (course form, beta2 = 0.999)   4.9999895
Adam (betas 0.9, 0.999)                4.86467
=====================================  ===========

Gradient descent stops at 4.999988, not 5: once the step :math:`0.01 \cdot 2 (5 - w)` falls
below half a float32 ulp of ``w`` (about 2.4e-7 near 5), ``w + step`` rounds back to ``w``.
Adam moves about ``lr`` per step while its gradients agree, then its steps shrink with the
gradient and its slowly decaying second moment, so after 1000 steps it is still approaching 5.

Run: ``python -m bnfast.examples.course_quadratic``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from bnfast.optim import OPTIMIZERS, Optimizer

COEFFICIENTS = np.array([1.0, -10.0, 25.0], dtype=np.float32)
"""The data: the cost is ``x[0] * w**2 + x[1] * w + x[2]``."""

COURSE: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("gradient descent", {}),
    "momentum": ("momentum (beta = 0.9)", {"beta": 0.9}),
    "rmsprop": ("RMSprop (course form, beta2 = 0.999)", {"alpha": 0.999}),
    "adam": ("Adam (betas 0.9, 0.999)", {"betas": (0.9, 0.999)}),
}
"""The optimizers the course compares, by their name in :data:`bnfast.optim.OPTIMIZERS`: the
label printed and the course's hyperparameters (RMSprop's ``alpha`` is the course's ``beta2``,
see :meth:`bnfast.optim.RMSprop.course`)."""


def cost(w: np.ndarray, x: np.ndarray = COEFFICIENTS) -> np.ndarray:
    """:math:`J(w) = x_0 w^2 + x_1 w + x_2`."""
    return x[0] * w**2 + x[1] * w + x[2]


def make_optimizer(name: str, w: np.ndarray, grad: np.ndarray, lr: float) -> Optimizer:
    """The optimizer ``name`` (a key of :data:`COURSE`) over the single parameter ``w``."""
    if name not in COURSE:
        raise ValueError(f"unknown optimizer {name!r}; choose from {tuple(COURSE)}")
    return OPTIMIZERS[name]([w], lr, grads=[grad], **COURSE[name][1])


def minimize(
    name: str = "sgd", lr: float = 0.01, steps: int = 1000, x: np.ndarray = COEFFICIENTS
) -> float:
    """Run ``steps`` updates of optimizer ``name`` from ``w = 0``; return the ``w`` reached."""
    w = np.zeros(1, dtype=x.dtype)
    grad = np.zeros_like(w)
    opt = make_optimizer(name, w, grad, lr)
    for _ in range(steps):
        grad[...] = 2 * x[0] * w + x[1]  # dJ/dw
        opt.step()
    return float(w[0])


def main(argv: list[str] | None = None) -> int:
    steps, lr = 1000, 0.01
    print(f"minimize J(w) = w^2 - 10w + 25 from w = 0, lr = {lr}, {steps} steps (float32)")
    for name, (label, _) in COURSE.items():
        w = np.float32(minimize(name, lr, steps))
        j = float(cost(np.float64(w), COEFFICIENTS.astype(np.float64)))  # no float32 cancellation
        print(f"  {label:<38} w = {w!s:<10} J(w) = {j:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
