"""``batch_norm`` and ``cross_entropy`` with PyTorch's signatures, on the bnfast kernels.

Both are autograd-aware (``torch.autograd.Function``) and run the kernels on NumPy views of the
tensors' memory. Whatever the kernels cannot serve runs ``torch.nn.functional``'s own version
after a one-time :class:`~bnfast.torch.FallbackWarning`. Double backward through these
functions is not supported (it raises); use PyTorch's own where it is needed.

Under ``torch.compile``/``torch.export`` both call the ``torch.ops.bnfast`` operators instead
(``bnfast.torch._ops``: same kernels, seen by the tracer), silently falling back to PyTorch's
functions for what the kernels cannot serve (a warning is not traceable).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from bnfast import _core
from bnfast.torch import _ops  # noqa: F401  (registers torch.ops.bnfast)
from bnfast.torch._fallback import (
    as_numpy,
    empty,
    loss_dtype,
    tensor_reason,
    torch_threads,
    tracing_reason,
    warn_fallback,
)

__all__ = ["batch_norm", "cross_entropy"]


# ---- batch norm -----------------------------------------------------------------------------

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _is_channels_last(x: Tensor) -> bool:
    fmt = _CHANNELS_LAST.get(x.dim())
    return fmt is not None and x.is_contiguous(memory_format=fmt)


def _channels_view(x: Tensor) -> tuple[Tensor, int] | None:
    """``x`` as a C-contiguous tensor over the same memory and its channel axis, or None.

    Contiguous inputs keep the channel axis 1; channels-last 4-D/5-D ones (the layouts whose
    output PyTorch also gives channels-last) are viewed with the channel axis moved last. An
    empty tensor is contiguous whatever its strides: one laid out channels-last is viewed so,
    as PyTorch's empty output keeps the input's layout.
    """
    if x.is_contiguous() and (x.numel() or not _is_channels_last(x)):
        return x, 1
    if _is_channels_last(x):
        return x.movedim(1, -1), -1
    return None


_PARAM_NAMES = ("weight", "bias", "running_mean", "running_var")


def _params_reason(params: tuple[Tensor | None, ...], dtype: torch.dtype) -> str | None:
    for name, t in zip(_PARAM_NAMES, params):
        if t is None:
            continue
        # Beside a bfloat16 input PyTorch also takes float32 parameters (its mixed-type batch
        # norm, what a float32 model under torch.autocast runs): so do the kernels.
        mixed = dtype == torch.bfloat16 and t.dtype == torch.float32
        reason = tensor_reason(t, name, torch.float32 if mixed else dtype)
        if reason:
            return reason
        if not t.is_contiguous() or t.dim() != 1:
            return f"{name} is not a contiguous vector"
    return None


def _param_key(t: Tensor | None) -> tuple | None:
    # data_ptr() raises RuntimeError for a tensor without storage.
    return None if t is None else (id(t), t.is_cpu, t.data_ptr(), t.dtype, t.shape, t.stride())


class _ParamCache:
    """NumPy views of a module's per-channel tensors (weight, bias, running statistics).

    Reused while the same tensors keep their memory, dtype and layout: the check costs ~0.4 µs
    a tensor, where validating and converting anew cost ~3 µs (for four tensors, a quarter of
    a cache-resident (256, 1024) evaluation). The tensors are held, so the ids in the key stay theirs. One entry,
    replaced whole, so a module called from two threads never pairs a key with other views.
    """

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[tuple, torch.dtype, tuple, tuple] | None = None

    def lookup(self, params: tuple[Tensor | None, ...], dtype: torch.dtype) -> tuple | None:
        entry = self.entry
        if entry is None or dtype != entry[1]:
            return None
        try:
            key = tuple(map(_param_key, params))
        except RuntimeError:
            return None
        return entry[3] if key == entry[0] else None

    def store(self, params: tuple[Tensor | None, ...], dtype: torch.dtype, arrays: tuple) -> None:
        self.entry = (tuple(map(_param_key, params)), dtype, params, arrays)


def _bn_forward(xv, axis, arrays, training, momentum, eps):  # type: ignore[no-untyped-def]
    """The forward kernel on ``xv`` (the input, channel axis ``axis``) into a new tensor.

    Returns the output in the input's layout, the saved mean and invstd (NumPy) and x's view.
    """
    buf = empty(xv.shape, xv.dtype)
    xn, out = as_numpy(xv), as_numpy(buf)
    w, b, rm, rv = arrays
    with torch_threads():
        if training:
            _, mean, invstd = _core.batch_norm_train(xn, axis, w, b, rm, rv, momentum, eps, out)
        else:
            _, mean, invstd = _core.batch_norm_eval(xn, axis, w, b, rm, rv, eps, out)
    return (buf if axis == 1 else buf.movedim(-1, 1)), mean, invstd, xn


class _BatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, axis, arrays, training, momentum, eps):  # type: ignore[override]
        xv = x if axis == 1 else x.movedim(1, -1)
        y, mean, invstd, xn = _bn_forward(xv, axis, arrays, training, momentum, eps)
        # Saved tensors, freed when backward is done: kept on ctx instead (to the end of the
        # graph), these small arrays changed glibc's heap so that it gave the freed 1 MiB
        # outputs back to the OS and faulted them in again every (256, 1024) step (4x slower).
        ctx.save_for_backward(x, weight, torch.from_numpy(mean), torch.from_numpy(invstd))
        ctx.arrays = (xn, arrays[0])
        ctx.axis, ctx.training, ctx.has_bias = axis, training, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # type: ignore[override]
        x, weight, mean_t, invstd_t = ctx.saved_tensors
        mean, invstd = mean_t.numpy(), invstd_t.numpy()
        axis = ctx.axis
        # The views are not kept past backward (the saved tensors are not either); a retained
        # graph's next backward makes them again.
        arrays, ctx.arrays = ctx.arrays, None
        if arrays is None:
            arrays = (as_numpy(x if axis == 1 else x.movedim(1, -1)), as_numpy(weight))
        dyv = dy if axis == 1 else dy.movedim(1, -1)
        reason = tensor_reason(dy, "grad_output", x.dtype)
        if reason is None and not dyv.is_contiguous():
            reason = "grad_output is not laid out like the input (a copy would be needed)"
        if reason:
            warn_fallback("batch_norm backward", reason)
            dx, dw, db = _torch_bn_backward(dy, x, weight, mean_t, invstd_t, ctx.training)
        else:
            xn, wn = arrays
            buf = empty(dyv.shape, x.dtype)
            with torch_threads():
                _, dw_np, db_np = _core.batch_norm_backward(
                    as_numpy(dyv), xn, axis, mean, invstd, wn, ctx.training, as_numpy(buf)
                )
            dx = buf if axis == 1 else buf.movedim(-1, 1)
            dw, db = torch.from_numpy(dw_np), torch.from_numpy(db_np)
        if weight is None:
            dw = db = None
        elif not ctx.has_bias:
            db = None
        return dx, dw, db, None, None, None, None, None


def _torch_bn_backward(dy, x, weight, mean, invstd, training):
    """PyTorch's batch-norm backward from the statistics the forward saved."""
    if training:
        return torch.ops.aten.native_batch_norm_backward(
            dy, x, weight, None, None, mean, invstd, True, 0.0, [True, True, True]
        )
    shape = [1, -1] + [1] * (x.dim() - 2)
    dims = [0, *range(2, x.dim())]
    scale = invstd if weight is None else weight * invstd
    xhat = (x - mean.view(shape)) * invstd.view(shape)
    return dy * scale.view(shape), (dy * xhat).sum(dims), dy.sum(dims)


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``torch.nn.functional.batch_norm`` on the bnfast kernels (same arguments and result).

    Running statistics are updated in place in training (unbiased variance, ``momentum`` the
    weight of the batch); an empty input gives an empty output and leaves them as they are.
    Contiguous and channels-last inputs run without copies; anything else runs PyTorch's own
    function after a one-time warning.
    """
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    owner: torch.nn.Module | None = None,
) -> Tensor:
    """:func:`batch_norm`, with the parameter views cached on module ``owner`` when given."""
    params = (weight, bias, running_mean, running_var)
    view = arrays = cache = None
    tracing = tracing_reason()
    compiling = tracing == "torch.compile"  # then the bnfast operators (below) serve the call
    reason = (None if compiling else tracing) or tensor_reason(x, "input")
    if reason is None:
        if owner is not None and not compiling:  # traced calls make no views (nor a cache)
            # The dict directly: Module.__getattr__ costs ~0.6 us a name.
            cache = owner.__dict__.get("_bnfast_params")
            if cache is None:
                cache = owner.__dict__["_bnfast_params"] = _ParamCache()
        arrays = None if cache is None else cache.lookup(params, x.dtype)
        if arrays is None:
            reason = _params_reason(params, x.dtype)
    if reason is None:
        view = _channels_view(x)
        if x.dim() < 2:
            reason = ""  # no channel axis: PyTorch's own answer (an error; empty for shape (0,))
        elif view is None:
            reason = f"input of strides {tuple(x.stride())} is neither contiguous nor channels-last"
        elif not training and (running_mean is None or running_var is None):
            reason = ""  # PyTorch's own error
        else:
            # PyTorch's errors, in its order (the kernels' own messages differ).
            if training:
                F._verify_batch_size(x.size())  # one value per channel
                if eps <= 0.0:
                    raise ValueError(
                        f"batch_norm eps must be positive during training, but got {eps}"
                    )
            if eps < 0.0:
                raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if reason is not None:
        if reason and not compiling:
            warn_fallback("batch_norm", reason)
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    if compiling:
        # What torch.compile/torch.export capture: the registered operators (see _ops.py).
        if training:
            return torch.ops.bnfast.batch_norm_train(
                x, weight, bias, running_mean, running_var, float(momentum), float(eps)
            )[0]
        return torch.ops.bnfast.batch_norm_eval(x, weight, bias, running_mean, running_var, eps)[0]
    if arrays is None:
        arrays = tuple(map(as_numpy, params))
        if cache is not None:
            cache.store(params, x.dtype, arrays)
    xv, axis = view  # type: ignore[misc]
    training, momentum = bool(training), float(momentum)
    if torch.is_grad_enabled() and (
        x.requires_grad
        or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)
    ):
        return _BatchNormFn.apply(x, weight, bias, axis, arrays, training, momentum, eps)
    # Nothing to differentiate: the kernel without autograd's Function (~4 us a call).
    return _bn_forward(xv, axis, arrays, training, momentum, eps)[0]


# ---- cross-entropy --------------------------------------------------------------------------

_REDUCTIONS = ("none", "mean", "sum")


def _ce_reason(x, target, weight, ignore_index, reduction, label_smoothing, tracing) -> str | None:
    """Why the fused kernel cannot serve this call; "" for calls PyTorch must reject itself.

    Under torch.compile/torch.export (``tracing``) the reasons are those of an eager call (the
    registered operator then serves it)."""
    reason = (None if tracing == "torch.compile" else tracing) or tensor_reason(x, "input")
    if reason:
        return reason
    if x.dim() == 0 or reduction not in _REDUCTIONS or not 0.0 <= label_smoothing <= 1.0:
        return ""
    if not x.is_contiguous():
        return "input is not contiguous (a copy would be needed)"
    if weight is not None:
        # torch.autocast runs the loss of bfloat16 logits in float32, a float32 weight included
        # (the kernel reads float32 class weights beside bfloat16 logits).
        mixed = weight.dtype == torch.float32 and loss_dtype(x) == torch.float32
        if weight.dtype != x.dtype and not mixed:
            return ""  # PyTorch rejects it
        reason = tensor_reason(weight, "weight", weight.dtype)
        if reason:
            return reason
        if weight.requires_grad:
            return "weight requires grad"
        if not weight.is_contiguous() or weight.shape != (x.shape[1 if x.dim() > 1 else 0],):
            return ""
    plain = type(target) is torch.Tensor or (
        isinstance(target, torch.Tensor) and tracing == "torch.compile"  # fake under export
    )
    if not plain or target.device.type != "cpu":
        return "target is not a CPU tensor"
    if target.dtype.is_floating_point:
        if target.shape != x.shape:
            return ""
        if ignore_index >= 0:  # PyTorch's check, made before it promotes the dtypes
            raise RuntimeError("ignore_index is not supported for floating point target")
        if target.dtype != x.dtype:  # PyTorch promotes
            return f"probability target is {target.dtype} while the input is {x.dtype}"
    elif target.dtype == torch.int64:
        if target.shape != (x.shape[:1] + x.shape[2:] if x.dim() > 1 else ()):
            return ""
    elif target.dtype == torch.uint8:
        return "target has dtype torch.uint8"
    else:
        return ""  # PyTorch rejects other integer targets
    if not target.is_contiguous():
        return "target is not contiguous (a copy would be needed)"
    return None


class _CrossEntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, label_smoothing):  # type: ignore[override]
        axis = 1 if x.dim() > 1 else 0
        grad = empty(x.shape, x.dtype)
        with torch_threads():
            loss, _ = _core.softmax_cross_entropy(  # the arguments are checked (_ce_reason)
                as_numpy(x),
                as_numpy(target),
                axis,
                as_numpy(weight),
                ignore_index,
                reduction,
                label_smoothing,
                None,
                as_numpy(grad),
            )
        # A probability target's gradient needs log_softmax(x): made in backward from x, and
        # only for a target that requires grad (nothing kept or computed otherwise).
        ctx.save_for_backward(grad, *((x, weight) if ctx.needs_input_grad[1] else ()))
        ctx.axis, ctx.reduction, ctx.label_smoothing = axis, reduction, label_smoothing
        return torch.from_numpy(loss).to(loss_dtype(x))  # float32 from bfloat16 logits

    @staticmethod
    @once_differentiable
    def backward(ctx, go):  # type: ignore[override]
        grad, *x_weight = ctx.saved_tensors
        dx = dt = None
        if ctx.needs_input_grad[0]:
            if go.dim() == 0:
                # loss.backward() passes 1: the fused pass already computed the whole gradient.
                dx = grad if go.item() == 1.0 else grad * go
            else:
                dx = grad * go.unsqueeze(ctx.axis)
        if x_weight:
            dt = _target_grad(go, *x_weight, ctx.axis, ctx.reduction, ctx.label_smoothing)
        return dx, dt, None, None, None, None


def _target_grad(go, x, weight, axis, reduction, label_smoothing):  # type: ignore[no-untyped-def]
    """The gradient of the loss with respect to a probability target.

    The loss of a row is ``-sum_k w_k ((1 - s) t_k + s / K) logp_k`` (``s`` the label smoothing,
    ``logp = log_softmax(x)``), so ``d loss / d t_k = -(1 - s) w_k logp_k``, times the row's
    upstream gradient: ``go`` for "none" (one per row) and "sum", ``go / rows`` for "mean"
    (PyTorch's divisor for probability targets: the number of rows, not a weight sum).
    """
    dt = empty(x.shape, x.dtype)
    with torch_threads():
        _core.log_softmax(as_numpy(x), axis, as_numpy(dt))
    if reduction == "none":
        scale = go.unsqueeze(axis)
    elif reduction == "mean":
        scale = go / math.prod(n for i, n in enumerate(x.shape) if i != axis)
    else:
        scale = go
    dt.mul_(scale * -(1.0 - label_smoothing))
    if weight is not None:
        dt.mul_(weight.view((-1,) + (1,) * (x.dim() - axis - 1)))
    return dt


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """``torch.nn.functional.cross_entropy`` with the loss and its gradient in one fused pass.

    Same arguments and results: class-index targets (int64; uint8 runs PyTorch's) with ``weight``,
    ``ignore_index`` and ``label_smoothing``, or probability targets of the input's shape and
    dtype; ``reduction`` ``"mean"``, ``"sum"`` or ``"none"``; class axis 1 (or 0 for a 1-D
    input). The gradient is computed in the forward pass and kept for backward (one tensor of
    the input's size, as PyTorch keeps its log-softmax). A probability target that requires
    grad gets its gradient too (from a log-softmax of the input made in backward). The deprecated
    ``size_average`` and ``reduce`` run PyTorch's function.

    Where PyTorch gives NaN for a row of all ``-inf`` logits, bnfast defines the result
    (loss ``+inf``; see :func:`bnfast.softmax_cross_entropy`).
    """
    tracing = tracing_reason()
    compiling = tracing == "torch.compile"  # then the bnfast operator (below) serves the call
    if size_average is not None or reduce is not None:
        reason: str | None = "the deprecated size_average/reduce arguments"
    else:
        reason = _ce_reason(
            input, target, weight, ignore_index, reduction, float(label_smoothing), tracing
        )
    if reason is not None:
        if reason and not compiling:
            warn_fallback("cross_entropy", reason)
        return F.cross_entropy(
            input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing
        )
    if compiling:
        return torch.ops.bnfast.cross_entropy(
            input, target, weight, int(ignore_index), reduction, float(label_smoothing)
        )[0].to(loss_dtype(input))
    return _CrossEntropyFn.apply(
        input, target, weight, int(ignore_index), reduction, float(label_smoothing)
    )
