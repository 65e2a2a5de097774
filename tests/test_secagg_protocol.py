"""Whole rounds through the harness: the sum is exact for random clients, moduli, inputs and
dropout patterns at every stage, and below the threshold the round aborts revealing nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.params import complete_graph_threshold
from secagg import (
    ConfigurationError,
    InvalidInput,
    ProtocolAbort,
    Stage,
    exposed_clients,
    simulate_round,
)


def plain_sum(inputs, included, bits):
    total = np.zeros(len(next(iter(inputs.values()))), dtype=object)
    for c in included:
        total = total + inputs[c].astype(object)
    return np.array([int(v) % (1 << bits) for v in total], dtype=object)


def assert_exact(result, inputs, bits):
    expected = plain_sum(inputs, result.included, bits)
    got = np.array([int(v) for v in result.aggregate], dtype=object)
    assert (got == expected).all()


@st.composite
def rounds(draw, malicious=False):
    n = draw(st.integers(3, 14))
    bits = draw(st.integers(1, 64))
    dim = draw(st.integers(1, 40))
    values = st.integers(0, (1 << bits) - 1)
    inputs = {c: np.array(draw(st.lists(values, min_size=dim, max_size=dim)), dtype=np.uint64)
              for c in range(n)}
    return n, bits, inputs


@settings(max_examples=25)
@given(rounds(), st.data())
def test_aggregate_is_exact_with_dropouts_at_any_stage(case, data):
    n, bits, inputs = case
    k = n - 1  # the complete graph keeps every dropout pattern above t feasible
    t = data.draw(st.integers(2, max(2, n // 2)))
    stage = data.draw(st.sampled_from([Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS,
                                       Stage.MASKED_INPUT, Stage.UNMASK]))
    max_drop = n - t - 1 if stage is not Stage.UNMASK else n - t
    dropped = data.draw(st.sets(st.integers(0, n - 1), max_size=max(0, max_drop)))
    # The round is planned for up to 90% dropouts, so the model's minimum is the threshold.
    result = simulate_round(inputs, modulus_bits=bits, neighbors=k, threshold=t,
                            dropouts={stage.value: dropped}, dropout_rate=0.9)
    assert_exact(result, inputs, bits)
    if stage in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT):
        assert result.included == frozenset(range(n)) - dropped
    else:  # dropping at unmask happens after the masked input: the input stays in the sum
        assert result.included == frozenset(range(n))
    assert not exposed_clients(result.transcript)


@settings(max_examples=10)
@given(rounds(), st.data())
def test_aggregate_is_exact_in_malicious_mode(case, data):
    n, bits, inputs = case
    stage = data.draw(st.sampled_from(list(Stage)))
    t = complete_graph_threshold(n, malicious=True)  # 2t > k + 1 + c on the complete graph
    # No more dropouts than leave a quorum of signers: (n + C) / 2 < t + 1 survivors.
    dropped = data.draw(st.sets(st.integers(0, n - 1), max_size=max(0, n - t - 1)))
    result = simulate_round(inputs, modulus_bits=bits, neighbors=n - 1, threshold=t,
                            dropouts={stage.value: dropped}, malicious=True, dropout_rate=0.9)
    assert_exact(result, inputs, bits)
    assert not exposed_clients(result.transcript)


@pytest.mark.parametrize("n", [40, 64])
def test_sparse_graph_from_parameter_table(n):
    rng = np.random.default_rng(n)
    inputs = {c: rng.integers(0, 1 << 16, 64) for c in range(n)}
    dropped = set(rng.choice(n, size=n // 10, replace=False).tolist())
    result = simulate_round(inputs, modulus_bits=16 + 7, dropouts={"masked_input": dropped},
                            input_bits=16)
    assert result.config.neighbors < n - 1
    assert_exact(result, inputs, 23)
    assert result.included == frozenset(range(n)) - dropped


@pytest.mark.parametrize("n", [5, 10, 32])
def test_small_cohorts_default_to_the_complete_graph_and_survive_adjacent_dropouts(n):
    rng = np.random.default_rng(n)
    inputs = {c: rng.integers(0, 1 << 12, 8) for c in range(n)}
    # Planned for 40% dropouts, so two of five may go.
    result = simulate_round(inputs, modulus_bits=18, dropouts={"masked_input": [0, 1]},
                            dropout_rate=0.4)
    assert result.config.neighbors == n - 1
    assert_exact(result, inputs, 18)


def test_odd_degree_with_a_client_that_never_advertised_still_sums():
    rng = np.random.default_rng(1)
    inputs = {c: rng.integers(0, 1 << 8, 10) for c in range(12)}
    # The graph is fixed over all 12 clients; the one that never advertises is a dropped
    # neighbour of its five, not a hole that changes anyone's degree.
    result = simulate_round(inputs, modulus_bits=12, neighbors=5, threshold=3,
                            dropouts={"advertise_keys": [4]})
    assert_exact(result, inputs, 12)
    assert 4 not in result.included


@pytest.mark.parametrize("stage", ["advertise_keys", "share_keys", "masked_input", "unmask"])
def test_below_threshold_aborts_and_reveals_nothing(stage):
    rng = np.random.default_rng(2)
    n, t = 8, 5
    inputs = {c: rng.integers(0, 1 << 10, 16) for c in range(n)}
    dropped = set(range(n - t + 1))  # leaves t - 1
    with pytest.raises(ProtocolAbort) as info:
        simulate_round(inputs, modulus_bits=14, neighbors=n - 1, threshold=t,
                       dropouts={stage: dropped})
    assert info.value.stage is not None
    assert any(word in str(info.value) for word in ("threshold", "too few", "needs", "minimum"))
    assert not exposed_clients(info.value.transcript)


def test_survivor_shares_missing_for_one_client_aborts():
    rng = np.random.default_rng(3)
    inputs = {c: rng.integers(0, 1 << 10, 16) for c in range(6)}
    # t = 4 of 6 holders; 2 drop at unmask: 4 responders remain, enough for everyone.
    result = simulate_round(inputs, modulus_bits=14, neighbors=5, threshold=4,
                            dropouts={"unmask": [0, 1]})
    assert_exact(result, inputs, 14)
    with pytest.raises(ProtocolAbort):
        simulate_round(inputs, modulus_bits=14, neighbors=5, threshold=4,
                       dropouts={"unmask": [0, 1, 2]})


def test_lone_masked_vector_is_uniform():
    """A single client's masked vector must look uniform mod 2^b whatever its input."""
    from scipy.stats import chisquare

    from secagg.hazmat.packing import unpack
    from secagg.messages import HEADER_BYTES
    from secagg.transcript import Direction

    bits, dim = 8, 40_000
    inputs = {c: np.zeros(dim, dtype=np.uint64) for c in range(3)}  # worst case: all zero
    inputs[0][:] = 7
    result = simulate_round(inputs, modulus_bits=bits, neighbors=2, threshold=2)
    masked = [e for e in result.transcript.entries(Stage.MASKED_INPUT, Direction.TO_SERVER)]
    assert len(masked) == 3
    for entry in masked:
        values = unpack(entry.data[HEADER_BYTES:], bits, dim)
        counts = np.bincount(values, minlength=1 << bits)
        assert chisquare(counts).pvalue > 1e-4
    # The same statistic rejects the unmasked input (the test can fail).
    counts = np.bincount(inputs[0].astype(np.int64), minlength=1 << bits)
    assert chisquare(counts).pvalue < 1e-4


def test_modulus_must_hold_the_sum_when_input_bits_given():
    inputs = {c: np.full(4, 255, dtype=np.uint64) for c in range(5)}
    with pytest.raises(ConfigurationError, match="wrap"):
        simulate_round(inputs, modulus_bits=10, input_bits=8)
    result = simulate_round(inputs, modulus_bits=11, input_bits=8, neighbors=4, threshold=3)
    assert result.aggregate.tolist() == [5 * 255] * 4


@pytest.mark.parametrize("bad", [
    {},
    {0: np.zeros(3, dtype=np.uint8)},
    {0: np.zeros(3, dtype=np.uint8), 1: np.zeros(4, dtype=np.uint8)},
    {0: np.zeros(3), 1: np.zeros(3)},
    {0: np.array([1, 2, 1 << 8]), 1: np.array([1, 2, 3])},
    {0: np.array([-1, 2, 3]), 1: np.array([1, 2, 3])},
    {-1: np.array([1, 2, 3]), 1: np.array([1, 2, 3])},
])
def test_bad_inputs_raise_typed_errors(bad):
    with pytest.raises(InvalidInput):
        simulate_round(bad, modulus_bits=8)


def test_unknown_stage_and_impossible_parameters_are_refused():
    inputs = {c: np.zeros(2, dtype=np.uint8) for c in range(5)}
    with pytest.raises(ConfigurationError):
        simulate_round(inputs, modulus_bits=8, dropouts={"no_such_stage": [1]})
    with pytest.raises(ConfigurationError):
        simulate_round(inputs, modulus_bits=8, dropouts={"consistency_check": [1]})
    with pytest.raises(ConfigurationError):
        simulate_round(inputs, modulus_bits=8, neighbors=3, threshold=2)  # odd k, odd n
    with pytest.raises(ConfigurationError):
        simulate_round(inputs, modulus_bits=8, neighbors=4, threshold=2, malicious=True)
    with pytest.raises(ConfigurationError):
        simulate_round(inputs, modulus_bits=65)
