"""The server's batched paths equal the plain ones they replace.

The server recognises the share_keys, masked-input and unmask messages an honest client sends
in bulk (numpy over the wire records), plans every holder's revealable shares in one pass over
the graph's arrays, and reconstructs all secrets at once with one Lagrange basis per set of
holder ranks. Each of these is checked here against the straightforward rule it replaces:
textbook per-owner reconstruction (with the same (holder, owner) pairs named when shares lie),
the one-share-at-a-time revealable rule, ``ring_holders`` per client, and the same round with
every message decoded and checked one record at a time (``SecAggServer._batched = False``),
message for message, for honest and mutated messages alike.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg import ProtocolAbort, RoundConfig, SecAggClient, SecAggServer
from secagg.client import opens_mask_key, opens_seed
from secagg.errors import CohortError
from secagg.graph import holder_table, ring_holders, ring_offsets, ring_order
from secagg.hazmat import shamir
from secagg.messages import HEADER_BYTES, Kind, ShareKind, UnmaskShares, decode

DIM, BITS = 16, 20


class Round:
    """A real round with one client per id and any number of servers fed the same messages:
    every server must answer every stage with the same bytes."""

    def __init__(self, n: int, *, neighbors: int | None = None, threshold: int | None = None,
                 servers: int = 1, dropout_rate: float = 0.1) -> None:
        from secagg.params import DEFAULT_CORRUPT_RATE, choose_parameters

        params = choose_parameters(n, neighbors=neighbors, threshold=threshold,
                                   dropout_rate=dropout_rate, corrupt_rate=DEFAULT_CORRUPT_RATE)
        self.config = RoundConfig(round_id=bytes(range(32)), clients=tuple(range(n)), dim=DIM,
                                  modulus_bits=BITS, neighbors=params.neighbors,
                                  threshold=params.threshold, dropout_rate=dropout_rate)
        self.clients = {c: SecAggClient(c, self.config) for c in range(n)}
        self.servers = [SecAggServer(self.config) for _ in range(servers)]
        rng = np.random.default_rng(n)
        self.inputs = {c: rng.integers(0, 1 << 12, DIM).astype(np.uint32) for c in range(n)}

    def deliver(self, sender: int, data: bytes) -> list[str | None]:
        """Every server takes the message; each one's outcome (None, or the error's type and
        text)."""
        out = []
        for server in self.servers:
            try:
                server.receive(data, sender=sender)
                out.append(None)
            except CohortError as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    def close(self) -> dict[int, bytes]:
        outs = [server.close_stage() for server in self.servers]
        assert all(o == outs[0] for o in outs[1:])
        return outs[0]

    def to_unmask(self, *, never: frozenset[int] = frozenset(),
                  dropped: frozenset[int] = frozenset()) -> dict[int, bytes]:
        """advertise_keys (without ``never``) through masked_input (without ``dropped``):
        each survivor's unmask request."""
        for c, client in self.clients.items():
            if c not in never:
                assert self.deliver(c, client.advertise_keys()) == [None] * len(self.servers)
        for stage in ("reveal_nonce", "share_keys"):
            out = self.close()
            for c, m in out.items():
                assert self.deliver(c, getattr(self.clients[c], stage)(m)) \
                    == [None] * len(self.servers)
        out = self.close()
        for c, m in out.items():
            if c not in dropped:
                message = self.clients[c].masked_input(m, self.inputs[c])
                assert self.deliver(c, message) == [None] * len(self.servers)
        return self.close()


def _unbatched(server: SecAggServer) -> SecAggServer:
    server._batched = False
    return server


def _lie(config: RoundConfig, data: bytes, about: set[int], delta: int) -> bytes:
    """The holder's unmask message with a wrong share about each client in ``about``."""
    message = decode(data, config, Kind.UNMASK_SHARES)
    shares = tuple((a, k, ((int.from_bytes(s, "big") + delta) % shamir.PRIME)
                    .to_bytes(shamir.SHARE_BYTES, "big") if a in about else s)
                   for a, k, s in message.shares)
    return UnmaskShares(message.sender, shares).encode(config)


def _reference_recovery(rnd: Round, server: SecAggServer, sent: dict[int, bytes]):
    """Textbook reconstruction, owner by owner, from the messages as sent: the t nearest
    holders' shares; on a failed check, error correction over all of them and every holder
    whose share is off the polynomial named. Returns the (holder, owner) pairs, or None when
    some secret cannot be recovered (the round must abort)."""
    config, t = rnd.config, rnd.config.threshold
    points: dict[int, list[tuple[int, int, int]]] = {}
    for holder, data in sent.items():
        for about, _, share in decode(data, config, Kind.UNMASK_SHARES).shares:
            x = rnd.clients[about].holder_ranks[holder]
            points.setdefault(about, []).append((x, int.from_bytes(share, "big"), holder))
    pairs = set()
    survivors, dropped = server._u3, server._dropped
    for owner in survivors + dropped:
        mine = sorted(points.get(owner, []))
        if len(mine) < t:
            return None
        check = (opens_seed(config, owner, server._commitments[owner]) if owner in survivors
                 else opens_mask_key(server._advertised[owner].mask_key))
        if check(shamir.reconstruct([(x, y) for x, y, _ in mine[:t]], t)):
            continue
        try:
            poly = shamir.decode_with_check([(x, y) for x, y, _ in mine], t, check)
        except ValueError:
            return None
        pairs |= {(h, owner) for x, y, h in mine if shamir.evaluate(poly, x) != y}
    return pairs


# -- the arithmetic --------------------------------------------------------------------------

@settings(max_examples=60)
@given(t=st.integers(1, 9), data=st.data())
def test_reconstruct_rows_equals_per_owner_reconstruction(t, data):
    """One basis per distinct row of ranks gives every secret that plain Lagrange gives."""
    owners = data.draw(st.integers(1, 12))
    pool = data.draw(st.lists(st.sets(st.integers(1, 3 * t + 4), min_size=t, max_size=t),
                              min_size=1, max_size=3))  # few holder sets: rows repeat
    rows, ys, secrets = [], [], []
    for _ in range(owners):
        xs = sorted(data.draw(st.sampled_from(pool)))
        secret = data.draw(st.integers(0, shamir.PRIME - 1))
        rows.append(xs)
        ys.extend(shamir.split(secret, t, xs))
        secrets.append(secret)
    got = shamir.reconstruct_rows(np.array(rows, dtype=np.int64), ys)
    plain = [shamir.reconstruct(list(zip(xs, ys[i * t:(i + 1) * t])), t)
             for i, xs in enumerate(rows)]
    assert got == plain == secrets


def test_reconstruct_rows_refuses_bad_points():
    with pytest.raises(ValueError):
        shamir.reconstruct_rows(np.array([[2, 1]]), [5, 6])  # not increasing
    with pytest.raises(ValueError):
        shamir.reconstruct_rows(np.array([[0, 1]]), [5, 6])  # x = 0 is the secret
    with pytest.raises(ValueError):
        shamir.reconstruct_rows(np.array([[1, 2]]), [5])
    assert shamir.reconstruct_rows(np.zeros((0, 3), dtype=np.int64), []) == []


@settings(max_examples=80)
@given(n=st.integers(2, 70), data=st.data())
def test_holder_table_equals_ring_holders(n, data):
    """The server's one-gather holder table is ring_holders row for row, odd k on odd n too."""
    k = data.draw(st.integers(1, n - 1))
    clients = sorted(data.draw(st.sets(st.integers(0, 10_000), min_size=n, max_size=n)))
    order = ring_order(data.draw(st.binary(min_size=32, max_size=32)), clients)
    position, at = holder_table(order, clients)
    table = at[(position[:, None] + np.asarray(ring_offsets(n, k))) % n]
    for i, c in enumerate(clients):
        expected = [clients.index(v) for v in ring_holders(order, order.index(c), k)]
        assert table[i].tolist() == expected


# -- the plan of what each holder reveals -------------------------------------------------------

@pytest.mark.parametrize("n, neighbors, threshold, never, dropped", [
    (40, None, None, frozenset(), frozenset({1, 7, 12})),
    (12, 5, 3, frozenset({4}), frozenset({0, 9})),  # odd k; one never advertised
    (12, 11, 7, frozenset(), frozenset({3})),
])
def test_unmask_plan_equals_the_one_share_at_a_time_rule(n, neighbors, threshold, never,
                                                         dropped):
    rnd = Round(n, neighbors=neighbors, threshold=threshold, dropout_rate=0.3)
    rnd.to_unmask(never=never, dropped=dropped)
    server = rnd.servers[0]
    for u in server._u3:
        row = server._plan_row[u]
        count = server._plan_count[row]
        prefix = server._plan_prefix[row, :count]
        ids = prefix[:, :4].copy().view(">u4").ravel().tolist()
        kinds = [ShareKind(k) for k in prefix[:, 4].tolist()]
        assert list(zip(ids, kinds)) == sorted(server._revealable(u).items())
        xs = server._plan_x[row, :count].tolist()
        assert xs == [server._rank(about, u) for about in ids]
        assert xs == [rnd.clients[about].holder_ranks[u] for about in ids]


# -- reconstruction with lying holders --------------------------------------------------------

@settings(max_examples=12, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_batched_recovery_names_the_same_pairs_as_per_owner_reconstruction(data):
    """Holders lie about owners the search picks: the batched server corrects exactly where
    per-owner reconstruction does, names the same (holder, owner) pairs, and sums right, or
    both find a secret they cannot recover and the round aborts."""
    rnd = Round(40)
    dropped = frozenset(data.draw(st.sets(st.integers(0, 39), max_size=3)))
    requests = rnd.to_unmask(dropped=dropped)
    server = rnd.servers[0]
    sent = {}
    for holder, request in requests.items():
        sent[holder] = rnd.clients[holder].unmask(request)
    revealed = [(h, a) for h, m in sent.items()
                for a, _, _ in decode(m, rnd.config, Kind.UNMASK_SHARES).shares]
    lies = data.draw(st.sets(st.sampled_from(revealed), max_size=10))
    delta = data.draw(st.integers(1, shamir.PRIME - 1))
    for holder in {h for h, _ in lies}:
        sent[holder] = _lie(rnd.config, sent[holder], {a for h, a in lies if h == holder}, delta)
    for holder, message in sent.items():
        assert rnd.deliver(holder, message) == [None]
    expected = _reference_recovery(rnd, server, sent)
    if expected is None:
        with pytest.raises(ProtocolAbort, match="inconsistent|too few"):
            server.close_stage()
        return
    server.close_stage()
    result = server.result
    assert result.share_mismatches == expected
    assert result.liars == {h for h, _ in expected}
    assert expected <= lies  # nobody honest is named
    total = sum(rnd.inputs[c].astype(np.uint64) for c in result.included) % (1 << BITS)
    assert np.array_equal(result.aggregate.astype(np.uint64), total)


def test_one_lying_holder_is_named_and_cannot_change_the_sum():
    """The attack the batched path must still stop: a holder that reveals a wrong share about
    every owner it holds. Every secret is corrected around it and only it is named."""
    rnd = Round(40)
    requests = rnd.to_unmask(dropped=frozenset({5, 17}))
    server = rnd.servers[0]
    liar = 9
    sent = {h: rnd.clients[h].unmask(r) for h, r in requests.items()}
    owners = {a for a, _, _ in decode(sent[liar], rnd.config, Kind.UNMASK_SHARES).shares}
    sent[liar] = _lie(rnd.config, sent[liar], owners, 1)
    for holder, message in sent.items():
        rnd.deliver(holder, message)
    expected = _reference_recovery(rnd, server, sent)
    server.close_stage()
    result = server.result
    assert result.liars == {liar}
    # Named wherever its share was among the t nearest that failed the owner's check, as
    # owner-by-owner reconstruction names it; always for its own seed (x = 1, the nearest).
    assert result.share_mismatches == expected
    assert (liar, liar) in expected and expected <= {(liar, a) for a in owners}
    total = sum(rnd.inputs[c].astype(np.uint64) for c in result.included) % (1 << BITS)
    assert np.array_equal(result.aggregate.astype(np.uint64), total)


def test_the_comparison_with_per_owner_reconstruction_can_fail():
    """A planted defect in the batched arithmetic (each holder set given another set's
    Lagrange basis) is caught by the comparison the search above makes: robust decoding still
    sums right, but it then names every pair the liar holds, not the pairs per-owner
    reconstruction names."""
    from unittest import mock

    rnd = Round(40)
    requests = rnd.to_unmask(dropped=frozenset({5, 17}))
    server = rnd.servers[0]
    liar = 9
    sent = {h: rnd.clients[h].unmask(r) for h, r in requests.items()}
    owners = {a for a, _, _ in decode(sent[liar], rnd.config, Kind.UNMASK_SHARES).shares}
    sent[liar] = _lie(rnd.config, sent[liar], owners, 1)
    for holder, message in sent.items():
        rnd.deliver(holder, message)
    expected = _reference_recovery(rnd, server, sent)
    plain = shamir._bases

    def shifted(sets, chunk=1024):
        bases = plain(sets, chunk)
        return bases[1:] + bases[:1]

    with mock.patch.object(shamir, "_bases", shifted):
        server.close_stage()
    result = server.result
    assert result.share_mismatches != expected
    assert result.share_mismatches == {(liar, a) for a in owners}
    total = sum(rnd.inputs[c].astype(np.uint64) for c in result.included) % (1 << BITS)
    assert np.array_equal(result.aggregate.astype(np.uint64), total)


def test_a_lie_is_caught_in_the_batched_path_not_only_in_the_plain_one():
    """A lying share passes the bulk parser (it is a field element in the right place): the
    owner's commitment is what catches it. Shown by the planted first-t rule, which aborts on
    the first failed check instead of correcting."""
    from secagg._testing import plant

    rnd = Round(40)
    requests = rnd.to_unmask()
    server = rnd.servers[0]
    sent = {h: rnd.clients[h].unmask(r) for h, r in requests.items()}
    liar = 3
    sent[liar] = _lie(rnd.config, sent[liar], {liar}, 7)  # its own seed share, x = 1
    for holder, message in sent.items():
        assert rnd.deliver(holder, message) == [None]
    assert liar not in server.pending()  # accepted by the bulk path...
    with plant("first_t_shares"), pytest.raises(ProtocolAbort, match="inconsistent"):
        server.close_stage()  # ...and caught by the check of the reconstructed secret


@pytest.mark.parametrize("change", ["kind", "both", "range", "prime", "missing", "extra"])
def test_a_share_the_holder_may_not_reveal_is_refused(change):
    """Forbidden reveals are refused with the error the one-record path gives (the bulk path
    does not recognise them and hands them on): the other kind for a neighbour, both kinds, a
    value outside the field or equal to its prime; an owner left out is accepted as a
    smaller reveal, an owner the holder does not hold is refused."""
    rnd = Round(40, servers=2)
    _unbatched(rnd.servers[1])
    requests = rnd.to_unmask(dropped=frozenset({2}))
    holder = next(h for h in requests if h != 2)
    data = rnd.clients[holder].unmask(requests[holder])
    message = decode(data, rnd.config, Kind.UNMASK_SHARES)
    shares = list(message.shares)
    i = next(i for i, (a, _, _) in enumerate(shares) if a != holder)
    about, kind, share = shares[i]
    other = ShareKind.MASK_KEY if kind is ShareKind.SELF_MASK_SEED else ShareKind.SELF_MASK_SEED
    if change == "kind":
        shares[i] = (about, other, share)
    elif change == "both":
        shares.insert(i + 1, (about, other, share))
        shares.sort(key=lambda s: (s[0], s[1]))
    elif change == "range":
        shares[i] = (about, kind, b"\x02" + share[1:])
    elif change == "prime":
        shares[i] = (about, kind, shamir.PRIME.to_bytes(shamir.SHARE_BYTES, "big"))
    elif change == "missing":
        del shares[i]
    else:
        stranger = next(c for c in range(40) if c not in rnd.servers[0].neighbors[holder]
                        and c != holder and c not in {a for a, _, _ in shares})
        shares.append((stranger, ShareKind.SELF_MASK_SEED, share))
        shares.sort(key=lambda s: s[0])
    forged = UnmaskShares(holder, tuple(shares)).encode(rnd.config)
    outcomes = rnd.deliver(holder, forged)
    assert outcomes[0] == outcomes[1]
    if change == "missing":
        assert outcomes[0] is None
    else:
        assert outcomes[0] is not None and outcomes[0].startswith("InvalidMessage")
        assert all(holder in s.pending() for s in rnd.servers)  # refused: nothing taken


def test_a_share_just_below_the_prime_is_a_field_element():
    """The bulk range check is exact at the edge: 2**521 - 2 is accepted (and then fails the
    owner's check like any other wrong share), 2**521 - 1 is refused."""
    rnd = Round(40, servers=2)
    _unbatched(rnd.servers[1])
    requests = rnd.to_unmask()
    holder = next(iter(requests))
    data = rnd.clients[holder].unmask(requests[holder])
    message = decode(data, rnd.config, Kind.UNMASK_SHARES)
    edge = (shamir.PRIME - 1).to_bytes(shamir.SHARE_BYTES, "big")
    shares = ((message.shares[0][0], message.shares[0][1], edge),) + message.shares[1:]
    assert rnd.deliver(holder, UnmaskShares(holder, shares).encode(rnd.config)) == [None, None]
    assert rnd.servers[0]._revealed.keys() == rnd.servers[1]._revealed.keys()


# -- the bulk parsers against decode(), message for message ------------------------------------

def _mutations():
    return st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
        st.tuples(st.just("cut"), st.integers(1, 200), st.just(0)),
        st.tuples(st.just("grow"), st.integers(1, 200), st.integers(0, 255)),
        st.tuples(st.just("none"), st.just(0), st.just(0)),
    )


def _mutate(data: bytes, mutation) -> bytes:
    how, where, value = mutation
    if how == "flip":
        pos = HEADER_BYTES + where % (len(data) - HEADER_BYTES)
        return data[:pos] + bytes([data[pos] ^ value]) + data[pos + 1:]
    if how == "cut":
        return data[:max(HEADER_BYTES, len(data) - where)]
    if how == "grow":
        return data + bytes([value]) * where
    return data


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(stage=st.sampled_from(["share_keys", "masked_input", "unmask"]), mutation=_mutations(),
       victim=st.integers(0, 11))
def test_bulk_parsers_accept_and_refuse_exactly_what_decode_does(stage, mutation, victim):
    """A round fed to a batched and an unbatched server at once, with one client's message of
    one stage mutated (a flipped body byte, a cut, trailing bytes, or none): both servers give
    the same outcome for every message, the same outgoing messages, and the same result."""
    rnd = Round(12, neighbors=5, threshold=3, servers=2, dropout_rate=0.3)
    _unbatched(rnd.servers[1])
    clients = rnd.clients
    for c, client in clients.items():
        rnd.deliver(c, client.advertise_keys())
    out = rnd.close()
    for c, m in out.items():
        rnd.deliver(c, clients[c].reveal_nonce(m))
    steps = [("share_keys", lambda c, m: clients[c].share_keys(m)),
             ("masked_input", lambda c, m: clients[c].masked_input(m, rnd.inputs[c])),
             ("unmask", lambda c, m: clients[c].unmask(m))]
    for name, act in steps:
        out = rnd.close()
        for c, m in out.items():
            try:
                message = act(c, m)
            except CohortError:
                continue  # a client that refuses (e.g. its neighbour dropped out) drops out
            if name == stage and c == victim:
                message = _mutate(message, mutation)
            outcomes = rnd.deliver(c, message)
            assert outcomes[0] == outcomes[1]
            assert rnd.servers[0].pending() == rnd.servers[1].pending()
    try:
        rnd.close()
    except ProtocolAbort:
        return
    a, b = (s.result for s in rnd.servers)
    assert np.array_equal(a.aggregate, b.aggregate)
    assert (a.included, a.liars, a.share_mismatches) == (b.included, b.liars,
                                                          b.share_mismatches)


def test_unbatched_server_refuses_the_same_bad_shares_message():
    """A share_keys message that names a non-neighbour fails with the same text either way."""
    rnd = Round(12, neighbors=5, threshold=3, servers=2, dropout_rate=0.3)
    _unbatched(rnd.servers[1])
    clients = rnd.clients
    for c, client in clients.items():
        rnd.deliver(c, client.advertise_keys())
    out = rnd.close()
    for c, m in out.items():
        rnd.deliver(c, clients[c].reveal_nonce(m))
    out = rnd.close()
    data = clients[0].share_keys(out[0])
    # Re-address the first sealed share to a client outside 0's neighbourhood.
    stranger = next(c for c in range(12) if c not in rnd.servers[0].neighbors[0] and c != 0)
    pos = HEADER_BYTES + 32 + 4
    forged = data[:pos] + stranger.to_bytes(4, "big") + data[pos + 4:]
    outcomes = rnd.deliver(0, forged)
    assert outcomes[0] == outcomes[1] and outcomes[0].startswith("InvalidMessage")
    # Nothing of the refused message was taken: its own message is still welcome, by both.
    assert rnd.deliver(0, data) == [None, None]


@settings(max_examples=30)
@given(count=st.integers(3, 12), chunk=st.integers(1, 5), seed=st.integers(0, 2**16),
       data=st.data())
def test_chunked_share_routing_equals_one_delivery_at_a_time(count, chunk, seed, data):
    """Routing a few recipients at a time gives every recipient the Delivery the per-share
    loop gives, whichever chunk boundaries fall between them."""
    from secagg.messages import SEALED_SHARE_BYTES, Delivery, Shares, encode_deliveries

    rng = np.random.default_rng(seed)
    config = RoundConfig(round_id=bytes(32), clients=tuple(range(count)), dim=4, modulus_bits=20,
                         neighbors=count - 1, threshold=count // 2 + 1, corrupt_rate=0.0)
    shared = sorted(data.draw(st.sets(st.sampled_from(range(count)), min_size=1)))
    sent = {}
    for u in shared:
        to = sorted(data.draw(st.sets(st.sampled_from([v for v in range(count) if v != u]))))
        sent[u] = Shares(u, bytes(32), tuple(
            (v, rng.integers(0, 256, SEALED_SHARE_BYTES, dtype=np.uint8).tobytes()) for v in to))
    records = {u: decode(m.encode(config), config, Kind.SHARES).records for u, m in sent.items()}
    expected = {v: Delivery(v, tuple((u, ct) for u in shared for w, ct in sent[u].sealed
                                     if w == v)).encode(config) for v in shared}
    assert encode_deliveries(config, records, chunk=chunk) == expected


# -- the clients' shared view of the broadcasts -------------------------------------------------

def test_clients_of_one_process_check_each_broadcast_once():
    """The O(n) checks of the roster and the nonces run once for all the clients that got the
    same bytes, and every client holds the same ring object, not a copy: a simulated cohort
    does O(n) roster work, not O(n^2)."""
    from unittest import mock

    from secagg import _views

    rnd = Round(30)
    counted = mock.Mock(side_effect=_views.nonce_commitments)
    ordered = mock.Mock(side_effect=_views.ring_order)
    with mock.patch.object(_views, "nonce_commitments", counted), \
            mock.patch.object(_views, "ring_order", ordered):
        rnd.to_unmask()
    assert counted.call_count == 1 and ordered.call_count == 1
    rings = {id(client._ring) for client in rnd.clients.values()}
    assert len(rings) == 1


def test_a_client_shown_other_bytes_gets_its_own_checks():
    """Sharing is by the full bytes received: a client shown a roster that repeats a key
    refuses it, while the clients shown the honest roster go on."""
    from secagg.messages import Roster, RosterEntry

    rnd = Round(12, neighbors=5, threshold=3, dropout_rate=0.3)
    for c, client in rnd.clients.items():
        rnd.deliver(c, client.advertise_keys())
    rosters = rnd.close()
    honest = rosters[0]
    entries = list(decode(honest, rnd.config, Kind.ROSTER).entries)
    victim = 5
    other = next(e for e in entries if e.client != victim)
    entries = [RosterEntry(e.client, e.channel_key, other.mask_key, e.commitment, e.signature)
               if e.client == (victim + 1) % 12 else e for e in entries]
    forged = Roster(tuple(entries)).encode(rnd.config)
    with pytest.raises(ProtocolAbort, match="repeats a public key"):
        rnd.clients[victim].reveal_nonce(forged)
    for c in (0, 1, 2):
        rnd.clients[c].reveal_nonce(honest)  # the forged roster did not poison their view
    with pytest.raises(ProtocolAbort, match="repeats a public key"):
        rnd.clients[(victim + 2) % 12].reveal_nonce(forged)


# -- population scale --------------------------------------------------------------------------

@pytest.mark.slow
def test_bench_at_ten_thousand_clients_streams_in_the_memory_of_a_thousand():
    """The bench completes at n = 10^4, and the server's streaming memory (its accumulator
    plus one masked vector in flight) stays within 1.2x of its figure at n = 10^3 (what grows
    is the packed width, log2 n bits, not anything per client)."""
    from secagg.bench import BenchConfig, run_bench

    small = run_bench(BenchConfig(clients=1000, dim=10_000, dropout=0.1, memory=True,
                                  progress=False))
    large = run_bench(BenchConfig(clients=10_000, dim=10_000, dropout=0.1, memory=True,
                                  progress=False))
    assert small["correct"] and large["correct"]
    assert large["server_stream_peak_bytes"] <= 1.2 * small["server_stream_peak_bytes"]


@settings(max_examples=60)
@given(tag=st.binary(min_size=1, max_size=100), ikm=st.binary(min_size=0, max_size=80),
       a=st.integers(0, 2**32 - 1), b=st.integers(0, 2**32 - 1))
def test_round_mask_keys_equal_the_per_key_derivation(tag, ikm, a, b):
    """The server's per-round key deriver (the tag's HMAC key blocks hashed once) gives the
    bytes of HKDF itself, pinned to RFC 5869 in the known-answer tests."""
    from secagg.hazmat import crypto

    keys = crypto.MaskKeys(tag)
    assert keys.pairwise(ikm, a, b) == crypto.pairwise_mask_key(ikm, tag, a, b)
    assert keys.self_mask(ikm, a) == crypto.self_mask_key(ikm, tag, a)


@pytest.mark.parametrize("planted", [False, True])
def test_a_signature_check_shared_by_the_process_is_keyed_by_the_key(planted):
    """Malicious-server mode: clients of one process share each Ed25519 verification
    (secagg._views.signature_holds), keyed by the key, signature and signed bytes. A client
    whose directory holds another key for a roster member must refuse the roster that the
    other clients, with the true key, accepted. Planted: a memo that forgets the key, so the
    first client's verdict passes the second."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from secagg import _testing
    from secagg.params import DEFAULT_CORRUPT_RATE, choose_parameters

    n = 6
    params = choose_parameters(n, dropout_rate=0.1, corrupt_rate=DEFAULT_CORRUPT_RATE,
                               malicious=True)
    config = RoundConfig(round_id=bytes(range(16)) + bytes(16), clients=tuple(range(n)),
                         dim=DIM, modulus_bits=BITS, neighbors=params.neighbors,
                         threshold=params.threshold, malicious=True,
                         corrupt_rate=DEFAULT_CORRUPT_RATE, dropout_rate=0.1)
    identities = {c: Ed25519PrivateKey.generate() for c in range(n)}
    directory = {c: k.public_key() for c, k in identities.items()}
    wrong = dict(directory)
    wrong[3] = Ed25519PrivateKey.generate().public_key()  # not the key site 3 signed with
    clients = {c: SecAggClient(c, config, identity=identities[c],
                               directory=wrong if c == 1 else directory) for c in range(n)}
    server = SecAggServer(config, directory=directory)
    for c, client in clients.items():
        server.receive(client.advertise_keys(), sender=c)
    rosters = server.close_stage()
    assert len(set(rosters.values())) == 1  # one roster, the same bytes for everyone
    with _testing.plant(*(["signature_memo_ignores_key"] if planted else [])):
        clients[0].reveal_nonce(rosters[0])  # the true key: accepted (and remembered)
        if planted:
            clients[1].reveal_nonce(rosters[1])  # the forgotten key lets it through
        else:
            with pytest.raises(ProtocolAbort, match="not signed by its client's identity"):
                clients[1].reveal_nonce(rosters[1])
        clients[2].reveal_nonce(rosters[2])
