"""The in-process protocol test harness: one whole SecAgg+ round, with dropouts and attacks.

:func:`simulate_round` runs real clients and a real server (the same state machines a deployment
uses) against each other in one process, passing every message as bytes through an optional
adversary at the server's boundary, and returns the sum, who is in it, and the server's whole
view. Researchers use it to study dropouts and attacks; the tests use it to check that the sum is
exact and that no attack exposes an input.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .adversary import Adversary, make_adversary
from .client import SecAggClient
from .config import MAX_CLIENT_ID, RoundConfig
from .errors import ConfigurationError, InvalidInput, InvalidMessage, ProtocolAbort
from .params import DEFAULT_CORRUPT_RATE, DEFAULT_DROPOUT_RATE, choose_parameters, \
    required_modulus_bits
from .stages import Stage, dropout_plan
from .transcript import Direction, Transcript

__all__ = ["simulate_round", "RoundResult", "Coalition"]


@dataclass(frozen=True)
class RoundResult:
    aggregate: np.ndarray
    """Sum of the included inputs mod 2**modulus_bits (uint32 for b <= 32, else uint64)."""
    included: frozenset[int]
    """Clients whose inputs are in the sum."""
    transcript: Transcript
    """Every message the server sent and received, in order."""
    config: RoundConfig
    aborted: Mapping[int, str] = field(default_factory=dict)
    """Clients that refused to go on, with their reason (e.g. a failed integrity check)."""
    rejected: tuple[tuple[int, str, str], ...] = ()
    """Messages refused on arrival: (client, error type, reason), both directions."""
    liars: frozenset[int] = frozenset()
    """Holders whose revealed shares were wrong (the sum was corrected around them); the owner
    may have dealt them wrong instead, see ``share_mismatches``."""
    share_mismatches: frozenset[tuple[int, int]] = frozenset()
    """(holder, owner) pairs whose share was wrong."""
    coalition: "Coalition | None" = None
    """What the adversary (server plus corrupt clients) held, for the leakage oracle."""


def _check_inputs(inputs: Mapping[int, np.ndarray], modulus_bits: int,
                  input_bits: int | None) -> tuple[dict[int, np.ndarray], int]:
    if not isinstance(inputs, Mapping) or len(inputs) < 2:
        raise InvalidInput("inputs must map at least two client ids to vectors")
    if not isinstance(modulus_bits, int) or not 1 <= modulus_bits <= 64:
        raise ConfigurationError("modulus_bits must be an integer in 1..64")
    dims = set()
    arrays = {}
    for client, values in inputs.items():
        if not isinstance(client, (int, np.integer)) or not 0 <= int(client) <= MAX_CLIENT_ID:
            raise InvalidInput(f"client ids must be integers in 0..{MAX_CLIENT_ID}")
        x = np.asarray(values)
        if x.ndim != 1 or x.dtype.kind not in "ui" or x.size == 0:
            raise InvalidInput("each input must be a non-empty 1-D integer array")
        limit_bits = input_bits if input_bits is not None else modulus_bits
        if int(x.min()) < 0 or int(x.max()) >> limit_bits:
            raise InvalidInput(f"input entries must lie in [0, 2**{limit_bits})")
        dims.add(x.shape[0])
        arrays[int(client)] = x
    if len(dims) != 1:
        raise InvalidInput("all inputs must have the same length")
    if input_bits is not None:
        need = required_modulus_bits(len(arrays), input_bits)
        if modulus_bits < need:
            raise ConfigurationError(
                f"{len(arrays)} inputs of {input_bits} bits need modulus_bits >= {need}; "
                f"{modulus_bits} would let the sum wrap around")
    return arrays, dims.pop()


def simulate_round(inputs: Mapping[int, np.ndarray], modulus_bits: int = 32,
                   neighbors: int | None = None, threshold: int | None = None,
                   dropouts: Mapping[str | Stage, Iterable[int]] | None = None,
                   malicious: bool = False, seed: int | None = None, *,
                   adversary: str | Adversary | None = None,
                   input_bits: int | None = None,
                   dropout_rate: float = DEFAULT_DROPOUT_RATE,
                   corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                   corrupt: Iterable[int] | None = None,
                   round_id: bytes | None = None) -> RoundResult:
    """Run one SecAgg+ round in process and return the sum of the surviving clients' inputs.

    ``inputs`` maps client ids to 1-D integer arrays with entries in [0, 2**modulus_bits); the
    aggregate is their sum mod 2**modulus_bits (wrap-around is the contract: the privacy layer
    relies on it). Give ``input_bits`` to have the harness check that the sum cannot wrap.
    ``neighbors``/``threshold`` default to the parameter finder's choice for ``dropout_rate`` and
    ``corrupt_rate``; ``neighbors=len(inputs)-1`` is classic SecAgg. ``dropouts`` maps stage names
    to clients that stop before sending that stage's message. ``malicious=True`` adds signed keys
    and the consistency check. ``adversary`` is one of "overlap", "inconsistent_views",
    "forged_key", "replay", "tamper", or an :class:`~secagg.adversary.Adversary`, including the
    regression attacks of :data:`~secagg.adversary.REGRESSION_ATTACKS` and the searchable
    :class:`~secagg.adversary.GenericAdversary`. ``corrupt`` names clients that collude with the
    server (they follow the protocol but hand the server everything they hold); an adversary
    may name more. ``dropout_rate`` and ``corrupt_rate`` are the threat model's delta and gamma
    and are bound into the round's config: the round refuses to release a sum of fewer than
    the model's minimum of survivors.

    ``seed`` fixes only the harness's own choices (the round id); key material always comes from
    the operating system's CSPRNG. ``round_id`` (16 to 32 bytes) names the round explicitly: a
    coordinator passes the id its sites' ledgers charge the release under. Raises :class:`ProtocolAbort` if the round cannot finish; the
    exception's ``transcript`` attribute holds the server's view up to that point.
    """
    arrays, dim = _check_inputs(inputs, modulus_bits, input_bits)
    clients = sorted(arrays)
    drop = dropout_plan(dropouts, clients, malicious=malicious)
    params = choose_parameters(len(clients), neighbors=neighbors, threshold=threshold,
                               dropout_rate=dropout_rate, corrupt_rate=corrupt_rate,
                               malicious=malicious)
    if round_id is not None:
        if not isinstance(round_id, bytes) or not 16 <= len(round_id) <= 32:
            raise ConfigurationError("round_id must be 16 to 32 bytes")
    elif seed is None:
        round_id = os.urandom(32)
    else:
        round_id = hashlib.sha256(b"cohort/secagg/harness-round\x00"
                                  + int(seed).to_bytes(16, "big", signed=True)).digest()
    config = RoundConfig(round_id=round_id, clients=tuple(clients), dim=dim,
                         modulus_bits=modulus_bits, neighbors=params.neighbors,
                         threshold=params.threshold, malicious=malicious,
                         corrupt_rate=corrupt_rate, dropout_rate=dropout_rate)
    earlier = None
    if adversary == "replay":
        earlier = simulate_round(arrays, modulus_bits, params.neighbors, params.threshold,
                                 None, malicious, None if seed is None else seed + 1,
                                 dropout_rate=dropout_rate, corrupt_rate=corrupt_rate).transcript
    attack = make_adversary(adversary, earlier=earlier)
    if attack.needs_malicious_mode and not malicious:
        raise ConfigurationError(
            f"the {adversary!r} attack is stopped only by malicious-server mode (signed keys and "
            "the consistency check); run it with malicious=True")
    attack.setup(config, arrays)
    colluding = frozenset(int(c) for c in (corrupt or ())) | attack.corrupt
    if not colluding <= config.client_set:
        raise ConfigurationError("corrupt clients must be clients of the round")
    return _Round(config, arrays, drop, attack, colluding).run()


@dataclass
class Coalition:
    """What the adversary holds besides the server's view: the corrupt clients (and any extra
    client instances it ran under corrupt identities) with every share they received, and, for
    the oracle, the public facts of each honest client's round (who holds its shares at which
    Shamir x-coordinate, whom it masked with)."""

    corrupt: frozenset[int] = frozenset()
    held: list[tuple[int, dict[int, tuple[int, int]]]] = field(default_factory=list)
    """(corrupt holder, {owner: (share of b, share of s)}) for every corrupt client instance."""
    ranks: dict[int, dict[int, int]] = field(default_factory=dict)
    partners: dict[int, frozenset[int]] = field(default_factory=dict)


class _Round:
    def __init__(self, config: RoundConfig, inputs: dict[int, np.ndarray],
                 drop: dict[Stage, frozenset[int]], attack: Adversary,
                 corrupt: frozenset[int]) -> None:
        self.config = config
        self.inputs = inputs
        self.drop = drop
        self.attack = attack
        directory = None
        identities: dict[int, Ed25519PrivateKey] = {}
        if config.malicious:
            identities = {c: Ed25519PrivateKey.generate() for c in config.clients}
            directory = {c: k.public_key() for c, k in identities.items()}
        self.clients = {c: SecAggClient(c, config, identity=identities.get(c), directory=directory)
                        for c in config.clients}
        self.coalition = Coalition(corrupt=corrupt)
        attack.enlist(self.coalition, {c: self.clients[c] for c in corrupt},
                      {c: identities[c] for c in corrupt if c in identities}, directory)
        self.server = attack.make_server(config, directory)
        self.transcript = Transcript(config)
        self.alive = set(config.clients)
        self.aborted: dict[int, str] = {}
        self.rejected: list[tuple[int, str, str]] = []

    def _to_server(self, stage: Stage, sender: int, data: bytes) -> None:
        # The server's view starts with what the client sent; whatever the adversary makes of
        # it (drops, injections, replays) is what the server's state machine then receives.
        self.transcript.record(stage, Direction.TO_SERVER, sender, data)
        for message in self.attack.to_server(stage, sender, data):
            if message is not data:
                self.transcript.record(stage, Direction.TO_SERVER, sender, message)
            try:
                # The sender is the transport's authenticated identity, not the header's.
                self.server.receive(message, sender=sender)
            except InvalidMessage as exc:
                self.rejected.append((sender, type(exc).__name__, str(exc)))

    def _stage(self, stage: Stage, outgoing: dict[int, bytes] | None, act, *,
               drops: bool = True) -> None:
        if drops:
            for c in sorted(self.alive):
                if c in self.drop[stage]:
                    self.alive.discard(c)
        if outgoing is None:
            for c in sorted(self.alive):
                self._to_server(stage, c, act(self.clients[c], None))
            return
        delivered = self.attack.to_clients(stage, outgoing)
        for c in sorted(self.alive):
            reply = None
            for message in delivered.get(c, []):
                self.transcript.record(stage, Direction.FROM_SERVER, c, message)
                try:
                    reply = act(self.clients[c], message)
                    break
                except ProtocolAbort as exc:
                    self.aborted[c] = str(exc)
                    break
                except InvalidMessage as exc:
                    self.rejected.append((c, type(exc).__name__, str(exc)))
            if reply is None:
                self.alive.discard(c)
            else:
                self._to_server(stage, c, reply)

    def _close(self, stage: Stage) -> dict[int, bytes]:
        for sender, message in self.attack.flush(stage):
            try:
                self.server.receive(message, sender=sender)
            except InvalidMessage as exc:
                self.rejected.append((sender, type(exc).__name__, str(exc)))
        return self.server.close_stage()

    def run(self) -> RoundResult:
        try:
            return self._run()
        except ProtocolAbort as exc:
            # Auditors get the server's view up to the abort, to check that it reveals nothing.
            exc.transcript = self.transcript
            exc.coalition = self._close_coalition()
            raise

    def _close_coalition(self) -> Coalition:
        coalition = self.coalition
        for c, client in self.clients.items():
            if c not in coalition.corrupt:
                coalition.ranks[c] = dict(client.holder_ranks)
                coalition.partners[c] = client.mask_partners
        return coalition

    def _run(self) -> RoundResult:
        server, attack, close = self.server, self.attack, self._close
        self._stage(Stage.ADVERTISE_KEYS, None, lambda client, _: client.advertise_keys())
        outgoing = close(Stage.ADVERTISE_KEYS)
        # The second half of advertise_keys: the roster of commitments out, the nonces back.
        self._stage(Stage.ADVERTISE_KEYS, outgoing, lambda client, m: client.reveal_nonce(m),
                    drops=False)
        outgoing = close(Stage.ADVERTISE_KEYS)
        self._stage(Stage.SHARE_KEYS, outgoing, lambda client, m: client.share_keys(m))
        outgoing = close(Stage.SHARE_KEYS)
        self._stage(Stage.MASKED_INPUT, outgoing,
                    lambda client, m: client.masked_input(m, self.inputs[client.id]))
        for c in sorted(self.coalition.corrupt):
            self.coalition.held.append((c, self.clients[c].corrupt_state()))
        attack.after_masked_input()
        outgoing = close(Stage.MASKED_INPUT)
        if self.config.malicious:
            self._stage(Stage.CONSISTENCY_CHECK, outgoing,
                        lambda client, m: client.consistency_check(m))
            outgoing = close(Stage.CONSISTENCY_CHECK)
        self._stage(Stage.UNMASK, outgoing, lambda client, m: client.unmask(m))
        close(Stage.UNMASK)
        result = server.result
        return RoundResult(aggregate=result.aggregate, included=result.included,
                           transcript=self.transcript, config=self.config,
                           aborted=dict(self.aborted), rejected=tuple(self.rejected),
                           liars=result.liars, share_mismatches=result.share_mismatches,
                           coalition=self._close_coalition())
