"""The server's whole view of a round, message by message, for audits.

A transcript records every message that crossed the server's boundary, in order, as the bytes
that crossed it. It holds nothing the server did not see: clients' inputs, self-mask seeds and
private keys never appear in it, only what the protocol reveals to the server anyway.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .config import RoundConfig
from .errors import InvalidMessage, StageError
from .messages import Kind, ShareKind, decode, peek
from .stages import Stage

__all__ = ["Direction", "TranscriptEntry", "Transcript", "exposed_clients"]


class Direction(enum.Enum):
    TO_SERVER = "to_server"
    FROM_SERVER = "from_server"


@dataclass(frozen=True)
class TranscriptEntry:
    stage: Stage
    direction: Direction
    party: int  # the client that sent or received it
    data: bytes

    def __repr__(self) -> str:
        return (f"TranscriptEntry({self.stage.value}, {self.direction.value}, party={self.party}, "
                f"{len(self.data)} bytes)")


class Transcript:
    """Append-only list of :class:`TranscriptEntry`."""

    def __init__(self, config: RoundConfig) -> None:
        self.config = config
        self._entries: list[TranscriptEntry] = []

    def record(self, stage: Stage, direction: Direction, party: int, data: bytes) -> None:
        self._entries.append(TranscriptEntry(stage, direction, party, bytes(data)))

    def __iter__(self) -> Iterator[TranscriptEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> TranscriptEntry:
        return self._entries[index]

    def entries(self, stage: Stage | None = None,
                direction: Direction | None = None) -> list[TranscriptEntry]:
        return [e for e in self._entries
                if (stage is None or e.stage is stage)
                and (direction is None or e.direction is direction)]

    def total_bytes(self, direction: Direction | None = None) -> int:
        return sum(len(e.data) for e in self._entries
                   if direction is None or e.direction is direction)


def exposed_clients(transcript: Transcript, *, corrupt: Iterable[int] = ()) -> frozenset[int]:
    """Honest clients whose input the server could unmask from what it was sent together with
    what the ``corrupt`` clients hold.

    A corrupt client holds both kinds of share of every client that sent it shares (the
    recipients of each ``shares`` message are on the wire), so each counts towards both
    secrets. A client is exposed when ``threshold`` distinct holders gave up its self-mask seed
    and ``threshold`` gave up its mask key, or when its seed is given up and every neighbour it
    shared with is corrupt (then every pairwise mask in its input is the coalition's own). The
    protocol's guarantee is that this set is empty for any corrupt set the model allows.

    Fails closed: a message in the transcript that cannot be read is an error, not a skip.
    """
    config = transcript.config
    corrupt = frozenset(corrupt)
    seed_holders: dict[int, set[int]] = {}
    key_holders: dict[int, set[int]] = {}
    recipients: dict[int, set[int]] = {}
    for entry in transcript.entries(direction=Direction.TO_SERVER):
        try:
            kind, claimed = peek(entry.data, config)
        except StageError:
            continue  # another round's message (a replay): not about this round's secrets
        except InvalidMessage as exc:
            raise InvalidMessage(f"transcript entry from client {entry.party} cannot be "
                                 f"read: {exc}") from None
        if kind not in (Kind.SHARES, Kind.UNMASK_SHARES) or claimed != entry.party:
            continue
        try:
            message = decode(entry.data, config, kind)
        except InvalidMessage:
            continue  # refused by the server as malformed: it carries no usable share
        if kind is Kind.SHARES:
            recipients.setdefault(message.sender, set()).update(v for v, _ in message.sealed)
            continue
        for about, share_kind, _ in message.shares:
            holders = seed_holders if share_kind is ShareKind.SELF_MASK_SEED else key_holders
            holders.setdefault(about, set()).add(message.sender)
    t = config.threshold
    exposed = set()
    for u in config.clients:
        if u in corrupt:
            continue
        held_by_corrupt = recipients.get(u, set()) & corrupt
        seeds = len(seed_holders.get(u, set()) | held_by_corrupt)
        keys = len(key_holders.get(u, set()) | held_by_corrupt)
        surrounded = bool(recipients.get(u)) and recipients[u] <= corrupt
        if seeds >= t and (keys >= t or surrounded):
            exposed.add(u)
    return frozenset(exposed)
