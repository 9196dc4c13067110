"""bnfast's kernels as PyTorch operators in the ``bnfast`` namespace (``torch.ops.bnfast.*``).

What tracing sees: ``torch.compile`` and ``torch.export`` capture these operators (each with a
fake implementation giving exact shapes, dtypes and strides, and autograd registered beside
it), so a converted model compiles with no graph break and its graph calls the kernels. Eager
calls of :mod:`bnfast.torch` do not go through them: the dispatcher adds ~15 µs a call, so
eager code keeps its direct path (``functional.py``), and the functional layer switches to
these operators only while ``torch.compiler.is_compiling()``.

Operators (all CPU; float32/float64 with parameters in the input's dtype, or bfloat16 data with
float32 or bfloat16 parameters; statistics, weight gradients and losses of bfloat16 data are
float32):

``batch_norm_train(x, weight?, bias?, running_mean(a!)?, running_var(b!)?, momentum, eps)``
    ``-> (y, save_mean, save_invstd)``; the running statistics are updated in place (declared).
``batch_norm_eval(x, weight?, bias?, running_mean, running_var, eps) -> (y, mean, invstd)``
``batch_norm_backward(dy, x, mean, invstd, weight?, training, y?) -> (dx, dweight, dbias)``
    ``y``, the forward's output, is not read: autograd passes it so that a compiled graph keeps
    it for the backward (below).
``cross_entropy(x, target, weight?, ignore_index, reduction, label_smoothing) -> (loss, grad)``
    the loss and its gradient w.r.t. ``x`` (for an upstream gradient of 1) in one pass; the
    backward scales it by the upstream gradient (inductor: one in-place pass).
``softmax(x, dim)``, ``log_softmax(x, dim)``, ``softmax_backward(y, dy, dim)``,
``log_softmax_backward(y, dy, dim)``
``binary_cross_entropy_with_logits(x, target, weight?, pos_weight?, reduction) -> (loss, grad)``

Batch-norm outputs keep the input's layout: a channels-last input gives channels-last outputs.

Why the backward takes ``y``: after an operator inductor cannot see into, the partitioner keeps
a following ReLU's mask as a bool tensor rather than the 4-byte ``y`` (it cannot recompute
``y``), and inductor writes bool tensors one element at a time with a branch on its sign
(PyTorch 2.13: 10 ms for 1M floats, 0.45 ms eager). With ``y`` saved anyway, the mask is
recomputed from it inside the fused ReLU backward: the conv-net step of ``bnfast bench`` ran
0.44x compiled PyTorch before, see bench/README.md. It costs keeping one activation per batch
norm to the backward, as eager PyTorch keeps the ReLU's output.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

import torch
from torch import Tensor
from torch.library import custom_op, register_fake

from bnfast import _core
from bnfast.functional import _bce_param
from bnfast.torch._fallback import as_numpy, empty, torch_threads

__all__ = ["OPS"]

_CL = {4: torch.channels_last, 5: torch.channels_last_3d}


def _channels_last(x: Tensor) -> bool:
    fmt = _CL.get(x.dim())
    return fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt)


def _layout(x: Tensor) -> tuple[Tensor, int]:
    """``x`` as a C-contiguous tensor (a view, or a copy for other layouts) and its channel
    axis in it: 1, or -1 for a channels-last input (viewed with the channels last)."""
    if _channels_last(x):
        return x.movedim(1, -1), -1
    return x.contiguous(), 1


def _like_input(x: Tensor) -> Tensor:
    """An uninitialised tensor with the layout the kernels give for input ``x``."""
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    if _channels_last(x):
        return torch.empty_like(x, memory_format=fmt)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _vec(t: Tensor | None) -> Any:
    return None if t is None else as_numpy(t.contiguous())


def _channels(x: Tensor) -> int:
    return x.shape[1] if x.dim() > 1 else x.shape[0]


# ---- batch norm -----------------------------------------------------------------------------

# The batch-norm kernels take contiguous and channels-last inputs alike (the fakes give the
# output layout from the input's), so inductor may hand them either: it lays convolution
# outputs out channels-last on CPU, and a fixed (traced, contiguous) layout would cost a copy
# before and after every batch norm.
_ANY_LAYOUT = (torch.Tag.flexible_layout,)


@custom_op(
    "bnfast::batch_norm_train",
    mutates_args=("running_mean", "running_var"),
    device_types="cpu",
    tags=_ANY_LAYOUT,
)
def batch_norm_train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    xv, axis = _layout(x)
    buf = empty(xv.shape, x.dtype)
    with torch_threads():
        _, mean, invstd = _core.batch_norm_train(
            as_numpy(xv),
            axis,
            _vec(weight),
            _vec(bias),
            as_numpy(running_mean),
            as_numpy(running_var),
            momentum,
            eps,
            as_numpy(buf),
        )
    y = buf if axis == 1 else buf.movedim(-1, 1)
    return y, torch.from_numpy(mean), torch.from_numpy(invstd)


@custom_op("bnfast::batch_norm_eval", mutates_args=(), device_types="cpu", tags=_ANY_LAYOUT)
def batch_norm_eval(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    xv, axis = _layout(x)
    buf = empty(xv.shape, x.dtype)
    with torch_threads():
        _, mean, invstd = _core.batch_norm_eval(
            as_numpy(xv),
            axis,
            _vec(weight),
            _vec(bias),
            _vec(running_mean),
            _vec(running_var),
            eps,
            as_numpy(buf),
        )
    y = buf if axis == 1 else buf.movedim(-1, 1)
    return y, torch.from_numpy(mean), torch.from_numpy(invstd)


# The backward takes ``x`` in any layout too, but ``dy`` in ``x``'s (else it copies ``dy``): its
# inductor lowering asks for that (``_dy_like_x``), so no tag here.
@custom_op("bnfast::batch_norm_backward", mutates_args=(), device_types="cpu")
def batch_norm_backward(
    dy: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    training: bool,
    y: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    xv, axis = _layout(x)
    dyv = dy.movedim(1, -1).contiguous() if axis == -1 else dy.contiguous()
    buf = empty(xv.shape, x.dtype)
    with torch_threads():
        _, dw, db = _core.batch_norm_backward(
            as_numpy(dyv),
            as_numpy(xv),
            axis,
            _vec(mean),
            _vec(invstd),
            _vec(weight),
            training,
            as_numpy(buf),
        )
    dx = buf if axis == 1 else buf.movedim(-1, 1)
    return dx, torch.from_numpy(dw), torch.from_numpy(db)


def _stat_dtype(x: Tensor) -> torch.dtype:
    """The dtype the kernels give statistics, weight gradients and losses of data ``x`` in."""
    return torch.float32 if x.dtype == torch.bfloat16 else x.dtype


def _stats_fake(x: Tensor) -> tuple[Tensor, Tensor]:
    c = x.shape[1]
    return x.new_empty((c,), dtype=_stat_dtype(x)), x.new_empty((c,), dtype=_stat_dtype(x))


@register_fake("bnfast::batch_norm_train")
def _(x, weight, bias, running_mean, running_var, momentum, eps):  # type: ignore[no-untyped-def]
    return (_like_input(x), *_stats_fake(x))


@register_fake("bnfast::batch_norm_eval")
def _(x, weight, bias, running_mean, running_var, eps):  # type: ignore[no-untyped-def]
    return (_like_input(x), *_stats_fake(x))


@register_fake("bnfast::batch_norm_backward")
def _(dy, x, mean, invstd, weight, training, y=None):  # type: ignore[no-untyped-def]
    if "torch._inductor.lowering" in sys.modules:  # tracing for inductor: lowered before long
        _lower_batch_norm_backward()
    return (_like_input(x), *_stats_fake(x))


def _dy_like_x(fx_node, dy, x, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Inductor layout constraint of ``batch_norm_backward``: ``x`` keeps the layout inductor
    gave it (a convolution's output is channels-last on the CPU) and ``dy`` gets the same
    strides, written so by the kernel that computes it (the ReLU/pooling backward before it),
    where a layout fixed at tracing would copy one of them at every step."""
    from torch._inductor import ir
    from torch._inductor.virtualized import V

    x = ir.ExternKernel.realize_input(x)  # x recomputed in backward: a buffer, layout frozen
    order = ir.get_stride_order(x.get_stride(), V.graph.sizevars.shape_env)
    x = ir.ExternKernel.require_stride_order(x, order)
    return (ir.ExternKernel.require_stride_order(dy, order), x, *args), kwargs


@functools.cache
def _lower_batch_norm_backward() -> None:
    """Registers ``batch_norm_backward``'s inductor lowering (a call of the operator, with
    :func:`_dy_like_x`) once inductor is loaded: importing it at ``import bnfast.torch`` would
    cost eager users ~0.7 s."""
    from torch._inductor.lowering import lowerings, make_fallback

    op = torch.ops.bnfast.batch_norm_backward.default
    if op not in lowerings:
        make_fallback(op, layout_constraint=_dy_like_x)


def _bn_setup(ctx, inputs, output, training):  # type: ignore[no-untyped-def]
    x, weight = inputs[0], inputs[1]
    ctx.save_for_backward(x, weight, output[1], output[2], output[0])
    ctx.training = training
    ctx.has_weight, ctx.has_bias = weight is not None, inputs[2] is not None


def _bn_backward(ctx, dy, _dmean, _dinvstd):  # type: ignore[no-untyped-def]
    x, weight, mean, invstd, y = ctx.saved_tensors
    dx, dw, db = torch.ops.bnfast.batch_norm_backward(dy, x, mean, invstd, weight, ctx.training, y)
    return dx, dw if ctx.has_weight else None, db if ctx.has_bias else None


def _bn_train_backward(ctx, dy, dmean, dinvstd):  # type: ignore[no-untyped-def]
    return (*_bn_backward(ctx, dy, dmean, dinvstd), None, None, None, None)


def _bn_eval_backward(ctx, dy, dmean, dinvstd):  # type: ignore[no-untyped-def]
    return (*_bn_backward(ctx, dy, dmean, dinvstd), None, None, None)


# The training forward mutates the running statistics, and ``register_autograd`` refuses
# operators that mutate (autograd of a mutated *differentiable* input is ill-defined). Here the
# mutated tensors are never differentiated (their gradient is None), so the formula is attached
# the way ``register_autograd`` itself stores it; the generated autograd kernel reads these two.
batch_norm_train._setup_context_fn = lambda ctx, inputs, output: _bn_setup(
    ctx, inputs, output, True
)
batch_norm_train._backward_fn = _bn_train_backward
batch_norm_eval.register_autograd(
    _bn_eval_backward,
    setup_context=lambda ctx, inputs, output: _bn_setup(ctx, inputs, output, False),
)


# ---- cross-entropy --------------------------------------------------------------------------


@custom_op("bnfast::cross_entropy", mutates_args=(), device_types="cpu")
def cross_entropy(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> tuple[Tensor, Tensor]:
    axis = 1 if x.dim() > 1 else 0
    xc = x.contiguous()
    grad = empty(x.shape, x.dtype)
    with torch_threads():
        loss, _ = _core.softmax_cross_entropy(
            as_numpy(xc),
            as_numpy(target.contiguous()),
            axis,
            _vec(weight),
            ignore_index,
            reduction,
            label_smoothing,
            None,
            as_numpy(grad),
        )
    return torch.from_numpy(loss), grad


@register_fake("bnfast::cross_entropy")
def _(x, target, weight, ignore_index, reduction, label_smoothing):  # type: ignore[no-untyped-def]
    rows = x.shape[:1] + x.shape[2:] if x.dim() > 1 else ()
    shape = rows if reduction == "none" else ()
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    return x.new_empty(shape, dtype=_stat_dtype(x)), grad


def _ce_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    x, target, weight, _, reduction, label_smoothing = inputs
    ctx.axis = 1 if x.dim() > 1 else 0
    ctx.reduction, ctx.label_smoothing = reduction, label_smoothing
    ctx.target_grad = target.dtype.is_floating_point and target.requires_grad
    ctx.save_for_backward(output[1], *((x, weight) if ctx.target_grad else ()))


def _ce_backward(ctx, go, _dgrad):  # type: ignore[no-untyped-def]
    grad, *x_weight = ctx.saved_tensors
    dx = dt = None
    if ctx.needs_input_grad[0]:
        # Plain PyTorch arithmetic, not an operator of ours: an operator must return a new
        # tensor (a second pass into a fresh buffer), while inductor makes this one in-place
        # pass over the saved gradient, a buffer the backward owns ("donated"), and fuses it
        # with whatever consumes it. The pass remains even for ``loss.backward()``'s upstream 1,
        # which the eager path skips: a traced graph cannot know the tangent's value.
        scale = go if go.dim() == 0 else go.unsqueeze(ctx.axis)
        dx = (grad * scale).to(grad.dtype)  # bfloat16 logits have float32 losses
    if ctx.target_grad and ctx.needs_input_grad[1]:
        x, weight = x_weight
        dt = torch.ops.bnfast.log_softmax(x, ctx.axis)
        if ctx.reduction == "none":
            scale = go.unsqueeze(ctx.axis)
        elif ctx.reduction == "mean":
            scale = go / math.prod(n for i, n in enumerate(x.shape) if i != ctx.axis)
        else:
            scale = go
        dt = dt * (scale * -(1.0 - ctx.label_smoothing))
        if weight is not None:
            dt = dt * weight.view((-1,) + (1,) * (x.dim() - ctx.axis - 1))
    return dx, dt, None, None, None, None


cross_entropy.register_autograd(_ce_backward, setup_context=_ce_setup)


# ---- softmax and log-softmax ----------------------------------------------------------------


def _rows(fn: Any, x: Tensor, dim: int, *more: Tensor) -> Tensor:
    out = empty(x.shape, x.dtype)
    with torch_threads():
        fn(as_numpy(x.contiguous()), *(as_numpy(t.contiguous()) for t in more), dim, as_numpy(out))
    return out


@custom_op("bnfast::softmax", mutates_args=(), device_types="cpu")
def softmax(x: Tensor, dim: int) -> Tensor:
    return _rows(_core.softmax, x, dim)


@custom_op("bnfast::log_softmax", mutates_args=(), device_types="cpu")
def log_softmax(x: Tensor, dim: int) -> Tensor:
    return _rows(_core.log_softmax, x, dim)


@custom_op("bnfast::softmax_backward", mutates_args=(), device_types="cpu")
def softmax_backward(y: Tensor, dy: Tensor, dim: int) -> Tensor:
    return _rows(_core.softmax_backward, y, dim, dy)


@custom_op("bnfast::log_softmax_backward", mutates_args=(), device_types="cpu")
def log_softmax_backward(y: Tensor, dy: Tensor, dim: int) -> Tensor:
    return _rows(_core.log_softmax_backward, y, dim, dy)


def _rows_fake(x, *rest):  # type: ignore[no-untyped-def]
    return torch.empty_like(x, memory_format=torch.contiguous_format)


for _name in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward"):
    register_fake(f"bnfast::{_name}", _rows_fake)


def _save_output(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.save_for_backward(output)
    ctx.dim = inputs[1]


softmax.register_autograd(
    lambda ctx, dy: (torch.ops.bnfast.softmax_backward(ctx.saved_tensors[0], dy, ctx.dim), None),
    setup_context=_save_output,
)
log_softmax.register_autograd(
    lambda ctx, dy: (
        torch.ops.bnfast.log_softmax_backward(ctx.saved_tensors[0], dy, ctx.dim),
        None,
    ),
    setup_context=_save_output,
)


# ---- sigmoid binary cross-entropy -----------------------------------------------------------


@custom_op("bnfast::binary_cross_entropy_with_logits", mutates_args=(), device_types="cpu")
def binary_cross_entropy_with_logits(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    def param(t: Tensor | None, name: str) -> Any:
        if t is None:
            return None
        return _bce_param(as_numpy(t), name, tuple(x.shape), as_numpy(x).dtype)

    grad = empty(x.shape, x.dtype)
    with torch_threads():
        loss, _ = _core.sigmoid_binary_cross_entropy(
            as_numpy(x.contiguous()),
            as_numpy(target.to(x.dtype).contiguous()),
            param(weight, "weight"),
            param(pos_weight, "pos_weight"),
            reduction,
            None,
            as_numpy(grad),
        )
    return torch.from_numpy(loss), grad


@register_fake("bnfast::binary_cross_entropy_with_logits")
def _(x, target, weight, pos_weight, reduction):  # type: ignore[no-untyped-def]
    shape = x.shape if reduction == "none" else ()
    return (
        x.new_empty(shape, dtype=_stat_dtype(x)),
        torch.empty_like(x, memory_format=torch.contiguous_format),
    )


def _bce_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.save_for_backward(output[1])


def _bce_backward(ctx, go, _dgrad):  # type: ignore[no-untyped-def]
    (grad,) = ctx.saved_tensors
    return grad * go, None, None, None, None


binary_cross_entropy_with_logits.register_autograd(_bce_backward, setup_context=_bce_setup)

OPS = (
    batch_norm_train,
    batch_norm_eval,
    batch_norm_backward,
    cross_entropy,
    softmax,
    log_softmax,
    softmax_backward,
    log_softmax_backward,
    binary_cross_entropy_with_logits,
)
