"""The backend switch: the same network on the native kernels or on the NumPy reference.

``"native"`` runs the compiled kernels (through :mod:`bnfast.functional` and
:mod:`bnfast.optim`); ``"numpy"`` runs their twins in :mod:`bnfast.reference`. Each layer and
loss of :mod:`bnfast.nn` reads its own ``backend`` attribute and calls one or the other;
:func:`bnfast.train.make_optimizer` does the same for the optimizers. Everything else (the matrix
products of :class:`~bnfast.nn.Linear`, the activations) is NumPy in both. Training one network
on each backend from the same initial weights gives the same results within float tolerance: the
reference check extended to whole training, and the baseline the ``bnfast demo`` speed-up is
measured against.

This module holds only the names, so any module may import it.
"""

from __future__ import annotations

__all__ = ["BACKENDS", "check_backend"]

BACKENDS = ("native", "numpy")


def check_backend(backend: str) -> str:
    """Return ``backend`` if it names a backend, else raise ValueError (TypeError if no str)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend
