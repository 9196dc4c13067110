"""Turning what users pass into arrays the kernels accept; no kernel logic here."""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES

# bfloat16 has no NumPy dtype of its own. The kernels take ml_dtypes.bfloat16 arrays (the NumPy
# extension dtype JAX and TensorFlow use; optional: ``pip install ml_dtypes``) and this bits-only
# view, which bnfast.torch puts over a torch.bfloat16 tensor's memory so that it needs no
# ml_dtypes. Outputs have the dtype of the input they are like.
BFLOAT16_BITS = np.dtype([("bfloat16", "<u2")])


_BF16_SEEN: set[np.dtype] = {BFLOAT16_BITS}


def is_bfloat16(dt: np.dtype) -> bool:
    """Whether ``dt`` is a bfloat16 dtype the kernels take (ml_dtypes' or the bits view)."""
    if dt in _BF16_SEEN:  # hashing a dtype is cheap; its name builds a string
        return True
    if dt.kind == "V" and dt.itemsize == 2 and dt.name == "bfloat16":
        _BF16_SEEN.add(dt)
        return True
    return False


def bfloat16() -> np.dtype:
    """``ml_dtypes.bfloat16`` as a NumPy dtype; ImportError saying what to install without it."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(
            "bfloat16 arrays in the NumPy API need ml_dtypes: pip install ml_dtypes "
            "(or bnfast[bfloat16]); bnfast.torch serves torch.bfloat16 tensors without it"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def is_float(dt: np.dtype) -> bool:
    """float32, float64 or a bfloat16 dtype."""
    return dt is _F32 or dt is _F64 or dt in FLOAT_DTYPES or is_bfloat16(dt)


# A broadcast view (a zero stride) costs no memory however large it is, but its copy does: above
# this size copying one is refused instead of silently allocating gigabytes.
MAX_BROADCAST_COPY_BYTES = 1 << 30


def contiguous(a: np.ndarray, name: str, dtype: Any = None, keep_0d: bool = False) -> np.ndarray:
    """``a`` as an aligned C-contiguous array (of ``dtype``), copying only when needed; 0-d
    arrays become 1-d (like ``np.ascontiguousarray``) unless ``keep_0d``.

    Raises ValueError, before any copy, for a broadcast view whose copy would exceed
    :data:`MAX_BROADCAST_COPY_BYTES`.
    """
    if a.ndim == 0 and not keep_0d:
        a = a.reshape(1)
    dt = a.dtype if dtype is None else np.dtype(dtype)
    flags = a.flags  # each .flags access builds an object: once per call (hot path)
    if flags.c_contiguous and flags.aligned and dt == a.dtype:
        return a
    nbytes = a.size * dt.itemsize
    if nbytes > MAX_BROADCAST_COPY_BYTES and any(
        st == 0 and n > 1 for st, n in zip(a.strides, a.shape)
    ):
        raise ValueError(
            f"{name} is a broadcast view of {a.size} elements; copying it would allocate "
            f"{nbytes / 2**30:.1f} GiB. Pass a contiguous array"
        )
    return np.array(a, dtype=dt, order="C", copy=True)  # aligned, unlike ascontiguousarray


def as_array(obj: Any, name: str) -> np.ndarray:
    """View ``obj`` as an ndarray without copying where NumPy can (buffer protocol, DLPack)."""
    if isinstance(obj, np.ndarray):
        return obj
    if obj is None:
        raise TypeError(f"{name} must be an array, got None")
    if hasattr(obj, "__dlpack__") and not hasattr(obj, "__array_interface__"):
        try:
            return np.from_dlpack(obj)
        except (TypeError, RuntimeError, BufferError):
            pass
    try:
        return np.asarray(obj)
    except Exception as exc:  # numpy raises many types for odd objects
        raise TypeError(f"{name} cannot be viewed as an array: {exc}") from None


def float_input(
    obj: Any, name: str, dtype: np.dtype | None = None, keep_0d: bool = False
) -> np.ndarray:
    """A C-contiguous float32/float64/bfloat16 array for a read-only input (0-d ones become 1-d
    unless ``keep_0d``).

    Non-contiguous (or misaligned) inputs are copied (documented behaviour); integer or other
    dtypes are refused with TypeError. With ``dtype``, the array must already have that dtype.
    """
    a = as_array(obj, name)
    dt = a.dtype
    if dt is not _F32 and dt is not _F64 and not is_float(dt):  # identity: the fast path
        raise TypeError(f"{name} must be float32, float64 or bfloat16, got {dt}")
    if dtype is not None and dt is not dtype and dt != dtype:
        raise TypeError(f"{name} must be {dtype} like the input, got {dt}")
    return contiguous(a, name, keep_0d=keep_0d)


def optional_input(obj: Any, name: str, dtype: np.dtype) -> np.ndarray | None:
    return None if obj is None else float_input(obj, name, dtype)


def inplace(obj: Any, name: str) -> np.ndarray | None:
    """An array updated in place: a view of ``obj`` (never a copy); _core checks the rest."""
    return None if obj is None else as_array(obj, name)


def aligned_empty(shape: tuple[int, ...], dtype: Any, align: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``align``-byte boundary.

    Kernels stream large outputs past the cache (non-temporal stores) only into line-aligned
    buffers; NumPy's own large allocations start 16 bytes past a cache line.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(n * dtype.itemsize + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + n * dtype.itemsize].view(dtype).reshape(shape)
