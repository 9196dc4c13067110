"""Optimizers over lists of arrays (one fused kernel call per step) and learning-rate schedules.

:class:`SGD`, :class:`RMSprop`, :class:`Adam` and :class:`AdamW` follow PyTorch's update rules,
names, defaults and positional arguments (``params``, ``lr``, and SGD's ``momentum``; the rest
are keyword-only); :class:`Momentum` and :meth:`RMSprop.course` are the forms the course
teaches. :func:`clip_grad_norm` clips by global norm. :data:`OPTIMIZERS` is the one list of
optimizers by name. Schedules live in :mod:`bnfast.optim.schedules`. The NumPy twin of every
update is in :mod:`bnfast.reference`.
"""

from collections.abc import Mapping
from types import MappingProxyType

from bnfast.optim import schedules
from bnfast.optim.clip import clip_grad_norm, global_norm
from bnfast.optim.optimizers import SGD, Adam, AdamW, Momentum, Optimizer, RMSprop

OPTIMIZERS: Mapping[str, type[Optimizer]] = MappingProxyType(
    {"sgd": SGD, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
)
"""Every optimizer by name (read-only): the names :func:`bnfast.train.make_optimizer`, the
benchmarks, the examples and :mod:`bnfast.tune.digits` accept."""

__all__ = [
    "OPTIMIZERS",
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
