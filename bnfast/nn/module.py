"""The base class of every layer and loss: it owns the bookkeeping, so a layer states its math.

A layer names its arrays in three class attributes and inherits the rest:

- ``_params``: trainable arrays, updated in place by optimizers;
- ``_grads``: their gradients, in the same order (``parameters()`` and ``gradients()`` are the
  contract with the optimizers);
- ``_buffers``: state that is saved and restored but not trained (running statistics, counters).

An attribute that is ``None`` (a layer built without a bias) is skipped. A container lists its
sub-layers in :meth:`Module.children`; their parameters, gradients, state (keys
``"<name>.<key>"``), training flag and backend follow the container's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np

from bnfast import _core
from bnfast._arrays import aligned_empty, bfloat16, is_bfloat16
from bnfast.backend import check_backend

__all__ = ["Module", "layer_dtypes"]


def layer_dtypes(dtype: Any) -> tuple[np.dtype, np.dtype]:
    """A layer's ``(parameter dtype, activation dtype)`` for its ``dtype`` argument.

    float32 and float64 layers compute in that dtype. ``"bfloat16"`` layers keep float32
    parameters (master weights: the optimizers step float32) and pass bfloat16 activations
    (ml_dtypes arrays) between layers, as ``torch.autocast`` trains a float32 model.
    """
    if isinstance(dtype, str) and dtype == "bfloat16":
        return np.dtype(np.float32), bfloat16()
    dt = np.dtype(dtype)
    if is_bfloat16(dt):
        return np.dtype(np.float32), dt
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32, float64 or 'bfloat16', got {dt}")
    return dt, dt


def to_activation(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float32 ``y`` rounded into bfloat16 ``out`` (the kernels' rounding), or ``y`` itself when
    ``out`` has its dtype (``out`` is then unused)."""
    if out.dtype == y.dtype:
        return y
    _core.round_bfloat16(y, out)
    return out


_M = TypeVar("_M", bound="Module")


class Module:
    """Base class: training flag, backend, parameter/gradient lists and state dicts."""

    _params: ClassVar[tuple[str, ...]] = ()
    _grads: ClassVar[tuple[str, ...]] = ()
    _buffers: ClassVar[tuple[str, ...]] = ()
    training: bool = True
    backend: str = "native"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """A layer's ``forward(x)``, a loss's ``forward(logits, target)``."""
        raise NotImplementedError

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """A layer's ``backward(dy) -> dx``, a loss's ``backward() -> dlogits``."""
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def children(self) -> Iterable[tuple[str, Module]]:
        """``(name, layer)`` of each sub-layer; none for a plain layer."""
        return ()

    def train(self: _M, mode: bool = True) -> _M:
        self.training = bool(mode)
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self: _M) -> _M:
        return self.train(False)

    def set_backend(self: _M, backend: str) -> _M:
        """Run on the ``"native"`` kernels or the ``"numpy"`` reference (:mod:`bnfast.backend`)."""
        self.backend = check_backend(backend)
        for _, child in self.children():
            child.set_backend(backend)
        return self

    def _arrays(self, names: tuple[str, ...]) -> list[np.ndarray]:
        return [a for a in (getattr(self, name) for name in names) if a is not None]

    def parameters(self) -> list[np.ndarray]:
        """Trainable arrays, updated in place by optimizers."""
        own = self._arrays(self._params)
        return own + [p for _, child in self.children() for p in child.parameters()]

    def gradients(self) -> list[np.ndarray]:
        """Gradient arrays matching :meth:`parameters` one to one."""
        own = self._arrays(self._grads)
        return own + [g for _, child in self.children() for g in child.gradients()]

    def zero_grad(self) -> None:
        for g in self.gradients():
            g.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The parameters and buffers by name: the live arrays, not copies."""
        state = {}
        for name in self._params + self._buffers:
            value = getattr(self, name)
            if value is not None:
                state[name] = value
        for prefix, child in self.children():
            for key, value in child.state_dict().items():
                state[f"{prefix}.{key}"] = value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy ``state`` into the arrays of :meth:`state_dict` (KeyError on a key mismatch,
        ValueError on a shape mismatch)."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for key, dst in own.items():
            src = np.asarray(state[key])
            if src.shape != dst.shape:
                raise ValueError(f"{key}: expected shape {dst.shape}, got {src.shape}")
            dst[...] = src


class _Rows:
    """A growable scratch array: ``get(shape)`` returns a C-contiguous view of its first rows
    (the same view object while the shape repeats).

    Line-aligned, so the kernels may stream large outputs into it (non-temporal stores).
    """

    __slots__ = ("buf", "view")

    def __init__(self) -> None:
        self.buf: np.ndarray | None = None
        self.view: np.ndarray | None = None

    def get(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        v = self.view
        if v is not None and v.shape == shape and v.dtype == dtype:
            return v
        if not shape:
            return np.empty((), dtype)
        b = self.buf
        if b is None or b.dtype != dtype or b.shape[1:] != shape[1:] or b.shape[0] < shape[0]:
            self.buf = b = aligned_empty(shape, dtype)
        self.view = v = b[: shape[0]]
        return v
