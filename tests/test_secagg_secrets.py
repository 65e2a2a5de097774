"""No secret reaches a transcript, an exception message or a log line, and every key is full
width."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from secagg import ProtocolAbort, RoundConfig, SecAggClient, SecAggServer, simulate_round
from secagg.hazmat import crypto


def run_and_capture(monkeypatch, **kwargs):
    """Run a round while recording every secret the clients create."""
    secrets_seen: list[bytes] = []
    original_urandom = __import__("os").urandom
    from secagg import client as client_module

    def spy(n):
        value = original_urandom(n)
        secrets_seen.append(value)
        return value

    monkeypatch.setattr(client_module.os, "urandom", spy)
    original_keypair = crypto.KeyPair.__init__

    def keypair_spy(self, private=None):
        original_keypair(self, private)
        secrets_seen.append(self.private_bytes())

    monkeypatch.setattr(crypto.KeyPair, "__init__", keypair_spy)
    rng = np.random.default_rng(5)
    inputs = {c: rng.integers(1 << 20, 1 << 24, 64) for c in range(8)}
    result = simulate_round(inputs, modulus_bits=28, **kwargs)
    return result, secrets_seen, inputs


def test_transcript_holds_no_client_secret_and_no_input(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    result, seen, inputs = run_and_capture(monkeypatch, dropouts={"masked_input": [3]})
    blob = b"".join(e.data for e in result.transcript)
    # 12-byte draws are AES-GCM nonces, which are public; 32-byte draws are secrets, except the
    # graph nonces, which the protocol reveals on purpose (each opens its commitment).
    from secagg.messages import Kind, decode, peek
    revealed = set()
    for entry in result.transcript:
        if peek(entry.data, result.config)[0] is Kind.REVEAL:
            revealed.add(decode(entry.data, result.config, Kind.REVEAL).nonce)
    assert len(revealed) == 8
    seen = [s for s in seen if len(s) == 32 and s not in revealed]
    assert len(seen) >= 3 * 8, "the spy must see every client's seed and private keys"
    # Self-mask seeds and private keys never travel, even though the server may reconstruct the
    # ones the protocol reveals to it.
    for secret in seen:
        assert secret not in blob
    for x in inputs.values():
        assert x.astype(">u4").tobytes()[:16] not in blob
        assert x.astype("<u4").tobytes()[:16] not in blob
    for record in caplog.records:
        for secret in seen:
            assert secret.hex() not in record.getMessage()


def test_repr_and_errors_do_not_show_keys():
    pair = crypto.KeyPair()
    assert pair.private_bytes().hex() not in repr(pair)
    config = RoundConfig(round_id=bytes(32), clients=(0, 1, 2), dim=4, modulus_bits=8,
                         neighbors=2, threshold=2)
    client = SecAggClient(0, config)
    client.advertise_keys()
    private = client._s.private_bytes()
    with pytest.raises(Exception) as info:
        client.reveal_nonce(b"\x00" * 50)
    assert private.hex() not in str(info.value)


def test_abort_wipes_client_secrets():
    config = RoundConfig(round_id=bytes(32), clients=(0, 1, 2), dim=4, modulus_bits=8,
                         neighbors=2, threshold=2)
    clients = {c: SecAggClient(c, config) for c in range(3)}
    server = SecAggServer(config)
    for c, client in clients.items():
        server.receive(client.advertise_keys(), sender=c)
    roster = server.close_stage()[0]
    # The roster for client 0 from a server that dropped client 0's own keys: abort.
    from secagg.messages import Kind, Roster, decode
    r = decode(roster, config, Kind.ROSTER)
    tampered = Roster(tuple(e for e in r.entries if e.client != 0)).encode(config)
    with pytest.raises(ProtocolAbort):
        clients[0].reveal_nonce(tampered)
    assert clients[0]._s is None and clients[0]._nonce is None and clients[0]._c is None


def test_mask_keys_are_full_width_and_distinct_per_pair_and_round():
    shared = bytes(range(32))
    k1 = crypto.pairwise_mask_key(shared, b"r" * 32, 1, 2)
    assert len(k1) == 16
    assert k1 == crypto.pairwise_mask_key(shared, b"r" * 32, 2, 1)
    assert k1 != crypto.pairwise_mask_key(shared, b"s" * 32, 1, 2)
    assert k1 != crypto.pairwise_mask_key(shared, b"r" * 32, 1, 3)
    assert crypto.channel_key(shared, b"r" * 32, 1, 2) != crypto.channel_key(shared, b"r" * 32,
                                                                              2, 1)
