"""Central DP is a true bound (finding 8): the coordinator's discrete Gaussian is added inside
Z_2^b before decoding, so replacing one site moves the noised quantity by at most the charged
replace-one sensitivity (twice one site's rounded vector), even for aligned updates that wrap
the sum. ``coordinator.aggregation._PLANT_CENTRAL_NOISE_AFTER_DECODE`` plants the old path (float
noise after decoding) and the same search catches it."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from privacy import Mechanism
from coordinator import SecureSumConfig, secure_sum
from privacy import DiscreteGaussianEvent, RandomSource, WeightedSumCodec
from privacy._hadamard import fwht
from privacy.encoding import rotation_signs

SEED = bytes(range(32))
# The coordinator-side half, where central noise is added.
secure_sum_module = importlib.import_module("coordinator.aggregation")


def _aligned(dim: int, k: int, clip: float) -> np.ndarray:
    """An update whose rotation (with the round's public signs) points at coordinate k."""
    padded = dim + 1
    e = np.zeros(padded)
    e[k] = 1.0
    x = fwht(e) * rotation_signs(SEED, padded)  # the inverse rotation of e_k
    x = x[:dim]
    return clip * x / np.linalg.norm(x)


def _replace_one_shift(n: int, dim: int, k: int, victim: int, flip: bool, bits: int | None,
                       z: float) -> tuple[float, float]:
    """(move of the noised quantity when one site is replaced, charged replace-one bound)."""
    c, w_max = 1.0, 1.0
    config = SecureSumConfig(mode=Mechanism.CENTRAL_GAUSSIAN, clip_norm=c, max_weight=w_max,
                             noise_multiplier=z, modulus_bits=bits)
    rp = config.round_privacy()
    plan = rp.plan(dim=dim + 1, expected_clients=n)
    codec = WeightedSumCodec(plan, rotation_seed=SEED, max_weight=w_max, simulation=True)
    x = _aligned(dim, k, c)

    def aggregate(replaced: bool) -> np.ndarray:
        vectors = []
        for i in range(n):
            update = -x if (replaced and i == victim and flip) else x
            weight = 0.0 if (replaced and i == victim and not flip) else 1.0
            vectors.append(codec.encode(update, weight=weight,
                                        randomness=RandomSource.for_simulation(100 + i)))
        return codec.encoder.modular_sum(vectors)

    event = rp.event(plan, survivors=n)
    assert isinstance(event, DiscreteGaussianEvent) and event.num_clients == 1
    shift = secure_sum_module.central_release_shift(codec, aggregate(False), aggregate(True))
    return shift, 2.0 * event.l2_sensitivity


CASES = dict(n=st.integers(2, 12), k=st.integers(0, 63), victim=st.integers(0, 11),
             flip=st.booleans(), bits=st.sampled_from([None, 10, 12, 16]),
             z=st.sampled_from([0.5, 1.0, 2.0]))


def _check(n, k, victim, flip, bits, z) -> None:
    shift, bound = _replace_one_shift(n, 63, k, victim % n, flip, bits, z)
    assert shift <= bound, f"replace-one moved the release by {shift:.4g} > charged {bound:.4g}"


@settings(max_examples=40, deadline=None, database=None)
@given(**CASES)
def test_replace_one_bound_holds_for_aligned_updates(n, k, victim, flip, bits, z) -> None:
    _check(n, k, victim, flip, bits, z)


def test_planted_noise_after_decode_is_caught(monkeypatch) -> None:
    monkeypatch.setattr(secure_sum_module, "_PLANT_CENTRAL_NOISE_AFTER_DECODE", True)

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], report_multiple_bugs=False)
    @given(**CASES)
    def search(n, k, victim, flip, bits, z) -> None:
        _check(n, k, victim, flip, bits, z)

    with pytest.raises(AssertionError, match="replace-one moved"):
        search()


def test_central_secure_sum_decodes_the_ring_noised_sum() -> None:
    """End to end: aligned updates through the real protocol; the result is the decoded
    (sum + discrete Gaussian) mod 2^b, and the event is the ring noise's."""
    n, dim = 4, 63
    x = _aligned(dim, 5, 1.0)
    config = SecureSumConfig(mode=Mechanism.CENTRAL_GAUSSIAN, clip_norm=1.0, max_weight=1.0,
                             noise_multiplier=1.0)
    result = secure_sum({i: (x, 1.0) for i in range(n)}, config, seed=3)
    assert isinstance(result.event, DiscreteGaussianEvent)
    assert result.weighted_sum.shape == (dim,) and np.isfinite(result.weighted_sum).all()
