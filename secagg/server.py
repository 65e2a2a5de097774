"""The server side of a SecAgg+ round: a pure state machine that relays and sums.

The server collects each stage's messages through :meth:`SecAggServer.receive` (validating each
one before it touches any state) and, when the transport decides the stage is over (a deadline,
or everyone answered), :meth:`SecAggServer.close_stage` turns what arrived into the next stage's
outgoing messages. Masked vectors are added into a single accumulator as they arrive, so the
server's vector memory is O(dim) whatever the number of clients. At the end it reconstructs the
survivors' self-mask seeds and the dropped clients' mask keys from the revealed shares, strips
those masks, and exposes the sum of the survivors' inputs mod 2**modulus_bits.

A message that is malformed, forged or out of place raises :class:`~secagg.errors.InvalidMessage`
and changes nothing; if its sender was identifiable and expected, that sender is treated as
dropped from then on. Fewer than ``threshold`` clients at any stage raises
:class:`~secagg.errors.ProtocolAbort` and the accumulator is wiped: nothing is revealed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .client import advertise_payload, consistency_payload, seed_commitment
from .config import RoundConfig, effective_degree
from .errors import InvalidMessage, ProtocolAbort, StageError
from .graph import graph_seed, neighbor_map
from .hazmat import crypto, shamir
from .hazmat.packing import PackedAccumulator
from .hazmat.prg import MaskGenerator
from .messages import (
    Advertise,
    ConsistencyRequest,
    ConsistencySignature,
    Delivery,
    Kind,
    MaskedInput,
    Roster,
    RosterEntry,
    Shares,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
    decode,
    peek,
)
from .stages import Stage

__all__ = ["SecAggServer", "ServerState", "AggregateResult"]


class ServerState(enum.Enum):
    ADVERTISE_KEYS = Stage.ADVERTISE_KEYS.value
    SHARE_KEYS = Stage.SHARE_KEYS.value
    MASKED_INPUT = Stage.MASKED_INPUT.value
    CONSISTENCY_CHECK = Stage.CONSISTENCY_CHECK.value
    UNMASK = Stage.UNMASK.value
    DONE = "done"
    ABORTED = "aborted"


_EXPECTED = {
    ServerState.ADVERTISE_KEYS: Kind.ADVERTISE,
    ServerState.SHARE_KEYS: Kind.SHARES,
    ServerState.MASKED_INPUT: Kind.MASKED_INPUT,
    ServerState.CONSISTENCY_CHECK: Kind.CONSISTENCY_SIGNATURE,
    ServerState.UNMASK: Kind.UNMASK_SHARES,
}


@dataclass(frozen=True)
class AggregateResult:
    aggregate: np.ndarray
    included: frozenset[int]


class SecAggServer:
    """One round on the server. ``directory`` (client id → Ed25519 identity public key) lets an
    honest server turn away unsigned or forged keys early in malicious-server mode."""

    def __init__(self, config: RoundConfig, *,
                 directory: Mapping[int, Ed25519PublicKey] | None = None) -> None:
        self.config = config
        self._directory = dict(directory) if directory is not None else None
        self.state = ServerState.ADVERTISE_KEYS
        self._received: dict = {}
        self._excluded: set[int] = set()
        self._eligible: frozenset[int] = frozenset(config.clients)
        self._advertised: dict[int, Advertise] = {}
        self._neighbors: Mapping[int, frozenset[int]] = {}
        self._ranks: dict[int, dict[int, int]] = {}
        self._u2: tuple[int, ...] = ()
        self._u3: tuple[int, ...] = ()
        self._dropped: tuple[int, ...] = ()
        self._survivor_set: frozenset[int] = frozenset()
        self._dropped_set: frozenset[int] = frozenset()
        self._signers: dict[int, bytes] = {}
        self._acc: PackedAccumulator | None = None
        self._commitments: dict[int, bytes] = {}
        self._b_points: dict[int, list[tuple[int, int]]] = {}
        self._s_points: dict[int, list[tuple[int, int]]] = {}
        self._result: AggregateResult | None = None

    # -- introspection -----------------------------------------------------------------------
    @property
    def stage(self) -> Stage | None:
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
    def excluded(self) -> frozenset[int]:
        """Clients whose messages were rejected and who are treated as dropped."""
        return frozenset(self._excluded)

    @property
    def neighbors(self) -> Mapping[int, frozenset[int]]:
        return self._neighbors

    def pending(self) -> frozenset[int]:
        """Clients that may still send a message in the current stage."""
        return self._eligible - self._excluded - set(self._received)

    # -- receiving ---------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        if self.state in (ServerState.DONE, ServerState.ABORTED):
            raise StageError(f"the round is {self.state.value}")
        expected = _EXPECTED[self.state]
        checked = kind, sender = peek(data, self.config)
        if kind != expected:
            raise StageError(f"expected a {expected.name.lower()} message in stage "
                             f"{self.state.value}, got {kind.name.lower()}")
        if sender not in self._eligible or sender in self._excluded:
            raise InvalidMessage("the sender may not send this message in this stage")
        if sender in self._received:
            raise InvalidMessage("duplicate message from this sender in this stage")
        try:
            message = decode(data, self.config, expected, checked=checked)
            prepared = self._validate(message)
        except InvalidMessage:
            self._excluded.add(sender)
            raise
        self._apply(message, prepared)

    def _validate(self, message):
        """Check a decoded message against the round; return what _apply needs, if anything."""
        config = self.config
        if isinstance(message, Advertise):
            crypto.load_public(message.channel_key)
            crypto.load_public(message.mask_key)
            if message.channel_key == message.mask_key:
                raise InvalidMessage("channel and mask keys must differ")
            if config.malicious and self._directory is not None:
                public = self._directory.get(message.sender)
                if public is None or message.signature is None:
                    raise InvalidMessage("signature check failed")
                crypto.verify(public, message.signature, b"advertise",
                              advertise_payload(config, message.sender, message.channel_key,
                                                message.mask_key))
        elif isinstance(message, Shares):
            if {v for v, _ in message.sealed} != self._neighbors[message.sender]:
                raise InvalidMessage("shares must go to exactly the sender's neighbours")
        elif isinstance(message, ConsistencySignature):
            if self._directory is not None:
                public = self._directory.get(message.sender)
                if public is None:
                    raise InvalidMessage("signature check failed")
                crypto.verify(public, message.signature, b"consistency",
                              consistency_payload(config, self._u3))
        elif isinstance(message, UnmaskShares):
            u = message.sender
            allowed = self._neighbors[u]
            survivors, dropped = self._survivor_set, self._dropped_set
            points = []
            for about, kind, share in message.shares:
                if about == u:
                    ok = kind is ShareKind.SELF_MASK_SEED
                elif about in allowed and about in survivors:
                    ok = kind is ShareKind.SELF_MASK_SEED
                elif about in allowed and about in dropped:
                    ok = kind is ShareKind.MASK_KEY
                else:
                    ok = False
                if not ok:
                    raise InvalidMessage("a revealed share is not one this client may reveal")
                y = int.from_bytes(share, "big")
                if y >= shamir.PRIME:
                    raise InvalidMessage("a revealed share is out of range")
                points.append((about, kind, y))
            return points
        return None

    def _apply(self, message, prepared) -> None:
        sender = message.sender
        if isinstance(message, MaskedInput):
            if self._acc is None:
                self._acc = PackedAccumulator(self.config.modulus_bits, self.config.dim)
            self._acc.add(message.packed)
            self._received[sender] = True
        elif isinstance(message, UnmaskShares):
            seeds, keys, ranks = self._b_points, self._s_points, self._ranks
            for about, kind, y in prepared:
                target = seeds if kind is ShareKind.SELF_MASK_SEED else keys
                target.setdefault(about, []).append((ranks[about][sender], y))
            self._received[sender] = True
        else:
            self._received[sender] = message

    # -- closing stages ----------------------------------------------------------------------
    def _require(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            raise self._abort(f"only {count} clients {what}; the threshold is "
                              f"{self.config.threshold}")

    def _abort(self, reason: str) -> ProtocolAbort:
        stage = self.state.value
        self.state = ServerState.ABORTED
        self._acc = None
        self._b_points, self._s_points = {}, {}
        return ProtocolAbort(reason, stage=stage)

    def _next(self, state: ServerState, eligible) -> None:
        self.state = state
        self._eligible = frozenset(eligible)
        self._received = {}

    def close_stage(self) -> dict[int, bytes]:
        """End the current stage; return the next stage's message for each client."""
        config = self.config
        state = self.state
        if state is ServerState.ADVERTISE_KEYS:
            advertised = dict(self._received)
            self._require(len(advertised), "advertised keys")
            entries = tuple(RosterEntry(c, a.channel_key, a.mask_key, a.signature)
                            for c, a in sorted(advertised.items()))
            seed = graph_seed(config.tag, ((e.client, e.channel_key, e.mask_key)
                                           for e in entries))
            degree = effective_degree(config, len(entries))
            if degree + 1 < config.threshold:
                raise self._abort("too few clients to give each the threshold of share holders")
            self._advertised = advertised
            ranked = neighbor_map(seed, advertised, degree)
            self._neighbors = {u: frozenset(r) for u, r in ranked.items()}
            # Shamir x-coordinate of each holder's share of u's secrets: u itself is 1, its
            # i-th nearest neighbour i + 2 (the clients compute the same from the same roster).
            self._ranks = {u: {v: i + 2 for i, v in enumerate(r)} | {u: 1}
                           for u, r in ranked.items()}
            roster = Roster(entries).encode(config)
            self._next(ServerState.SHARE_KEYS, advertised)
            return {c: roster for c in advertised}
        if state is ServerState.SHARE_KEYS:
            shares: dict[int, Shares] = dict(self._received)
            self._require(len(shares), "shared their keys")
            inbox: dict[int, list[tuple[int, bytes]]] = {u: [] for u in shares}
            for u in sorted(shares):
                for v, sealed in shares[u].sealed:
                    if v in inbox:
                        inbox[v].append((u, sealed))
            self._commitments = {u: s.commitment for u, s in shares.items()}
            self._u2 = tuple(sorted(shares))
            self._next(ServerState.MASKED_INPUT, shares)
            return {v: Delivery(v, tuple(items)).encode(config) for v, items in inbox.items()}
        if state is ServerState.MASKED_INPUT:
            self._require(len(self._received), "sent their masked input")
            self._u3 = tuple(sorted(self._received))
            self._dropped = tuple(u for u in self._u2 if u not in self._received)
            self._survivor_set = frozenset(self._u3)
            self._dropped_set = frozenset(self._dropped)
            if config.malicious:
                request = ConsistencyRequest(self._u3).encode(config)
                self._next(ServerState.CONSISTENCY_CHECK, self._u3)
                return {u: request for u in self._u3}
            request = UnmaskRequest(self._u3, self._dropped).encode(config)
            self._next(ServerState.UNMASK, self._u3)
            return {u: request for u in self._u3}
        if state is ServerState.CONSISTENCY_CHECK:
            signers = {u: m.signature for u, m in self._received.items()}
            self._require(len(signers), "confirmed the survivor list")
            request = UnmaskRequest(self._u3, self._dropped,
                                    tuple(sorted(signers.items()))).encode(config)
            self._signers = signers
            self._next(ServerState.UNMASK, signers)
            return {u: request for u in signers}
        if state is ServerState.UNMASK:
            self._require(len(self._received), "revealed their shares")
            self._unmask()
            self.state = ServerState.DONE
            return {}
        raise StageError(f"the round is {state.value}")

    def _reconstruct_all(self, wanted: list[tuple[int, list[tuple[int, int]] | None, str]]
                         ) -> list[bytes]:
        t = self.config.threshold
        for client, points, what in wanted:
            if points is None or len(points) < t:
                raise self._abort(f"too few shares to reconstruct the {what} of client {client}")
        # The nearest holders first: most secrets then use the same x-coordinates, and share
        # their Lagrange weights.
        values = shamir.reconstruct_many([sorted(points) for _, points, _ in wanted], t)
        for (client, _, _), value in zip(wanted, values):
            if value >> 256:
                raise self._abort(f"the shares of client {client} are inconsistent")
        return [value.to_bytes(32, "big") for value in values]

    def _unmask(self) -> None:
        config = self.config
        prg = MaskGenerator(config.dim, config.modulus_bits)
        survivors = set(self._u3)
        # Reconstruct and check every secret before removing any mask: an abort must not leave a
        # half-unmasked accumulator behind.
        recovered = self._reconstruct_all(
            [(u, self._b_points.get(u), "self-mask seed") for u in self._u3]
            + [(d, self._s_points.get(d), "mask key") for d in self._dropped])
        seeds = dict(zip(self._u3, recovered[:len(self._u3)]))
        for u, seed in seeds.items():
            if seed_commitment(config, u, seed) != self._commitments[u]:
                raise self._abort(f"the shares of client {u} are inconsistent")
        keys = {}
        for d, secret in zip(self._dropped, recovered[len(self._u3):]):
            pair = crypto.KeyPair.from_private_bytes(secret)
            if pair.public != self._advertised[d].mask_key:
                raise self._abort(f"the shares of client {d} are inconsistent")
            keys[d] = pair
        acc = self._acc.total()
        self._acc = None
        for u, seed in seeds.items():
            prg.subtract(acc, crypto.self_mask_key(seed, config.tag, u))
        publics: dict[int, object] = {}
        for d, pair in keys.items():
            for v in sorted(self._neighbors[d] & survivors):
                public = publics.get(v)
                if public is None:
                    public = publics[v] = crypto.load_public(self._advertised[v].mask_key)
                shared = pair.exchange(public)
                key = crypto.pairwise_mask_key(shared, config.tag, d, v)
                # v added +PRG when v < d and -PRG otherwise; undo exactly that.
                if v < d:
                    prg.subtract(acc, key)
                else:
                    prg.add(acc, key)
        if config.modulus_bits not in (32, 64):
            np.bitwise_and(acc, acc.dtype.type((1 << config.modulus_bits) - 1), out=acc)
        self._result = AggregateResult(acc, frozenset(self._u3))
        self._b_points, self._s_points = {}, {}
