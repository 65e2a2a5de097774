"""The public parameters of one round, which the server announces and every client checks."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import cached_property

from .errors import ConfigurationError
from .params import (
    DEFAULT_CORRUPT_RATE,
    DEFAULT_DROPOUT_RATE,
    check_graph,
    max_corrupt,
    max_corrupt_neighbors,
    max_missing_in_window,
    min_survivors,
    signature_quorum,
)

__all__ = ["RoundConfig", "SERVER_ID", "MAX_CLIENT_ID", "MAX_DIM"]

# Rates are bound into the round tag as integers in parts per million.
_PPM = 1_000_000

SERVER_ID = 0xFFFFFFFF
MAX_CLIENT_ID = SERVER_ID - 1
MAX_DIM = 1 << 31


@dataclass(frozen=True)
class RoundConfig:
    """Everything both sides must agree on. ``tag`` (a hash of all of it) binds every message,
    key derivation and signature of the round, so changing any field starts a different round.

    ``round_id`` must be unique per round (16 to 32 random bytes from the coordinator).

    ``clients`` is the whole cohort: the neighbour graph is fixed over it, so a client that
    never advertises keys is a dropped neighbour, not an absent one. ``corrupt_rate`` and
    ``dropout_rate`` are the threat model's gamma and delta (DESIGN section 2a): the threshold
    must satisfy the bounds they imply, and every client enforces them (a round outside the
    model is refused, not warned about).
    """

    round_id: bytes
    clients: tuple[int, ...]
    dim: int
    modulus_bits: int
    neighbors: int
    threshold: int
    malicious: bool = False
    corrupt_rate: float = DEFAULT_CORRUPT_RATE
    dropout_rate: float = DEFAULT_DROPOUT_RATE
    tag: bytes = field(init=False, repr=False, compare=False)
    client_set: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.round_id, bytes) or not 16 <= len(self.round_id) <= 32:
            raise ConfigurationError("round_id must be 16 to 32 bytes")
        clients = tuple(self.clients)
        if len(set(clients)) != len(clients):
            raise ConfigurationError("client ids must be unique")
        if any(not isinstance(c, int) or not 0 <= c <= MAX_CLIENT_ID for c in clients):
            raise ConfigurationError(f"client ids must be integers in 0..{MAX_CLIENT_ID}")
        object.__setattr__(self, "clients", tuple(sorted(clients)))
        object.__setattr__(self, "client_set", frozenset(clients))
        if not isinstance(self.dim, int) or not 1 <= self.dim <= MAX_DIM:
            raise ConfigurationError(f"dim must be an integer in 1..{MAX_DIM}")
        if not isinstance(self.modulus_bits, int) or not 1 <= self.modulus_bits <= 64:
            raise ConfigurationError("modulus_bits must be an integer in 1..64")
        if not isinstance(self.malicious, bool):
            raise ConfigurationError("malicious must be True or False")
        for name in ("corrupt_rate", "dropout_rate"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise ConfigurationError(f"{name} must be a number in [0, 1), got {rate!r}")
            object.__setattr__(self, name, round(float(rate) * _PPM) / _PPM)
        check_graph(len(clients), self.neighbors, self.threshold, malicious=self.malicious,
                    corrupt_rate=self.corrupt_rate)
        if min_survivors(len(clients), self.threshold, self.dropout_rate,
                         self.corrupt_rate) > len(clients):
            raise ConfigurationError(
                f"{len(clients)} clients at corrupt rate {self.corrupt_rate} cannot release a sum "
                "of two honest inputs or more: with the corrupt clients the model allows, the "
                "sum could be one client's input; use more clients or a lower corrupt rate")
        body = struct.pack(">B32sIIBIIBII", 2, self.round_id.ljust(32, b"\x00"), self.dim,
                           len(self.round_id), self.modulus_bits, self.neighbors,
                           self.threshold, int(self.malicious),
                           round(self.corrupt_rate * _PPM), round(self.dropout_rate * _PPM))
        body += b"".join(struct.pack(">I", c) for c in self.clients)
        object.__setattr__(self, "tag",
                           hashlib.sha256(b"cohort/secagg/v2/round\x00" + body).digest())

    @property
    def n(self) -> int:
        return len(self.clients)

    @cached_property
    def max_corrupt(self) -> int:
        """Corrupt clients the model allows in the whole cohort."""
        return max_corrupt(self.n, self.corrupt_rate)

    @cached_property
    def max_corrupt_neighbors(self) -> int:
        """Corrupt share holders the model allows around one client."""
        return max_corrupt_neighbors(self.n, self.neighbors, self.corrupt_rate)

    @cached_property
    def max_missing_in_window(self) -> int:
        """Most non-survivors any k/2 consecutive ring places may hold (malicious mode): more
        could cut the honest survivors' graph and isolate a small group's sum."""
        return max_missing_in_window(self.n, self.neighbors, self.corrupt_rate)

    @cached_property
    def min_survivors(self) -> int:
        """Fewest clients whose sum a round may release (the model's minimum)."""
        return min_survivors(self.n, self.threshold, self.dropout_rate, self.corrupt_rate)

    @cached_property
    def signature_quorum(self) -> int:
        """Signatures on one survivor view needed before any share is revealed (malicious
        mode): more than (n + C) / 2, so no second view can gather as many."""
        quorum = signature_quorum(self.n, self.corrupt_rate)
        return quorum or self.threshold  # 0 only under a planted defect: the old rule
