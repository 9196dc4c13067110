"""Helpers for testing kernels against the float64 reference (used by bnfast's own tests)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["assert_bfloat16_within", "assert_close", "eps_of"]


def eps_of(dtype: Any) -> float:
    """Machine epsilon of a float dtype."""
    return float(np.finfo(np.dtype(dtype)).eps)


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    dtype: Any,
    *,
    ulps: float = 64,
    scale: float | np.ndarray | None = None,
    err_msg: str = "",
) -> None:
    """Assert ``actual`` is within ``ulps`` units of ``dtype``'s epsilon of ``expected``.

    The tolerance is ``ulps * eps(dtype) * (|expected| + scale)``, where ``scale`` (default:
    1) is the magnitude of the terms that were summed or cancelled to get ``expected``.
    NaN must match NaN and infinities must match exactly.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    s = 1.0 if scale is None else np.asarray(scale, dtype=np.float64)
    tol = ulps * eps_of(dtype) * (np.abs(np.nan_to_num(expected, posinf=0, neginf=0)) + s)
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), f"NaN positions differ {err_msg}"
    inf_e = np.isinf(expected)
    assert np.array_equal(actual[inf_e], expected[inf_e]), f"infinities differ {err_msg}"
    ok = nan_e | inf_e | (np.abs(actual - expected) <= tol)
    if not ok.all():
        idx = np.unravel_index(np.argmin(ok), ok.shape) if ok.ndim else ()
        err = np.abs(actual - expected)
        raise AssertionError(
            f"not close at {idx}: actual {actual[idx]!r}, expected {expected[idx]!r}, "
            f"tol {np.broadcast_to(tol, ok.shape)[idx]!r}; max err {np.nanmax(err)!r}; "
            f"{(~ok).sum()} of {ok.size} differ {err_msg}"
        )


def _bfloat16_order(a: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns mapped to integers in the order of their values (-0 and +0 equal)."""
    u = np.asarray(a).view(np.uint16).astype(np.int32)
    return np.where(u & 0x8000, 0x8000 - u, u)


def assert_bfloat16_within(
    actual: np.ndarray, reference: np.ndarray, ulps: int, *, err_msg: str = ""
) -> None:
    """Assert bfloat16 ``actual`` is within ``ulps`` bfloat16 units in the last place of
    ``reference`` (float64 or float32) correctly rounded to bfloat16 (:func:`bnfast.reference.
    round_bfloat16`). NaN must match NaN; infinities count as the values past the largest finite
    one, so an infinity one step away passes only with ulps >= 1.
    """
    from bnfast.reference import round_bfloat16

    actual = np.asarray(actual)
    expected = round_bfloat16(np.asarray(reference, dtype=np.float64).astype(np.float32))
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    a_nan = np.isnan(actual.astype(np.float32))
    e_nan = np.isnan(expected.astype(np.float32))
    np.testing.assert_array_equal(a_nan, e_nan, err_msg=f"NaN positions differ {err_msg}")
    d = np.abs(_bfloat16_order(actual) - _bfloat16_order(expected))
    d[a_nan] = 0
    if d.size and d.max() > ulps:
        i = np.unravel_index(int(np.argmax(d)), d.shape)
        raise AssertionError(
            f"{int((d > ulps).sum())} of {d.size} bfloat16 values more than {ulps} ulp from the "
            f"reference; worst at {i}: {actual[i]} vs {expected[i]} ({int(d[i])} ulp) {err_msg}"
        )
