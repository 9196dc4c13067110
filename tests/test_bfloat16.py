"""bfloat16 rounding: every ISA gives the bits of the reference rule (bnfast.reference)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import _core
from bnfast._arrays import BFLOAT16_BITS, bfloat16, is_bfloat16
from bnfast.reference import round_bfloat16
from bnfast.testing import assert_bfloat16_within

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

# Bit patterns where rounding rules differ: ties to even (down and up), just past a tie, the
# largest finite float32 (overflows to inf), infinities, NaNs with payloads of either sign and
# with the quiet bit clear, subnormals (flushed to signed zero), the smallest normal.
SPECIAL = np.array(
    [
        0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF,
        0x7F800000, 0xFF800000, 0x7F800001, 0xFFC12345, 0x7FBFFFFF, 0x00000001, 0x807FFFFF,
        0x00400000, 0x00800000, 0x80800000, 0x00000000, 0x80000000,
    ],
    dtype=np.uint32,
).view(np.float32)  # fmt: skip

EXPECTED_SPECIAL = [
    0x3F80, 0x3F82, 0x3F81, 0x3F81, 0x7F80, 0xFF80, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1,
    0x7FFF, 0x0000, 0x8000, 0x0000, 0x0080, 0x8080, 0x0000, 0x8000,
]  # fmt: skip


def _round(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, BF16)
    _core.round_bfloat16(x, out)
    return out


def test_reference_rule_on_special_values():
    assert round_bfloat16(SPECIAL).view(np.uint16).tolist() == EXPECTED_SPECIAL


def test_special_values_every_isa(isa):
    for n in range(len(SPECIAL) + 1):  # every length: full vectors and masked tails
        got = _round(SPECIAL[:n].copy()).view(np.uint16)
        assert got.tolist() == EXPECTED_SPECIAL[:n], (isa, n)


@given(st.integers(0, 2**32 - 1), st.integers(0, 70))
def test_random_bits_every_isa(isa, seed, n):
    x = np.random.default_rng(seed).integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    x = x.view(np.float32)
    np.testing.assert_array_equal(_round(x).view(np.uint16), round_bfloat16(x).view(np.uint16))


def test_all_isas_agree_on_a_large_array(threads):
    x = np.random.default_rng(1).integers(0, 2**32, 300_001, dtype=np.uint64).astype(np.uint32)
    x = x.view(np.float32)
    bnfast.set_num_threads(2)
    results = {}
    for isa in bnfast.available_isas():
        with bnfast.use_isa(isa):
            results[isa] = _round(x).view(np.uint16)
    expected = round_bfloat16(x).view(np.uint16)
    for isa, got in results.items():
        np.testing.assert_array_equal(got, expected, err_msg=isa)


def test_matches_ml_dtypes_away_from_subnormals():
    # ml_dtypes rounds subnormals to bfloat16 subnormals; everywhere else the rules agree.
    x = np.random.default_rng(2).standard_normal(10_000).astype(np.float32) * 1e3
    np.testing.assert_array_equal(_round(x).view(np.uint16), x.astype(BF16).view(np.uint16))


def test_bits_view_dtype_is_served():
    x = np.linspace(-3, 3, 37, dtype=np.float32)
    out = np.empty(x.shape, BFLOAT16_BITS)
    _core.round_bfloat16(x, out)
    np.testing.assert_array_equal(out.view(np.uint16), round_bfloat16(x).view(np.uint16))
    assert is_bfloat16(BFLOAT16_BITS) and is_bfloat16(bfloat16())
    assert not is_bfloat16(np.dtype(np.float16)) and not is_bfloat16(np.dtype(np.int16))


@pytest.mark.parametrize(
    "x, out, match",
    [
        (np.zeros(3, np.float64), np.empty(3, BF16), "x must be float32"),
        (np.zeros(3, np.float32), np.empty(3, np.float16), "out must be bfloat16"),
        (np.zeros(3, np.float32), np.empty(3, np.int16), "out must be bfloat16"),
        (np.zeros(3, np.float32), np.empty(4, BF16), "out must have shape"),
        (np.zeros(6, np.float32)[::2], np.empty(3, BF16), "x must be C-contiguous"),
    ],
)
def test_bad_arguments_are_refused(x, out, match):
    before = out.copy()
    with pytest.raises((TypeError, ValueError), match=match):
        _core.round_bfloat16(x, out)
    np.testing.assert_array_equal(out.view(np.uint8), before.view(np.uint8))


def test_assert_bfloat16_within_counts_ulps():
    ref = np.array([1.0, -2.0, 0.0, np.inf, np.nan])
    exact = round_bfloat16(ref)
    assert_bfloat16_within(exact, ref, 0)
    off = exact.copy()
    off.view(np.uint16)[0] += 1
    assert_bfloat16_within(off, ref, 1)
    with pytest.raises(AssertionError, match="1 ulp"):
        assert_bfloat16_within(off, ref, 0)
    nan_lost = exact.copy()
    nan_lost[4] = 0
    with pytest.raises(AssertionError, match="NaN"):
        assert_bfloat16_within(nan_lost, ref, 4)


def test_numpy_api_without_ml_dtypes_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(ImportError, match="pip install ml_dtypes"):
        bfloat16()
