"""Gradient clipping by global norm, one deterministic reduction over every array."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bnfast import _core
from bnfast._arrays import as_array, contiguous
from bnfast.optim.optimizers import Grads

__all__ = ["clip_grad_norm", "global_norm"]


def _array_list(arrays: Any, what: str) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray):
        return [arrays]
    if isinstance(arrays, Mapping):
        arrays = list(arrays.values())
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{what} must be a list or dict of arrays, got {type(arrays).__name__}")
    return list(arrays)


def clip_grad_norm(grads: Grads, max_norm: float, *, error_if_nonfinite: bool = False) -> float:
    r"""Scale the gradients in place so their global 2-norm is at most ``max_norm``.

    Like PyTorch's ``clip_grad_norm_``: :math:`n = \sqrt{\sum_i \sum g_i^2}` over all arrays
    (one deterministic reduction, accumulated in double), then every gradient is multiplied
    by :math:`\text{max\_norm} / (n + 10^{-6})` when that is below 1.

    Parameters
    ----------
    grads : list or dict of arrays (or one array)
        float32/float64/bfloat16, C-contiguous, writable; modified in place. bfloat16
        gradients are widened to float32 for the sum (accumulated in double, as the others)
        and their scaled values rounded to nearest even.
    max_norm : float
        The largest norm allowed (>= 0).
    error_if_nonfinite : bool, keyword-only
        Raise RuntimeError (and leave the gradients alone) when the norm is inf or NaN;
        otherwise the non-finite coefficient is applied, as PyTorch does. (PyTorch's third
        positional argument is ``norm_type``; only the 2-norm is offered here, so a third
        positional argument is refused.)

    Returns
    -------
    float
        The total norm before clipping.
    """
    return _core.clip_grad_norm(
        _array_list(grads, "grads"), float(max_norm), bool(error_if_nonfinite)
    )


def global_norm(arrays: Grads) -> float:
    """The 2-norm of all elements of all ``arrays`` together (float32/float64/bfloat16)."""
    items = [contiguous(as_array(a, "arrays"), "arrays") for a in _array_list(arrays, "arrays")]
    return _core.global_norm(items)
