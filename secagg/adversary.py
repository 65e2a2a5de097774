"""Attacks by a misbehaving server and the clients it corrupts, for the protocol test harness.

An adversary sits at the server's boundary: it may rewrite, drop, reorder or inject the messages
the server sends and receives, and it controls the clients it names ``corrupt`` (it holds their
identity keys and everything they receive, and may run more client instances under their
identities). The harness runs the real clients and server through it; the round must end in an
abort, or in a correct sum of a consistent view, and the leakage oracle
(:func:`secagg.oracle.leakage`) must find no honest input recoverable from the server's view plus
everything the coalition holds.

Three families live here:

- the canned attacks (``overlap``, ``inconsistent_views``, ``forged_key``, ``replay``, ``tamper``);
- the regression attacks of a review that played the attacker (:data:`REGRESSION_ATTACKS`):
  two views with corrupt clients signing both, a private tiny roster, graph grinding, a forged
  header that would evict a client, and lying share holders;
- :class:`GenericAdversary`, parameterised by a :class:`Strategy` that Hypothesis draws: which
  clients are corrupt, whom to target, and which deviations to combine.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .client import SecAggClient, consistency_payload, roster_digest
from .config import RoundConfig
from .errors import ConfigurationError, InvalidMessage, ProtocolAbort
from .graph import harary_neighbors, roster_graph_seed
from .hazmat import crypto
from .hazmat.shamir import PRIME, SHARE_BYTES
from .messages import (
    ConsistencyRequest,
    Delivery,
    Kind,
    Nonces,
    Roster,
    RosterEntry,
    UnmaskRequest,
    UnmaskShares,
    decode,
    _header,
)
from .server import SecAggServer
from .stages import Stage

__all__ = ["Adversary", "ADVERSARIES", "REGRESSION_ATTACKS", "GenericAdversary", "Strategy",
           "TACTICS", "make_adversary"]


class Adversary:
    """The honest network: passes everything through. Subclasses override the hooks."""

    needs_malicious_mode = False
    corrupt: frozenset[int] = frozenset()

    def setup(self, config: RoundConfig, inputs: Mapping) -> None:
        self.config = config

    def enlist(self, coalition, clients: Mapping[int, SecAggClient],
               identities: Mapping[int, Ed25519PrivateKey], directory) -> None:
        """The harness hands over the corrupt clients, their identity keys and the directory."""
        self.coalition = coalition
        self.corrupt_clients = dict(clients)
        self.identities = dict(identities)
        self.directory = directory

    def make_server(self, config: RoundConfig, directory) -> SecAggServer:
        return SecAggServer(config, directory=self.server_directory(directory))

    def to_clients(self, stage: Stage, messages: dict[int, bytes]) -> dict[int, list[bytes]]:
        """What each client receives in ``stage`` (in order)."""
        return {c: [m] for c, m in messages.items()}

    def to_server(self, stage: Stage, sender: int, data: bytes) -> list[bytes]:
        """What the server's state machine receives when ``sender`` sends ``data``."""
        return [data]

    def after_masked_input(self) -> None:
        """Called once the masked inputs are in (corrupt clients' shares are recorded)."""

    def flush(self, stage: Stage) -> list[tuple[int, bytes]]:
        """Messages the adversary held back and now lets the server's state machine receive,
        each with the sender the transport authenticated, just before the stage closes."""
        return []

    def server_directory(self, directory):
        """The identity directory an honest server would check against; a cheating server
        ignores it."""
        return directory


class _CheatingServer(Adversary):
    def server_directory(self, directory):
        return None

    def _target(self, candidates) -> int:
        honest = [c for c in candidates if c not in self.corrupt] or list(candidates)
        return sorted(honest)[len(honest) // 2]

    def _sign_as_corrupt(self, payload: bytes) -> list[tuple[int, bytes]]:
        return [(c, crypto.sign(key, b"consistency", payload))
                for c, key in sorted(self.identities.items())]


class Overlap(_CheatingServer):
    """The server lists one survivor both as survivor and as dropped in the unmask request, to
    collect both the share of its self-mask seed and of its mask key."""

    def to_clients(self, stage, messages):
        if stage is Stage.UNMASK:
            out = {}
            for c, m in messages.items():
                req: UnmaskRequest = decode(m, self.config, Kind.UNMASK_REQUEST)
                victim = self._target([s for s in req.survivors if s != c] or req.survivors)
                dropped = tuple(sorted(set(req.dropped) | {victim}))
                out[c] = [UnmaskRequest(req.survivors, dropped, req.signatures)
                          .encode(self.config)]
            return out
        return super().to_clients(stage, messages)


class _ViewSplitter(_CheatingServer, abc.ABC):
    """Shared machinery: show each client a chosen (survivors, dropped) view at the consistency
    check, and at unmask the signatures gathered on that same view, topped up with signatures
    of every corrupt client (they sign anything)."""

    needs_malicious_mode = True
    victim: int | None = None

    @abc.abstractmethod
    def _views_for(self, survivors, dropped, clients) -> dict[int, tuple[tuple, tuple]]:
        """The (survivors, dropped) view to show each client."""

    def to_clients(self, stage, messages):
        config = self.config
        if stage is Stage.ADVERTISE_KEYS:
            self._roster = decode(next(iter(messages.values())), config, Kind.ROSTER).entries
        if stage is Stage.SHARE_KEYS:
            self._nonces = decode(next(iter(messages.values())), config, Kind.NONCES).nonces
        if stage is Stage.CONSISTENCY_CHECK:
            req = decode(next(iter(messages.values())), config, Kind.CONSISTENCY_REQUEST)
            self._views = self._views_for(req.survivors, req.dropped, sorted(messages))
            self._signed: dict[tuple, list[tuple[int, bytes]]] = {}
            return {c: [ConsistencyRequest(*self._views[c]).encode(config)] for c in messages}
        if stage is Stage.UNMASK and getattr(self, "_views", None):
            digest = roster_digest(config, self._roster, self._nonces)
            out = {}
            for c in messages:
                view = self._views[c]
                signed = dict(self._signed.get(view, []))
                signed.update(self._sign_as_corrupt(consistency_payload(config, digest, *view)))
                sigs = tuple(sorted((s, sig) for s, sig in signed.items() if s in view[0]))
                out[c] = [UnmaskRequest(view[0], view[1], sigs).encode(config)]
            return out
        return super().to_clients(stage, messages)

    def to_server(self, stage, sender, data):
        if stage is Stage.CONSISTENCY_CHECK and getattr(self, "_views", None):
            try:
                signature = decode(data, self.config, Kind.CONSISTENCY_SIGNATURE).signature
                self._signed.setdefault(self._views[sender], []).append((sender, signature))
            except (InvalidMessage, KeyError):
                pass  # not a signature this attack can use
        return [data]


class InconsistentViews(_ViewSplitter):
    """The server tells half of the survivors that a victim survived and the other half that it
    dropped, hoping to collect seed shares from one half and key shares from the other."""

    def _views_for(self, survivors, dropped, clients):
        self.victim = self._target(survivors)
        ordered = [c for c in clients if c != self.victim]
        group_a = set(ordered[::2]) | {self.victim}
        without = (tuple(s for s in survivors if s != self.victim),
                   tuple(sorted(set(dropped) | {self.victim})))
        return {c: (survivors, dropped) if c in group_a else without for c in clients}


class TwoViews(_ViewSplitter):
    """Review finding 1: the victim's honest neighbours are split into group A (shown a survivor
    list with the victim) and group B (one without it); every corrupt client signs both views
    and hands over both kinds of share. Stopped by the signature quorum (no second view can
    gather more than (n + C) / 2 signatures) and by 2t > k + 1 + c."""

    def __init__(self, *, victim: int | None = None, groups: int = 0,
                 split: float | None = None) -> None:
        self._chosen_victim = victim
        self._groups = groups  # bit i puts the i-th honest client into group B
        self._split = split  # or: this fraction of the honest clients (in id order) into B

    def _views_for(self, survivors, dropped, clients):
        victim = self._chosen_victim
        if victim is None or victim not in survivors:
            victim = self._target(survivors)
        self.victim = victim
        honest = [c for c in clients if c not in self.corrupt and c != victim]
        if self._split is not None:
            rotate = self._groups % len(honest) if honest else 0
            order = honest[rotate:] + honest[:rotate]
            group_b = set(order[:round(self._split * len(order))])
        elif self._groups:
            group_b = {c for i, c in enumerate(honest) if self._groups >> (i % 60) & 1}
        else:
            # The attack's own best split: just enough honest signers (and holders) for the
            # second view to reach what a client needs, the rest (and the victim) in the first.
            config = self.config
            need = max(config.threshold, config.signature_quorum) - len(self.corrupt)
            group_b = set(honest[:max(0, need)]) if need < len(honest) else set(honest[1::2])
        without = (tuple(s for s in survivors if s != victim),
                   tuple(sorted(set(dropped) | {victim})))
        return {c: without if c in group_b else (survivors, dropped) for c in clients}


class ForgedKey(_CheatingServer):
    """The server swaps one client's advertised public keys for keys of its own, to read the
    shares other clients encrypt to that client."""

    needs_malicious_mode = True

    def to_clients(self, stage, messages):
        if stage is Stage.ADVERTISE_KEYS:
            roster: Roster = decode(next(iter(messages.values())), self.config, Kind.ROSTER)
            victim = self._target([e.client for e in roster.entries])
            self._keys = (crypto.KeyPair(), crypto.KeyPair())
            entries = tuple(
                RosterEntry(e.client, self._keys[0].public, self._keys[1].public, e.commitment,
                            e.signature)
                if e.client == victim else e for e in roster.entries)
            forged = Roster(entries).encode(self.config)
            return {c: [forged] for c in messages}
        return super().to_clients(stage, messages)


class Tamper(_CheatingServer):
    """The server flips one bit of one encrypted share on its way to its recipient."""

    def to_clients(self, stage, messages):
        if stage is Stage.MASKED_INPUT:
            out = super().to_clients(stage, messages)
            for c in sorted(messages):
                delivery: Delivery = decode(messages[c], self.config, Kind.DELIVERY)
                if delivery.sealed:
                    sender, sealed = delivery.sealed[0]
                    flipped = bytearray(sealed)
                    flipped[len(flipped) // 2] ^= 0x01
                    items = ((sender, bytes(flipped)),) + delivery.sealed[1:]
                    out[c] = [Delivery(c, items).encode(self.config)]
                    self.victim = c
                    break
            return out
        return super().to_clients(stage, messages)


class Replay(Adversary):
    """Messages recorded in an earlier round are injected, in both directions, ahead of each
    genuine message of this round. Every one of them must be rejected without effect."""

    def __init__(self, earlier) -> None:
        self._earlier = earlier  # Transcript of an earlier round with the same clients

    def _old(self, stage, direction, party):
        return [e.data for e in self._earlier.entries(stage=stage, direction=direction)
                if e.party == party]

    def to_clients(self, stage, messages):
        from .transcript import Direction
        return {c: self._old(stage, Direction.FROM_SERVER, c) + [m] for c, m in messages.items()}

    def to_server(self, stage, sender, data):
        from .transcript import Direction
        return self._old(stage, Direction.TO_SERVER, sender) + [data]


class PrivateRoster(_CheatingServer):
    """Review finding 2: the victim is shown a roster of itself, corrupt clients (run by the
    server as extra instances under their identities) and ``pad`` honest entries, so that its
    live neighbours would all be corrupt. Stopped by the graph over the whole cohort (honest
    neighbours that are missing count as dropped), the model's minimum of survivors and the
    signature quorum over the victim's own roster digest."""

    needs_malicious_mode = True

    def __init__(self, *, victim: int | None = None, pad: int = 0) -> None:
        self._chosen_victim = victim
        self._pad = pad
        self.victim: int | None = None

    def to_clients(self, stage, messages):
        config = self.config
        v = self.victim
        if stage is Stage.ADVERTISE_KEYS:
            main = decode(next(iter(messages.values())), config, Kind.ROSTER).entries
            listed = [e.client for e in main]
            v = self._chosen_victim if self._chosen_victim in listed else self._target(listed)
            self.victim = v
            self._shadows = {c: SecAggClient(c, config, identity=key, directory=self.directory)
                             for c, key in self.identities.items() if c != v}
            shadow_entries = []
            for c, shadow in self._shadows.items():
                ad = decode(shadow.advertise_keys(), config, Kind.ADVERTISE)
                shadow_entries.append(RosterEntry(c, ad.channel_key, ad.mask_key, ad.commitment,
                                                  ad.signature))
            honest = [e for e in main if e.client != v and e.client not in self._shadows]
            self._entries = tuple(sorted(
                [e for e in main if e.client == v] + shadow_entries + honest[:self._pad],
                key=lambda e: e.client))
            roster = Roster(self._entries).encode(config)
            self._reveals = {c: decode(s.reveal_nonce(roster), config, Kind.REVEAL).nonce
                             for c, s in list(self._shadows.items())}
            out = super().to_clients(stage, messages)
            out[v] = [roster]
            return out
        if v is None:
            return super().to_clients(stage, messages)
        out = super().to_clients(stage, messages)
        if stage is Stage.SHARE_KEYS:
            main = dict(decode(messages[v], config, Kind.NONCES).nonces) if v in messages else {}
            nonces = tuple(sorted((e.client, self._reveals.get(e.client, main.get(e.client)))
                                  for e in self._entries))
            self._nonces = nonces
            message = Nonces(nonces).encode(config)
            self._sealed: dict[int, list[tuple[int, bytes]]] = {}
            for c, shadow in self._shadows.items():
                try:
                    shares = decode(shadow.share_keys(message), config, Kind.SHARES)
                except ProtocolAbort:
                    continue
                for recipient, sealed in shares.sealed:
                    self._sealed.setdefault(recipient, []).append((c, sealed))
            out[v] = [message]
        elif stage is Stage.MASKED_INPUT:
            out[v] = [Delivery(v, tuple(sorted(self._sealed.get(v, [])))).encode(config)]
            for c, shadow in self._shadows.items():
                delivery = Delivery(c, tuple(sorted(self._sealed.get(c, [])))).encode(config)
                try:
                    shadow.masked_input(delivery, np.zeros(config.dim, dtype=np.uint64))
                except ProtocolAbort:
                    continue
                self.coalition.held.append((c, shadow.corrupt_state()))
        elif stage is Stage.CONSISTENCY_CHECK:
            neighbours = set(harary_neighbors(self._seed(), config.clients, config.neighbors, v))
            world = {e.client for e in self._entries}
            alive = tuple(sorted(c for c in world if c == v or c in self._shadows
                                 or c not in neighbours))
            self._view = (alive, ())
            out[v] = [ConsistencyRequest(*self._view).encode(config)]
        elif stage is Stage.UNMASK and getattr(self, "_view", None):
            digest = roster_digest(config, self._entries, self._nonces)
            sigs = dict(self._sign_as_corrupt(consistency_payload(config, digest, *self._view)))
            sigs.update(getattr(self, "_victim_signature", {}))
            out[v] = [UnmaskRequest(*self._view, tuple(sorted(
                (s, sig) for s, sig in sigs.items() if s in self._view[0]))).encode(config)]
        return out

    def _seed(self) -> bytes:
        from .graph import graph_seed
        return graph_seed(self.config.tag, self._nonces)

    def to_server(self, stage, sender, data):
        if sender == self.victim:
            if stage is Stage.SHARE_KEYS:
                shares = decode(data, self.config, Kind.SHARES)
                for recipient, sealed in shares.sealed:
                    self._sealed.setdefault(recipient, []).append((sender, sealed))
                return []  # the victim lives in the server's private world from here on
            if stage is Stage.CONSISTENCY_CHECK:
                signature = decode(data, self.config, Kind.CONSISTENCY_SIGNATURE).signature
                self._victim_signature = {sender: signature}
                return []
            if stage in (Stage.MASKED_INPUT, Stage.UNMASK):
                return []
        return [data]


class GraphGrinding(_CheatingServer):
    """Review finding 3: the server leaves honest advertisers out of the roster, trying subsets
    until the graph it predicts surrounds the victim with corrupt clients. With the seed
    committed-then-revealed the prediction is worthless: the graph is fixed by nonces the server
    does not know when it picks the roster."""

    def __init__(self, *, victim: int | None = None, tries: int = 2000,
                 leave_out: int = 3) -> None:
        self._chosen_victim = victim
        self._tries = tries
        self._leave_out = leave_out
        self.predicted: frozenset[int] | None = None
        self.victim: int | None = None

    def to_server(self, stage, sender, data):
        if stage is Stage.ADVERTISE_KEYS and not hasattr(self, "_chosen_roster"):
            self._held_back = getattr(self, "_held_back", {})
            self._held_back[sender] = data
            return []
        return [data]

    def flush(self, stage):
        if stage is not Stage.ADVERTISE_KEYS or hasattr(self, "_chosen_roster"):
            return []
        config = self.config
        adverts = {c: decode(m, config, Kind.ADVERTISE) for c, m in self._held_back.items()}
        clients = sorted(adverts)
        v = self._chosen_victim if self._chosen_victim in adverts else self._target(clients)
        self.victim = v
        honest = [c for c in clients if c not in self.corrupt and c != v]
        best, best_score = frozenset(), -1
        subsets = itertools.chain.from_iterable(
            itertools.combinations(honest, r) for r in range(self._leave_out + 1))
        for left_out in itertools.islice(subsets, self._tries):
            roster = [(c, adverts[c].channel_key, adverts[c].mask_key)
                      for c in clients if c not in left_out]
            seed = roster_graph_seed(config.tag, roster)
            nbrs = frozenset(harary_neighbors(seed, config.clients, config.neighbors, v))
            score = len(nbrs & self.corrupt)
            if score > best_score:
                best, best_score, self.predicted = frozenset(left_out), score, nbrs
            if best_score >= len(self.corrupt):
                break
        self._chosen_roster = best
        return [(c, m) for c, m in sorted(self._held_back.items()) if c not in best]


class ForgedHeader(_CheatingServer):
    """Review finding 5: a corrupt client sends messages whose header names the victim: a
    malformed one (hoping the server evicts the victim) and its own well-formed message
    re-headered (hoping the server takes it as the victim's). The server takes the sender from
    the transport, so both are refused as the corrupt client's and change nothing."""

    def __init__(self, *, victim: int | None = None,
                 stage: Stage = Stage.MASKED_INPUT) -> None:
        self._chosen_victim = victim
        self._stage = stage
        self.victim: int | None = None

    def server_directory(self, directory):
        return directory  # the server itself is honest here; the forger is a client

    def to_server(self, stage, sender, data):
        if stage is self._stage and sender in self.corrupt and self.victim is None:
            honest = sorted(set(self.config.clients) - self.corrupt)
            v = self._chosen_victim if self._chosen_victim in honest else honest[-1]
            self.victim = v
            kind = {Stage.ADVERTISE_KEYS: Kind.ADVERTISE, Stage.SHARE_KEYS: Kind.SHARES,
                    Stage.MASKED_INPUT: Kind.MASKED_INPUT,
                    Stage.CONSISTENCY_CHECK: Kind.CONSISTENCY_SIGNATURE,
                    Stage.UNMASK: Kind.UNMASK_SHARES}[stage]
            head = _header(kind, self.config, v)
            return [head + b"\x00" * 3, head + data[len(head):], data]  # malformed, spoken for
        return [data]


class LyingShares(Adversary):
    """Review finding 6: corrupt share holders reveal wrong shares at unmask. Robust
    reconstruction decodes around them, the round completes with the right sum, and the liars
    are named."""

    def __init__(self, *, liars: frozenset[int] | None = None) -> None:
        self._liars = liars

    def to_server(self, stage, sender, data):
        liars = self.corrupt if self._liars is None else self._liars
        if stage is Stage.UNMASK and sender in liars:
            message = decode(data, self.config, Kind.UNMASK_SHARES)
            lies = tuple((about, kind, ((int.from_bytes(share, "big") + 1) % PRIME)
                          .to_bytes(SHARE_BYTES, "big"))
                         for about, kind, share in message.shares)
            return [UnmaskShares(sender, lies).encode(self.config)]
        return [data]


class ArcIsolation(Adversary):
    """Review (attacker) finding: once the nonces fix the graph, the network drops the masked
    inputs of the k clients flanking an arc of k/2 + 1 ring places. Everyone sees one honest,
    consistent view; the flank's mask keys are revealed as they must be for dropped clients,
    and the arc's members have no other partners, so the coalition learns the arc's sum alone.
    Stopped by each client refusing a view in which k/2 consecutive ring places have no
    survivor (``RoundConfig.max_missing_in_window``)."""

    def __init__(self, *, start: int = 0) -> None:
        self._start = start
        self.arc: list[int] = []
        self.flank: set[int] = set()

    def to_clients(self, stage, messages):
        if stage is Stage.SHARE_KEYS and not self.arc and messages:
            from .graph import graph_seed, ring_order
            config = self.config
            nonces = decode(next(iter(messages.values())), config, Kind.NONCES).nonces
            order = ring_order(graph_seed(config.tag, nonces), config.clients)
            n, half = len(order), config.neighbors // 2
            a = self._start % n
            self.arc = [order[(a + i) % n] for i in range(half + 1)]
            self.flank = ({order[(a - d) % n] for d in range(1, half + 1)}
                          | {order[(a + half + d) % n] for d in range(1, half + 1)}) \
                - self.corrupt
        return super().to_clients(stage, messages)

    def to_server(self, stage, sender, data):
        if stage is Stage.MASKED_INPUT and sender in self.flank:
            return []  # "lost in the network": the flank is genuinely dropped for the server
        return [data]


# -- the searchable adversary ---------------------------------------------------------------

TACTICS = ("honest_but_curious", "two_views", "private_roster", "overlap", "claim_dropped",
           "grind", "forged_header", "lying_shares")


@dataclass(frozen=True)
class Strategy:
    """One point of the search space: the coalition and how it deviates."""

    corrupt: frozenset[int]
    tactic: str
    victim_rank: int = 0  # which honest client to target (index into the honest ids, mod)
    groups: int = 0  # bit pattern splitting honest clients between two views
    split: float | None = None  # or the fraction of honest clients shown the second view
    pad: int = 0  # honest entries padded into a private roster
    liars: bool = False  # corrupt holders also reveal wrong shares
    extra: dict = field(default_factory=dict, compare=False)


class ClaimDropped(_CheatingServer):
    """The server tells everyone that a victim which sent its masked input dropped, to collect
    shares of its mask key (its self-mask seed shares come from the corrupt holders)."""

    needs_malicious_mode = False

    def __init__(self, *, victim: int | None = None) -> None:
        self._chosen_victim = victim
        self.victim: int | None = None

    def _rewrite(self, survivors, dropped):
        v = self.victim
        return (tuple(s for s in survivors if s != v), tuple(sorted(set(dropped) | {v})))

    def to_clients(self, stage, messages):
        config = self.config
        if stage in (Stage.CONSISTENCY_CHECK, Stage.UNMASK) and messages:
            if self.victim is None:
                first = messages[min(messages)]
                kind = (Kind.CONSISTENCY_REQUEST if stage is Stage.CONSISTENCY_CHECK
                        else Kind.UNMASK_REQUEST)
                req = decode(first, config, kind)
                v = self._chosen_victim
                self.victim = v if v in req.survivors else self._target(req.survivors)
            out = {}
            for c, m in messages.items():
                if stage is Stage.CONSISTENCY_CHECK:
                    req = decode(m, config, Kind.CONSISTENCY_REQUEST)
                    out[c] = [ConsistencyRequest(*self._rewrite(req.survivors, req.dropped))
                              .encode(config)]
                else:
                    req = decode(m, config, Kind.UNMASK_REQUEST)
                    out[c] = [UnmaskRequest(*self._rewrite(req.survivors, req.dropped),
                                            req.signatures).encode(config)]
            return out
        return super().to_clients(stage, messages)


class GenericAdversary(Adversary):
    """A coalition of a malicious server and ``strategy.corrupt`` clients running one tactic
    (plus, optionally, lying shares). The Hypothesis search draws the strategy; the oracle says
    whether anything leaked."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.corrupt = frozenset(strategy.corrupt)
        self._parts: list[Adversary] = []

    @property
    def needs_malicious_mode(self) -> bool:
        return self.strategy.tactic in ("two_views", "private_roster")

    def setup(self, config, inputs):
        super().setup(config, inputs)
        s = self.strategy
        honest = sorted(set(config.clients) - self.corrupt) or sorted(config.clients)
        victim = honest[s.victim_rank % len(honest)]
        table = {
            "honest_but_curious": lambda: Adversary(),
            "two_views": lambda: TwoViews(victim=victim, groups=s.groups, split=s.split),
            "private_roster": lambda: PrivateRoster(victim=victim, pad=s.pad),
            "overlap": lambda: Overlap(),
            "claim_dropped": lambda: ClaimDropped(victim=victim),
            "grind": lambda: GraphGrinding(victim=victim, tries=200),
            "forged_header": lambda: ForgedHeader(victim=victim),
            "lying_shares": lambda: LyingShares(),
        }
        if s.tactic not in table:
            raise ConfigurationError(f"unknown tactic {s.tactic!r}; tactics: {', '.join(TACTICS)}")
        self._parts = [table[s.tactic]()]
        if s.liars and s.tactic != "lying_shares":
            self._parts.append(LyingShares())
        for part in self._parts:
            part.corrupt = self.corrupt
            part.setup(config, inputs)

    def enlist(self, coalition, clients, identities, directory):
        super().enlist(coalition, clients, identities, directory)
        for part in self._parts:
            part.enlist(coalition, clients, identities, directory)

    def make_server(self, config, directory):
        return self._parts[0].make_server(config, directory)

    def to_clients(self, stage, messages):
        return self._parts[0].to_clients(stage, messages)

    def to_server(self, stage, sender, data):
        out = [data]
        for part in self._parts:
            out = [m for item in out for m in part.to_server(stage, sender, item)]
        return out

    def flush(self, stage):
        return [item for part in self._parts for item in part.flush(stage)]


ADVERSARIES = ("overlap", "inconsistent_views", "forged_key", "replay", "tamper")
REGRESSION_ATTACKS = ("two_views", "private_roster", "graph_grinding", "forged_header",
                      "lying_shares", "arc_isolation")


def make_adversary(name: str | Adversary | None, *, earlier=None) -> Adversary:
    if name is None:
        return Adversary()
    if isinstance(name, Adversary):
        return name
    table = {"overlap": Overlap, "inconsistent_views": InconsistentViews,
             "forged_key": ForgedKey, "tamper": Tamper, "two_views": TwoViews,
             "private_roster": PrivateRoster, "graph_grinding": GraphGrinding,
             "forged_header": ForgedHeader, "lying_shares": LyingShares,
             "arc_isolation": ArcIsolation}
    if name == "replay":
        if earlier is None:
            raise ConfigurationError("the replay attack needs an earlier round's transcript")
        return Replay(earlier)
    if name not in table:
        raise ConfigurationError(f"unknown adversary {name!r}; canned attacks: "
                                 f"{', '.join(ADVERSARIES)}; regression attacks: "
                                 f"{', '.join(REGRESSION_ATTACKS)}")
    return table[name]()
