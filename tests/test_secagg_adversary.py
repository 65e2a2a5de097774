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
        assert not exposed_clients(exc.transcript)
        return "abort", None
    expected = sum(inputs[c].astype(np.uint64) for c in result.included) % (1 << bits)
    assert np.array_equal(result.aggregate.astype(np.uint64), expected)
    assert not exposed_clients(result.transcript)
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


def test_inconsistent_views_collects_both_kinds_of_share_but_never_enough(inputs):
    """The attack really splits the clients (shares of both kinds about the victim reach the
    server), and the threshold still keeps the victim's input hidden."""
    try:
        # A sparse graph (k=8, t=5) lets each half of the split reach the threshold of
        # signatures; on the complete graph the smaller half would already stop short.
        result = simulate_round(inputs, modulus_bits=24, malicious=True, neighbors=8,
                                threshold=5, adversary="inconsistent_views")
        transcript = result.transcript
    except ProtocolAbort as exc:
        transcript = exc.transcript
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
    victims = {a for a, _ in key}
    assert victims, "the attack should make some clients reveal a mask-key share of a survivor"
    for victim in victims:
        assert (len({s for a, s in seed if a == victim}) < config.threshold
                or len({s for a, s in key if a == victim}) < config.threshold)


def _client_ready_to_unmask(n=6, t=4):
    """Drive a real round up to the unmask request and return (config, clients, server)."""
    rng = np.random.default_rng(0)
    config = RoundConfig(round_id=bytes(range(32)), clients=tuple(range(n)), dim=4,
                         modulus_bits=16, neighbors=n - 1, threshold=t)
    clients = {c: SecAggClient(c, config) for c in range(n)}
    server = SecAggServer(config)
    for c in clients.values():
        server.receive(c.advertise_keys())
    out = server.close_stage()
    for c, m in out.items():
        server.receive(clients[c].share_keys(m))
    out = server.close_stage()
    for c, m in out.items():
        server.receive(clients[c].masked_input(m, rng.integers(0, 100, 4)))
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
        assert (survivors & dropped or 0 not in survivors or len(survivors) < 4)
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
