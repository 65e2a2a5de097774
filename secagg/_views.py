"""What every client of a round derives from the same broadcast bytes, derived once per process.

The server sends every client the same roster, the same nonces and the same survivor lists.
Each client must check all of them (a roster with a repeated key, a nonce that does not open
its commitment, a view that names a client that never advertised), and some of that work is
O(n) per client: decoding n roster entries, hashing n nonce commitments, ordering the ring.
In a deployment each site does it once, for the one copy it received. When many clients run
in one process (the harness, the bench) they would each do the same O(n) work on the same
bytes, which makes a simulated cohort O(n^2). The functions here are pure functions of public
bytes and of the round's config, memoised on the full bytes (never on a digest), so two
clients share a result only when they received byte-identical messages; what depends on a
client's own secrets or its own neighbours stays in the client.
"""

from __future__ import annotations

import operator
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import _testing
from .errors import InvalidMessage
from .hazmat import crypto
from .config import RoundConfig
from .graph import graph_seed, nonce_commitments, ring_order, roster_graph_seed
from .messages import ConsistencyRequest, Kind, Nonces, Roster, RosterEntry, UnmaskRequest, \
    decode

__all__ = ["RosterView", "GraphView", "SurvivorView", "roster_view", "graph_view",
           "survivor_view", "signature_holds", "forget"]

_T = TypeVar("_T")


class _Memo:
    """A few recent results by key (a round has one roster, one nonce list, one view)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def clear(self) -> None:
        self._items.clear()

    def get(self, key: Hashable, make: Callable[[], _T]) -> _T:
        try:
            self._items.move_to_end(key)
            return self._items[key]  # type: ignore[return-value]
        except KeyError:
            pass
        value = make()  # raises for a bad message: nothing is stored
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value


def _key(message: bytes | bytearray | memoryview) -> bytes:
    return message if type(message) is bytes else bytes(message)


class RosterView:
    """A decoded roster and its checks that do not depend on who is looking."""

    __slots__ = ("message", "entries", "by_client", "repeats_key")

    def __init__(self, config: RoundConfig, message: bytes) -> None:
        roster: Roster = decode(message, config, Kind.ROSTER)
        self.message = message
        self.entries: tuple[RosterEntry, ...] = roster.entries  # increasing ids (decode)
        self.by_client = {e.client: e for e in roster.entries}
        keys = {e.channel_key for e in roster.entries} | {e.mask_key for e in roster.entries}
        self.repeats_key = len(keys) != 2 * len(self.entries)


_rosters = _Memo(4)


def roster_view(config: RoundConfig, message: bytes) -> RosterView:
    message = _key(message)
    return _rosters.get((config.tag, message), lambda: RosterView(config, message))


class GraphView:
    """The revealed nonces checked against a roster, and the neighbour graph they fix.

    ``error`` is the first failed check, in the order the client makes them (None: all pass).
    """

    __slots__ = ("error", "nonce_of", "order", "position", "ring", "seed", "unadvertised",
                 "ordered", "roster", "nonces", "digest")

    def __init__(self, config: RoundConfig, roster: RosterView, message: bytes,
                 roster_seed: bool) -> None:
        nonces: Nonces = decode(message, config, Kind.NONCES)
        self.roster = roster
        self.nonces = nonces.nonces
        self.error: str | None = None
        entries = roster.by_client
        # Both lists are strictly increasing (decode checked), so equal lists name one set.
        if [c for c, _ in nonces.nonces] != [e.client for e in roster.entries]:
            self.error = "the revealed nonces do not cover exactly the roster"
            return
        opened = nonce_commitments(config.tag, nonces.nonces)
        if any(map(operator.ne, opened, (e.commitment for e in roster.entries))):
            self.error = "a revealed nonce does not open its commitment"
            return
        self.nonce_of = dict(nonces.nonces)
        self.ordered = roster.entries
        if roster_seed:
            self.seed = roster_graph_seed(config.tag, ((e.client, e.channel_key, e.mask_key)
                                                       for e in self.ordered))
        else:
            self.seed = graph_seed(config.tag, nonces.nonces)
        self.order = ring_order(self.seed, config.clients)
        self.position = {c: i for i, c in enumerate(self.order)}
        self.ring = array("I", self.order)  # read only: shared by every client that holds it
        self.unadvertised = frozenset(config.client_set.difference(entries))
        from .client import roster_digest  # the client module defines what a view is
        self.digest = roster_digest(config, self.ordered, nonces.nonces)


_graphs = _Memo(4)


def graph_view(config: RoundConfig, roster: RosterView, message: bytes) -> GraphView:
    message = _key(message)
    planted = _testing.planted("graph_seed_from_roster")
    return _graphs.get((config.tag, roster.message, message, planted),
                       lambda: GraphView(config, roster, message, planted))


class SurvivorView:
    """A survivor/dropped request and the checks of it that only need public knowledge
    (the round's clients and who never advertised)."""

    __slots__ = ("request", "alive", "gone", "overlap", "outside")

    def __init__(self, config: RoundConfig, kind: Kind, message: bytes,
                 unadvertised: frozenset[int]) -> None:
        request: UnmaskRequest | ConsistencyRequest = decode(message, config, kind)
        self.request = request
        self.alive = frozenset(request.survivors)
        self.gone = frozenset(request.dropped)
        self.overlap = not self.alive.isdisjoint(self.gone)
        named = self.alive | self.gone
        self.outside = not named <= config.client_set or not named.isdisjoint(unadvertised)


_views = _Memo(8)


def survivor_view(config: RoundConfig, kind: Kind, message: bytes,
                  unadvertised: frozenset[int]) -> SurvivorView:
    message = _key(message)
    return _views.get((config.tag, kind, message, unadvertised),
                      lambda: SurvivorView(config, kind, message, unadvertised))


# Malicious-server mode: every client checks every roster entry's signature and every view
# signature it is shown, O(n) Ed25519 verifications per client and O(n^2) for a process that
# runs a whole cohort. A verification is a pure function of (public key bytes, signature,
# purpose, payload), so its result is memoised on exactly those bytes: two clients share a
# result only when the same key vouched for the same bytes with the same signature. A key
# object is immutable, so its raw bytes are cached by identity, holding the object so that its
# id cannot be reused while the entry lives.
_raw_keys: OrderedDict[int, tuple[Ed25519PublicKey, bytes]] = OrderedDict()
_verdicts: OrderedDict[tuple[bytes, bytes, bytes, bytes], bool] = OrderedDict()
_RAW_KEYS = 1 << 15
_VERDICTS = 1 << 17


def _raw(public: Ed25519PublicKey) -> bytes:
    held = _raw_keys.get(id(public))
    if held is not None and held[0] is public:
        return held[1]
    raw = crypto.public_bytes(public)
    _raw_keys[id(public)] = (public, raw)
    if len(_raw_keys) > _RAW_KEYS:
        _raw_keys.popitem(last=False)
    return raw


def signature_holds(public: Ed25519PublicKey, signature: bytes, purpose: bytes,
                    payload: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature of ``payload`` for ``purpose``
    (:func:`secagg.hazmat.crypto.verify`), computed once per process for the same bytes."""
    key = (b"" if _testing.planted("signature_memo_ignores_key") else _raw(public),
           bytes(signature), purpose, bytes(payload))
    verdict = _verdicts.get(key)
    if verdict is None:
        try:
            crypto.verify(public, signature, purpose, payload)
            verdict = True
        except InvalidMessage:
            verdict = False
        _verdicts[key] = verdict
        if len(_verdicts) > _VERDICTS:
            _verdicts.popitem(last=False)
    return verdict


def forget() -> None:
    """Drop every shared result, so the next client computes all of it itself (the bench
    times one client so, to report what a site that shares no process pays)."""
    for memo in (_rosters, _graphs, _views):
        memo.clear()
    _verdicts.clear()
    _raw_keys.clear()
