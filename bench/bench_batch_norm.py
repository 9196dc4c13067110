"""Batch norm: the ``batch_norm_train``, ``batch_norm_eval`` and ``batch_norm_backward`` cases
of ``bnfast bench`` (float32, its reference shapes), each ISA beside NumPy and PyTorch.

Run: ``pytest bench/bench_batch_norm.py --benchmark-only --benchmark-group-by=group``. GB/s counts
the case's bytes that must move (see :mod:`bnfast.bench`: a second pass over x is free when a
channel fits in cache).
"""

from __future__ import annotations

import pytest

from bnfast.bench import cases

CASES = [c for c in cases() if c.kernel.startswith("batch_norm_")]


@pytest.mark.parametrize("case", CASES)
def test_batch_norm(case, impl, time_case):
    time_case(case, impl)
