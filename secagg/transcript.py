"""The server's whole view of a round, message by message, for audits.

A transcript records every message that crossed the server's boundary, in order, as the bytes
that crossed it. It holds nothing the server did not see: clients' inputs, self-mask seeds and
private keys never appear in it, only what the protocol reveals to the server anyway.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from .config import RoundConfig
from .messages import Kind, UnmaskShares, ShareKind, decode, peek
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


def exposed_clients(transcript: Transcript) -> frozenset[int]:
    """Clients whose input the server could unmask from what it was sent: those for which it
    received at least ``threshold`` shares of the self-mask seed *and* ``threshold`` shares of the
    mask key, from distinct holders. The protocol's guarantee is that this set is always empty."""
    config = transcript.config
    seed_holders: dict[int, set[int]] = {}
    key_holders: dict[int, set[int]] = {}
    for entry in transcript.entries(direction=Direction.TO_SERVER):
        try:
            kind, _ = peek(entry.data, config)
            if kind is not Kind.UNMASK_SHARES:
                continue
            message: UnmaskShares = decode(entry.data, config, Kind.UNMASK_SHARES)
        except Exception:  # rejected or replayed messages reveal nothing decodable here
            continue
        for about, share_kind, _ in message.shares:
            holders = seed_holders if share_kind is ShareKind.SELF_MASK_SEED else key_holders
            holders.setdefault(about, set()).add(message.sender)
    t = config.threshold
    return frozenset(c for c in seed_holders
                     if len(seed_holders[c]) >= t and len(key_holders.get(c, ())) >= t)
