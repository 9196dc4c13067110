"""Stateless functions over the compiled kernels: argument handling and one call into _core.

Arrays in, arrays out. Inputs may be any array NumPy can view without a copy (buffer protocol,
``__array_interface__``, DLPack). Read-only inputs that are not C-contiguous are copied;
arrays updated in place (running statistics, ``out=``) must be C-contiguous, writable and of
the input's dtype, else the call is refused before anything is written. Supported dtypes are
float32 and float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from bnfast import _core
from bnfast._arrays import float_input, inplace, optional_input

__all__ = [
    "BatchNormOutput",
    "batch_norm",
    "batch_norm_backward",
]


class BatchNormOutput(NamedTuple):
    """What :func:`batch_norm` returns: the output and the statistics backward needs."""

    out: np.ndarray
    """The normalized output, same shape and dtype as the input."""
    mean: np.ndarray
    """Per-channel mean used (batch mean in training, running mean in evaluation)."""
    invstd: np.ndarray
    """Per-channel ``1 / sqrt(var + eps)`` used."""


def batch_norm(
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: np.ndarray | None = None,
) -> BatchNormOutput:
    """Batch normalization, PyTorch's ``F.batch_norm`` semantics, any channel axis.

    Parameters
    ----------
    x : array_like, float32 or float64
        Input of any shape; ``axis`` is the channel axis. ``(N, C)``, ``(N, C, L)`` and NCHW
        use ``axis=1``; channels-last NHWC uses ``axis=-1``.
    running_mean, running_var : ndarray of shape (C,), optional
        Running statistics. In training they are updated in place (when given) as
        ``new = (1 - momentum) * old + momentum * batch`` with the unbiased batch variance.
        Required in evaluation mode.
    weight, bias : array_like of shape (C,), optional
        Affine parameters gamma and beta (default 1 and 0).
    training : bool
        Use batch statistics (True) or the running statistics (False).
    momentum : float
        Weight of the batch statistics in the running average (``1/n`` gives a cumulative mean).
    eps : float
        Added to the variance for numerical stability.
    axis : int
        The channel axis.
    out : ndarray, optional
        Where to write the output (may be ``x`` itself for in-place normalization).

    Returns
    -------
    BatchNormOutput
        ``(out, mean, invstd)``; pass ``mean`` and ``invstd`` to :func:`batch_norm_backward`.

    Raises
    ------
    TypeError
        Non-float dtypes, or parameters whose dtype differs from ``x``.
    ValueError
        Wrong shapes, a read-only or overlapping ``out``, one value per channel in training,
        missing running statistics in evaluation.
    """
    x = float_input(x, "x")
    weight = optional_input(weight, "weight", x.dtype)
    bias = optional_input(bias, "bias", x.dtype)
    rm = inplace(running_mean, "running_mean")
    rv = inplace(running_var, "running_var")
    if training:
        y, mean, invstd = _core.batchnorm_fwd_train(
            x, axis, weight, bias, rm, rv, float(momentum), float(eps), out
        )
    else:
        if rm is None or rv is None:
            raise ValueError("running_mean and running_var are required when training=False")
        y, mean, invstd = _core.batchnorm_fwd_eval(x, axis, weight, bias, rm, rv, float(eps), out)
    return BatchNormOutput(y, mean, invstd)


def batch_norm_backward(
    dy: Any,
    x: Any,
    mean: Any,
    invstd: Any,
    weight: Any = None,
    training: bool = True,
    axis: int = 1,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm` with respect to ``x``, ``weight`` and ``bias``.

    Parameters
    ----------
    dy : array_like
        Upstream gradient, the shape of ``x``.
    x : array_like
        The forward input.
    mean, invstd : array_like of shape (C,)
        The statistics the forward returned.
    weight : array_like of shape (C,), optional
        Gamma (default 1).
    training : bool
        Whether the forward used batch statistics (which then depend on ``x``).
    axis : int
        The channel axis.
    out : ndarray, optional
        Where to write ``dx`` (may be ``dy`` or ``x`` itself).

    Returns
    -------
    dx, dweight, dbias : ndarray
        ``dweight = sum(dy * xhat)`` and ``dbias = sum(dy)`` per channel.
    """
    x = float_input(x, "x")
    dy = float_input(dy, "dy", x.dtype)
    mean = float_input(mean, "mean", x.dtype)
    invstd = float_input(invstd, "invstd", x.dtype)
    weight = optional_input(weight, "weight", x.dtype)
    return _core.batchnorm_backward(dy, x, axis, mean, invstd, weight, bool(training), out)
