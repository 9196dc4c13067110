"""Softmax, log-softmax and loss layers over :mod:`bnfast.functional`.

Losses take ``forward(logits, target) -> float`` and ``backward() -> dlogits`` (the gradient of
the loss, computed in the same pass as the loss and kept until the next ``forward``). Their
gradient buffer is reused while the logits' shape stays the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnfast import functional as F
from bnfast.nn.module import Module, _Rows

__all__ = ["LogSoftmax", "SigmoidBinaryCrossEntropy", "Softmax", "SoftmaxCrossEntropy"]


class Softmax(Module):
    """Softmax along ``axis`` (default -1, like ``torch.nn.Softmax(dim=-1)``)."""

    _log = False

    def __init__(self, axis: int = -1) -> None:
        self.axis = int(axis)
        self._out, self._dx = _Rows(), _Rows()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"x must be float32 or float64, got {x.dtype}")
        out = self._out.get(x.shape, x.dtype)
        if np.shares_memory(out, x):  # our own earlier output fed back in
            out = np.empty_like(x)
        fn = F.log_softmax if self._log else F.softmax
        self._y = fn(x, self.axis, out=out)
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._y is None:
            raise RuntimeError("backward called before forward")
        y = self._y
        dy = np.ascontiguousarray(dy, dtype=y.dtype)
        dx = self._dx.get(y.shape, y.dtype)
        if np.shares_memory(dx, dy):
            dx = np.empty_like(y)
        fn = F.log_softmax_backward if self._log else F.softmax_backward
        return fn(y, dy, self.axis, out=dx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(axis={self.axis})"


class LogSoftmax(Softmax):
    """Log-softmax along ``axis`` (default -1)."""

    _log = True


class _Loss(Module):
    def __init__(self) -> None:
        self._grads = _Rows()
        self._grad: np.ndarray | None = None
        self._ready = False

    def __call__(self, logits: np.ndarray, target: np.ndarray) -> float:  # type: ignore[override]
        return self.forward(logits, target)

    def _grad_buffer(self, x: np.ndarray) -> np.ndarray:
        self._grad = self._grads.get(x.shape, x.dtype)
        if np.shares_memory(self._grad, x):
            self._grad = np.empty_like(x)
        return self._grad

    def backward(self, dy: Any = None) -> np.ndarray:  # type: ignore[override]
        """The gradient w.r.t. the logits of the last ``forward`` (times ``dy`` if given)."""
        if not self._ready or self._grad is None:
            raise RuntimeError("backward called before forward")
        if dy is None or dy == 1:
            return self._grad
        self._grad *= float(dy)
        return self._grad


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
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)
        self.axis = int(axis)

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:  # type: ignore[override]
        x = np.ascontiguousarray(logits)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"logits must be float32 or float64, got {x.dtype}")
        w = None if self.weight is None else self.weight.astype(x.dtype, copy=False)
        self._ready = False
        loss, grad = F.softmax_cross_entropy(
            x, target, w, self.ignore_index, self.reduction, self.label_smoothing,
            axis=self.axis, out=self._grad_buffer(x),
        )  # fmt: skip
        self._grad = grad
        self._ready = True
        return float(loss)

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
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.weight = None if weight is None else np.asarray(weight)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight)
        self.reduction = reduction

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:  # type: ignore[override]
        x = np.ascontiguousarray(logits)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"logits must be float32 or float64, got {x.dtype}")
        self._ready = False
        loss, grad = F.sigmoid_binary_cross_entropy(
            x, target, self.weight, self.pos_weight, self.reduction, out=self._grad_buffer(x)
        )
        self._grad = grad
        self._ready = True
        return float(loss)

    def __repr__(self) -> str:
        return f"SigmoidBinaryCrossEntropy(reduction={self.reduction!r})"
