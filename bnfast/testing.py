"""Helpers for testing kernels against the float64 reference (used by bnfast's own tests)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["assert_close", "eps_of"]


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
