"""Softmax, log-softmax and loss layers over :mod:`bnfast.functional` (or, on the ``"numpy"``
backend, :mod:`bnfast.reference`).

Losses take ``forward(logits, target) -> float`` and ``backward() -> dlogits`` (the gradient of
the loss, computed in the same pass as the loss and kept until the next ``forward``). Their
gradient buffer is reused while the logits' shape stays the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnfast import functional as F
from bnfast import reference
from bnfast._arrays import is_bfloat16, is_float
from bnfast.nn.module import Module, _Rows

__all__ = ["LogSoftmax", "SigmoidBinaryCrossEntropy", "Softmax", "SoftmaxCrossEntropy"]


def _float_input(x: Any, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if not is_float(x.dtype):
        raise TypeError(f"{name} must be float32, float64 or bfloat16, got {x.dtype}")
    return x


def _param_dtype(x: np.ndarray) -> np.dtype:
    """The dtype of a loss's weights for logits ``x``: float32 beside bfloat16 logits."""
    return np.dtype(np.float32) if is_bfloat16(x.dtype) else x.dtype


class Softmax(Module):
    """Softmax along ``axis`` (default -1, like ``torch.nn.Softmax(dim=-1)``)."""

    _native = (F.softmax, F.softmax_backward)
    _reference = (reference.softmax, reference.softmax_backward)

    def __init__(self, axis: int = -1) -> None:
        self.axis = int(axis)
        self._out, self._dx = _Rows(), _Rows()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _float_input(x, "x")
        if self.backend == "native":
            out = self._out.get(x.shape, x.dtype)
            if np.shares_memory(out, x):  # our own earlier output fed back in
                out = np.empty_like(x)
            self._y = self._native[0](x, axis=self.axis, out=out)
        else:
            self._y = self._reference[0](x, axis=self.axis)
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._y is None:
            raise RuntimeError("backward called before forward")
        y = self._y
        dy = np.ascontiguousarray(dy, dtype=y.dtype)
        if self.backend != "native":
            return self._reference[1](y, dy, axis=self.axis)
        dx = self._dx.get(y.shape, y.dtype)
        if np.shares_memory(dx, dy):
            dx = np.empty_like(y)
        return self._native[1](y, dy, axis=self.axis, out=dx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(axis={self.axis})"


class LogSoftmax(Softmax):
    """Log-softmax along ``axis`` (default -1)."""

    _native = (F.log_softmax, F.log_softmax_backward)
    _reference = (reference.log_softmax, reference.log_softmax_backward)


class _Loss(Module):
    """A loss: ``forward`` computes the loss and its gradient, ``backward`` returns the gradient."""

    def __init__(self, reduction: str) -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self._grad_rows = _Rows()
        self._grad: np.ndarray | None = None

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:
        x = _float_input(logits, "logits")
        self._grad = None  # a failed forward leaves no stale gradient behind
        if self.backend == "native":
            out = self._grad_rows.get(x.shape, x.dtype)
            if np.shares_memory(out, x):
                out = np.empty_like(x)
            loss, self._grad = self._native(x, target, out)
        else:
            loss, self._grad = self._reference(x, target)
        return float(loss)

    def backward(self, dy: Any = None) -> np.ndarray:
        """The gradient w.r.t. the logits of the last ``forward`` (times ``dy`` if given)."""
        if self._grad is None:
            raise RuntimeError("backward called before forward")
        if dy is None or dy == 1:
            return self._grad
        self._grad *= float(dy)
        return self._grad

    def _native(self, x: np.ndarray, target: Any, out: np.ndarray) -> tuple[Any, np.ndarray]:
        raise NotImplementedError

    def _reference(self, x: np.ndarray, target: Any) -> tuple[Any, np.ndarray]:
        raise NotImplementedError


class SoftmaxCrossEntropy(_Loss):
    """Softmax cross-entropy over the class axis 1 (``torch.nn.CrossEntropyLoss``).

    Parameters
    ----------
    weight : array_like of shape (K,), optional
        Per-class weights.
    ignore_index : int
        Target value whose rows are ignored.
    reduction : {"mean", "sum"}
        How the per-row losses are combined (``forward`` returns a float).
    label_smoothing : float
        In [0, 1].
    axis : int
        The class axis.

    See :func:`bnfast.softmax_cross_entropy` for the exact semantics and edge cases.
    """

    def __init__(
        self,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        axis: int = 1,
    ) -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.axis = int(axis)

    def _options(self, x: np.ndarray) -> dict[str, Any]:
        return {
            "weight": None
            if self.weight is None
            else self.weight.astype(_param_dtype(x), copy=False),
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
        }

    def _native(self, x: np.ndarray, target: Any, out: np.ndarray) -> tuple[Any, np.ndarray]:
        return F.softmax_cross_entropy(x, target, **self._options(x), out=out)

    def _reference(self, x: np.ndarray, target: Any) -> tuple[Any, np.ndarray]:
        return reference.softmax_cross_entropy(x, np.asarray(target), **self._options(x))

    def __repr__(self) -> str:
        return (
            f"SoftmaxCrossEntropy(ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing})"
        )


class SigmoidBinaryCrossEntropy(_Loss):
    """Sigmoid binary cross-entropy, one classifier per class (``BCEWithLogitsLoss``).

    Parameters
    ----------
    weight : array_like, optional
        Broadcast to the input; multiplies each element's loss.
    pos_weight : array_like, optional
        Weight of the positive term per class (last axis).
    reduction : {"mean", "sum"}
    """

    def __init__(self, weight: Any = None, pos_weight: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight)

    def _native(self, x: np.ndarray, target: Any, out: np.ndarray) -> tuple[Any, np.ndarray]:
        return F.sigmoid_binary_cross_entropy(
            x, target, weight=self.weight, pos_weight=self.pos_weight,
            reduction=self.reduction, out=out,
        )  # fmt: skip

    def _reference(self, x: np.ndarray, target: Any) -> tuple[Any, np.ndarray]:
        def cast(a: Any) -> Any:
            return None if a is None else np.asarray(a, x.dtype)

        return reference.sigmoid_binary_cross_entropy(
            x, cast(target), weight=cast(self.weight), pos_weight=cast(self.pos_weight),
            reduction=self.reduction,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"SigmoidBinaryCrossEntropy(reduction={self.reduction!r})"
