"""NumPy reference implementations: the oracle the kernels are tested against.

Textbook formulas, written for clarity, computed in the input's dtype or (by passing float64
arrays) in float64. Nothing here imports ``bnfast._core``: an oracle that shares code with what
it checks is no oracle. Shapes follow the kernels: batch norm views its input as ``(A, C, B)``
with ``C`` the ``axis`` dimension.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_train",
]


def _reduce_axes(x: np.ndarray, axis: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    axis = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != axis)
    shape = tuple(x.shape[axis] if i == axis else 1 for i in range(x.ndim))
    return axes, shape


def batch_norm_train(
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Batch norm forward in training mode.

    With :math:`M` values per channel :math:`c` (all axes but ``axis``):

    .. math::
        \mu_c = \frac{1}{M}\sum x, \quad \sigma^2_c = \frac{1}{M}\sum (x - \mu_c)^2, \quad
        y = \gamma_c \frac{x - \mu_c}{\sqrt{\sigma^2_c + \epsilon}} + \beta_c

    The running statistics are updated in place (PyTorch's convention):
    ``r_mean = (1 - momentum) * r_mean + momentum * mu`` and
    ``r_var = (1 - momentum) * r_var + momentum * sigma2 * M / (M - 1)`` (unbiased).

    Returns
    -------
    y, mean, invstd
        The output and the saved statistics ``mu`` and ``1 / sqrt(sigma2 + eps)``.
    """
    axes, shape = _reduce_axes(x, axis)
    m = x.size // x.shape[axis % x.ndim]
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    invstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean.reshape(shape)) * invstd.reshape(shape)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    if running_mean is not None:
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
    if running_var is not None:
        running_var[...] = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    return y.astype(x.dtype, copy=False), mean.astype(x.dtype), invstd.astype(x.dtype)


def batch_norm_eval(
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
    axis: int = 1,
) -> np.ndarray:
    r"""Batch norm forward in evaluation mode:
    :math:`y = \gamma_c (x - \hat\mu_c) / \sqrt{\hat\sigma^2_c + \epsilon} + \beta_c` with the
    running statistics :math:`\hat\mu, \hat\sigma^2`."""
    _, shape = _reduce_axes(x, axis)
    y = (x - running_mean.reshape(shape)) / np.sqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y.astype(x.dtype, copy=False)


def batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    invstd: np.ndarray,
    weight: np.ndarray | None = None,
    training: bool = True,
    axis: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of batch norm given the upstream gradient ``dy``.

    With :math:`\hat x = (x - \mu) s` and :math:`s` = ``invstd``:

    .. math::
        \frac{\partial L}{\partial \beta_c} = \sum dy, \quad
        \frac{\partial L}{\partial \gamma_c} = \sum dy\,\hat x

    In training mode the statistics depend on ``x``:

    .. math::
        dx = \frac{\gamma_c s_c}{M}\Big(M\,dy - \sum dy - \hat x \sum dy\,\hat x\Big)

    In evaluation mode they are constants: :math:`dx = \gamma_c s_c\,dy`.

    Returns
    -------
    dx, dweight, dbias
    """
    axes, shape = _reduce_axes(x, axis)
    m = x.size // x.shape[axis % x.ndim]
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    dbias = dy.sum(axis=axes)
    dweight = (dy * xhat).sum(axis=axes)
    g = (weight if weight is not None else np.ones_like(invstd)).reshape(shape)
    k = g * invstd.reshape(shape)
    if training:
        dx = k / m * (m * dy - dbias.reshape(shape) - xhat * dweight.reshape(shape))
    else:
        dx = k * dy
    return dx.astype(x.dtype, copy=False), dweight.astype(x.dtype), dbias.astype(x.dtype)
