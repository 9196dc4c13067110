"""The one-time warning given when a call is handed to PyTorch's own implementation."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from bnfast import _core
from bnfast._arrays import BFLOAT16_BITS, aligned_empty

_FLOATS = (torch.float32, torch.float64, torch.bfloat16)
_warned: set[tuple[str, str]] = set()


class FallbackWarning(UserWarning):
    """bnfast.torch ran PyTorch's own implementation of an operation (the reason is named)."""


def warn_fallback(what: str, reason: str) -> None:
    """Warn once per ``(what, reason)`` that ``what`` runs PyTorch's implementation."""
    key = (what, reason)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f"bnfast.torch: {what} runs PyTorch's implementation: {reason}",
        FallbackWarning,
        stacklevel=4,
    )


_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def tensor_reason(t: Any, name: str, dtype: torch.dtype | None = None) -> str | None:
    """Why the kernels cannot read tensor ``t`` in place (None when they can)."""
    if (
        type(t) in _TENSOR_TYPES
        and t.is_cpu
        and t.layout == torch.strided
        and t.dtype in _FLOATS
        and (dtype is None or t.dtype == dtype)
    ):
        return None  # the common case, without building t.device (~0.3 us)
    if type(t) not in _TENSOR_TYPES and not (
        isinstance(t, torch.Tensor) and torch.compiler.is_compiling()  # fake under export
    ):
        return f"{name} is a {type(t).__name__}, not a plain tensor"
    if t.device.type != "cpu":
        return f"{name} is on {t.device}"
    if t.layout != torch.strided:
        return f"{name} has layout {t.layout}"
    if t.dtype not in _FLOATS:
        return f"{name} has dtype {t.dtype} (bnfast serves float32, float64 and bfloat16)"
    if dtype is not None and t.dtype != dtype:
        return f"{name} is {t.dtype} while the input is {dtype}"
    return None


def tracing_reason() -> str | None:
    """Non-None while TorchScript, tracing or torch.compile is capturing the call.

    ``"torch.compile"`` (also under torch.export) is served by the ``torch.ops.bnfast``
    operators; the TorchScript reason falls back to PyTorch's implementation."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return "TorchScript/tracing"
    if torch.compiler.is_compiling():
        return "torch.compile"
    return None


def as_numpy(t: torch.Tensor | None) -> np.ndarray | None:
    """A NumPy view of a CPU tensor's memory (no copy).

    NumPy has no bfloat16 (``Tensor.numpy()`` and ``np.from_dlpack`` refuse it): a bfloat16
    tensor is viewed as 16-bit integers and those as the kernels' bfloat16 bits dtype
    (:data:`bnfast._arrays.BFLOAT16_BITS`), so bnfast.torch needs no ml_dtypes.
    """
    if t is None:
        return None
    if t.requires_grad:
        t = t.detach()  # costs ~0.6 us
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BFLOAT16_BITS)
    return t.numpy()


def loss_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of a loss over bfloat16 logits: float32 under ``torch.autocast`` (whose CPU
    policy runs the losses in float32), else the input's, as PyTorch's own functions give."""
    if x.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu"):
        return torch.float32
    return x.dtype


class torch_threads:  # lower case: used like a function, ``with torch_threads():``
    """Run the kernels called inside with threads from 512 KiB moved (PyTorch's own ops go
    parallel from 128 KiB), on this thread only.

    In a PyTorch process a source build shares PyTorch's OpenMP pool, and PyTorch's ops keep its
    workers awake, so bnfast's kernels gain from threads at sizes where a NumPy-driven loop
    would not (there OpenBLAS's threads spin between calls; see ``bnfast.set_num_threads``).
    A wheel's bundled libgomp is a second pool, and the rule gains as much there
    (``bench/openmp_pools.py``, bench/README.md).
    A (256, 1024) evaluation after a ReLU, 2 threads: 88-96 µs a step with the process-wide
    4 MiB rule, 60-68 µs with this one (PyTorch 69 µs). A lower process-wide setting wins.
    """

    __slots__ = ("old",)
    MIN_BYTES = 512 << 10

    def __enter__(self) -> None:
        self.old = _core.swap_thread_parallel_min_bytes(self.MIN_BYTES)

    def __exit__(self, *exc: object) -> None:
        _core.swap_thread_parallel_min_bytes(self.old)


_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.bfloat16: np.int16}
_BIG = 4 << 20  # below a few huge pages PyTorch's allocator is as good and cheaper to call


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """A new C-contiguous CPU tensor for a kernel's output.

    Small ones come from PyTorch's allocator, like PyTorch's own outputs: NumPy-allocated 1 MiB
    outputs, freed every training step, made glibc give the top of the heap back and fault it
    in again each step (480 page faults a step, 4x slower). Large ones are NumPy allocations
    (line-aligned, so the kernels may stream past the cache) wrapped without a copy: NumPy asks
    the kernel for huge pages on big buffers and PyTorch's CPU allocator does not, and a fresh
    32 MiB output then costs ~3x less in page faults.
    """
    if math.prod(shape) * dtype.itemsize < _BIG:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(aligned_empty(tuple(shape), _NP_DTYPES[dtype])).view(dtype)
