"""The layer protocol shared by every layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnfast._arrays import aligned_empty

__all__ = ["Module"]


class Module:
    """Base class: training flag, parameter/gradient lists and state dicts."""

    training: bool = True
    backend: str = "native"

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def train(self, mode: bool = True) -> Module:
        self.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def set_backend(self, backend: str) -> Module:
        """Run this layer on ``"native"`` kernels or the ``"numpy"`` reference (bnfast.backend)."""
        from bnfast.backend import check_backend

        self.backend = check_backend(backend)
        return self

    def parameters(self) -> list[np.ndarray]:
        """Trainable arrays, updated in place by optimizers."""
        return []

    def gradients(self) -> list[np.ndarray]:
        """Gradient arrays matching :meth:`parameters` one to one."""
        return []

    def zero_grad(self) -> None:
        for g in self.gradients():
            g.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
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
