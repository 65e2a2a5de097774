"""The neighbour graph of a round, derived so that every client can check it and the server
cannot choose it.

The graph is fixed over the whole cohort named in the round's config (a client that never
advertised keys is a dropped neighbour, not an absent one). Clients are placed on a ring in an
order given by hashing each id with a seed, and each neighbours the k/2 nearest clients on either
side (a Harary graph; for odd k on an even ring, also the client diametrically opposite).

The seed is commit-then-reveal: every client commits to a random 32-byte nonce when it
advertises its keys, and reveals it only after it has seen the roster of commitments. The seed
hashes the round tag with every revealed nonce of the roster, so it is fixed before any honest
nonce is known, and a roster member that withholds its nonce aborts the round (visibly) rather
than being left out: the server cannot grind the graph by re-keying corrupt clients or by
choosing whom to list, as it could when the seed was a hash of the roster it picked.
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["NONCE_BYTES", "graph_seed", "nonce_commitment", "nonce_commitments",
           "roster_graph_seed", "ring_order", "ring_offsets", "ring_holders", "holder_table",
           "harary_neighbors", "neighbor_map"]

_U32 = struct.Struct(">I")
NONCE_BYTES = 32


def nonce_commitment(round_tag: bytes, client: int, nonce: bytes) -> bytes:
    """The binding, hiding commitment a client advertises to its graph nonce."""
    return hashlib.sha256(b"cohort/secagg/v2/graph-nonce\x00" + round_tag + _U32.pack(client)
                          + nonce).digest()


def graph_seed(round_tag: bytes, nonces: Iterable[tuple[int, bytes]]) -> bytes:
    """SHA-256 over the round tag and every (id, revealed nonce) of the roster, sorted by id."""
    h = hashlib.sha256(b"cohort/secagg/v2/graph\x00" + round_tag)
    h.update(b"".join(_U32.pack(client) + nonce for client, nonce in sorted(nonces)))
    return h.digest()


def roster_graph_seed(round_tag: bytes, roster: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """The old, grindable seed (a hash of the server-chosen roster of keys): kept only for the
    planted defect that shows the grinding attack is caught."""
    h = hashlib.sha256(b"cohort/secagg/v1/graph\x00" + round_tag)
    for client, c_pk, s_pk in sorted(roster):
        h.update(_U32.pack(client) + c_pk + s_pk)
    return h.digest()


def ring_order(seed: bytes, clients: Iterable[int]) -> list[int]:
    """Clients sorted by SHA-256(seed || id): a permutation no party can steer."""
    clients = list(clients)
    sha, pack = hashlib.sha256, _U32.pack
    keys = [sha(seed + pack(c)).digest() for c in clients]
    return [c for _, c in sorted(zip(keys, clients), key=operator.itemgetter(0))]


def nonce_commitments(round_tag: bytes, nonces: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """:func:`nonce_commitment` of every (client, nonce), in order (a client checks the whole
    roster's: one pass, the prefix built once)."""
    sha, pack = hashlib.sha256, _U32.pack
    prefix = b"cohort/secagg/v2/graph-nonce\x00" + round_tag
    return [sha(prefix + pack(client) + nonce).digest() for client, nonce in nonces]


def ring_offsets(n: int, k: int) -> list[int]:
    """Ring offsets of a client's k holders, nearest first (what :func:`ring_holders` walks)."""
    k = min(k, n - 1)
    out = []
    for d in range(1, k // 2 + 1):
        out.extend((d, -d))
    if k % 2:
        out.append(n // 2)
    return out


def holder_table(order: Sequence[int], clients: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The ring as arrays over the sorted ``clients``: (ring position of each client's index,
    client index at each ring position). With :func:`ring_offsets` they give every client's
    holders in one gather: ``at[(position[:, None] + offsets) % n]`` is row for row
    :func:`ring_holders` (as indices into ``clients``) without a list per client."""
    ids = np.asarray(clients, dtype=np.int64)
    at = np.searchsorted(ids, np.asarray(order, dtype=np.int64))
    position = np.empty(len(at), dtype=np.int64)
    position[at] = np.arange(len(at))
    return position, at


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
