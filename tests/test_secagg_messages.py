"""Malformed, oversized, duplicated, out-of-stage and wrong-round messages: each raises a typed
error and leaves the receiver's state as it was; a known sender of a bad message is dropped."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    InvalidMessage,
    RoundConfig,
    SecAggClient,
    SecAggServer,
    StageError,
)
from secagg.messages import HEADER_BYTES

from secagg_drive import advertise_and_reveal, send, to_masked_input

N = 5


def make(round_byte=1, malicious=False):
    config = RoundConfig(round_id=bytes([round_byte]) * 32, clients=tuple(range(N)), dim=8,
                         modulus_bits=12, neighbors=N - 1, threshold=3 if not malicious else 3,
                         malicious=malicious)
    return config, {c: SecAggClient(c, config) for c in range(N)}, SecAggServer(config)


def server_fingerprint(server: SecAggServer):
    acc = None if server._acc is None else server._acc.total()
    return (server.state, dict(server._received), server.pending(), acc)


def same_state(a, b):
    assert a[0] == b[0] and a[1].keys() == b[1].keys() and a[2] == b[2]
    if a[3] is None:
        assert b[3] is None
    else:
        assert np.array_equal(a[3], b[3])


def to_masked_stage():
    config, clients, server = make()
    out = to_masked_input(clients, server)
    return config, clients, server, out


def test_wrong_round_is_a_stage_error_and_changes_nothing():
    config, clients, server, out = to_masked_stage()
    other_config, other_clients, other_server = make(round_byte=2)
    stray = other_clients[0].advertise_keys()
    before = server_fingerprint(server)
    with pytest.raises(StageError, match="another round"):
        send(server, 0, stray)
    same_state(before, server_fingerprint(server))
    assert 0 in server.pending()


def test_out_of_stage_message_is_refused_without_dropping_the_sender():
    config, clients, server = make()
    out = advertise_and_reveal(clients, server)
    share_msg = clients[0].share_keys(out[0])
    server2_config, clients2, server2 = make()
    before = server_fingerprint(server2)
    with pytest.raises(StageError):
        send(server2, 0, share_msg)  # a share_keys message while server2 is collecting keys
    same_state(before, server_fingerprint(server2))


def test_duplicate_message_is_refused_and_the_first_stands():
    config, clients, server, out = to_masked_stage()
    msg = clients[0].masked_input(out[0], np.arange(8))
    send(server, 0, msg)
    before = server_fingerprint(server)
    with pytest.raises(InvalidMessage, match="duplicate"):
        send(server, 0, msg)
    same_state(before, server_fingerprint(server))


@pytest.mark.parametrize("mutation", ["truncate", "extend", "oversize", "magic", "version",
                                      "kind", "reserved"])
def test_malformed_masked_input_is_refused_and_the_sender_keeps_its_standing(mutation):
    config, clients, server, out = to_masked_stage()
    good = clients[1].masked_input(out[1], np.arange(8))
    bad = bytearray(good)
    if mutation == "truncate":
        bad = bad[:-1]
    elif mutation == "extend":
        bad += b"\x00"
    elif mutation == "oversize":
        bad += bytes(1 << 20)
    elif mutation == "magic":
        bad[0] ^= 0xFF
    elif mutation == "version":
        bad[3] = 99
    elif mutation == "kind":
        bad[4] = 200
    elif mutation == "reserved":
        bad[HEADER_BYTES - 1] = 1
    before = server_fingerprint(server)
    with pytest.raises(InvalidMessage):
        send(server, 1, bytes(bad))
    same_state(before, server_fingerprint(server))
    assert 1 in server.pending()  # nothing changed: its good message still goes through
    send(server, 1, good)
    assert 1 not in server.pending() and 1 in server._received


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=300), stage=st.sampled_from(["advertise", "masked"]),
       sender=st.integers(0, N - 1))
def test_arbitrary_bytes_never_crash_the_server(junk, stage, sender):
    """Junk, raw or behind a genuine header, raises InvalidMessage and leaves the server as it
    was (the sender's standing included), unless it happens to be a well-formed message of
    that stage from that sender; and every client's genuine message still goes through
    afterwards."""
    from secagg.messages import Kind, decode

    config, clients, server = make()
    if stage == "advertise":
        kind = Kind.ADVERTISE
        header = SecAggClient(sender, config).advertise_keys()[:HEADER_BYTES]
        genuine = {c: clients[c].advertise_keys() for c in clients}
    else:
        kind = Kind.MASKED_INPUT
        out = to_masked_input(clients, server)
        genuine = {c: clients[c].masked_input(out[c], np.arange(8)) for c in clients}
        header = genuine[sender][:HEADER_BYTES]
    for data in (junk, header + junk):
        before = server_fingerprint(server)
        try:
            send(server, sender, data)
        except InvalidMessage:
            same_state(before, server_fingerprint(server))
        else:  # accepted: then it must be a well-formed message of this stage from sender
            assert decode(data, config, kind).sender == sender
    for c in clients:
        if c in server.pending():
            send(server, c, genuine[c])
    assert set(server._received) == set(clients)


def test_forged_header_sender_is_refused_without_evicting_the_named_client():
    config, clients, server = make()
    msg = bytearray(clients[0].advertise_keys())
    msg[37:41] = (77).to_bytes(4, "big")  # magic 3, version 1, kind 1, round tag 32: sender
    with pytest.raises(InvalidMessage):
        send(server, 0, bytes(msg))
    # A header naming client 1, sent by client 0, leaves client 1's standing untouched.
    good_1 = clients[1].advertise_keys()
    forged = bytearray(good_1)
    forged[-1] ^= 0xFF
    with pytest.raises(InvalidMessage, match="authenticated"):
        send(server, 0, bytes(forged))
    assert 1 in server.pending()
    send(server, 1, good_1)
    assert 1 in server._received


def test_planted_header_trust_lets_a_forger_speak_for_a_client():
    """The same forgery with the header trusted (the old rule): client 0's own keys under
    client 1's header are taken as client 1's, and client 1's own message is then refused.
    The test above can fail."""
    from secagg._testing import plant

    config, clients, server = make()
    good_0, good_1 = clients[0].advertise_keys(), clients[1].advertise_keys()
    with plant("trust_header_sender"):
        send(server, 0, good_1[:HEADER_BYTES] + good_0[HEADER_BYTES:])
        assert 1 not in server.pending()
        with pytest.raises(InvalidMessage, match="duplicate"):
            send(server, 1, good_1)


def test_shares_to_the_wrong_recipients_are_refused():
    config, clients, server = make()
    out = advertise_and_reveal(clients, server)
    from secagg.messages import Kind, Shares, decode
    genuine = clients[0].share_keys(out[0])
    shares: Shares = decode(genuine, config, Kind.SHARES)
    forged = Shares(0, shares.commitment, shares.sealed[:-1]).encode(config)
    with pytest.raises(InvalidMessage, match="neighbours"):
        send(server, 0, forged)
    assert 0 in server.pending()  # refused, nothing else: its real shares still go through
    send(server, 0, genuine)


def test_client_rejects_wrong_round_and_wrong_stage_without_changing_state():
    config, clients, server = make()
    other_config, other_clients, other_server = make(round_byte=9)
    for c, client in clients.items():
        send(server, c, client.advertise_keys())
    for c, client in other_clients.items():
        send(other_server, c, client.advertise_keys())
    roster = server.close_stage()[0]
    stray = other_server.close_stage()[0]
    client = clients[0]
    state = client.state
    with pytest.raises(StageError):
        client.reveal_nonce(stray)
    assert client.state is state
    with pytest.raises(InvalidMessage):
        client.masked_input(roster, np.arange(8))  # not in that stage yet
    assert client.state is state
    client.reveal_nonce(roster)  # the genuine message still works


def test_client_input_is_validated_before_anything_changes():
    config, clients, server, out = to_masked_stage()
    client = clients[2]
    state = client.state
    from secagg import InvalidInput
    for bad in (np.arange(7), np.arange(8) * 1000, np.full(8, -1), np.zeros(8) + 0.5):
        with pytest.raises(InvalidInput):
            client.masked_input(out[2], bad)
        assert client.state is state
    client.masked_input(out[2], np.arange(8))
