"""Dense layers, activations, dropout and the container that chains them.

NumPy does the arithmetic here (the matrix products go through its BLAS); the kernels live in
the batch-norm layer and the loss. Every layer writes its output and its input gradient into
buffers it keeps: a batch with no more rows than an earlier one gets a view of the first rows of
the same buffer (C-contiguous), so a training loop, whose last batch may be smaller, allocates
nothing large after its first step. An output therefore stays valid only until the layer's next
call of the same kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from bnfast.nn.batchnorm import BatchNorm
from bnfast.nn.module import Module, _Rows, layer_dtypes, to_activation

__all__ = ["Dropout", "Linear", "ReLU", "Sequential", "Tanh", "mlp"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class Linear(Module):
    """Fully connected layer ``y = x @ weight.T + bias`` (PyTorch's layout and names).

    Parameters
    ----------
    in_features, out_features : int
        Sizes of each input and output row.
    bias : bool
        Learn an additive bias (redundant right before a batch norm, which has its own).
    init : {"he", "xavier"}
        Weights drawn from a normal distribution with standard deviation ``sqrt(2 / fan_in)``
        (He et al., for ReLU networks) or ``sqrt(2 / (fan_in + fan_out))`` (Glorot and Bengio,
        for tanh). The bias starts at zero.
    rng : numpy Generator, int or None
        Source of the initial weights (an int is a seed).
    dtype : float32 (default), float64 or "bfloat16"
        "bfloat16": float32 parameters and products, bfloat16 input and output (see
        :func:`bnfast.nn.module.layer_dtypes`); a float32 input is taken as it is.

    Notes
    -----
    Gradients accumulate into ``dweight`` / ``dbias`` until :meth:`zero_grad`.
    """

    _params = ("weight", "bias")
    _grads = ("dweight", "dbias")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "he",
        rng: np.random.Generator | int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self._pdt, self.dtype = layer_dtypes(dtype)
        if init == "he":
            std = np.sqrt(2.0 / self.in_features)
        elif init == "xavier":
            std = np.sqrt(2.0 / (self.in_features + self.out_features))
        else:
            raise ValueError(f"init must be 'he' or 'xavier', got {init!r}")
        self.init = init
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        w = gen.standard_normal((self.out_features, self.in_features)) * std
        self.weight = w.astype(self._pdt)
        self.dweight = np.zeros_like(self.weight)
        self.bias = np.zeros(self.out_features, self._pdt) if bias else None
        self.dbias = np.zeros(self.out_features, self._pdt) if bias else None
        self._x: np.ndarray | None = None
        self._out, self._dx = _Rows(), _Rows()
        self._x32, self._out32, self._dy32, self._dx32 = _Rows(), _Rows(), _Rows(), _Rows()
        self._dw_tmp = np.empty_like(self.weight)
        self._db_tmp = np.empty(self.out_features, self._pdt) if bias else None

    def _widen(self, a: np.ndarray, rows: _Rows) -> np.ndarray:
        """``a`` in the parameters' dtype (bfloat16 activations widened into ``rows``)."""
        a = np.asarray(a)
        if a.dtype == self.dtype != self._pdt:
            w = rows.get(a.shape, self._pdt)
            w[...] = a
            return w
        return np.ascontiguousarray(a, dtype=self._pdt)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._widen(x, self._x32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (N, {self.in_features}), got {x.shape}")
        shape = (x.shape[0], self.out_features)
        out = self._out.get(shape, self.dtype)
        if np.may_share_memory(out, x):  # our own output fed back in: backward needs x intact
            out = np.empty_like(out)
        y = out if out.dtype == self._pdt else self._out32.get(shape, self._pdt)
        np.matmul(x, self.weight.T, out=y)
        if self.bias is not None:
            y += self.bias
        self._x = x
        return to_activation(y, out)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("backward called before forward")
        x = self._x
        dy = self._widen(dy, self._dy32)
        if dy.shape != (x.shape[0], self.out_features):
            raise ValueError(
                f"dy must have shape {(x.shape[0], self.out_features)}, got {dy.shape}"
            )
        np.matmul(dy.T, x, out=self._dw_tmp)
        self.dweight += self._dw_tmp
        if self.bias is not None:
            np.sum(dy, axis=0, out=self._db_tmp)
            self.dbias += self._db_tmp
        dx = self._dx.get(x.shape, self.dtype)
        dx32 = dx if dx.dtype == self._pdt else self._dx32.get(x.shape, self._pdt)
        np.matmul(dy, self.weight, out=dx32)
        return to_activation(dx32, dx)

    def __repr__(self) -> str:
        return (
            f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None}, "
            f"init={self.init!r})"
        )


class ReLU(Module):
    """``max(x, 0)``; the gradient at 0 is taken as 0."""

    def __init__(self) -> None:
        self._out, self._mask, self._dx = _Rows(), _Rows(), _Rows()
        self._m: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        out = self._out.get(x.shape, x.dtype)
        self._m = self._mask.get(x.shape, np.bool_)
        np.greater(x, 0, out=self._m)
        np.maximum(x, 0, out=out)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._m is None:
            raise RuntimeError("backward called before forward")
        dy = np.asarray(dy)
        if dy.shape != self._m.shape:
            raise ValueError(f"dy must have shape {self._m.shape}, got {dy.shape}")
        dx = self._dx.get(dy.shape, dy.dtype)
        np.multiply(dy, self._m, out=dx)
        return dx

    def __repr__(self) -> str:
        return "ReLU()"


class Tanh(Module):
    """``tanh(x)``, with ``dx = dy * (1 - tanh(x)**2)``."""

    def __init__(self) -> None:
        self._out, self._dx = _Rows(), _Rows()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        self._y = y = self._out.get(x.shape, x.dtype)
        np.tanh(x, out=y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._y
        if y is None:
            raise RuntimeError("backward called before forward")
        dy = np.asarray(dy)
        if dy.shape != y.shape:
            raise ValueError(f"dy must have shape {y.shape}, got {dy.shape}")
        dx = self._dx.get(y.shape, y.dtype)
        np.multiply(y, y, out=dx)
        np.subtract(1, dx, out=dx)
        np.multiply(dx, dy, out=dx)
        return dx

    def __repr__(self) -> str:
        return "Tanh()"


class Dropout(Module):
    """Inverted dropout: in training, zero each value with probability ``p`` and scale the
    rest by ``1 / (1 - p)``; in evaluation, the identity.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of dropping a value.
    seed : int
        The masks are drawn from ``numpy.random.default_rng((seed, k))`` for the layer's k-th
        training call, so they are reproducible, and a run restored from a checkpoint (which
        holds ``k`` in the state dict) draws the masks it would have drawn.
    """

    _buffers = ("calls",)

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = p
        self.seed = int(seed)
        self.calls = np.zeros((), np.int64)
        self._out, self._rand, self._mask, self._dx = _Rows(), _Rows(), _Rows(), _Rows()
        self._m: np.ndarray | None = None
        self._scale = 1.0 / (1.0 - p)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if not self.training or self.p == 0.0:
            self._m = None
            return x
        rng = np.random.default_rng((self.seed, int(self.calls)))
        self.calls += 1
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        r = self._rand.get(x.shape, dtype)
        rng.random(out=r, dtype=dtype)
        self._m = m = self._mask.get(x.shape, np.bool_)
        np.greater_equal(r, self.p, out=m)
        out = self._out.get(x.shape, x.dtype)
        np.multiply(x, m, out=out)
        out *= self._scale
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        m = self._m
        if m is None:  # evaluation mode or p == 0: the identity
            return dy
        dy = np.asarray(dy)
        if dy.shape != m.shape:
            raise ValueError(f"dy must have shape {m.shape}, got {dy.shape}")
        dx = self._dx.get(dy.shape, dy.dtype)
        np.multiply(dy, m, out=dx)
        dx *= self._scale
        return dx

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    ``parameters()`` / ``gradients()`` concatenate the layers' lists (the order is the
    contract with the optimizers); ``state_dict()`` keys are ``"<index>.<name>"``.

    Parameters
    ----------
    *layers : Module
    backend : {"native", "numpy"}
        Where the kernels run (see :mod:`bnfast.backend`); set on every layer.
    """

    def __init__(self, *layers: Module, backend: str = "native") -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i} is not a bnfast.nn.Module: {type(layer).__name__}")
        self.layers = list(layers)
        self.set_backend(backend)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def children(self) -> Iterator[tuple[str, Module]]:
        return ((str(i), layer) for i, layer in enumerate(self.layers))

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


def mlp(
    in_features: int,
    hidden: Iterable[int],
    num_classes: int,
    batch_norm: bool = True,
    activation: str = "relu",
    dropout: float = 0.0,
    seed: int = 0,
    backend: str = "native",
    dtype: Any = np.float32,
) -> Sequential:
    """A multilayer perceptron: ``[Linear, (BatchNorm), activation, (Dropout)] * len(hidden)``
    then a ``Linear`` to ``num_classes`` logits.

    With batch norm the hidden ``Linear`` layers have no bias (batch norm's ``bias`` replaces
    it). Initialisation is He for ReLU and Xavier for tanh; ``seed`` fixes the weights and the
    dropout masks.
    """
    acts = {"relu": (ReLU, "he"), "tanh": (Tanh, "xavier")}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    act, init = acts[activation]
    rng = np.random.default_rng(seed)
    layers: list[Module] = []
    width = in_features
    for i, h in enumerate(hidden):
        layers.append(Linear(width, h, bias=not batch_norm, init=init, rng=rng, dtype=dtype))
        if batch_norm:
            layers.append(BatchNorm(h, dtype=dtype))
        layers.append(act())
        if dropout > 0:
            layers.append(Dropout(dropout, seed=seed * 1000 + i))
        width = h
    layers.append(Linear(width, num_classes, init=init, rng=rng, dtype=dtype))
    return Sequential(*layers, backend=backend)
