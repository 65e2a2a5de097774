"""The neighbour graph of a round, derived so that every client can check it.

Clients are placed on a ring in an order given by hashing each id with a seed, and the seed is the
hash of the round tag and of the whole roster of advertised keys. Each client neighbours the k/2
nearest clients on either side of it (a Harary graph; for odd k on an even ring, also the client
diametrically opposite). The server cannot choose who neighbours whom: any change to the order
would need a different roster, which changes the seed, and every client recomputes the graph from
the roster it was sent. k = n - 1 is the complete graph of classic SecAgg.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["graph_seed", "ring_order", "ring_holders", "harary_neighbors", "neighbor_map"]

_U32 = struct.Struct(">I")


def graph_seed(round_tag: bytes, roster: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """SHA-256 over the round tag and the sorted (id, channel key, mask key) roster entries."""
    h = hashlib.sha256(b"cohort/secagg/v1/graph\x00" + round_tag)
    for client, c_pk, s_pk in sorted(roster):
        h.update(_U32.pack(client) + c_pk + s_pk)
    return h.digest()


def ring_order(seed: bytes, clients: Iterable[int]) -> list[int]:
    """Clients sorted by SHA-256(seed || id): a permutation no party can steer."""
    return sorted(clients, key=lambda c: hashlib.sha256(seed + _U32.pack(c)).digest())


def ring_holders(order: Sequence[int], position: int, k: int) -> list[int]:
    """The k neighbours of ``order[position]`` nearest first: +1, -1, +2, -2, … on the ring, and
    for odd k the client opposite last. A neighbour's 1-based rank in this list, plus one (the
    client itself is 1), is the Shamir x-coordinate of its share of this client's secrets."""
    n = len(order)
    k = min(k, n - 1)
    out = []
    for d in range(1, k // 2 + 1):
        out.append(order[(position + d) % n])
        out.append(order[(position - d) % n])
    if k % 2:
        out.append(order[(position + n // 2) % n])
    return out


def harary_neighbors(seed: bytes, clients: Iterable[int], k: int, client: int) -> list[int]:
    """Neighbours of one client in rank order (what a client computes for itself)."""
    order = ring_order(seed, clients)
    return ring_holders(order, order.index(client), k)


def neighbor_map(seed: bytes, clients: Iterable[int], k: int) -> Mapping[int, list[int]]:
    """Neighbours of every client in rank order (what the server computes)."""
    order = ring_order(seed, clients)
    return {c: ring_holders(order, i, k) for i, c in enumerate(order)}
