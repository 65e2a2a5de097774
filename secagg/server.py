"""The server side of a SecAgg+ round: a pure state machine that relays and sums.

The server collects each stage's messages through :meth:`SecAggServer.receive` (validating each
one before it touches any state) and, when the transport decides the stage is over (a deadline,
or everyone answered), :meth:`SecAggServer.close_stage` turns what arrived into the next stage's
outgoing messages. Masked vectors are added into a single accumulator as they arrive, so the
server's vector memory is O(dim) whatever the number of clients. At the end it reconstructs the
survivors' self-mask seeds and the dropped clients' mask keys from the revealed shares, strips
those masks, and exposes the sum of the survivors' inputs mod 2**modulus_bits.

Who sent a message is what the transport authenticated (a client certificate, or the identity
signature a deployment puts around every message), passed to :meth:`receive` as ``sender``;
the header's sender field must agree with it, and a message whose header names someone else is
refused without touching anyone's standing. A message that is malformed, forged or out of place
raises :class:`~secagg.errors.InvalidMessage` and changes nothing, its authenticated sender's
standing included (a stage that closes without a valid message from it makes it a dropout), so
everything the server holds comes from messages it accepted, which a deployment's inbox stores.

Reconstruction is robust: each secret is checked against what its owner committed to (the
self-mask seed's hash, the mask key's public half); when the first t shares fail the check, all
the shares received are decoded as a Reed-Solomon codeword, which corrects up to
(shares - t) / 2 wrong ones, and the holders of the wrong shares are named in :attr:`liars`.

Fewer clients than the model's minimum at any stage raises :class:`~secagg.errors.ProtocolAbort`
and the accumulator is wiped: nothing is revealed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import _testing
from .client import advertise_payload, consistency_payload, opens_mask_key, opens_seed, \
    roster_digest
from .config import RoundConfig
from .errors import InvalidMessage, ProtocolAbort, StageError
from .graph import graph_seed, holder_table, nonce_commitment, ring_offsets, ring_order, \
    roster_graph_seed
from .hazmat import crypto, shamir
from .hazmat.packing import PackedAccumulator
from .hazmat.prg import MaskGenerator
from .messages import (
    Advertise,
    ConsistencyRequest,
    ConsistencySignature,
    Kind,
    MaskedInput,
    Nonces,
    Reveal,
    Roster,
    RosterEntry,
    Shares,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
    HEADER_BYTES,
    UNMASK_RECORD_BYTES,
    decode,
    encode_deliveries,
    expected_shares,
    expected_unmask,
    peek,
)
from .stages import Stage

__all__ = ["SecAggServer", "ServerState", "AggregateResult"]

# Sorts after every client id (ids stop at MAX_CLIENT_ID = 0xFFFFFFFE): pads rows of id arrays.
_PAD_ID = 0xFFFFFFFF


class ServerState(enum.Enum):
    ADVERTISE_KEYS = Stage.ADVERTISE_KEYS.value
    REVEAL_NONCES = "reveal_nonces"  # the second half of advertise_keys
    SHARE_KEYS = Stage.SHARE_KEYS.value
    MASKED_INPUT = Stage.MASKED_INPUT.value
    CONSISTENCY_CHECK = Stage.CONSISTENCY_CHECK.value
    UNMASK = Stage.UNMASK.value
    DONE = "done"
    ABORTED = "aborted"


_EXPECTED = {
    ServerState.ADVERTISE_KEYS: Kind.ADVERTISE,
    ServerState.REVEAL_NONCES: Kind.REVEAL,
    ServerState.SHARE_KEYS: Kind.SHARES,
    ServerState.MASKED_INPUT: Kind.MASKED_INPUT,
    ServerState.CONSISTENCY_CHECK: Kind.CONSISTENCY_SIGNATURE,
    ServerState.UNMASK: Kind.UNMASK_SHARES,
}


@dataclass(frozen=True)
class AggregateResult:
    aggregate: np.ndarray
    included: frozenset[int]
    liars: frozenset[int] = field(default_factory=frozenset)
    """Share holders whose revealed shares disagreed with the corrected secret. Without
    verifiable secret sharing the owner may have dealt the wrong share instead: see
    ``share_mismatches``."""
    share_mismatches: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    """(holder, owner) pairs whose share was wrong: a holder lying about many owners, or an
    owner that dealt badly to many holders, shows as a row or a column."""


class SecAggServer:
    """One round on the server. ``directory`` (client id → Ed25519 identity public key) lets an
    honest server turn away unsigned or forged keys early in malicious-server mode."""

    _batched = True
    """False sends every message through decode() and the one-record-at-a-time checks (tests
    compare the two paths message for message)."""

    def __init__(self, config: RoundConfig, *,
                 directory: Mapping[int, Ed25519PublicKey] | None = None) -> None:
        self.config = config
        self._directory = dict(directory) if directory is not None else None
        self.state = ServerState.ADVERTISE_KEYS
        self._received: dict = {}
        self._eligible: frozenset[int] = frozenset(config.clients)
        self._advertised: dict[int, Advertise] = {}
        self._entries: tuple[RosterEntry, ...] = ()
        self._keys_seen: set[bytes] = set()
        self._mask_publics: dict[int, object] = {}
        self._roster_digest = b""
        self._neighbors: Mapping[int, frozenset[int]] = {}
        self._index = {c: i for i, c in enumerate(config.clients)}
        self._ids = np.asarray(config.clients, dtype=np.int64)
        # The graph as arrays over client indices (see _set_graph).
        self._holders = np.zeros((0, 0), dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)
        self._recipients = np.zeros((0, 0), dtype=">u4")
        self._degree = np.zeros(0, dtype=np.int64)
        self._u2: tuple[int, ...] = ()
        self._u3: tuple[int, ...] = ()
        self._dropped: tuple[int, ...] = ()
        self._survivor_set: frozenset[int] = frozenset()
        self._dropped_set: frozenset[int] = frozenset()
        self._signers: dict[int, bytes] = {}
        self._acc: PackedAccumulator | None = None
        self._commitments: dict[int, bytes] = {}
        # What each unmask-stage holder should reveal (see _plan_unmask), and what each did:
        # its wire records (about, kind, share) and the Shamir x of its share of each about.
        self._plan_row: dict[int, int] = {}
        self._plan_prefix = np.zeros((0, 0, 5), dtype=np.uint8)
        self._plan_x = np.zeros((0, 0), dtype=np.int64)
        self._plan_count = np.zeros(0, dtype=np.int64)
        self._plan_bytes: list[bytes] = []
        self._revealed: dict[int, tuple[bytes, np.ndarray]] = {}
        self._liars: set[int] = set()
        self._mismatches: set[tuple[int, int]] = set()
        self._result: AggregateResult | None = None

    # -- introspection -----------------------------------------------------------------------
    @property
    def stage(self) -> Stage | None:
        if self.state is ServerState.REVEAL_NONCES:
            return Stage.ADVERTISE_KEYS
        try:
            return Stage(self.state.value)
        except ValueError:
            return None

    @property
    def result(self) -> AggregateResult:
        if self._result is None:
            raise ProtocolAbort("the round has not completed", stage=self.state.value)
        return self._result

    @property
    def liars(self) -> frozenset[int]:
        """Holders caught revealing a wrong share (the round corrects around them)."""
        return frozenset(self._liars)

    @property
    def neighbors(self) -> Mapping[int, frozenset[int]]:
        """Each client's live neighbours (neighbours in the cohort's graph that advertised)."""
        return self._neighbors

    def pending(self) -> frozenset[int]:
        """Clients that may still send a message in the current stage."""
        return self._eligible - set(self._received)

    # -- receiving ---------------------------------------------------------------------------
    def receive(self, data: bytes, *, sender: int) -> None:
        """Take one message that the transport authenticated as coming from ``sender``.

        A message that fails any check raises and changes nothing, the sender's standing
        included: it may still send a valid message before the stage closes (nothing of the
        refused one was applied, so trying again gains it nothing), and it is a dropout only if
        the stage closes without one. So a refused message leaves no state that the stored
        inbox of a deployment does not hold, and a restart replays the same server."""
        if self.state in (ServerState.DONE, ServerState.ABORTED):
            raise StageError(f"the round is {self.state.value}")
        expected = _EXPECTED[self.state]
        checked = kind, claimed = peek(data, self.config)
        if _testing.planted("trust_header_sender"):
            sender = claimed
        elif claimed != sender:
            # Nobody's standing may change on the strength of a header the sender wrote.
            raise InvalidMessage("the message's header names another sender than the one the "
                                 "transport authenticated")
        if kind != expected:
            raise StageError(f"expected a {expected.name.lower()} message in stage "
                             f"{self.state.value}, got {kind.name.lower()}")
        if sender not in self._eligible:
            raise InvalidMessage("the sender may not send this message in this stage")
        if sender in self._received:
            raise InvalidMessage("duplicate message from this sender in this stage")
        # The message an honest client sends takes a path without a Python object per record;
        # anything else is decoded in full and checked one record at a time, and fails as it
        # always has. Both paths accept exactly the same messages.
        if self._batched and self._take(kind, sender, data):
            return
        message = decode(data, self.config, expected, checked=checked)
        prepared = self._validate(message)
        self._apply(message, prepared)

    def _take(self, kind: Kind, sender: int, data: bytes | memoryview) -> bool:
        """Apply the message if it is the one an honest ``sender`` sends in this stage, checked
        in bulk; False (nothing changed) for anything else."""
        if kind is Kind.MASKED_INPUT:
            if self._acc is None or len(data) != HEADER_BYTES + self._acc.size:
                return False
            self._acc.add(data, offset=HEADER_BYTES)
            self._received[sender] = True
            return True
        if kind is Kind.SHARES:
            row = self._index[sender]
            found = expected_shares(data, self._recipients[row, :self._degree[row]].tobytes())
            if found is None:
                return False
            self._received[sender] = found
            return True
        if kind is Kind.UNMASK_SHARES:
            row = self._plan_row.get(sender)
            if row is None:
                return False
            prefixes = self._plan_bytes[row]
            records = expected_unmask(data, prefixes)
            if records is None:
                return False
            self._revealed[sender] = (records, self._plan_x[row, :len(prefixes) // 5])
            self._received[sender] = True
            return True
        return False

    def _validate(self, message):
        """Check a decoded message against the round; return what _apply needs, if anything."""
        config = self.config
        if isinstance(message, Advertise):
            crypto.load_public(message.channel_key)
            mask_public = crypto.load_public(message.mask_key)
            if message.channel_key == message.mask_key:
                raise InvalidMessage("channel and mask keys must differ")
            if message.channel_key in self._keys_seen or message.mask_key in self._keys_seen:
                raise InvalidMessage("a public key is already in the roster")
            if config.malicious and self._directory is not None:
                public = self._directory.get(message.sender)
                if public is None or message.signature is None:
                    raise InvalidMessage("signature check failed")
                crypto.verify(public, message.signature, b"advertise",
                              advertise_payload(config, message.sender, message.channel_key,
                                                message.mask_key, message.commitment))
            return mask_public  # loaded once: unmask agrees with it if the sender drops
        elif isinstance(message, Reveal):
            if (nonce_commitment(config.tag, message.sender, message.nonce)
                    != self._advertised[message.sender].commitment):
                raise InvalidMessage("the nonce does not open the sender's commitment")
        elif isinstance(message, Shares):
            if {v for v, _ in message.sealed} != self._neighbors[message.sender]:
                raise InvalidMessage("shares must go to exactly the sender's live neighbours")
        elif isinstance(message, ConsistencySignature):
            if self._directory is not None:
                public = self._directory.get(message.sender)
                if public is None:
                    raise InvalidMessage("signature check failed")
                crypto.verify(public, message.signature, b"consistency",
                              self._view_payload())
        elif isinstance(message, UnmaskShares):
            expected = self._revealable(message.sender)
            prime = shamir.PRIME
            from_bytes = int.from_bytes
            points = []
            for about, kind, share in message.shares:
                if expected.get(about) is not kind:
                    raise InvalidMessage("a revealed share is not one this client may reveal")
                y = from_bytes(share, "big")
                if y >= prime:
                    raise InvalidMessage("a revealed share is out of range")
                points.append((about, kind, y))
            return points
        return None

    def _rank(self, owner: int, holder: int) -> int:
        """The Shamir x-coordinate of ``holder``'s share of ``owner``'s secrets: 1 for the owner
        itself, i + 2 for its i-th nearest neighbour in the cohort's graph."""
        if owner == holder:
            return 1
        row = self._holders[self._index[owner]]
        return int(np.flatnonzero(row == self._index[holder])[0]) + 2

    def _revealable(self, u: int) -> dict[int, ShareKind]:
        """The one share kind ``u`` may reveal about each client it holds a share of: its own
        and each surviving neighbour's self-mask seed, each dropped neighbour's mask key (only
        for neighbours whose graph names u too; never both kinds for anyone)."""
        neighbors, survivors, dropped = self._neighbors, self._survivor_set, self._dropped_set
        seed, key = ShareKind.SELF_MASK_SEED, ShareKind.MASK_KEY
        out: dict[int, ShareKind] = {}
        for v in neighbors[u]:
            if u in neighbors[v]:
                if v in survivors:
                    out[v] = seed
                elif v in dropped:
                    out[v] = key
        out[u] = seed
        return out

    def _view_payload(self) -> bytes:
        return consistency_payload(self.config, self._roster_digest, self._u3, self._dropped)

    def _apply(self, message, prepared) -> None:
        sender = message.sender
        if isinstance(message, MaskedInput):
            if self._acc is None:
                self._acc = PackedAccumulator(self.config.modulus_bits, self.config.dim)
            self._acc.add(message.packed)
            self._received[sender] = True
        elif isinstance(message, UnmaskShares):
            # Stored as the fast path stores an honest message: wire records and x per record.
            rank = self._rank
            records = UnmaskShares(sender, tuple(
                (about, kind, y.to_bytes(shamir.SHARE_BYTES, "big"))
                for about, kind, y in prepared)).encode(self.config)[HEADER_BYTES + 4:]
            xs = np.array([rank(about, sender) for about, _, _ in prepared], dtype=np.int64)
            self._revealed[sender] = (records, xs)
            self._received[sender] = True
        elif isinstance(message, Shares):
            # What share_keys' close needs, not the parsed records: one bytes object per sender.
            self._received[sender] = (message.commitment, message.records)
        else:
            if isinstance(message, Advertise):
                self._keys_seen.update((message.channel_key, message.mask_key))
                self._mask_publics[sender] = prepared
            self._received[sender] = message

    # -- closing stages ----------------------------------------------------------------------
    def _require(self, count: int, what: str, need: int | None = None) -> None:
        need = self.config.min_survivors if need is None else need
        if count < need:
            raise self._abort(f"only {count} clients {what}; the round needs {need}")

    def _abort(self, reason: str) -> ProtocolAbort:
        stage = self.state.value
        self.state = ServerState.ABORTED
        self._acc = None
        self._revealed = {}
        return ProtocolAbort(reason, stage=stage)

    def _next(self, state: ServerState, eligible) -> None:
        self.state = state
        self._eligible = frozenset(eligible)
        # The stages whose messages leave nothing but the fact that they came keep that fact
        # in a flag per client, allocated here: taking a masked vector then allocates nothing
        # that grows with the number of clients (the streaming memory stays O(dim)).
        self._received = (_Arrived(self._index, self.config.clients)
                          if state in (ServerState.MASKED_INPUT, ServerState.UNMASK) else {})

    def close_stage(self) -> dict[int, bytes]:
        """End the current stage; return the next stage's message for each client."""
        config = self.config
        state = self.state
        if state is ServerState.ADVERTISE_KEYS:
            advertised = dict(self._received)
            self._require(len(advertised), "advertised keys")
            self._entries = tuple(RosterEntry(c, a.channel_key, a.mask_key, a.commitment,
                                              a.signature)
                                  for c, a in sorted(advertised.items()))
            self._advertised = advertised
            roster = Roster(self._entries).encode(config)
            self._next(ServerState.REVEAL_NONCES, advertised)
            return {c: roster for c in advertised}
        if state is ServerState.REVEAL_NONCES:
            missing = sorted(set(self._advertised) - set(self._received))
            if missing:
                # Leaving a committed client out would let the server pick among seeds.
                raise self._abort(f"clients {missing} committed to a graph nonce and did not "
                                  "open it; the graph cannot be fixed without them")
            nonces = tuple((c, r.nonce) for c, r in sorted(self._received.items()))
            self._set_graph(nonces)
            message = Nonces(nonces).encode(config)
            self._next(ServerState.SHARE_KEYS, self._advertised)
            return {c: message for c in self._advertised}
        if state is ServerState.SHARE_KEYS:
            shares: dict[int, tuple[bytes, bytes]] = dict(self._received)
            self._require(len(shares), "shared their keys")
            self._commitments = {u: commitment for u, (commitment, _) in shares.items()}
            self._u2 = tuple(sorted(shares))
            self._next(ServerState.MASKED_INPUT, shares)
            return encode_deliveries(config, {u: records for u, (_, records) in shares.items()})
        if state is ServerState.MASKED_INPUT:
            self._require(len(self._received), "sent their masked input")
            self._u3 = tuple(sorted(self._received))
            self._dropped = tuple(u for u in self._u2 if u not in self._received)
            self._survivor_set = frozenset(self._u3)
            self._dropped_set = frozenset(self._dropped)
            self._plan_unmask()
            if config.malicious:
                request = ConsistencyRequest(self._u3, self._dropped).encode(config)
                self._next(ServerState.CONSISTENCY_CHECK, self._u3)
                return {u: request for u in self._u3}
            request = UnmaskRequest(self._u3, self._dropped).encode(config)
            self._next(ServerState.UNMASK, self._u3)
            return {u: request for u in self._u3}
        if state is ServerState.CONSISTENCY_CHECK:
            signers = {u: m.signature for u, m in self._received.items()}
            self._require(len(signers), "confirmed the survivor list", config.signature_quorum)
            request = UnmaskRequest(self._u3, self._dropped,
                                    tuple(sorted(signers.items()))).encode(config)
            self._signers = signers
            self._next(ServerState.UNMASK, signers)
            return {u: request for u in signers}
        if state is ServerState.UNMASK:
            self._require(len(self._received), "revealed their shares", config.threshold)
            self._unmask()
            self.state = ServerState.DONE
            return {}
        raise StageError(f"the round is {state.value}")

    def _set_graph(self, nonces: tuple[tuple[int, bytes], ...]) -> None:
        config = self.config
        if _testing.planted("graph_seed_from_roster"):
            seed = roster_graph_seed(config.tag, ((e.client, e.channel_key, e.mask_key)
                                                  for e in self._entries))
        else:
            seed = graph_seed(config.tag, nonces)
        self._roster_digest = roster_digest(config, self._entries, nonces)
        n = config.n
        position, at = holder_table(ring_order(seed, config.clients), config.clients)
        offsets = np.asarray(ring_offsets(n, config.neighbors), dtype=np.int64)
        # Row i: client i's holders nearest first, as client indices; the j-th holds the share
        # at Shamir x = j + 2 (the owner's own is x = 1), over the whole cohort's graph, so
        # ranks do not depend on who advertised (the clients compute the same).
        holders = at[(position[:, None] + offsets) % n]
        # slot[d mod n]: the j whose ring offset is d, or -1; client u is the j-th holder of
        # client v exactly when slot[position[u] - position[v]] = j.
        slot = np.full(n, -1, dtype=np.int64)
        slot[offsets % n] = np.arange(len(offsets))
        self._position, self._slot = position, slot
        live = np.zeros(n, dtype=bool)
        live[[self._index[c] for c in self._advertised]] = True
        self._holders, self._live = holders, live
        self._neighbors = _Neighbours(self._ids, holders, live)
        # Each client's live neighbours' ids in increasing order, padded: the recipients an
        # honest share_keys message names, in its order.
        alive = live[holders]
        recipients = np.where(alive, self._ids[holders], _PAD_ID)
        recipients.sort(axis=1)
        self._recipients = recipients.astype(">u4")
        self._degree = alive.sum(axis=1)

    def _plan_unmask(self) -> None:
        """For every survivor u, the (about, kind) records it must reveal, in the order an
        honest client sends them, and the x-coordinate of its share of each: its own seed
        (x = 1); each neighbour v whose graph names u too, v's seed if v survived and v's
        mask key if v dropped (the one-kind rule of _revealable, for all holders at once)."""
        n = self.config.n
        holders, index = self._holders, self._index
        status = np.full(n, 2, dtype=np.int64)  # 0 survivor, 1 dropped, 2 neither
        status[[index[c] for c in self._u3]] = 0
        status[[index[c] for c in self._dropped]] = 1
        rows = np.array([index[c] for c in self._u3], dtype=np.int64)
        owners = holders[rows]  # candidate owners v of each survivor u's shares
        # u's rank among v's holders, if v's graph names u at all (it need not for odd k).
        slot = self._slot[(self._position[rows][:, None] - self._position[owners]) % n]
        keep = (slot >= 0) & (status[owners] <= 1)
        about = np.concatenate([np.where(keep, owners, n), rows[:, None]], axis=1)
        xs = np.concatenate([slot + 2, np.ones((len(rows), 1), np.int64)], axis=1)
        kinds = np.concatenate([status[owners], np.zeros((len(rows), 1), np.int64)], axis=1)
        order = np.argsort(about, axis=1, kind="stable")  # index order is id order
        about = np.take_along_axis(about, order, axis=1)
        ids = np.append(self._ids, _PAD_ID)[about]
        prefix = np.empty(about.shape + (5,), dtype=np.uint8)
        prefix[..., :4] = ids.astype(">u4")[..., None].view(np.uint8)
        prefix[..., 4] = np.take_along_axis(kinds, order, axis=1)
        self._plan_prefix = prefix
        self._plan_x = np.take_along_axis(xs, order, axis=1)
        self._plan_count = counts = keep.sum(axis=1) + 1
        flat = prefix.reshape(len(rows), -1)
        self._plan_bytes = [flat[r, :5 * c].tobytes() for r, c in enumerate(counts.tolist())]
        self._plan_row = dict(zip(self._u3, range(len(rows))))

    def _recover(self, wanted: list[tuple[int, str, Callable[[int], bool]]]) -> list[int]:
        """Each wanted secret (owner, what, check) from the shares revealed, checked against
        its owner's commitment; on a mismatch, decoded with error correction and the holders of
        wrong shares named. One pass over every revealed record: grouped by owner, the t
        nearest holders of each, one Lagrange basis per set of holder ranks."""
        t = self.config.threshold
        width = UNMASK_RECORD_BYTES
        index = self._index
        secret_of = np.full(self.config.n, -1, dtype=np.int64)
        secret_of[[index[c] for c, _, _ in wanted]] = np.arange(len(wanted))
        revealed = self._revealed
        holders = list(revealed)
        table = np.frombuffer(b"".join(records for records, _ in revealed.values()),
                              dtype=np.uint8).reshape(-1, width)
        x = np.concatenate([xs for _, xs in revealed.values()]) if revealed \
            else np.zeros(0, dtype=np.int64)
        holder = np.repeat(np.array(holders, dtype=np.int64),
                           [len(xs) for _, xs in revealed.values()])
        self._revealed = {}
        about = table[:, :4].copy().view(">u4").ravel().astype(np.int64)
        secret = secret_of[np.searchsorted(self._ids, about)]
        order = np.lexsort((x, secret))  # by secret, nearest holder first
        counts = np.bincount(secret, minlength=len(wanted))
        # x-coordinates are distinct by construction: one message per holder, each naming an
        # owner at most once, and a holder's rank is injective per owner.
        short = np.flatnonzero(counts < t)
        if len(short):
            client, what, _ = wanted[short[0]]
            raise self._abort(f"too few shares to reconstruct the {what} of client {client}")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        chosen = order[starts[:, None] + np.arange(t)]
        from_bytes = int.from_bytes
        values = table[chosen.ravel(), 5:].tobytes()
        size = shamir.SHARE_BYTES
        ys = [from_bytes(values[i:i + size], "big") for i in range(0, len(values), size)]
        secrets = shamir.reconstruct_rows(x[chosen], ys)
        out = []
        for i, ((client, what, check), value) in enumerate(zip(wanted, secrets)):
            if not check(value):
                if _testing.planted("first_t_shares"):
                    raise self._abort(f"the shares of client {client} are inconsistent")
                mine = order[starts[i]:starts[i] + counts[i]]
                points = [(xi, from_bytes(row, "big"), h) for xi, row, h in
                          zip(x[mine].tolist(), map(bytes, table[mine, 5:]),
                              holder[mine].tolist())]
                try:
                    poly = shamir.decode_with_check([(xi, y) for xi, y, _ in points], t, check)
                except ValueError:
                    raise self._abort(f"the shares of client {client}'s {what} are inconsistent "
                                      "beyond what the shares received can correct") from None
                value = poly[0]
                # Without verifiable sharing a wrong share is the holder's lie or the owner's
                # bad deal: record the pair, so an owner that dealt badly to several holders
                # stands out from a holder that lied about several owners.
                wrong = {h for xi, y, h in points if shamir.evaluate(poly, xi) != y}
                self._liars.update(wrong)
                self._mismatches.update((h, client) for h in wrong)
            out.append(value)
        return out

    def _unmask(self) -> None:
        config = self.config
        prg = MaskGenerator(config.dim, config.modulus_bits)
        survivors = self._survivor_set

        # Reconstruct and check every secret before removing any mask: an abort must not leave a
        # half-unmasked accumulator behind.
        recovered = self._recover(
            [(u, "self-mask seed", opens_seed(config, u, self._commitments[u]))
             for u in self._u3]
            + [(d, "mask key", opens_mask_key(self._advertised[d].mask_key))
               for d in self._dropped])
        seeds = {u: v.to_bytes(32, "big") for u, v in zip(self._u3, recovered)}
        # The check already derived each mask key's public half; agreeing needs only the
        # private half (no second scalar multiplication per dropped client).
        keys = {d: X25519PrivateKey.from_private_bytes(v.to_bytes(32, "big"))
                for d, v in zip(self._dropped, recovered[len(self._u3):])}
        acc = self._acc.total()
        self._acc = None
        expand = prg.expand
        subtract, add = np.subtract, np.add
        derive = crypto.MaskKeys(config.tag)
        self_mask_key, pairwise_mask_key = derive.self_mask, derive.pairwise
        agree = crypto.agree
        for u, seed in seeds.items():
            subtract(acc, expand(self_mask_key(seed, u)), out=acc)
        publics = self._mask_publics
        for d, pair in keys.items():
            for v in sorted(self._neighbors[d] & survivors):
                mask = expand(pairwise_mask_key(agree(pair, publics[v]), d, v))
                # v added +PRG when v < d and -PRG otherwise; undo exactly that.
                (subtract if v < d else add)(acc, mask, out=acc)
        if config.modulus_bits not in (32, 64):
            np.bitwise_and(acc, acc.dtype.type((1 << config.modulus_bits) - 1), out=acc)
        self._result = AggregateResult(acc, frozenset(self._u3), frozenset(self._liars),
                                       frozenset(self._mismatches))


class _Arrived(Mapping[int, bool]):
    """Which clients sent this stage's message, as one flag per client of the round."""

    def __init__(self, index: Mapping[int, int], clients: tuple[int, ...]) -> None:
        self._index, self._clients = index, clients
        self._flags = bytearray(len(clients))
        self._count = 0

    def __setitem__(self, client: int, value: bool) -> None:
        if value is not True:
            raise ValueError("only arrival is recorded")
        i = self._index[client]
        if not self._flags[i]:
            self._flags[i] = 1
            self._count += 1

    def __getitem__(self, client: int) -> bool:
        if client not in self:
            raise KeyError(client)
        return True

    def __contains__(self, client: object) -> bool:
        i = self._index.get(client)  # type: ignore[call-overload]
        return i is not None and self._flags[i] == 1

    def __iter__(self) -> Iterator[int]:
        clients, flags = self._clients, self._flags
        i = flags.find(1)
        while i >= 0:
            yield clients[i]
            i = flags.find(1, i + 1)

    def __len__(self) -> int:
        return self._count


class _Neighbours(Mapping[int, frozenset[int]]):
    """Each live client's live neighbours, built from the graph's arrays when first asked
    for (the server itself asks only about dropped clients and for the slow path)."""

    def __init__(self, ids: np.ndarray, holders: np.ndarray, live: np.ndarray) -> None:
        self._ids, self._holders, self._live = ids, holders, live
        self._index = {c: i for c, i in zip(ids.tolist(), range(len(ids))) if live[i]}
        self._built: dict[int, frozenset[int]] = {}

    def __getitem__(self, u: int) -> frozenset[int]:
        out = self._built.get(u)
        if out is None:
            i = self._index.get(u)
            if i is None:
                raise KeyError(u)
            row = self._holders[i]
            out = self._built[u] = frozenset(self._ids[row[self._live[row]]].tolist())
        return out

    def __contains__(self, u: object) -> bool:
        return u in self._index

    def __iter__(self) -> Iterator[int]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)
