"""The server's packed-vector accumulator sums exactly mod 2**b, across its flush points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.hazmat.packing import PackedAccumulator, pack


@settings(max_examples=60)
@given(bits=st.integers(1, 64), dim=st.integers(1, 70), count=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1))
def test_accumulator_equals_exact_sum(bits, dim, count, seed):
    rng = np.random.default_rng(seed)
    dtype = np.uint32 if bits <= 32 else np.uint64
    acc = PackedAccumulator(bits, dim)
    exact = [0] * dim
    for _ in range(count):
        x = rng.integers(0, 1 << bits, dim, dtype=np.uint64, endpoint=False).astype(dtype)
        acc.add(pack(x, bits))
        exact = [e + int(v) for e, v in zip(exact, x)]
    assert [int(v) for v in acc.total()] == [e % (1 << bits) for e in exact]
    assert acc.count == count


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8, 12, 26])
def test_accumulator_survives_many_flushes_with_extreme_values(bits):
    """All-ones inputs fill every SWAR slot fastest; 600 of them cross every flush limit."""
    dim = 37
    acc = PackedAccumulator(bits, dim)
    ones = np.full(dim, (1 << bits) - 1, dtype=np.uint32)
    for _ in range(600):
        acc.add(pack(ones, bits))
    assert acc.total().tolist() == [(600 * ((1 << bits) - 1)) % (1 << bits)] * dim


def test_accumulator_rejects_wrong_length():
    acc = PackedAccumulator(26, 100)
    with pytest.raises(ValueError):
        acc.add(bytes(10))
    assert acc.count == 0
