"""NumPy reference implementations: the oracle the kernels are tested against.

Textbook formulas, written for clarity, computed in the input's dtype or (by passing float64
arrays) in float64. bfloat16 kernels are held to the float64 formula of their widened inputs,
rounded once by :func:`round_bfloat16`. Nothing here imports ``bnfast._core``: an oracle that shares code with what
it checks is no oracle. Shapes follow the kernels: batch norm views its input as ``(A, C, B)``
with ``C`` the ``axis`` dimension.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "adam",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_train",
    "clip_grad_norm",
    "log_softmax",
    "log_softmax_backward",
    "momentum_course",
    "rmsprop",
    "rmsprop_course",
    "round_bfloat16",
    "round_bfloat16_stochastic",
    "sgd",
    "sigmoid_binary_cross_entropy",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
    "stochastic_bits",
]


def round_bfloat16(a: np.ndarray) -> np.ndarray:
    """``a`` rounded to ``ml_dtypes.bfloat16`` the way bnfast's kernels round (csrc's
    bfloat16.h): to nearest, ties to even, through float32; NaN stays NaN (quiet, sign and upper
    payload kept); float32 subnormals become zeros of their sign (AVX512_BF16's rule, which
    every ISA follows)."""
    import ml_dtypes

    a = np.asarray(a, dtype=np.float32)
    u = np.ascontiguousarray(a).view(np.uint32).reshape(a.shape)
    hi = u >> 16
    r = (u + 0x7FFF + (hi & 1)) >> 16
    r = np.where((u & 0x7FFFFFFF) > 0x7F800000, hi | 0x40, r)
    r = np.where((u & 0x7F800000) == 0, hi & 0x8000, r)
    return r.astype(np.uint16).view(ml_dtypes.bfloat16)


def _reduce_axes(x: np.ndarray, axis: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    axis = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != axis)
    shape = tuple(x.shape[axis] if i == axis else 1 for i in range(x.ndim))
    return axes, shape


def _is_bf16(a: object) -> bool:
    """Whether ``a`` (an array or a dtype) is bfloat16: ml_dtypes' dtype or the bits view
    ``[("bfloat16", "<u2")]``."""
    dt = a if isinstance(a, np.dtype) else getattr(a, "dtype", None)
    if dt is None or dt.kind != "V" or dt.itemsize != 2:
        return False
    return dt.name == "bfloat16" or dt.names == ("bfloat16",)


def _widen_bf16(a: Any) -> Any:
    """A bfloat16 array widened exactly to float64; anything else (None included) as it is."""
    if not _is_bf16(a):
        return a
    u = np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << 16
    return u.view(np.float32).astype(np.float64).reshape(np.shape(a))


def _float64(a: Any) -> np.ndarray | None:
    """``a`` in float64 (bfloat16 widened exactly); None as it is."""
    return None if a is None else np.asarray(_widen_bf16(np.asarray(a)), dtype=np.float64)


def _write_bf16(dst: np.ndarray, value: np.ndarray) -> None:
    """Stores float ``value`` into bfloat16 ``dst`` rounded as the kernels round (through
    float32, :func:`round_bfloat16`), whichever bfloat16 dtype ``dst`` has."""
    dst.view(np.uint16)[...] = round_bfloat16(value).view(np.uint16)


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

    bfloat16 arrays are widened to float64 and the results returned unrounded in float64
    (bfloat16 running statistics are written back rounded, as the kernels do).

    With no values per channel (:math:`M = 0`) the output is empty, ``mu`` and the saved
    ``invstd`` are NaN and the running statistics are left as they are (PyTorch's answer).

    Returns
    -------
    y, mean, invstd
        The output and the saved statistics ``mu`` and ``1 / sqrt(sigma2 + eps)``.
    """
    x, weight, bias = _widen_bf16(x), _widen_bf16(weight), _widen_bf16(bias)
    rm, rv = _widen_bf16(running_mean), _widen_bf16(running_var)
    if rm is not running_mean or rv is not running_var:
        # bfloat16 running statistics: updated in float64 copies, stored rounded (with no values
        # per channel they are left as they are, unrounded).
        res = batch_norm_train(x, rm, rv, weight, bias, momentum, eps, axis)
        if math.prod(n for i, n in enumerate(x.shape) if i != axis % x.ndim):
            for dst, src in ((running_mean, rm), (running_var, rv)):
                if dst is not src:
                    _write_bf16(dst, src)
        return res
    axes, shape = _reduce_axes(x, axis)
    m = math.prod(n for i, n in enumerate(x.shape) if i != axis % x.ndim)
    if m == 0:
        nan = np.full(x.shape[axis], np.nan, x.dtype)
        return x.copy(), nan, nan.copy()
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
    running statistics :math:`\hat\mu, \hat\sigma^2`. bfloat16 arrays are widened to float64
    and the result returned unrounded in float64."""
    x, running_mean, running_var = map(_widen_bf16, (x, running_mean, running_var))
    weight, bias = _widen_bf16(weight), _widen_bf16(bias)
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

    bfloat16 arrays are widened to float64 and the results returned unrounded in float64.

    Returns
    -------
    dx, dweight, dbias
    """
    dy, x, mean, invstd = map(_widen_bf16, (dy, x, mean, invstd))
    weight = _widen_bf16(weight)
    axes, shape = _reduce_axes(x, axis)
    m = max(1, x.size // max(1, x.shape[axis % x.ndim]))  # an empty x has an empty dx anyway
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
#
# bfloat16 parameters (ml_dtypes.bfloat16, or bnfast's bits view): the inputs are widened to
# float64 and the formula is evaluated there; each new state value is kept as the kernels keep
# it, in float32 (``state_dtype="float32"``, the default) or bfloat16 (``"bfloat16"``, what
# PyTorch keeps; each state is rounded to nearest even, and the step uses it as rounded), and
# the new parameter is rounded to bfloat16 once. ``state_dtype=None`` takes the dtype of the
# state arrays given.


class _Bf16Step:
    """How one optimizer step treats a bfloat16 parameter (``on``) and its state."""

    def __init__(self, param: np.ndarray, states: tuple, state_dtype: str | None) -> None:
        self.on = _is_bf16(np.asarray(param).dtype)
        if state_dtype is None:
            given = [np.asarray(x).dtype for x in states if x is not None]
            state_dtype = "bfloat16" if given and _is_bf16(given[0]) else "float32"
        if state_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"state_dtype must be 'float32' or 'bfloat16', got {state_dtype!r}")
        self.bf16_state = state_dtype == "bfloat16"

    def keep(self, x: np.ndarray | None) -> np.ndarray | None:
        """A new state value as stored (rounded to the state dtype), back in float64."""
        if not self.on or x is None:
            return x
        if self.bf16_state:
            return _float64(round_bfloat16(x))
        return x.astype(np.float32).astype(np.float64)

    def state_out(self, x: np.ndarray | None) -> np.ndarray | None:
        if not self.on or x is None:
            return x
        return round_bfloat16(x) if self.bf16_state else x.astype(np.float32)

    def param_out(self, x: np.ndarray) -> np.ndarray:
        return round_bfloat16(x) if self.on else x


def _bf16_step(param, grad, states, state_dtype):  # type: ignore[no-untyped-def]
    """(mode, param, grad, states): bfloat16 parameters' inputs widened to float64."""
    mode = _Bf16Step(param, states, state_dtype)
    if mode.on:
        return mode, _float64(param), _float64(grad), tuple(_float64(x) for x in states)
    return mode, param, grad, states


def sgd(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    *,
    state_dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    r"""One step of SGD with PyTorch's options.

    .. math::
        g = \nabla + \lambda w, \quad
        b = \begin{cases} g & \text{first step (} b \text{ is None)} \\
                           \mu b + (1 - \tau) g & \text{otherwise} \end{cases}, \quad
        w \leftarrow w - \alpha \cdot (\text{nesterov} ? g + \mu b : b)

    Without momentum (:math:`\mu = 0`) the step is :math:`w - \alpha g` and no buffer is kept.
    ``state_dtype``: bfloat16 parameters only (see above).

    Returns
    -------
    param, momentum_buffer
    """
    mode, param, grad, (momentum_buffer,) = _bf16_step(param, grad, (momentum_buffer,), state_dtype)
    g = grad + weight_decay * param if weight_decay != 0 else grad
    buf = None
    if momentum != 0:
        buf = mode.keep(
            g.copy()
            if momentum_buffer is None
            else momentum * momentum_buffer + (1 - dampening) * g
        )
        g = g + momentum * buf if nesterov else buf
    return mode.param_out(param - lr * g), mode.state_out(buf)


def momentum_course(
    param: np.ndarray,
    grad: np.ndarray,
    velocity: np.ndarray,
    lr: float,
    beta: float = 0.9,
    *,
    state_dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradient descent with momentum as the course teaches it.

    .. math::
        v \leftarrow \beta v + (1 - \beta) g, \quad w \leftarrow w - \alpha v

    ``v`` starts at 0 and is an exponentially weighted average of the gradients (no bias
    correction). PyTorch's SGD keeps :math:`b = \beta b + g` instead: the two give the same
    trajectory when PyTorch's learning rate is :math:`\alpha (1 - \beta)`, since then
    :math:`b = v / (1 - \beta)` at every step. ``state_dtype``: bfloat16 parameters only.

    Returns
    -------
    param, velocity
    """
    mode, param, grad, (velocity,) = _bf16_step(param, grad, (velocity,), state_dtype)
    v = mode.keep(beta * velocity + (1 - beta) * grad)
    return mode.param_out(param - lr * v), mode.state_out(v)


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
    *,
    state_dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    r"""One step of RMSprop with PyTorch's options.

    .. math::
        g = \nabla + \lambda w, \quad s \leftarrow \alpha s + (1 - \alpha) g^2, \quad
        \bar g \leftarrow \alpha \bar g + (1 - \alpha) g \ \text{(centered)}, \\
        d = \sqrt{s - \bar g^2} + \epsilon \ \text{(centered) or } \sqrt{s} + \epsilon,
        \quad b \leftarrow \mu b + g / d, \quad w \leftarrow w - \alpha_{lr} b

    (without momentum, :math:`w \leftarrow w - \alpha_{lr} g / d`). ``eps`` is outside the
    square root, as in PyTorch. ``state_dtype``: bfloat16 parameters only.

    Returns
    -------
    param, square_avg, grad_avg, momentum_buffer
    """
    mode, param, grad, (square_avg, grad_avg, momentum_buffer) = _bf16_step(
        param, grad, (square_avg, grad_avg, momentum_buffer), state_dtype
    )
    g = grad + weight_decay * param if weight_decay != 0 else grad
    sq = mode.keep(alpha * square_avg + (1 - alpha) * g * g)
    ga = None
    if centered:
        ga = mode.keep(alpha * grad_avg + (1 - alpha) * g)
        avg = np.sqrt(sq - ga * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    buf = None
    if momentum > 0:
        buf = mode.keep(momentum * momentum_buffer + g / avg)
        new = param - lr * buf
    else:
        new = param - lr * g / avg
    return mode.param_out(new), mode.state_out(sq), mode.state_out(ga), mode.state_out(buf)


def rmsprop_course(
    param: np.ndarray,
    grad: np.ndarray,
    s: np.ndarray,
    lr: float,
    beta2: float = 0.999,
    eps: float = 1e-8,
    *,
    state_dtype: str | None = None,
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
    mode, param, grad, (s,) = _bf16_step(param, grad, (s,), state_dtype)
    s = mode.keep(beta2 * s + (1 - beta2) * grad**2)
    return mode.param_out(param - lr * grad / (np.sqrt(s) + eps)), mode.state_out(s)


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
    *,
    state_dtype: str | None = None,
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

    ``state_dtype``: bfloat16 parameters only (see above).

    Returns
    -------
    param, exp_avg, exp_avg_sq, max_exp_avg_sq
    """
    mode, param, grad, (exp_avg, exp_avg_sq, max_exp_avg_sq) = _bf16_step(
        param, grad, (exp_avg, exp_avg_sq, max_exp_avg_sq), state_dtype
    )
    beta1, beta2 = betas
    if decoupled:
        param = param * (1 - lr * weight_decay)
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay != 0 else grad
    m = mode.keep(beta1 * exp_avg + (1 - beta1) * g)
    v = mode.keep(beta2 * exp_avg_sq + (1 - beta2) * g * g)
    vmax = np.maximum(max_exp_avg_sq, v) if amsgrad else None
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    denom = np.sqrt(vmax if amsgrad else v) / np.sqrt(bc2) + eps
    new = param - (lr / bc1) * m / denom
    return mode.param_out(new), mode.state_out(m), mode.state_out(v), mode.state_out(vmax)


# Stochastic rounding of bfloat16 parameters, the kernels' counter-based random bits (csrc's
# optim.cpp): with G = 0x9e3779b97f4a7c15 and arithmetic mod 2^64 (mod 2^32 in lowbias32),
# key = mix64(mix64(seed + G (step + 1)) + G (tensor + 1)); for element e,
# k32 = mix64(key + G ((e >> 32) + 1)) mod 2^32 and its bits = lowbias32(k32 + e mod 2^32)
# mod 2^16, with mix64 SplitMix64's finalizer and lowbias32 Wellons' 32-bit hash.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _lowbias32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def stochastic_bits(seed: int, step: int, tensor: int, n: int) -> np.ndarray:
    """The 16 random bits (uint32 values < 2^16) of elements ``0..n-1`` of the parameter at
    position ``tensor`` in the optimizer's list, at step ``step`` with seed ``seed``."""
    with np.errstate(over="ignore"):
        one = np.ones(1, np.uint64)
        key = _mix64(np.uint64(seed) + _GOLDEN * (np.uint64(step) + one))
        key = _mix64(key + _GOLDEN * (np.uint64(tensor) + one))
        e = np.arange(n, dtype=np.uint64)
        k32 = (_mix64(key + _GOLDEN * ((e >> np.uint64(32)) + one)) & np.uint64(0xFFFFFFFF)).astype(
            np.uint32
        )
        x = k32 + (e & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        return _lowbias32(x) & np.uint32(0xFFFF)


def round_bfloat16_stochastic(a: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """float32 ``a`` rounded to bfloat16 stochastically: the 16 random ``bits`` are added below
    bfloat16's last place and the sum truncated (rounds up with probability equal to the
    discarded fraction). NaN, infinities and float32 subnormals round as :func:`round_bfloat16`."""
    import ml_dtypes

    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    special = ((u & 0x7F800000) == 0) | ((u & 0x7F800000) == 0x7F800000)
    r = ((u + (np.asarray(bits, np.uint32) & 0xFFFF)) >> 16).astype(np.uint16)
    r = np.where(special, round_bfloat16(a).view(np.uint16), r)
    return r.view(ml_dtypes.bfloat16)


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> tuple[list[np.ndarray], float]:
    r"""Gradient clipping by global norm (PyTorch's ``clip_grad_norm_`` with the 2-norm).

    .. math::
        n = \sqrt{\textstyle\sum_i \sum g_i^2}, \quad
        c = \frac{\text{max\_norm}}{n + 10^{-6}}, \quad
        g_i \leftarrow c\, g_i \text{ if } c < 1

    bfloat16 gradients are widened for the sum and their scaled values rounded once.

    Returns
    -------
    grads, total_norm
        The (possibly) scaled gradients as new arrays, and :math:`n` computed in float64.
    """
    total = float(np.sqrt(sum(float(np.sum(_float64(g) ** 2)) for g in grads)))
    coef = max_norm / (total + 1e-6)
    if coef < 1 or not np.isfinite(coef):
        return [
            round_bfloat16(_float64(g) * coef) if _is_bf16(g.dtype) else g * g.dtype.type(coef)
            for g in grads
        ], total
    return [g.copy() for g in grads], total


# ---- softmax and cross-entropy ------------------------------------------------------------------
#
# bfloat16 inputs (ml_dtypes' dtype or the bits view [("bfloat16", "<u2")]) are widened to
# float64 exactly, the float64 formula is evaluated, and bfloat16 outputs are rounded once by
# round_bfloat16 (the kernels' bound is stated from that value); losses come back float32 there,
# as the kernels return them.


def _round_like(r: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The float64 result ``r`` rounded once to bfloat16, in ``like``'s bfloat16 dtype."""
    return round_bfloat16(r).view(np.uint16).reshape(np.shape(r)).view(like.dtype)


def _shifted(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``z = x - max`` (max taken as 0 in an all -inf row) and ``log(sum(exp(z)))``."""
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)  # an empty row: like all -inf
    m = np.where(np.isneginf(m), 0, m)
    z = x - m
    with np.errstate(divide="ignore"):
        s = np.sum(np.exp(z), axis=axis, keepdims=True)
        ls = np.log(s)
    return z, ls


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Softmax along ``axis``: :math:`y_k = e^{x_k - m} / \sum_j e^{x_j - m}`, :math:`m = \max x`.

    An all -inf row gives zeros; NaN in a row makes that row NaN. A 0-d ``x`` is one row of one
    value (``axis`` 0 or -1).
    """
    if _is_bf16(x):
        return _round_like(softmax(_widen_bf16(x), axis), x)
    if x.ndim == 0:
        return softmax(x.reshape(1), axis).reshape(())
    z, ls = _shifted(x, axis)
    e = np.exp(z)
    s = np.exp(ls)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(s == 0, 0, e / s)
    return y.astype(x.dtype, copy=False)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Log-softmax along ``axis``: :math:`y_k = (x_k - m) - \log \sum_j e^{x_j - m}`, in that
    order. An all -inf row gives -inf."""
    if _is_bf16(x):
        return _round_like(log_softmax(_widen_bf16(x), axis), x)
    if x.ndim == 0:
        return log_softmax(x.reshape(1), axis).reshape(())
    z, ls = _shifted(x, axis)
    y = z - np.where(np.isneginf(ls), 0, ls)
    return y.astype(x.dtype, copy=False)


def softmax_backward(y: np.ndarray, dy: np.ndarray, axis: int = -1) -> np.ndarray:
    r""":math:`dx = y \odot (dy - \sum_k y_k dy_k)` from the softmax output ``y``."""
    if _is_bf16(y):
        return _round_like(softmax_backward(_widen_bf16(y), _widen_bf16(dy), axis), y)
    return (y * (dy - np.sum(y * dy, axis=axis, keepdims=True))).astype(y.dtype, copy=False)


def log_softmax_backward(y: np.ndarray, dy: np.ndarray, axis: int = -1) -> np.ndarray:
    r""":math:`dx = dy - e^{y} \sum_k dy_k` from the log-softmax output ``y``."""
    if _is_bf16(y):
        return _round_like(log_softmax_backward(_widen_bf16(y), _widen_bf16(dy), axis), y)
    return (dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True)).astype(y.dtype, copy=False)


def softmax_cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    grad_output: np.ndarray | float | None = None,
    axis: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Cross-entropy of ``softmax(logits)`` along ``axis`` and its gradient (PyTorch semantics).

    With :math:`\ell = -\log\mathrm{softmax}(x)`, class weights :math:`w` (1 if None),
    :math:`\epsilon` = ``label_smoothing`` and :math:`K` classes, per row:

    - class target :math:`y`:
      :math:`(1-\epsilon) w_y \ell_y + \frac{\epsilon}{K}\sum_k w_k \ell_k`; rows with
      ``target == ignore_index`` give 0; ``mean`` divides by :math:`\sum w_{y}` over kept rows.
    - probability target :math:`t` (the logits' shape), :math:`t' = (1-\epsilon)t + \epsilon/K`:
      :math:`\sum_k w_k t'_k \ell_k` (entries with :math:`t'_k = 0` contribute 0); ``mean``
      divides by the number of rows.

    An all -inf row has loss +inf and gradient ``-target`` (softmax taken as 0). When ``mean``
    has nothing to divide by (every row ignored, no rows, or no classes: PyTorch divides a
    probability target's sum by ``numel / K``) the loss is NaN and the gradient 0. A row with
    no classes has loss 0.
    ``grad_output`` scales the gradient (per row for ``reduction="none"``).
    """
    if _is_bf16(logits):
        loss, grad = softmax_cross_entropy(
            _widen_bf16(logits), _widen_bf16(target), _widen_bf16(weight), ignore_index, reduction,
            label_smoothing, _widen_bf16(grad_output), axis,
        )  # fmt: skip
        return loss.astype(np.float32), _round_like(grad, logits)
    x = logits
    ax = axis % x.ndim
    k = x.shape[ax]
    wshape = tuple(k if i == ax else 1 for i in range(x.ndim))
    w = np.ones(k, x.dtype) if weight is None else weight
    wb = w.reshape(wshape)
    eps_k = label_smoothing / k if k else 0.0  # no classes: nothing to smooth over
    p = softmax(x, ax)
    lsm = log_softmax(x, ax)
    with np.errstate(invalid="ignore"):
        nll = np.where(np.isneginf(lsm), np.inf, -lsm)
    if np.issubdtype(target.dtype, np.floating):
        t = target * (1 - label_smoothing) + eps_k
        wt = wb * t
        with np.errstate(invalid="ignore"):
            per = np.sum(np.where(wt == 0, 0, wt * nll), axis=ax)
        coef = np.sum(wt, axis=ax, keepdims=True)
        grad = coef * p - wt
        divisor = per.size if k else 0
    else:
        live = target != ignore_index
        y = np.where(live, target, 0).astype(np.int64)
        yk = np.expand_dims(y, ax)
        onehot = np.zeros(x.shape, bool)
        wy = np.zeros(y.shape, x.dtype)
        wy[live] = w[y[live]]
        nll_y = np.zeros(y.shape, x.dtype)
        if k:  # with no classes every row is ignored (anything else is out of range)
            np.put_along_axis(onehot, yk, True, axis=ax)
            nll_y = np.take_along_axis(nll, yk, axis=ax).squeeze(ax)
        per = (1 - label_smoothing) * wy * nll_y
        if label_smoothing:
            per = per + eps_k * np.sum(wb * nll, axis=ax)
        per = np.where(live, per, 0)
        a = np.expand_dims((1 - label_smoothing) * wy, ax)
        grad = (a + eps_k * np.sum(w)) * p - a * onehot - eps_k * wb
        grad = np.where(np.expand_dims(live, ax), grad, 0)
        divisor = float(np.sum(wy))
    if reduction == "none":
        g = 1.0 if grad_output is None else np.expand_dims(np.asarray(grad_output), ax)
        return per.astype(x.dtype), (grad * g).astype(x.dtype)
    g = 1.0 if grad_output is None else float(grad_output)
    total = float(np.sum(per))
    if reduction == "sum":
        return np.asarray(total, x.dtype), (grad * g).astype(x.dtype)
    if divisor == 0:
        return np.asarray(np.nan, x.dtype), np.zeros_like(x)
    return np.asarray(total / divisor, x.dtype), (grad * (g / divisor)).astype(x.dtype)


def sigmoid_binary_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    weight: np.ndarray | None = None,
    pos_weight: np.ndarray | None = None,
    reduction: str = "mean",
    grad_output: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Binary cross-entropy of ``sigmoid(logits)`` per element, and its gradient.

    With :math:`c = 1 + (p_w - 1) y`:
    :math:`w\,[(1 - y)x + c(\log(1 + e^{-|x|}) + \max(-x, 0))]`, which for :math:`p_w = 1` is the
    stable :math:`\max(x, 0) - xy + \log(1 + e^{-|x|})`; gradient
    :math:`w\,(c\,\sigma(x) - p_w y)`. ``weight`` broadcasts to the input, ``pos_weight`` along
    the last axis. ``mean`` divides by the number of elements (NaN for none, as in PyTorch).
    """
    if _is_bf16(logits):
        loss, grad = sigmoid_binary_cross_entropy(
            _widen_bf16(logits), _widen_bf16(targets), _widen_bf16(weight), _widen_bf16(pos_weight), reduction,
            _widen_bf16(grad_output),
        )  # fmt: skip
        return loss.astype(np.float32), _round_like(grad, logits)
    x, y = logits, targets
    pw = 1.0 if pos_weight is None else pos_weight
    w = 1.0 if weight is None else weight
    c = 1 + (pw - 1) * y
    with np.errstate(over="ignore", invalid="ignore"):
        loss = w * ((1 - y) * x + c * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)))
        sig = 1 / (1 + np.exp(-x))
    grad = w * (c * sig - pw * y)
    if reduction == "none":
        g = 1.0 if grad_output is None else grad_output
        return loss.astype(x.dtype), (grad * g).astype(x.dtype)
    g = 1.0 if grad_output is None else float(grad_output)
    if reduction == "sum":
        return np.asarray(np.sum(loss), x.dtype), (grad * g).astype(x.dtype)
    if x.size == 0:
        return np.asarray(np.nan, x.dtype), grad.astype(x.dtype)
    n = x.size
    return np.asarray(np.sum(loss) / n, x.dtype), (grad * (g / n)).astype(x.dtype)
