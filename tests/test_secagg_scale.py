"""The server at population scale: the bench prices its protocol floor and reports its memory,
the batched arithmetic equals the plain reference, and the sum does not depend on who dropped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import simulate_round
from secagg.client import SecAggClient
from secagg.config import RoundConfig
from secagg.params import DEFAULT_CORRUPT_RATE, choose_parameters
from secagg.server import SecAggServer
from secagg_drive import send, to_masked_input
from secagg.bench import BenchConfig, protocol_floor_seconds, run_bench
from secagg.hazmat import shamir
from secagg.messages import ShareKind

FLOOR_KEYS = {"protocol_floor_seconds", "prg_floor_seconds", "x25519_floor_seconds",
              "add_floor_seconds", "server_x25519_pairs", "server_prg_vectors"}
MEMORY_KEYS = {"server_peak_bytes", "server_vector_peak_bytes", "server_peak_bytes_by_stage",
               "server_stream_peak_bytes", "server_peak_bytes_by_call"}


def test_bench_reports_protocol_floor_and_memory():
    report = run_bench(BenchConfig(clients=12, dim=3000, dropout=0.25, memory=True,
                                   progress=False))
    assert report["correct"] is True
    assert FLOOR_KEYS | MEMORY_KEYS <= report.keys()
    # The floor is the PRG floor plus the key agreements and the adds, each priced apart.
    parts = (report["prg_floor_seconds"] + report["x25519_floor_seconds"]
             + report["add_floor_seconds"])
    assert report["protocol_floor_seconds"] == pytest.approx(parts)
    assert report["protocol_floor_seconds"] > report["prg_floor_seconds"] > 0
    # 3 dropped clients of 12 on the complete graph: each has the 9 survivors as neighbours.
    assert report["dropped"] == 3 and report["server_x25519_pairs"] == 3 * 9
    assert report["server_prg_vectors"] == 9 + 3 * 9
    assert report["server_vector_peak_bytes"] >= 2 * 3000 * 4
    assert report["server_peak_bytes"] >= report["server_vector_peak_bytes"]


def test_protocol_floor_prices_each_part():
    floors = protocol_floor_seconds(expanded=5, exchanges=0, received=0, dim=100,
                                    modulus_bits=32, repeats=1)
    assert floors["x25519"] < floors["prg"] + floors["add"] + 1.0
    assert floors["protocol"] == pytest.approx(floors["prg"] + floors["x25519"] + floors["add"])


@settings(max_examples=40)
@given(threshold=st.integers(2, 8), extra=st.integers(0, 6), secrets=st.integers(1, 12),
       data=st.data())
def test_batched_reconstruction_equals_plain_lagrange(threshold, extra, secrets, data):
    """reconstruct_many (cached weights per holder set, dense-rank shortcut) equals the
    textbook Lagrange interpolation at zero over the same first t points, for every secret."""
    holders = threshold + extra
    point_sets, values = [], []
    for _ in range(secrets):
        secret = data.draw(st.integers(0, shamir.PRIME - 1))
        xs = sorted(data.draw(st.sets(st.integers(1, 3 * holders), min_size=threshold,
                                      max_size=holders)))
        ys = shamir.split(secret, threshold, xs)
        point_sets.append(list(zip(xs, ys)))
        values.append(secret)
    batched = shamir.reconstruct_many(point_sets, threshold)
    for points, secret, got in zip(point_sets, values, batched):
        first = points[:threshold]
        reference = 0
        for i, (xi, yi) in enumerate(first):
            num = den = 1
            for j, (xj, _) in enumerate(first):
                if j != i:
                    num = num * xj % shamir.PRIME
                    den = den * (xj - xi) % shamir.PRIME
            reference = (reference + yi * num * pow(den, -1, shamir.PRIME)) % shamir.PRIME
        assert got == reference == secret


def _reference_revealable(server, u):
    """The rule as first written, one share at a time."""
    out = {}
    neighbors = server.neighbors
    for about in set(neighbors[u]) | {u}:
        if about == u:
            out[about] = ShareKind.SELF_MASK_SEED
        elif about in server._survivor_set and u in neighbors[about]:
            out[about] = ShareKind.SELF_MASK_SEED
        elif about in server._dropped_set and u in neighbors[about]:
            out[about] = ShareKind.MASK_KEY
    return out


@settings(max_examples=15)
@given(n=st.integers(6, 14), seed=st.integers(0, 2**16), data=st.data())
def test_sum_is_the_same_whatever_drops(n, seed, data):
    """The server's output is the plain sum of exactly the clients it included, whichever
    clients drop before masked_input (each pattern exercises other pairwise-mask removals and
    other holder sets in the batched reconstruction)."""
    rng = np.random.default_rng(seed)
    inputs = {c: rng.integers(0, 2**16, 64, dtype=np.uint32) for c in range(n)}
    most = n - 5  # the complete graph's threshold leaves room for this many drops
    dropped = data.draw(st.sets(st.sampled_from(range(n)), max_size=max(0, min(most, 3))))
    result = simulate_round(inputs, modulus_bits=32, neighbors=n - 1,
                            dropouts={"masked_input": set(dropped)} if dropped else None)
    assert result.included == frozenset(range(n)) - dropped
    expected = np.zeros(64, dtype=np.uint64)
    for c in result.included:
        expected += inputs[c]
    assert np.array_equal(result.aggregate.astype(np.uint64), expected % 2**32)


def _drive_to_unmask(clients: int, dropped: set[int]):
    """A real round on a sparse graph (the parameter finder's), stopped in the unmask stage."""
    params = choose_parameters(clients, dropout_rate=0.1, corrupt_rate=DEFAULT_CORRUPT_RATE)
    config = RoundConfig(round_id=bytes(32), clients=tuple(range(clients)), dim=16,
                         modulus_bits=20, neighbors=params.neighbors,
                         threshold=params.threshold, dropout_rate=0.1)
    parties = {c: SecAggClient(c, config) for c in range(clients)}
    server = SecAggServer(config)
    deliveries = to_masked_input(parties, server)
    for c, m in deliveries.items():
        if c not in dropped:
            send(server, c, parties[c].masked_input(m, np.zeros(16, dtype=np.uint32)))
    server.close_stage()
    return server


def test_revealable_shares_follow_the_never_both_rule():
    """The server's per-holder table of what may be revealed equals the one-share-at-a-time
    rule, on a sparse graph with dropped clients."""
    server = _drive_to_unmask(40, {1, 7, 12})
    assert server.stage.value == "unmask"
    assert any(len(server.neighbors[u]) < 39 for u in server.neighbors)
    for u in server._u3:
        kinds = server._revealable(u)
        assert kinds == _reference_revealable(server, u)
        assert not any(kinds.get(d) is ShareKind.SELF_MASK_SEED for d in server._dropped_set)


@pytest.mark.slow
def test_bench_at_population_scale_stays_in_vector_memory():
    small = run_bench(BenchConfig(clients=300, dim=20_000, dropout=0.1, memory=True,
                                  progress=False))
    large = run_bench(BenchConfig(clients=3000, dim=20_000, dropout=0.1, memory=True,
                                  progress=False))
    assert small["correct"] and large["correct"]
    assert large["server_stream_peak_bytes"] <= 1.2 * small["server_stream_peak_bytes"]


@settings(max_examples=30)
@given(count=st.integers(8, 20), signed=st.sets(st.integers(0, 19)), seed=st.integers(0, 2**16))
def test_roster_fast_parse_equals_the_general_reader(count, signed, seed):
    """Unsigned rosters take the one-pass record parser; any signed entry, the general reader:
    both give back exactly what was encoded."""
    from secagg.messages import Kind, Roster, RosterEntry, decode

    rng = np.random.default_rng(seed)
    config = RoundConfig(round_id=bytes(32), clients=tuple(range(count)), dim=4, modulus_bits=20,
                         neighbors=count - 1, threshold=max(2, count // 2 + 1))

    def blob(n: int) -> bytes:
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    entries = tuple(RosterEntry(c, blob(32), blob(32), blob(32), blob(64) if c in signed else None)
                    for c in range(count))
    assert decode(Roster(entries).encode(config), config, Kind.ROSTER).entries == entries


@settings(max_examples=30)
@given(count=st.integers(8, 16), seed=st.integers(0, 2**16), data=st.data())
def test_bulk_share_routing_equals_one_delivery_at_a_time(count, seed, data):
    """encode_deliveries is byte for byte the Delivery each recipient would get from the
    per-share loop, including neighbours that never shared (their records are dropped)."""
    from secagg.messages import SEALED_SHARE_BYTES, Delivery, Shares, encode_deliveries

    rng = np.random.default_rng(seed)
    config = RoundConfig(round_id=bytes(32), clients=tuple(range(count)), dim=4, modulus_bits=20,
                         neighbors=count - 1, threshold=count // 2 + 1)
    shared = sorted(data.draw(st.sets(st.sampled_from(range(count)), min_size=1)))
    sent = {}
    for u in shared:
        to = sorted(data.draw(st.sets(st.sampled_from([v for v in range(count) if v != u]))))
        sealed = tuple((v, rng.integers(0, 256, SEALED_SHARE_BYTES, dtype=np.uint8).tobytes())
                       for v in to)
        sent[u] = Shares(u, bytes(32), sealed)
    records = {u: Shares._decode(u, _reader(m.encode(config)), config).records
               for u, m in sent.items()}
    expected = {v: Delivery(v, tuple((u, ct) for u in shared for w, ct in sent[u].sealed
                                     if w == v)).encode(config) for v in shared}
    assert encode_deliveries(config, records) == expected


def _reader(data: bytes):
    from secagg.messages import HEADER_BYTES, _Reader

    return _Reader(data, HEADER_BYTES)
