"""Optimizers over lists of arrays (one fused kernel call per step) and learning-rate schedules.

:class:`SGD`, :class:`RMSprop`, :class:`Adam` and :class:`AdamW` follow PyTorch's update rules,
names and defaults; :class:`Momentum` and :meth:`RMSprop.course` are the forms the course
teaches. :func:`clip_grad_norm` clips by global norm. Schedules live in
:mod:`bnfast.optim.schedules`. The NumPy twin of every update is in :mod:`bnfast.reference`.
"""

from bnfast.optim import schedules
from bnfast.optim.optimizers import (
    SGD,
    Adam,
    AdamW,
    Momentum,
    Optimizer,
    RMSprop,
    clip_grad_norm,
    global_norm,
)

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Momentum",
    "Optimizer",
    "RMSprop",
    "clip_grad_norm",
    "global_norm",
    "schedules",
]
