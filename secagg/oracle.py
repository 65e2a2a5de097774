"""The leakage oracle: what a server and its corrupt clients can really recover from a round.

The oracle plays the coalition to the end. From the server's whole view (every message in the
transcript, including ones the server's state machine refused) and everything the corrupt
client instances received, it gathers every share of every honest client's self-mask seed
``b_u`` and mask key ``s_u``, reconstructs each secret that reaches the threshold (checked against
what the owner committed to: the seed's hash, the key's public half), and then asks which sums
of honest inputs the coalition can strip of all their masks:

- an honest client whose ``b_u`` is known and whose every pairwise mask is known (its own ``s_u``
  is known, or each partner's is: corrupt partners' keys are the coalition's own) is exposed;
- more generally, honest masked inputs whose masks cancel among themselves once the known masks
  are removed form a component; the coalition learns the sum of each component whose seeds are
  all known. The protocol's guarantee (DESIGN section 2a) is that every such sum covers at least
  the model's minimum of honest clients.

This is a test oracle for the harness: it uses the honest clients' public round facts (who holds
their shares at which x-coordinate, whom they masked with), which the coalition could work out
itself from the roster and nonces it relayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .client import opens_mask_key, opens_seed
from .hazmat import shamir
from .messages import Kind, ShareKind, decode, peek
from .transcript import Direction, Transcript

__all__ = ["Leakage", "leakage"]


@dataclass(frozen=True)
class Leakage:
    seeds: frozenset[int]
    """Honest clients whose self-mask seed the coalition reconstructed."""
    keys: frozenset[int]
    """Honest clients whose mask key the coalition reconstructed."""
    revealed_sums: tuple[frozenset[int], ...]
    """Sets of honest clients whose input sum the coalition can compute."""
    minimum: int
    """Fewest honest inputs a revealed sum may cover (the model's minimum)."""

    @property
    def exposed(self) -> frozenset[int]:
        """Honest clients in a revealed sum smaller than the minimum (one client's input, or a
        too-small group's sum): the guarantee is that this is empty."""
        return frozenset(c for group in self.revealed_sums if len(group) < self.minimum
                         for c in group)


def _messages(transcript: Transcript, kind: Kind, stage=None):
    config = transcript.config
    for entry in transcript.entries(stage=stage, direction=Direction.TO_SERVER):
        try:
            if peek(entry.data, config)[0] is not kind:
                continue
            message = decode(entry.data, config, kind)
        except Exception:  # noqa: BLE001 - junk the server received reveals nothing decodable
            continue
        if message.sender == entry.party:  # only what the real sender said counts
            yield message


def _recover(points: dict[int, int], t: int, check) -> int | None:
    """The secret, if the points open the owner's commitment (the server's own decoder)."""
    if len(points) < t:
        return None
    try:
        return shamir.decode_with_check(sorted(points.items()), t, check)[0]
    except (ValueError, IndexError):
        return None


def leakage(transcript: Transcript, coalition) -> Leakage:
    """Everything the coalition can recover; ``coalition`` is :class:`secagg.harness.Coalition`."""
    config = transcript.config
    t = config.threshold
    corrupt = frozenset(coalition.corrupt)
    honest = [c for c in config.clients if c not in corrupt]
    adverts = {m.sender: m for m in _messages(transcript, Kind.ADVERTISE)}
    commitments = {m.sender: m.commitment for m in _messages(transcript, Kind.SHARES)}
    masked = {m.sender for m in _messages(transcript, Kind.MASKED_INPUT)}
    b_points: dict[int, dict[int, int]] = {u: {} for u in honest}
    s_points: dict[int, dict[int, int]] = {u: {} for u in honest}
    for message in _messages(transcript, Kind.UNMASK_SHARES):
        for about, kind, share in message.shares:
            ranks = coalition.ranks.get(about, {})
            if about in b_points and message.sender in ranks:
                target = b_points if kind is ShareKind.SELF_MASK_SEED else s_points
                target[about].setdefault(ranks[message.sender], int.from_bytes(share, "big"))
    for holder, held in coalition.held:
        for about, (b_share, s_share) in held.items():
            ranks = coalition.ranks.get(about, {})
            if about in b_points and holder in ranks:
                b_points[about].setdefault(ranks[holder], b_share)
                s_points[about].setdefault(ranks[holder], s_share)
    seeds, keys = set(), set()
    for u in honest:
        if u in commitments and _recover(b_points[u], t,
                                         opens_seed(config, u, commitments[u])) is not None:
            seeds.add(u)
        if u in adverts and _recover(s_points[u], t,
                                     opens_mask_key(adverts[u].mask_key)) is not None:
            keys.add(u)
    known_key = keys | corrupt
    # Honest masked inputs joined by a pairwise mask neither end's key is known for.
    nodes = [u for u in honest if u in masked]
    parent = {u: u for u in honest}

    def find(u: int) -> int:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for u in honest:
        if u in known_key:
            continue
        for v in coalition.partners.get(u, ()):
            if v in parent and v not in known_key:
                parent[find(u)] = find(v)
    groups: dict[int, set[int]] = {}
    for u in honest:
        groups.setdefault(find(u), set()).add(u)
    revealed = []
    for group in groups.values():
        # A group's sum is computable when every member's masked input is in the view and
        # every member's seed is known; a member that masked but whose input never arrived
        # leaves an unknown mask in the others.
        if group <= set(nodes) and group <= seeds:
            revealed.append(frozenset(group))
    # One honest input alone is always a leak, whatever the model's minimum allows.
    minimum = max(2, config.min_survivors - config.max_corrupt)
    return Leakage(frozenset(seeds), frozenset(keys), tuple(sorted(revealed, key=sorted)),
                   minimum)
