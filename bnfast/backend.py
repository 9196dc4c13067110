"""The backend switch: the same network on the native kernels or on the NumPy reference.

``"native"`` runs the compiled kernels (:mod:`bnfast.functional`, :mod:`bnfast.optim`,
:class:`bnfast.nn.SoftmaxCrossEntropy`); ``"numpy"`` runs their twins in
:mod:`bnfast.reference`. Everything else (the matrix products of :class:`~bnfast.nn.Linear`,
the activations) is NumPy in both. Training one network on each backend from the same
initial weights gives the same results within float tolerance: the reference check extended to
whole training, and the baseline the ``bnfast demo`` speed-up is measured against.

This module is the one place that knows the reference functions' signatures; layers, the loss
and the optimizer go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bnfast import reference

__all__ = [
    "BACKENDS",
    "ReferenceAdam",
    "ReferenceSoftmaxCrossEntropy",
    "batch_norm",
    "batch_norm_backward",
    "check_backend",
    "make_loss",
    "make_optimizer",
]

BACKENDS = ("native", "numpy")


def check_backend(backend: str) -> str:
    """Return ``backend`` if it names a backend, else raise ValueError (TypeError if no str)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def batch_norm(
    backend: str,
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    training: bool,
    momentum: float,
    eps: float,
    axis: int,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch-norm forward: ``(y, mean, invstd)``; the native path writes ``y`` into ``out``.

    The reference returns fresh arrays (``out`` is ignored): it is the textbook baseline,
    allocation included.
    """
    if backend == "native":
        from bnfast import functional as F

        res = F.batch_norm(
            x, running_mean, running_var, weight, bias,
            training=training, momentum=momentum, eps=eps, axis=axis, out=out,
        )  # fmt: skip
        return res.out, res.mean, res.invstd
    if training:
        # The kernels refuse one value per channel; the reference would divide by zero.
        if x.size // x.shape[axis % x.ndim] < 2:
            raise ValueError("batch norm in training needs more than one value per channel")
        return reference.batch_norm_train(
            x, running_mean, running_var, weight, bias, momentum=momentum, eps=eps, axis=axis
        )
    y = reference.batch_norm_eval(x, running_mean, running_var, weight, bias, eps=eps, axis=axis)
    invstd = (1.0 / np.sqrt(running_var + eps)).astype(x.dtype)
    return y, running_mean.copy(), invstd


def batch_norm_backward(
    backend: str,
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    invstd: np.ndarray,
    weight: np.ndarray | None,
    training: bool,
    axis: int,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch-norm backward: ``(dx, dweight, dbias)``; the native path writes ``dx`` to ``out``."""
    if backend == "native":
        from bnfast import functional as F

        return F.batch_norm_backward(
            dy, x, mean, invstd, weight, training=training, axis=axis, out=out
        )
    return reference.batch_norm_backward(dy, x, mean, invstd, weight, training=training, axis=axis)


class ReferenceSoftmaxCrossEntropy:
    """:class:`bnfast.nn.SoftmaxCrossEntropy` on ``bnfast.reference.softmax_cross_entropy``.

    Same constructor options and the same ``forward(logits, target) -> loss`` /
    ``backward() -> dlogits`` protocol.
    """

    def __init__(
        self,
        weight: np.ndarray | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        self.options = {
            "weight": weight,
            "ignore_index": ignore_index,
            "reduction": reduction,
            "label_smoothing": label_smoothing,
        }
        self._grad: np.ndarray | None = None

    def forward(self, logits: np.ndarray, target: np.ndarray) -> Any:
        loss, self._grad = reference.softmax_cross_entropy(logits, target, **self.options)
        return loss

    __call__ = forward

    def backward(self) -> np.ndarray:
        if self._grad is None:
            raise RuntimeError("backward called before forward")
        return self._grad


def make_loss(backend: str = "native", **options: Any) -> Any:
    """Softmax cross-entropy loss object for ``backend`` (options as PyTorch's)."""
    if check_backend(backend) == "native":
        from bnfast.nn.losses import SoftmaxCrossEntropy

        return SoftmaxCrossEntropy(**options)
    return ReferenceSoftmaxCrossEntropy(**options)


class ReferenceAdam:
    """Adam (PyTorch's, with bias correction) stepping through ``bnfast.reference.adam``.

    The constructor, ``step(grads=None)``, ``zero_grad()``, the ``lr`` attribute and the state
    dict follow :class:`bnfast.optim.Adam`; this is its NumPy-reference twin for
    ``backend="numpy"`` runs, not a second implementation of the update.
    """

    def __init__(
        self,
        params: Sequence[np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        grads: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.params = list(params)
        self.grads = None if grads is None else list(grads)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)
        self.step_count = 0
        self.exp_avg = [np.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [np.zeros_like(p) for p in self.params]
        self.max_exp_avg_sq = [np.zeros_like(p) for p in self.params] if amsgrad else None

    def step(self, grads: Sequence[np.ndarray] | None = None) -> None:
        grads = self.grads if grads is None else list(grads)
        if grads is None or len(grads) != len(self.params):
            raise ValueError("step needs one gradient per parameter")
        self.step_count += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            vmax = None if self.max_exp_avg_sq is None else self.max_exp_avg_sq[i]
            new = reference.adam(
                p, g, self.exp_avg[i], self.exp_avg_sq[i], vmax, self.step_count,
                lr=self.lr, betas=self.betas, eps=self.eps,
                weight_decay=self.weight_decay, amsgrad=self.amsgrad,
            )  # fmt: skip
            # The reference is functional: copy the new values into the arrays in place.
            for dst, src in zip((p, self.exp_avg[i], self.exp_avg_sq[i], vmax), new):
                if dst is not None:
                    dst[...] = src

    def zero_grad(self) -> None:
        for g in self.grads or []:
            g.fill(0)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "lr": self.lr,
            "step": self.step_count,
            "exp_avg": [a.copy() for a in self.exp_avg],
            "exp_avg_sq": [a.copy() for a in self.exp_avg_sq],
        }
        if self.max_exp_avg_sq is not None:
            state["max_exp_avg_sq"] = [a.copy() for a in self.max_exp_avg_sq]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.step_count = int(state["step"])
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            own = getattr(self, key)
            if own is None:
                continue
            if len(state[key]) != len(own):
                raise ValueError(f"{key}: expected {len(own)} arrays, got {len(state[key])}")
            for dst, src in zip(own, state[key]):
                dst[...] = src


_NATIVE_OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "momentum": "Momentum",
    "rmsprop": "RMSprop",
}


def make_optimizer(
    name: str,
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray] | None = None,
    backend: str = "native",
    **hyper: Any,
) -> Any:
    """An optimizer by name (``"adam"``, ``"adamw"``, ``"sgd"``, ``"momentum"``, ``"rmsprop"``).

    ``backend="native"`` gives the :mod:`bnfast.optim` class; ``"numpy"`` gives the reference
    twin (Adam only for now).
    """
    key = name.lower()
    if key not in _NATIVE_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(_NATIVE_OPTIMIZERS)}")
    if check_backend(backend) == "native":
        from bnfast import optim

        return getattr(optim, _NATIVE_OPTIMIZERS[key])(params, grads=grads, **hyper)
    if key != "adam":
        raise NotImplementedError(f"backend='numpy' has no {name!r} optimizer yet (only 'adam')")
    return ReferenceAdam(params, grads=grads, **hyper)
