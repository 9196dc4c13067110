"""Batch normalization layer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bnfast import functional as F
from bnfast import reference
from bnfast._arrays import is_bfloat16
from bnfast.nn.module import Module, _Rows, layer_dtypes

__all__ = ["BatchNorm"]


class BatchNorm(Module):
    """Batch normalization over the channel axis ``axis`` (PyTorch's BatchNorm1d/2d/3d).

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float
        Added to the variance.
    momentum : float or None
        Running-average weight of each batch; ``None`` gives the cumulative average.
    affine : bool
        Learn ``weight`` (gamma) and ``bias`` (beta).
    axis : int
        Channel axis: 1 for ``(N, C)``, ``(N, C, L)`` and NCHW, -1 for channels-last.
    dtype : numpy dtype or "bfloat16"
        float32 (default), float64 or bfloat16 (``"bfloat16"`` or ``ml_dtypes.bfloat16``). With
        bfloat16 the input, output and gradients are bfloat16 while ``weight``, ``bias``, their
        gradients and the running statistics stay float32 (PyTorch's mixed-precision batch
        norm).

    Notes
    -----
    In training mode the batch statistics normalize the input and the running statistics are
    updated; in evaluation mode the running statistics are used. Training needs more than one
    value per channel (a batch of one ``(1, C)`` sample raises ValueError).
    """

    _params = ("weight", "bias")
    _grads = ("dweight", "dbias")
    _buffers = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        axis: int = 1,
        dtype: Any = np.float32,
    ) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)):
            raise TypeError("num_features must be an int")
        if num_features < 0:
            raise ValueError(f"num_features must be >= 0, got {num_features}")
        pdt, dtype = layer_dtypes(dtype)  # float32 parameters and statistics beside bfloat16
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.axis = int(axis)
        self.dtype = dtype
        self.weight = np.ones(num_features, pdt) if affine else None
        self.bias = np.zeros(num_features, pdt) if affine else None
        self.dweight = np.zeros(num_features, pdt) if affine else None
        self.dbias = np.zeros(num_features, pdt) if affine else None
        self.running_mean = np.zeros(num_features, pdt)
        self.running_var = np.ones(num_features, pdt)
        self.num_batches_tracked = np.zeros((), np.int64)
        self._out, self._dx = _Rows(), _Rows()
        self._saved: tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.dtype)
        out = self._out.get(x.shape, x.dtype)
        if np.may_share_memory(out, x):  # our own output fed back in: backward needs x intact
            out = np.empty_like(x)
        if self.training:
            self.num_batches_tracked += 1
            m = 1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
        else:
            m = 0.0
        if self.backend == "native":
            res = F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias,
                training=self.training, momentum=m, eps=self.eps, axis=self.axis, out=out,
            )  # fmt: skip
            y, mean, invstd = res.out, res.mean, res.invstd
        else:
            y, mean, invstd = self._reference_forward(x, m)
        self._saved = (x, mean, invstd, self.training)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._saved is None:
            raise RuntimeError("backward called before forward")
        x, mean, invstd, training = self._saved
        dy = np.ascontiguousarray(dy, dtype=self.dtype)
        out = self._dx.get(x.shape, x.dtype)
        if np.may_share_memory(out, dy) or np.may_share_memory(out, x):
            out = np.empty_like(x)
        if self.backend == "native":
            dx, dw, db = F.batch_norm_backward(
                dy, x, mean, invstd, self.weight, training=training, axis=self.axis, out=out
            )
        else:
            dx, dw, db = reference.batch_norm_backward(
                dy, x, mean, invstd, self.weight, training=training, axis=self.axis
            )
            if is_bfloat16(x.dtype):  # the reference returns float64: round as the kernels
                dx = reference.round_bfloat16(dx)
        if self.affine:
            self.dweight += dw
            self.dbias += db
        return dx

    def _reference_forward(
        self, x: np.ndarray, momentum: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The NumPy twin of the forward: fresh arrays, allocation included (the baseline)."""
        axis = self.axis % x.ndim
        if self.training:
            # The kernels refuse one value per channel (the unbiased running variance divides
            # by M - 1); the reference would divide by zero instead.
            if math.prod(n for i, n in enumerate(x.shape) if i != axis) == 1:
                raise ValueError("batch norm in training needs more than one value per channel")
            y, mean, invstd = reference.batch_norm_train(
                x, self.running_mean, self.running_var, self.weight, self.bias,
                momentum=momentum, eps=self.eps, axis=self.axis,
            )  # fmt: skip
        else:
            y = reference.batch_norm_eval(
                x, self.running_mean, self.running_var, self.weight, self.bias,
                eps=self.eps, axis=self.axis,
            )  # fmt: skip
            invstd = (1.0 / np.sqrt(self.running_var + self.eps)).astype(self.running_var.dtype)
            mean = self.running_mean.copy()
        if is_bfloat16(x.dtype):  # the reference returns float64: round as the kernels
            pdt = self.running_mean.dtype
            return reference.round_bfloat16(y), mean.astype(pdt), invstd.astype(pdt)
        return y, mean, invstd

    def __repr__(self) -> str:
        return (
            f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, axis={self.axis})"
        )
