"""Canned attacks by a cheating server: each ends in an abort, or in a correct sum with no input
exposed; and a client never reveals both shares of one neighbour, whatever it is asked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    ADVERSARIES,
    ConfigurationError,
    InvalidMessage,
    ProtocolAbort,
    RoundConfig,
    SecAggClient,
    SecAggServer,
    exposed_clients,
    simulate_round,
)
from secagg.client import ClientState
from secagg.messages import Kind, UnmaskRequest, ShareKind, decode
from secagg.oracle import leakage

from secagg_drive import send, to_masked_input

N = 12


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(7)
    return {c: rng.integers(0, 1 << 16, 32) for c in range(N)}


def check_outcome(inputs, bits, **kwargs):
    """Run the attack; return 'abort' or 'sum' after checking the guarantees."""
    try:
        result = simulate_round(inputs, modulus_bits=bits, **kwargs)
    except ProtocolAbort as exc:
        assert not exposed_clients(exc.transcript, corrupt=exc.coalition.corrupt)
        assert not leakage(exc.transcript, exc.coalition).exposed
        return "abort", None
    expected = sum(inputs[c].astype(np.uint64) for c in result.included) % (1 << bits)
    assert np.array_equal(result.aggregate.astype(np.uint64), expected)
    assert not exposed_clients(result.transcript, corrupt=result.coalition.corrupt)
    assert not leakage(result.transcript, result.coalition).exposed
    return "sum", result


@pytest.mark.parametrize("adversary", ADVERSARIES)
def test_every_attack_fails_in_malicious_mode(inputs, adversary):
    outcome, result = check_outcome(inputs, 24, malicious=True, adversary=adversary)
    # Whether the split views leave enough shares to finish depends on the random graph.
    expected = {"overlap": {"abort"}, "forged_key": {"abort"},
                "inconsistent_views": {"abort", "sum"}, "replay": {"sum"},
                "tamper": {"sum"}}[adversary]
    assert outcome in expected
    if adversary == "replay":
        assert result.included == frozenset(inputs)
        assert result.rejected and all(kind == "StageError" for _, kind, _ in result.rejected)
    if adversary == "tamper":
        assert len(result.aborted) == 1
        assert result.included == frozenset(inputs) - set(result.aborted)


@pytest.mark.parametrize("adversary", ["overlap", "replay", "tamper"])
def test_passive_mode_stops_attacks_it_can_see(inputs, adversary):
    outcome, _ = check_outcome(inputs, 24, adversary=adversary)
    assert outcome == ("abort" if adversary == "overlap" else "sum")


@pytest.mark.parametrize("adversary", ["inconsistent_views", "forged_key"])
def test_active_attacks_need_malicious_mode(inputs, adversary):
    with pytest.raises(ConfigurationError, match="malicious"):
        simulate_round(inputs, modulus_bits=24, adversary=adversary)


def _shares_about(transcript):
    config = transcript.config
    seed, key = set(), set()
    for entry in transcript:
        if entry.direction.value != "to_server":
            continue
        try:
            message = decode(entry.data, config, Kind.UNMASK_SHARES)
        except Exception:
            continue
        for about, kind, _ in message.shares:
            (seed if kind is ShareKind.SELF_MASK_SEED else key).add((about, message.sender))
    return seed, key


def _run(inputs, **kwargs):
    try:
        return simulate_round(inputs, modulus_bits=24, **kwargs)
    except ProtocolAbort as exc:
        return exc


def test_inconsistent_views_never_get_a_key_share_of_a_survivor(inputs):
    """The split is real (two views go out), but the half told that the victim dropped cannot
    gather a quorum of signatures on its view, so it reveals nothing; the victim's mask key
    never leaves any holder."""
    outcome = _run(inputs, malicious=True, neighbors=8, threshold=6,
                   adversary="inconsistent_views")
    seed, key = _shares_about(outcome.transcript)
    assert not key
    assert not leakage(outcome.transcript, outcome.coalition).exposed


def test_planted_threshold_quorum_lets_inconsistent_views_collect_both_kinds(inputs):
    """With the old rules (t signatures suffice, 2t > k + 1) the same attack does collect
    mask-key shares of a survivor: the test above can fail."""
    from secagg._testing import plant

    with plant("signature_quorum_is_threshold", "threshold_without_corrupt_term"):
        outcome = _run(inputs, malicious=True, neighbors=8, threshold=5,
                       adversary="inconsistent_views")
    seed, key = _shares_about(outcome.transcript)
    assert {a for a, _ in key}


def _client_ready_to_unmask(n=6, t=4):
    """Drive a real round up to the unmask request and return (config, clients, server)."""
    rng = np.random.default_rng(0)
    config = RoundConfig(round_id=bytes(range(32)), clients=tuple(range(n)), dim=4,
                         modulus_bits=16, neighbors=n - 1, threshold=t)
    clients = {c: SecAggClient(c, config) for c in range(n)}
    server = SecAggServer(config)
    out = to_masked_input(clients, server)
    for c, m in out.items():
        send(server, c, clients[c].masked_input(m, rng.integers(0, 100, 4)))
    server.close_stage()
    return config, clients


@settings(max_examples=60)
@given(survivors=st.sets(st.integers(0, 5), max_size=6),
       dropped=st.sets(st.integers(0, 5), max_size=6))
def test_client_never_reveals_both_shares(survivors, dropped):
    config, clients = _client_ready_to_unmask()
    client = clients[0]
    request = UnmaskRequest(tuple(sorted(survivors)), tuple(sorted(dropped))).encode(config)
    try:
        reply = client.unmask(request)
    except ProtocolAbort:
        assert client.state is ClientState.ABORTED
        # Every neighbour shared its keys (complete graph, nobody dropped): each must be
        # listed, and each listed survivor's shares were delivered, so only these can abort.
        assert (survivors & dropped or 0 not in survivors
                or len(survivors) < config.min_survivors
                or not (survivors | dropped) >= set(range(1, 6)))
        return
    shares = decode(reply, config, Kind.UNMASK_SHARES).shares
    kinds: dict[int, set] = {}
    for about, kind, _ in shares:
        kinds.setdefault(about, set()).add(kind)
    assert all(len(k) == 1 for k in kinds.values())
    assert not survivors & dropped
    # Asking again (e.g. with the overlap now) gets nothing more.
    with pytest.raises((ProtocolAbort, InvalidMessage)):
        client.unmask(UnmaskRequest(tuple(sorted(survivors)),
                                    tuple(sorted(set(range(6)) - survivors))).encode(config))
