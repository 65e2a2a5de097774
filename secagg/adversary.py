"""Canned attacks by a misbehaving server (or network), for the protocol test harness.

An adversary sits at the server's boundary: it may rewrite, drop, reorder or inject the messages
the server sends and receives. Each canned attack here is one that a real implementation has
fallen to or that the protocol is designed to stop; the harness runs it and the round must end in
an abort, or in a correct sum of the clients that took part with no input exposed.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import RoundConfig
from .errors import ConfigurationError
from .hazmat import crypto
from .messages import (
    Kind,
    Delivery,
    Roster,
    RosterEntry,
    UnmaskRequest,
    ConsistencyRequest,
    decode,
)
from .stages import Stage

__all__ = ["Adversary", "ADVERSARIES", "make_adversary"]


class Adversary:
    """The honest network: passes everything through. Subclasses override the hooks."""

    needs_malicious_mode = False

    def setup(self, config: RoundConfig, inputs: Mapping) -> None:
        self.config = config

    def to_clients(self, stage: Stage, messages: dict[int, bytes]) -> dict[int, list[bytes]]:
        """What each client receives at the start of ``stage`` (in order)."""
        return {c: [m] for c, m in messages.items()}

    def to_server(self, stage: Stage, sender: int, data: bytes) -> list[bytes]:
        """What the server receives when ``sender`` sends ``data`` in ``stage``."""
        return [data]

    def server_directory(self, directory):
        """The identity directory an honest server would check against; a cheating server
        ignores it."""
        return directory


class _CheatingServer(Adversary):
    def server_directory(self, directory):
        return None

    def _target(self, candidates) -> int:
        return sorted(candidates)[len(candidates) // 2]


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


class InconsistentViews(_CheatingServer):
    """The server tells half of the survivors that a victim survived and the other half that it
    dropped, hoping to collect seed shares from one half and key shares from the other."""

    needs_malicious_mode = True
    victim: int | None = None

    def _split(self, clients) -> tuple[set[int], set[int]]:
        ordered = sorted(clients)
        half_a = set(ordered[::2]) | {self.victim}
        return half_a, set(ordered) - half_a

    def to_clients(self, stage, messages):
        config = self.config
        if stage is Stage.CONSISTENCY_CHECK:
            survivors = decode(next(iter(messages.values())), config,
                               Kind.CONSISTENCY_REQUEST).survivors
            self.victim = self._target(survivors)
            group_a, group_b = self._split(messages)
            without = tuple(s for s in survivors if s != self.victim)
            self._views = {c: survivors if c in group_a else without for c in messages}
            return {c: [ConsistencyRequest(self._views[c]).encode(config)] for c in messages}
        if stage is Stage.UNMASK and self.victim is not None:
            out = {}
            for c, m in messages.items():
                req: UnmaskRequest = decode(m, config, Kind.UNMASK_REQUEST)
                view = self._views.get(c, req.survivors)
                dropped = tuple(sorted(set(req.dropped) | (set(req.survivors) - set(view))))
                # Only signatures made over this client's own view can convince it.
                signers = {s for s, v in self._views.items() if v == view}
                sigs = tuple((s, sig) for s, sig in req.signatures if s in signers)
                out[c] = [UnmaskRequest(view, dropped, sigs).encode(config)]
            return out
        return super().to_clients(stage, messages)


class ForgedKey(_CheatingServer):
    """The server swaps one client's advertised public keys for keys of its own, to read the
    shares other clients encrypt to that client."""

    needs_malicious_mode = True

    def to_clients(self, stage, messages):
        if stage is Stage.SHARE_KEYS:
            roster: Roster = decode(next(iter(messages.values())), self.config, Kind.ROSTER)
            victim = self._target([e.client for e in roster.entries])
            self._keys = (crypto.KeyPair(), crypto.KeyPair())
            entries = tuple(
                RosterEntry(e.client, self._keys[0].public, self._keys[1].public, e.signature)
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


ADVERSARIES = ("overlap", "inconsistent_views", "forged_key", "replay", "tamper")


def make_adversary(name: str | Adversary | None, *, earlier=None) -> Adversary:
    if name is None:
        return Adversary()
    if isinstance(name, Adversary):
        return name
    table = {"overlap": Overlap, "inconsistent_views": InconsistentViews,
             "forged_key": ForgedKey, "tamper": Tamper}
    if name == "replay":
        if earlier is None:
            raise ConfigurationError("the replay attack needs an earlier round's transcript")
        return Replay(earlier)
    if name not in table:
        raise ConfigurationError(f"unknown adversary {name!r}; canned attacks: "
                                 f"{', '.join(ADVERSARIES)}")
    return table[name]()
