"""The client side of a SecAgg+ round: a pure state machine (messages in, messages out).

A client holds two ephemeral X25519 key pairs (``c`` for the encrypted channel to each
neighbour, ``s`` for the pairwise masks), a 256-bit self-mask seed ``b`` and a graph nonce. It
commits to the nonce when it advertises its keys and reveals it only after seeing the roster,
so the neighbour graph (fixed over the whole cohort of the round's config) comes from randomness
the server cannot steer. It Shamir-shares ``b`` and the private half of ``s`` among its
neighbours and itself, masks its input with the self mask and with one pairwise mask per live
neighbour, and finally reveals, for each neighbour, the share of ``b`` if that neighbour survived
or the share of ``s`` if it dropped — never both, and only once, and in malicious-server mode
only after seeing a quorum of signatures on its own view of the round (roster, survivors and
dropped clients) that no second view could also gather. Any sign that the server is cheating
(a bad signature, an inconsistent roster or view, too few survivors, a share that fails to
decrypt) aborts the client with :class:`~secagg.errors.ProtocolAbort` and wipes its secrets.

No method does I/O or reads a clock; ``os.urandom``/``secrets`` are the only sources of secrets.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from array import array
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import _testing, _views
from .config import RoundConfig
from .errors import InvalidInput, InvalidMessage, ProtocolAbort
from .graph import NONCE_BYTES, nonce_commitment, ring_holders
from .hazmat import crypto, shamir
from .hazmat.packing import pack
from .hazmat.prg import MaskGenerator, word_dtype
from .messages import (
    Advertise,
    ConsistencyRequest,
    ConsistencySignature,
    Delivery,
    Kind,
    MaskedInput,
    Reveal,
    RosterEntry,
    Shares,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
    SHARE_PLAINTEXT_BYTES,
    decode,
)
from .stages import Stage

__all__ = ["ClientState", "SecAggClient", "advertise_payload", "consistency_payload",
           "opens_mask_key", "opens_seed", "roster_digest", "seed_commitment",
           "share_associated_data"]

_U32 = struct.Struct(">I")
SEED_BYTES = 32


class ClientState(enum.Enum):
    NEW = "new"
    AWAIT_ROSTER = "await_roster"
    AWAIT_NONCES = Stage.SHARE_KEYS.value
    AWAIT_DELIVERY = Stage.MASKED_INPUT.value
    AWAIT_CONSISTENCY = Stage.CONSISTENCY_CHECK.value
    AWAIT_UNMASK = Stage.UNMASK.value
    DONE = "done"
    ABORTED = "aborted"


def advertise_payload(config: RoundConfig, client: int, c_pk: bytes, s_pk: bytes,
                      commitment: bytes) -> bytes:
    return config.tag + _U32.pack(client) + c_pk + s_pk + commitment


def roster_digest(config: RoundConfig, entries: tuple[RosterEntry, ...],
                  nonces: tuple[tuple[int, bytes], ...]) -> bytes:
    """What a client's view of the roster is: every advertised key, commitment and nonce."""
    h = hashlib.sha256(b"cohort/secagg/v2/roster\x00" + config.tag)
    pack = _U32.pack
    h.update(b"".join(pack(e.client) + e.channel_key + e.mask_key + e.commitment
                      for e in entries))
    h.update(b"".join(pack(client) + nonce for client, nonce in nonces))
    return h.digest()


def consistency_payload(config: RoundConfig, roster: bytes, survivors: tuple[int, ...],
                        dropped: tuple[int, ...]) -> bytes:
    """The view a client signs: the round, its roster digest, and the survivor and dropped
    lists (each length-prefixed, so no two views share an encoding)."""
    return (config.tag + roster + _U32.pack(len(survivors))
            + b"".join(_U32.pack(c) for c in survivors) + _U32.pack(len(dropped))
            + b"".join(_U32.pack(c) for c in dropped))


def seed_commitment(config: RoundConfig, client: int, seed: bytes) -> bytes:
    return hashlib.sha256(b"cohort/secagg/v1/seed-commitment\x00" + config.tag
                          + _U32.pack(client) + seed).digest()


def opens_seed(config: RoundConfig, client: int, commitment: bytes):
    """The check that a reconstructed value is the self-mask seed ``client`` committed to."""
    return lambda v: (v >> 256 == 0
                      and seed_commitment(config, client, v.to_bytes(32, "big")) == commitment)


def opens_mask_key(mask_public: bytes):
    """The check that a reconstructed value is the private half of the advertised mask key."""
    def check(v: int) -> bool:
        if v >> 256:
            return False
        try:
            pair = crypto.KeyPair.from_private_bytes(v.to_bytes(32, "big"))
        except ValueError:
            return False
        return pair.public == mask_public
    return check


def share_associated_data(config: RoundConfig, sender: int, recipient: int) -> bytes:
    return b"cohort/secagg/v1/share\x00" + config.tag + _U32.pack(sender) + _U32.pack(recipient)


class SecAggClient:
    """One client's side of one round.

    ``identity`` (the client's provisioned Ed25519 key) and ``directory`` (every client's identity
    public key) are required in malicious-server mode, where keys and views are signed.
    """

    def __init__(self, client_id: int, config: RoundConfig, *,
                 identity: Ed25519PrivateKey | None = None,
                 directory: Mapping[int, Ed25519PublicKey] | None = None) -> None:
        if client_id not in config.client_set:
            raise InvalidInput("client id is not part of this round")
        if config.malicious and (identity is None or directory is None):
            raise InvalidInput("malicious-server mode needs an identity key and a key directory")
        self.id = client_id
        self.config = config
        self._identity = identity
        self._directory = dict(directory) if directory is not None else None
        self.state = ClientState.NEW
        self._c: crypto.KeyPair | None = None
        self._s: crypto.KeyPair | None = None
        self._nonce: bytes | None = None
        self._commitment: bytes | None = None
        self._roster: _views.RosterView | None = None
        self._unadvertised: frozenset[int] = frozenset()
        self._roster_digest: bytes | None = None
        self._seed: bytes | None = None
        self._mask_keys: dict[int, bytes] = {}
        self._neighbors: frozenset[int] = frozenset()
        self._live: frozenset[int] = frozenset()
        self._ring: array = array("I")
        self.holder_ranks: dict[int, int] = {}
        """Shamir x-coordinate of each holder of this client's shares (public, for audits)."""
        self._own_shares: tuple[int, int] | None = None
        self._held: dict[int, tuple[int, int]] = {}  # neighbour -> (share of b, share of s)
        self._view: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        # The (survivors, dropped) this client gave its shares for: public, kept after the
        # wipe so the site can check the coordinator's account of the round against it.
        self.unmasked_view: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._channel: dict[int, bytes] = {}

    # -- helpers ---------------------------------------------------------------------------
    def _expect(self, state: ClientState) -> None:
        if self.state is ClientState.ABORTED:
            raise ProtocolAbort("this client has aborted the round", stage=state.value)
        if self.state is not state:
            raise InvalidMessage(f"client is in state {self.state.value}, not {state.value}")

    def _abort(self, reason: str, stage: Stage) -> ProtocolAbort:
        self.wipe()
        self.state = ClientState.ABORTED
        return ProtocolAbort(reason, stage=stage.value)

    def wipe(self) -> None:
        """Drop every secret this client holds."""
        self._c = self._s = None
        self._seed = None
        self._nonce = None
        self._mask_keys = {}
        self._own_shares = None
        self._held = {}
        self._channel = {}

    @property
    def signed_view(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The (survivors, dropped) this client signed in malicious mode, once it has."""
        return self._view

    @property
    def neighbors(self) -> frozenset[int]:
        """This client's neighbours in the cohort's graph (live or not)."""
        return self._neighbors

    @property
    def live_neighbors(self) -> frozenset[int]:
        """Neighbours that advertised keys: the ones this client shares with and masks with."""
        return self._live

    @property
    def mask_partners(self) -> frozenset[int]:
        """Neighbours whose pairwise mask is in this client's masked input (public for audits:
        it is the set of senders the server delivered shares from)."""
        return frozenset(self._partners)

    _partners: frozenset[int] = frozenset()

    # -- stage 0: advertise keys, then open the graph-nonce commitment ---------------------
    def advertise_keys(self) -> bytes:
        self._expect(ClientState.NEW)
        self._c, self._s = crypto.KeyPair(), crypto.KeyPair()
        self._nonce = os.urandom(NONCE_BYTES)
        self._commitment = nonce_commitment(self.config.tag, self.id, self._nonce)
        signature = None
        if self._identity is not None:
            signature = crypto.sign(self._identity, b"advertise",
                                    advertise_payload(self.config, self.id, self._c.public,
                                                      self._s.public, self._commitment))
        self.state = ClientState.AWAIT_ROSTER
        return Advertise(self.id, self._c.public, self._s.public, self._commitment,
                         signature).encode(self.config)

    def reveal_nonce(self, message: bytes) -> bytes:
        """Check the roster of advertised keys and commitments; reveal this client's nonce."""
        self._expect(ClientState.AWAIT_ROSTER)
        config = self.config
        view = _views.roster_view(config, message)  # decoded once for the process's clients
        roster, entries = view, view.by_client
        mine = entries.get(self.id)
        if (mine is None or mine.channel_key != self._c.public or mine.mask_key != self._s.public
                or mine.commitment != self._commitment):
            raise self._abort("the roster does not carry this client's keys", Stage.SHARE_KEYS)
        if len(entries) < config.min_survivors:
            raise self._abort(f"only {len(entries)} clients advertised keys; the model's minimum "
                              f"is {config.min_survivors}", Stage.SHARE_KEYS)
        if config.malicious:
            for e in roster.entries:
                public = self._directory.get(e.client)
                if public is None or e.signature is None or not _views.signature_holds(
                        public, e.signature, b"advertise",
                        advertise_payload(config, e.client, e.channel_key, e.mask_key,
                                          e.commitment)):
                    raise self._abort("a roster entry is not signed by its client's identity",
                                      Stage.SHARE_KEYS)
        if view.repeats_key:
            raise self._abort("the roster repeats a public key", Stage.SHARE_KEYS)
        # The checked view is shared with every client of this process that got the same
        # bytes: holding it costs this client nothing per roster entry.
        self._roster = view
        self.state = ClientState.AWAIT_NONCES
        return Reveal(self.id, self._nonce).encode(config)

    # -- stage 1 ---------------------------------------------------------------------------
    def share_keys(self, message: bytes) -> bytes:
        """Check every roster member's revealed nonce, derive the graph, send the shares."""
        self._expect(ClientState.AWAIT_NONCES)
        config = self.config
        # The O(n) checks of the nonces against the roster, and the ring they fix, once for
        # every client of this process that got the same bytes (see _views).
        graph = _views.graph_view(config, self._roster, message)
        entries = self._roster.by_client
        if graph.error is not None:
            raise self._abort(graph.error, Stage.SHARE_KEYS)
        if graph.nonce_of[self.id] != self._nonce:
            raise self._abort("the server changed this client's nonce", Stage.SHARE_KEYS)
        order = graph.order
        ranked = ring_holders(order, graph.position[self.id], config.neighbors)
        live = [v for v in ranked if v in entries]
        if len(live) + 1 < config.threshold:
            raise self._abort("too few neighbours advertised keys to reach the threshold",
                              Stage.SHARE_KEYS)
        # Every check passed: now derive secrets and change state.
        try:
            channel = {v: self._c.exchange(entries[v].channel_key) for v in live}
            self._mask_keys = {v: crypto.pairwise_mask_key(self._s.exchange(entries[v].mask_key),
                                                           config.tag, self.id, v)
                               for v in live}
        except InvalidMessage:
            raise self._abort("a neighbour advertised an invalid key", Stage.SHARE_KEYS) from None
        self._roster_digest = graph.digest
        self._roster = None
        # Later stages only ask whether a client advertised: the few that did not say it.
        self._unadvertised = graph.unadvertised
        self._ring = graph.ring
        self._neighbors = frozenset(ranked)
        self._live = frozenset(live)
        self._seed = os.urandom(SEED_BYTES)
        # The client's own share sits at x = 1 and its i-th nearest neighbour's at x = i + 2
        # (over the whole cohort's graph, so ranks do not depend on who advertised).
        ranks = {v: i + 2 for i, v in enumerate(ranked)}
        self.holder_ranks = {self.id: 1} | {v: ranks[v] for v in live}
        xs = [1] + [ranks[v] for v in live]
        b_shares = shamir.split(int.from_bytes(self._seed, "big"), config.threshold, xs)
        s_shares = shamir.split(int.from_bytes(self._s.private_bytes(), "big"),
                                config.threshold, xs)
        self._own_shares = (b_shares[0], s_shares[0])
        sealed = []
        for v, b_share, s_share in zip(live, b_shares[1:], s_shares[1:]):
            key = crypto.channel_key(channel[v], config.tag, self.id, v)
            plaintext = (_U32.pack(self.id) + _U32.pack(v) + shamir.encode_share(b_share)
                         + shamir.encode_share(s_share))
            sealed.append((v, crypto.seal(key, plaintext,
                                          share_associated_data(config, self.id, v))))
        self._channel = channel
        self.state = ClientState.AWAIT_DELIVERY
        return Shares(self.id, seed_commitment(config, self.id, self._seed),
                      tuple(sorted(sealed))).encode(config)

    # -- stage 2 ---------------------------------------------------------------------------
    def masked_input(self, message: bytes, values: np.ndarray) -> bytes:
        self._expect(ClientState.AWAIT_DELIVERY)
        config = self.config
        x = self._check_input(values)
        delivery: Delivery = decode(message, config, Kind.DELIVERY)
        if delivery.recipient != self.id:
            raise InvalidMessage("delivery is addressed to another client")
        held: dict[int, tuple[int, int]] = {}
        for sender, sealed in delivery.sealed:
            if sender not in self._live:
                raise self._abort("the server delivered a share from a non-neighbour",
                                  Stage.MASKED_INPUT)
            key = crypto.channel_key(self._channel[sender], config.tag, sender, self.id)
            try:
                plaintext = crypto.open_sealed(key, sealed,
                                               share_associated_data(config, sender, self.id))
                if len(plaintext) != SHARE_PLAINTEXT_BYTES or plaintext[:8] != (
                        _U32.pack(sender) + _U32.pack(self.id)):
                    raise InvalidMessage("decryption failed")
                held[sender] = (shamir.decode_share(plaintext[8:74]),
                                shamir.decode_share(plaintext[74:]))
            except (InvalidMessage, ValueError):
                raise self._abort("a share failed its integrity check",
                                  Stage.MASKED_INPUT) from None
        if len(held) + 1 < config.threshold:
            raise self._abort("too few live neighbours to reach the threshold", Stage.MASKED_INPUT)
        prg = MaskGenerator(config.dim, config.modulus_bits)
        y = x  # _check_input's astype made it this round's own copy: mask it in place
        prg.add(y, crypto.self_mask_key(self._seed, config.tag, self.id))
        for v in sorted(held):
            if self.id < v:
                prg.add(y, self._mask_keys[v])
            else:
                prg.subtract(y, self._mask_keys[v])
        self._held = held
        self._partners = frozenset(held)
        self._mask_keys = {}
        self._channel = {}
        self.state = (ClientState.AWAIT_CONSISTENCY if config.malicious
                      else ClientState.AWAIT_UNMASK)
        return MaskedInput(self.id, pack(y, config.modulus_bits)).encode(config)

    def _check_input(self, values: np.ndarray) -> np.ndarray:
        config = self.config
        x = np.asarray(values)
        if x.ndim != 1 or x.shape[0] != config.dim:
            raise InvalidInput(f"input must be a 1-D array of {config.dim} entries")
        if x.dtype.kind not in "ui":
            raise InvalidInput("input must have an integer dtype")
        if x.size and (int(x.min()) < 0 or int(x.max()) >> config.modulus_bits):
            raise InvalidInput(f"input entries must lie in [0, 2**{config.modulus_bits})")
        return x.astype(word_dtype(config.modulus_bits))

    def _survivors(self, message: bytes, kind: Kind) -> _views.SurvivorView:
        """The decoded request, with its public checks done once per process (see _views)."""
        return _views.survivor_view(self.config, kind, message, self._unadvertised)

    def _check_view(self, view: _views.SurvivorView, stage: Stage) -> None:
        """Refuse a survivor/dropped view that the model or this client's own knowledge rules
        out. Raises ProtocolAbort (and wipes) on any failure."""
        alive, gone = view.alive, view.gone
        if view.overlap:
            raise self._abort("the server listed a client both as survivor and as dropped", stage)
        if self.id not in alive:
            raise self._abort("the server says this client dropped although it sent its input",
                              stage)
        if view.outside:
            raise self._abort("the view names clients that never advertised keys", stage)
        if len(alive) < self.config.min_survivors:
            raise self._abort(f"only {len(alive)} survivors; the model's minimum is "
                              f"{self.config.min_survivors}", stage)
        # Every neighbour whose shares this client holds shared its keys, so it must be listed;
        # a live neighbour listed as a survivor must have had its shares delivered here.
        if not all(v in alive or v in gone for v in self._held):
            raise self._abort("the view leaves out a neighbour that shared its keys", stage)
        if any(v in alive and v not in self._held for v in self._live):
            raise self._abort("a survivor's shares were withheld from this client", stage)
        if self.config.malicious and not _testing.planted("no_ring_cut_check"):
            self._check_no_cut(alive, stage)

    def _check_no_cut(self, alive: set[int], stage: Stage) -> None:
        """A malicious server knows the graph; dropping (or claiming dropped) every client in
        two runs of k/2 ring places would isolate the small arc between them, whose sum it
        could then strip of all masks. Refuse a view in which any k/2 consecutive places hold
        more non-survivors than the model lets chance produce (see params)."""
        config = self.config
        limit = config.max_missing_in_window
        half = config.neighbors // 2
        ring = self._ring
        n = len(ring)
        if limit >= half or n < 2:
            return
        missing = [0 if c in alive else 1 for c in ring]
        window = sum(missing[:half])
        for start in range(n):
            if window > limit:
                raise self._abort(f"{window} of {half} consecutive ring places have no survivor;"
                                  f" the model allows {limit}: the survivors' graph could be "
                                  "cut", stage)
            window += missing[(start + half) % n] - missing[start]

    # -- stage 3 (malicious-server mode) -----------------------------------------------------
    def consistency_check(self, message: bytes) -> bytes:
        self._expect(ClientState.AWAIT_CONSISTENCY)
        view = self._survivors(message, Kind.CONSISTENCY_REQUEST)
        request: ConsistencyRequest = view.request
        self._check_view(view, Stage.CONSISTENCY_CHECK)
        signature = crypto.sign(self._identity, b"consistency",
                                consistency_payload(self.config, self._roster_digest,
                                                    request.survivors, request.dropped))
        self._view = (request.survivors, request.dropped)
        self.state = ClientState.AWAIT_UNMASK
        return ConsistencySignature(self.id, signature).encode(self.config)

    # -- stage 4 ---------------------------------------------------------------------------
    def unmask(self, message: bytes) -> bytes:
        self._expect(ClientState.AWAIT_UNMASK)
        config = self.config
        view = self._survivors(message, Kind.UNMASK_REQUEST)
        request: UnmaskRequest = view.request
        survivors, dropped = view.alive, view.gone
        if not config.malicious:
            self._check_view(view, Stage.UNMASK)
        else:
            # The view was checked when this client signed it; it must be that view.
            if (request.survivors, request.dropped) != self._view:
                raise self._abort("the view differs from the one this client signed",
                                  Stage.UNMASK)
            payload = consistency_payload(config, self._roster_digest, request.survivors,
                                          request.dropped)
            signers = set()
            for signer, signature in request.signatures:
                public = self._directory.get(signer)
                if public is None or signer not in survivors or not _views.signature_holds(
                        public, signature, b"consistency", payload):
                    raise self._abort("a survivor-list signature is invalid", Stage.UNMASK)
                signers.add(signer)
            if len(signers) < config.signature_quorum:
                raise self._abort(f"only {len(signers)} clients signed this view; "
                                  f"{config.signature_quorum} are needed so that no other view "
                                  "can exist", Stage.UNMASK)
        out: list[tuple[int, ShareKind, bytes]] = [
            (self.id, ShareKind.SELF_MASK_SEED, shamir.encode_share(self._own_shares[0]))]
        for v in sorted(self._held):
            b_share, s_share = self._held[v]
            if v in survivors:
                out.append((v, ShareKind.SELF_MASK_SEED, shamir.encode_share(b_share)))
                if _testing.planted("client_reveals_both_shares"):
                    out.append((v, ShareKind.MASK_KEY, shamir.encode_share(s_share)))
            elif v in dropped:
                out.append((v, ShareKind.MASK_KEY, shamir.encode_share(s_share)))
        out.sort(key=lambda share: share[0])
        self.unmasked_view = (request.survivors, request.dropped)
        self.wipe()
        self.state = ClientState.DONE
        return UnmaskShares(self.id, tuple(out)).encode(config)

    # -- one entry point for a transport -------------------------------------------------------
    def respond(self, message: bytes, values: np.ndarray) -> bytes | None:
        """This client's reply to the server's next message, whatever stage it is in (its
        input ``values`` go into the masked-input stage); None once the round is done.
        A transport that relays bytes calls only this and :meth:`advertise_keys`."""
        step = {ClientState.AWAIT_ROSTER: self.reveal_nonce,
                ClientState.AWAIT_NONCES: self.share_keys,
                ClientState.AWAIT_DELIVERY: lambda m: self.masked_input(m, values),
                ClientState.AWAIT_CONSISTENCY: self.consistency_check,
                ClientState.AWAIT_UNMASK: self.unmask}.get(self.state)
        if step is not None:
            return step(message)
        if self.state is ClientState.DONE:
            return None
        raise InvalidMessage(f"the secagg client is {self.state.value}")

    # -- for the test harness's adversary ----------------------------------------------------
    def corrupt_state(self) -> dict[int, tuple[int, int]]:
        """Everything this client holds about its neighbours' secrets: (share of b, share of s)
        per neighbour. Only the harness calls this, for clients its adversary corrupts."""
        return dict(self._held)
