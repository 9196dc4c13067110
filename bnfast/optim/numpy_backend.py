"""The optimizers of ``backend="numpy"`` runs: the NumPy reference's updates behind the
:mod:`bnfast.optim` interface (today Adam only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bnfast import reference
from bnfast._arrays import is_bfloat16

__all__ = ["ReferenceAdam"]


class ReferenceAdam:
    """Adam (PyTorch's, with bias correction) stepping through ``bnfast.reference.adam``.

    The constructor, ``step(grads=None)``, ``zero_grad()``, the ``lr`` attribute and the state
    dict follow :class:`bnfast.optim.Adam`; this is its NumPy-reference twin for
    ``backend="numpy"`` runs, not a second implementation of the update. bfloat16 parameters
    keep float32 state unless ``state_dtype="bfloat16"`` (keyword-only), as in
    :class:`bnfast.optim.Adam`.
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
        *,
        state_dtype: str | None = None,
    ) -> None:
        self.params = list(params)
        self.grads = None if grads is None else list(grads)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)
        self.step_count = 0
        if state_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(
                f"state_dtype must be None, 'float32' or 'bfloat16', got {state_dtype!r}"
            )

        def zeros(p: np.ndarray) -> np.ndarray:
            bf16_state = is_bfloat16(p.dtype) and state_dtype == "bfloat16"
            return np.zeros(
                p.shape, p.dtype if bf16_state or not is_bfloat16(p.dtype) else np.float32
            )

        self.exp_avg = [zeros(p) for p in self.params]
        self.exp_avg_sq = [zeros(p) for p in self.params]
        self.max_exp_avg_sq = [zeros(p) for p in self.params] if amsgrad else None

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
                if dst is None:
                    continue
                if is_bfloat16(dst.dtype):  # ml_dtypes' or the bits view: copy the bits
                    dst.view(np.uint16)[...] = np.asarray(src).view(np.uint16)
                else:
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
