"""NumPy reference implementations: the oracle the kernels are tested against.

Textbook formulas, written for clarity, computed in the input's dtype or (by passing float64
arrays) in float64. Nothing here imports ``bnfast._core``: an oracle that shares code with what
it checks is no oracle. Shapes follow the kernels: batch norm views its input as ``(A, C, B)``
with ``C`` the ``axis`` dimension.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "adam",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_train",
    "clip_grad_norm",
    "momentum_course",
    "rmsprop",
    "rmsprop_course",
    "sgd",
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


# ---- optimizers ---------------------------------------------------------------------------
# One tensor per call, functional: the updated parameter and state are returned as new arrays
# (the inputs are not modified). Evaluate in float64 by passing float64 arrays.


def sgd(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    r"""One step of SGD with PyTorch's options.

    .. math::
        g = \nabla + \lambda w, \quad
        b = \begin{cases} g & \text{first step (} b \text{ is None)} \\
                           \mu b + (1 - \tau) g & \text{otherwise} \end{cases}, \quad
        w \leftarrow w - \alpha \cdot (\text{nesterov} ? g + \mu b : b)

    Without momentum (:math:`\mu = 0`) the step is :math:`w - \alpha g` and no buffer is kept.

    Returns
    -------
    param, momentum_buffer
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    buf = None
    if momentum != 0:
        buf = (
            g.copy()
            if momentum_buffer is None
            else momentum * momentum_buffer + (1 - dampening) * g
        )
        g = g + momentum * buf if nesterov else buf
    return param - lr * g, buf


def momentum_course(
    param: np.ndarray, grad: np.ndarray, velocity: np.ndarray, lr: float, beta: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradient descent with momentum as the course teaches it.

    .. math::
        v \leftarrow \beta v + (1 - \beta) g, \quad w \leftarrow w - \alpha v

    ``v`` starts at 0 and is an exponentially weighted average of the gradients (no bias
    correction). PyTorch's SGD keeps :math:`b = \beta b + g` instead: the two give the same
    trajectory when PyTorch's learning rate is :math:`\alpha (1 - \beta)`, since then
    :math:`b = v / (1 - \beta)` at every step.

    Returns
    -------
    param, velocity
    """
    v = beta * velocity + (1 - beta) * grad
    return param - lr * v, v


def rmsprop(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    grad_avg: np.ndarray | None,
    momentum_buffer: np.ndarray | None,
    lr: float = 0.01,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    r"""One step of RMSprop with PyTorch's options.

    .. math::
        g = \nabla + \lambda w, \quad s \leftarrow \alpha s + (1 - \alpha) g^2, \quad
        \bar g \leftarrow \alpha \bar g + (1 - \alpha) g \ \text{(centered)}, \\
        d = \sqrt{s - \bar g^2} + \epsilon \ \text{(centered) or } \sqrt{s} + \epsilon,
        \quad b \leftarrow \mu b + g / d, \quad w \leftarrow w - \alpha_{lr} b

    (without momentum, :math:`w \leftarrow w - \alpha_{lr} g / d`). ``eps`` is outside the
    square root, as in PyTorch.

    Returns
    -------
    param, square_avg, grad_avg, momentum_buffer
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    sq = alpha * square_avg + (1 - alpha) * g * g
    ga = None
    if centered:
        ga = alpha * grad_avg + (1 - alpha) * g
        avg = np.sqrt(sq - ga * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    buf = None
    if momentum > 0:
        buf = momentum * momentum_buffer + g / avg
        return param - lr * buf, sq, ga, buf
    return param - lr * g / avg, sq, ga, buf


def rmsprop_course(
    param: np.ndarray,
    grad: np.ndarray,
    s: np.ndarray,
    lr: float,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    r"""RMSprop as the course writes it.

    .. math::
        s \leftarrow \beta_2 s + (1 - \beta_2) g^2, \quad
        w \leftarrow w - \alpha \frac{g}{\sqrt{s} + \epsilon}

    This is :func:`rmsprop` with ``alpha = beta2`` and no weight decay, centering or momentum.

    Returns
    -------
    param, s
    """
    s = beta2 * s + (1 - beta2) * grad**2
    return param - lr * grad / (np.sqrt(s) + eps), s


def adam(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray | None,
    step: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    decoupled: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    r"""One step of Adam (``decoupled=False``) or AdamW (``decoupled=True``) at step ``t >= 1``.

    .. math::
        \text{Adam: } g = \nabla + \lambda w; \quad \text{AdamW: } w \leftarrow
        (1 - \alpha\lambda) w, \ g = \nabla \\
        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \hat v = \max(\hat v, v) \text{ (amsgrad) or } v \\
        w \leftarrow w - \frac{\alpha}{1 - \beta_1^t}
        \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \epsilon}

    Returns
    -------
    param, exp_avg, exp_avg_sq, max_exp_avg_sq
    """
    beta1, beta2 = betas
    if decoupled:
        param = param * (1 - lr * weight_decay)
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay != 0 else grad
    m = beta1 * exp_avg + (1 - beta1) * g
    v = beta2 * exp_avg_sq + (1 - beta2) * g * g
    vmax = np.maximum(max_exp_avg_sq, v) if amsgrad else None
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    denom = np.sqrt(vmax if amsgrad else v) / np.sqrt(bc2) + eps
    return param - (lr / bc1) * m / denom, m, v, vmax


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> tuple[list[np.ndarray], float]:
    r"""Gradient clipping by global norm (PyTorch's ``clip_grad_norm_`` with the 2-norm).

    .. math::
        n = \sqrt{\textstyle\sum_i \sum g_i^2}, \quad
        c = \frac{\text{max\_norm}}{n + 10^{-6}}, \quad
        g_i \leftarrow c\, g_i \text{ if } c < 1

    Returns
    -------
    grads, total_norm
        The (possibly) scaled gradients as new arrays, and :math:`n` computed in float64.
    """
    total = float(np.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads)))
    coef = max_norm / (total + 1e-6)
    if coef < 1 or not np.isfinite(coef):
        return [g * g.dtype.type(coef) for g in grads], total
    return [g.copy() for g in grads], total
