"""Stateless functions over the compiled kernels: argument handling and one call into _core.

Arrays in, arrays out. Inputs may be any array NumPy can view without a copy (buffer protocol,
``__array_interface__``, DLPack). Read-only inputs that are not C-contiguous are copied;
arrays updated in place (running statistics, ``out=``) must be C-contiguous, writable and of
the input's dtype, else the call is refused before anything is written. Supported dtypes are
float32 and float64, and bfloat16 (``ml_dtypes.bfloat16``, or the bits view bnfast.torch uses)
for softmax, log-softmax, their backward and the losses: bfloat16 in, bfloat16 out, computed in
float32 and rounded once; losses, class weights and per-row ``grad_output`` are float32 there
(weights and ``grad_output`` may also be bfloat16).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from bnfast import _core
from bnfast._arrays import (
    as_array,
    contiguous,
    float_input,
    inplace,
    is_bfloat16,
    optional_input,
)
from bnfast._deprecation import renamed_keywords

__all__ = [
    "BatchNormOutput",
    "batch_norm",
    "batch_norm_backward",
    "log_softmax",
    "log_softmax_backward",
    "sigmoid_binary_cross_entropy",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
]


class BatchNormOutput(NamedTuple):
    """What :func:`batch_norm` returns: the output and the statistics backward needs."""

    out: np.ndarray
    """The normalized output, same shape and dtype as the input."""
    mean: np.ndarray
    """Per-channel mean used (batch mean in training, running mean in evaluation)."""
    invstd: np.ndarray
    """Per-channel ``1 / sqrt(var + eps)`` used."""


def _bn_channel_input(obj: Any, name: str, x: np.ndarray) -> np.ndarray | None:
    """A per-channel input of batch norm: of x's dtype, or beside bfloat16 x float32 or
    bfloat16 (PyTorch's mixed-type rule; _core checks which, naming the argument)."""
    if x.dtype.kind != "V":  # x passed float_input: float32, float64, or bfloat16 ("V")
        return optional_input(obj, name, x.dtype)
    return None if obj is None else float_input(obj, name)


def batch_norm(
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    axis: int = 1,
    out: np.ndarray | None = None,
) -> BatchNormOutput:
    """Batch normalization, PyTorch's ``F.batch_norm`` semantics, any channel axis.

    The positional arguments are ``F.batch_norm``'s, in its order; ``axis`` and ``out`` are
    keyword-only. The running statistics may be left out in training (PyTorch takes None).

    Parameters
    ----------
    x : array_like, float32, float64 or bfloat16
        Input of any shape; ``axis`` is the channel axis. ``(N, C)``, ``(N, C, L)`` and NCHW
        use ``axis=1``; channels-last NHWC uses ``axis=-1``. bfloat16 input follows PyTorch's
        mixed-type batch norm: the output is bfloat16, computed in float32; the per-channel
        arrays may be float32 or bfloat16, and the returned statistics are float32.
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
        Non-float dtypes, or parameters whose dtype differs from ``x`` (beside bfloat16 ``x``:
        that is neither float32 nor bfloat16).
    ValueError
        Wrong shapes, a read-only or overlapping ``out``, one value per channel in training,
        missing running statistics in evaluation.
    """
    x = float_input(x, "x")
    weight = _bn_channel_input(weight, "weight", x)
    bias = _bn_channel_input(bias, "bias", x)
    rm = inplace(running_mean, "running_mean")
    rv = inplace(running_var, "running_var")
    if training:
        y, mean, invstd = _core.batch_norm_train(
            x, axis, weight, bias, rm, rv, float(momentum), float(eps), out
        )
    else:
        if rm is None or rv is None:
            raise ValueError("running_mean and running_var are required when training=False")
        y, mean, invstd = _core.batch_norm_eval(x, axis, weight, bias, rm, rv, float(eps), out)
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
        ``dweight = sum(dy * xhat)`` and ``dbias = sum(dy)`` per channel. For bfloat16 ``x``
        (and ``dy``), ``dx`` is bfloat16 and ``dweight``, ``dbias`` float32; ``mean``,
        ``invstd`` and ``weight`` may be float32 or bfloat16.
    """
    x = float_input(x, "x")
    dy = float_input(dy, "dy", x.dtype)
    mean = _bn_channel_input(mean, "mean", x)
    invstd = _bn_channel_input(invstd, "invstd", x)
    weight = _bn_channel_input(weight, "weight", x)
    return _core.batch_norm_backward(dy, x, axis, mean, invstd, weight, bool(training), out)


# ---- softmax and cross-entropy ------------------------------------------------------------------


def softmax(x: Any, *, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax along ``axis``, computed as ``exp(x - max) / sum`` (never overflows).

    ``axis`` (PyTorch's ``dim``) and ``out`` are keyword-only.

    Parameters
    ----------
    x : array_like, float32, float64 or bfloat16
        Any shape; ``axis`` is the class axis (viewed as ``(A, K, B)`` like batch norm).
    axis : int
        The axis to normalize over.
    out : ndarray, optional
        Where to write the result (may be ``x`` itself).

    Returns
    -------
    ndarray
        Same shape and dtype as ``x``. A row of all ``-inf`` gives zeros; NaN in a row makes
        that row NaN; ``+inf`` entries give NaN (as in PyTorch). A 0-d ``x`` is one row of one
        value (``axis`` 0 or -1) and gives a 0-d result; an empty axis gives an empty result.
    """
    x = float_input(x, "x", keep_0d=True)
    return _core.softmax(x, int(axis), out)


def log_softmax(x: Any, *, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """Log-softmax along ``axis``: ``x - max - log(sum(exp(x - max)))`` in that order.

    A row of all ``-inf`` gives ``-inf``; otherwise as :func:`softmax`.
    """
    x = float_input(x, "x", keep_0d=True)
    return _core.log_softmax(x, int(axis), out)


def softmax_backward(y: Any, dy: Any, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`softmax` from its output ``y``: ``y * (dy - sum(y * dy))``.

    ``out`` may be ``y`` or ``dy`` itself.
    """
    y = float_input(y, "y", keep_0d=True)
    dy = float_input(dy, "dy", y.dtype, keep_0d=True)
    return _core.softmax_backward(y, dy, int(axis), out)


def log_softmax_backward(
    y: Any, dy: Any, axis: int = -1, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`log_softmax` from its output ``y``: ``dy - exp(y) * sum(dy)``."""
    y = float_input(y, "y", keep_0d=True)
    dy = float_input(dy, "dy", y.dtype, keep_0d=True)
    return _core.log_softmax_backward(y, dy, int(axis), out)


def _param_input(obj: Any, name: str, dtype: np.dtype, keep_0d: bool = False) -> np.ndarray | None:
    """A float parameter beside data of ``dtype``: of that dtype; beside bfloat16 data float32
    (the precision the kernels compute in) or bfloat16 (widened exactly by the kernels). Other
    dtypes are a TypeError, as a float64 weight beside float32 logits is."""
    if obj is None:
        return None
    if not is_bfloat16(dtype):
        return float_input(obj, name, dtype, keep_0d=keep_0d)
    a = float_input(obj, name, keep_0d=keep_0d)
    if a.dtype != np.float32 and not is_bfloat16(a.dtype):
        raise TypeError(f"{name} must be float32 or bfloat16 beside bfloat16 logits, got {a.dtype}")
    return a


def _grad_output(grad_output: Any, reduction: str, dtype: np.dtype) -> Any:
    """A float for ``mean``/``sum``; for ``none`` an array of the loss's shape and the logits'
    dtype, float32 beside bfloat16 logits (a Python number is taken in that dtype, for a 0-d
    loss)."""
    if grad_output is None:
        return None
    if reduction != "none":
        return float(grad_output)
    if isinstance(grad_output, (int, float)) and not isinstance(grad_output, bool):
        grad_output = np.asarray(grad_output, np.float32 if is_bfloat16(dtype) else dtype)
    return _param_input(grad_output, "grad_output", dtype, keep_0d=True)


def _class_target(target: Any) -> np.ndarray:
    t = as_array(target, "target")
    if is_bfloat16(t.dtype):
        return contiguous(t, "target")  # probabilities beside bfloat16 logits
    if t.dtype.kind == "b" or t.dtype.kind not in "iuf":
        raise TypeError(
            f"target must be integer class indices or float probabilities, got {t.dtype}"
        )
    if t.dtype.kind == "f":
        return contiguous(t, "target")  # probabilities have the logits' shape (ndim >= 1)
    big = t.dtype.kind == "u" and t.dtype.itemsize == 8 and t.size > 0
    if big and t.max() > np.iinfo(np.int64).max:
        raise IndexError(f"target holds {t.max()}, out of range for any number of classes")
    if t.dtype.kind == "u" or t.dtype.itemsize not in (4, 8) or not t.dtype.isnative:
        return contiguous(t, "target", np.int64, keep_0d=True)
    return contiguous(t, "target", keep_0d=True)


def softmax_cross_entropy(
    logits: Any,
    target: Any,
    weight: Any = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    grad_output: Any = None,
    axis: int | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax cross-entropy and its gradient w.r.t. the logits, in one pass over the logits.

    PyTorch's ``F.cross_entropy`` semantics for every option. ``logits``, ``target`` and
    ``weight`` may be positional; the rest are keyword-only (PyTorch's fourth positional
    argument is the deprecated ``size_average``, which bnfast does not take).

    Parameters
    ----------
    logits : array_like, float32, float64 or bfloat16
        ``(N, K)``, ``(N, K, d1, ...)`` (class axis 1) or ``(K,)``; ``axis`` is the class axis.
    target : array_like
        Class indices of any integer dtype with the logits' shape without the class axis, each
        in ``[0, K)`` or equal to ``ignore_index``; or probabilities of the logits' shape and
        dtype.
    weight : array_like of shape (K,), optional
        Per-class weights; ``mean`` then divides by the sum of the weights of the rows kept.
        Of the logits' dtype; float32 or bfloat16 beside bfloat16 logits.
    ignore_index : int
        Class-index rows equal to it contribute nothing (loss 0, gradient 0). Probability
        targets allow only a negative value (PyTorch's rule).
    reduction : {"mean", "sum", "none"}
        ``none`` returns one loss per row (the target's shape).
    label_smoothing : float in [0, 1]
        Mixes the target with the uniform distribution.
    grad_output : float or array_like, optional
        Upstream gradient: a scalar for ``mean``/``sum``, one value per row for ``none`` (an
        array of the loss's shape and the logits' dtype; a number for a 0-d loss).
    axis : int, optional
        The class axis: by default 1, or 0 for unbatched ``(K,)`` logits (PyTorch's rule).
    out : ndarray, optional
        Where to write the gradient (reused buffers avoid page faults on large inputs).

    Returns
    -------
    loss : ndarray
        0-d for ``mean``/``sum``, the target's shape for ``none``; the logits' dtype, float32
        for bfloat16 logits (as PyTorch's autocast computes cross-entropy).
    grad : ndarray
        ``d(loss)/d(logits)`` (times ``grad_output``), the logits' shape and dtype.

    Raises
    ------
    IndexError
        A class index out of range (names the row); raised before anything is written.
    TypeError
        Non-float logits, a weight of another dtype, boolean or non-numeric targets.
    ValueError
        Wrong shapes, ``label_smoothing`` outside [0, 1], an unknown ``reduction``, a
        probability target with ``ignore_index >= 0``.

    Notes
    -----
    Defined results where PyTorch gives NaN: a row of all ``-inf`` logits has loss ``+inf`` and
    gradient ``-target`` (its softmax is taken as 0); probability-target entries equal to 0
    contribute 0 even where the logit is ``-inf``. Like PyTorch, ``mean`` with nothing to
    average (every row ignored, no rows, or no classes with a probability target) gives a NaN
    loss; the gradient is then 0. ``sum`` over no rows is 0; a row with no classes has loss 0.
    """
    x = float_input(logits, "logits")
    t = _class_target(target)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if t.dtype.kind == "f" or is_bfloat16(t.dtype):
        if t.dtype != x.dtype:
            raise TypeError(f"probability target must be {x.dtype} like the logits, got {t.dtype}")
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index={ignore_index} is not supported for probability targets "
                "(only class-index targets can be ignored)"
            )
    w = _param_input(weight, "weight", x.dtype)
    grad_output = _grad_output(grad_output, reduction, x.dtype)
    if axis is None:
        axis = 0 if x.ndim == 1 else 1
    return _core.softmax_cross_entropy(
        x, t, int(axis), w, int(ignore_index), reduction, float(label_smoothing), grad_output, out
    )


def _to_bfloat16(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Numbers as bfloat16 ``dtype`` (ml_dtypes' or the bits view, so no ml_dtypes needed),
    rounded as the kernels round (csrc's bfloat16.h): to nearest even through float32, NaN kept
    quiet, float32 subnormals to signed zero."""
    if is_bfloat16(a.dtype):
        return a if a.dtype == dtype else a.view(np.uint16).view(dtype)
    u = np.asarray(a, dtype=np.float32).view(np.uint32)
    hi = u >> 16
    r = (u + 0x7FFF + (hi & 1)) >> 16
    r = np.where((u & 0x7FFFFFFF) > 0x7F800000, hi | 0x40, r)
    r = np.where((u & 0x7F800000) == 0, hi & 0x8000, r)
    return np.ascontiguousarray(r.astype(np.uint16)).view(dtype)


def _bce_param(obj: Any, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """A weight broadcast to the input: kept as a (C,) vector when it varies only along the last
    axis, else materialized to the full shape. Cast to the logits' dtype; beside bfloat16
    logits to float32 (the kernels' parameter type), bfloat16 weights kept (widened exactly)."""
    if obj is None:
        return None
    a = as_array(obj, name)
    bf16_param = is_bfloat16(a.dtype) and is_bfloat16(dtype)
    if not bf16_param and (a.dtype.kind not in "iuf" or a.dtype.kind == "b"):
        raise TypeError(f"{name} must be a float array, got {a.dtype}")
    if not bf16_param:
        a = a.astype(np.float32 if is_bfloat16(dtype) else dtype, copy=False)
    try:
        np.broadcast_shapes(a.shape, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to {shape}") from None
    if np.broadcast_shapes(a.shape, shape) != shape:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to {shape}")
    c = shape[-1] if shape else 1
    if all(d == 1 for d in a.shape[:-1]) and len(shape) >= 1:
        return np.ascontiguousarray(np.broadcast_to(a.reshape(a.shape[-1:] or (1,)), (c,)))
    return np.ascontiguousarray(np.broadcast_to(a, shape))


@renamed_keywords(targets="target")
def sigmoid_binary_cross_entropy(
    logits: Any,
    target: Any,
    weight: Any = None,
    *,
    reduction: str = "mean",
    pos_weight: Any = None,
    grad_output: Any = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary cross-entropy of ``sigmoid(logits)`` per element, and its gradient.

    One independent binary classifier per class, for labels that are not mutually exclusive.
    PyTorch's ``F.binary_cross_entropy_with_logits`` semantics, stable form
    ``max(x, 0) - x*y + log1p(exp(-|x|))``. ``logits``, ``target`` and ``weight`` may be
    positional; the rest are keyword-only. ``targets=`` (the old name of ``target``) still
    works, with a DeprecationWarning, until the next release.

    Parameters
    ----------
    logits : array_like, float32, float64 or bfloat16
        Any shape.
    target : array_like
        Same shape; cast to the logits' dtype (0/1 labels or probabilities; bfloat16 beside
        bfloat16 logits, as PyTorch requires, rounded to nearest).
    weight : array_like, optional
        Broadcast to the input's shape; multiplies the loss of each element.
    reduction : {"mean", "sum", "none"}
        ``mean`` divides by the number of elements (NaN for an empty input, as in PyTorch).
    pos_weight : array_like, optional
        Weight of the positive term, broadcast along the last axis (one per class).
    grad_output : float or array_like, optional
        Upstream gradient (per element for ``none``).
    out : ndarray, optional
        Where to write the gradient.

    Returns
    -------
    loss, grad : ndarray
        ``grad`` of the logits' dtype; ``loss`` too, float32 for bfloat16 logits.
    """
    x = float_input(logits, "logits", keep_0d=True)
    y = as_array(target, "target")
    if y.dtype.kind not in "biuf" and not is_bfloat16(y.dtype):
        raise TypeError(f"target must be numeric, got {y.dtype}")
    if y.shape != x.shape:
        raise ValueError(f"target must have the logits' shape {x.shape}, got {y.shape}")
    if is_bfloat16(x.dtype):
        y = _to_bfloat16(contiguous(y, "target", keep_0d=True), x.dtype)
    else:
        y = contiguous(y, "target", x.dtype, keep_0d=True)
    w = _bce_param(weight, "weight", x.shape, x.dtype)
    pw = _bce_param(pos_weight, "pos_weight", x.shape, x.dtype)
    grad_output = _grad_output(grad_output, reduction, x.dtype)
    return _core.sigmoid_binary_cross_entropy(x, y, w, pw, reduction, grad_output, out)
