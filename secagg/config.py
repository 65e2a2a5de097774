"""The public parameters of one round, which the server announces and every client checks."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from .errors import ConfigurationError
from .params import check_graph

__all__ = ["RoundConfig", "SERVER_ID", "MAX_CLIENT_ID", "MAX_DIM", "effective_degree"]

SERVER_ID = 0xFFFFFFFF
MAX_CLIENT_ID = SERVER_ID - 1
MAX_DIM = 1 << 31


@dataclass(frozen=True)
class RoundConfig:
    """Everything both sides must agree on. ``tag`` (a hash of all of it) binds every message,
    key derivation and signature of the round, so changing any field starts a different round.

    ``round_id`` must be unique per round (16 to 32 random bytes from the coordinator).
    """

    round_id: bytes
    clients: tuple[int, ...]
    dim: int
    modulus_bits: int
    neighbors: int
    threshold: int
    malicious: bool = False
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
        check_graph(len(clients), self.neighbors, self.threshold, malicious=self.malicious)
        body = struct.pack(">B32sIIBIIB", 1, self.round_id.ljust(32, b"\x00"), self.dim,
                           len(self.round_id), self.modulus_bits, self.neighbors,
                           self.threshold, int(self.malicious))
        body += b"".join(struct.pack(">I", c) for c in self.clients)
        object.__setattr__(self, "tag",
                           hashlib.sha256(b"cohort/secagg/v1/round\x00" + body).digest())

    @property
    def n(self) -> int:
        return len(self.clients)


def effective_degree(config: RoundConfig, alive: int) -> int:
    """Degree of the graph actually built over the ``alive`` clients that advertised keys.

    The planned degree, unless the roster is too small for it (then the complete graph) or an odd
    degree meets an odd roster (no such regular graph): then one more neighbour if that keeps the
    malicious-mode bound 2t > k, else one fewer if the threshold allows, else the complete graph.
    """
    k = config.neighbors
    if k >= alive - 1:
        return alive - 1
    if k % 2 and alive % 2:
        if k + 1 < alive - 1 and (not config.malicious or 2 * config.threshold > k + 2):
            return k + 1
        if config.threshold <= k and k - 1 >= 1:
            return k - 1
        return alive - 1
    return k
