"""Typed, versioned protocol messages and their byte encoding.

Every message starts with the same 48-byte header: magic ``b"CSA"``, format version, message
kind, the 32-byte round tag, the sender id (the server is ``0xFFFFFFFF``) and 7 reserved zero
bytes. Decoding checks, before
anything else is read, that the header names this round and the expected kind, and then that
every count, length and id is within what the round's configuration allows, with no trailing
bytes. Nothing is trusted because it parsed: the state machines still check who may say what.
"""

from __future__ import annotations

import enum
import itertools
import operator
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .config import SERVER_ID, RoundConfig
from .errors import InvalidMessage, StageError
from .hazmat.crypto import KEY_BYTES, NONCE_BYTES, SIGNATURE_BYTES, TAG_BYTES
from .hazmat.packing import packed_size
from .hazmat.shamir import SHARE_BYTES
from .graph import NONCE_BYTES as NONCE_BYTES_GRAPH

__all__ = [
    "MAGIC",
    "HEADER_BYTES",
    "VERSION",
    "Kind",
    "ShareKind",
    "Advertise",
    "RosterEntry",
    "Roster",
    "encode_deliveries",
    "Reveal",
    "Nonces",
    "Shares",
    "Delivery",
    "MaskedInput",
    "ConsistencyRequest",
    "ConsistencySignature",
    "UnmaskRequest",
    "UnmaskShares",
    "SHARE_PLAINTEXT_BYTES",
    "SEALED_SHARE_BYTES",
    "SEALED_RECORD_BYTES",
    "UNMASK_RECORD_BYTES",
    "peek",
    "decode",
    "expected_shares",
    "expected_unmask",
]

MAGIC = b"CSA"
VERSION = 2
# 7 reserved zero bytes make the header 48 bytes long, so that a masked vector's payload starts
# 8-byte aligned and numpy reads its lanes without the slow unaligned path.
_HEADER = struct.Struct(">3sBB32sI7s")
_RESERVED = bytes(7)
HEADER_BYTES = _HEADER.size
_U32 = struct.Struct(">I")
_U8 = struct.Struct(">B")
COMMIT_BYTES = 32
SHARE_PLAINTEXT_BYTES = 4 + 4 + 2 * SHARE_BYTES
SEALED_SHARE_BYTES = NONCE_BYTES + SHARE_PLAINTEXT_BYTES + TAG_BYTES


class Kind(enum.IntEnum):
    ADVERTISE = 1
    ROSTER = 2
    SHARES = 3
    DELIVERY = 4
    MASKED_INPUT = 5
    CONSISTENCY_REQUEST = 6
    CONSISTENCY_SIGNATURE = 7
    UNMASK_REQUEST = 8
    UNMASK_SHARES = 9
    REVEAL = 10  # a client's graph nonce, revealed after it has seen the roster of commitments
    NONCES = 11  # every roster member's revealed nonce, which fixes the neighbour graph


class ShareKind(enum.IntEnum):
    SELF_MASK_SEED = 0  # share of b_u: revealed only for clients that sent their masked input
    MASK_KEY = 1  # share of the mask private key s_u: revealed only for dropped clients


class _Reader:
    """Bounds-checked cursor over a message body."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise InvalidMessage("message is truncated")
        out = bytes(self.data[self.pos:end])
        self.pos = end
        return out

    def view(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise InvalidMessage("message is truncated")
        out = memoryview(self.data)[self.pos:end]
        self.pos = end
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u8(self) -> int:
        return self.take(1)[0]

    def count(self, limit: int) -> int:
        n = self.u32()
        if n > limit:
            raise InvalidMessage("message lists more entries than the round allows")
        return n

    def ids(self, limit: int, config: RoundConfig) -> tuple[int, ...]:
        n = self.count(limit)
        raw = self.take(4 * n)
        out = struct.unpack(f">{n}I", raw)
        _check_ids(out, config)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise InvalidMessage("message has trailing bytes")


def _check_ids(ids: tuple[int, ...] | list[int], config: RoundConfig) -> None:
    if not all(map(operator.lt, ids, itertools.islice(ids, 1, None))):
        raise InvalidMessage("id list is not strictly increasing")
    if not config.client_set.issuperset(ids):
        raise InvalidMessage("id list names a client outside the round")


_SEALED_RECORD = struct.Struct(f">I{SEALED_SHARE_BYTES}s")
_UNMASK_RECORD = struct.Struct(f">IB{SHARE_BYTES}s")
_NONCE_RECORD = struct.Struct(f">I{NONCE_BYTES_GRAPH}s")
_ROSTER_RECORD = struct.Struct(f">I{KEY_BYTES}s{KEY_BYTES}s{COMMIT_BYTES}sB")
_SHARE_KINDS = (ShareKind.SELF_MASK_SEED, ShareKind.MASK_KEY)
SEALED_RECORD_BYTES = _SEALED_RECORD.size
UNMASK_RECORD_BYTES = _UNMASK_RECORD.size


def _sealed_records(r: _Reader, n: int) -> tuple[tuple[int, bytes], ...]:
    """n fixed-size (client id, sealed share) records, parsed in one pass."""
    return tuple(_SEALED_RECORD.iter_unpack(r.take(n * _SEALED_RECORD.size)))


def _header(kind: Kind, config: RoundConfig, sender: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, kind, config.tag, sender, _RESERVED)


def _ids(ids: tuple[int, ...]) -> bytes:
    return _U32.pack(len(ids)) + struct.pack(f">{len(ids)}I", *ids)


def _signature(has: int, r: _Reader) -> bytes | None:
    if has == 0:
        return None
    if has != 1:
        raise InvalidMessage("malformed signature flag")
    return r.take(SIGNATURE_BYTES)


def _opt_sig(sig: bytes | None) -> bytes:
    return b"\x00" if sig is None else b"\x01" + sig


@dataclass(frozen=True)
class Advertise:
    """A client's two public keys and its commitment to its graph nonce (signed in malicious
    mode)."""

    sender: int
    channel_key: bytes
    mask_key: bytes
    commitment: bytes
    signature: bytes | None

    kind = Kind.ADVERTISE

    def encode(self, config: RoundConfig) -> bytes:
        return (_header(self.kind, config, self.sender) + self.channel_key + self.mask_key
                + self.commitment + _opt_sig(self.signature))

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "Advertise":
        c_pk, s_pk, commitment = r.take(KEY_BYTES), r.take(KEY_BYTES), r.take(COMMIT_BYTES)
        return cls(sender, c_pk, s_pk, commitment, _signature(r.u8(), r))


@dataclass(frozen=True, slots=True)  # slots: every client builds n of them per round
class RosterEntry:
    client: int
    channel_key: bytes
    mask_key: bytes
    commitment: bytes
    signature: bytes | None


@dataclass(frozen=True)
class Reveal:
    """A client opens its nonce commitment, after it has seen the whole roster."""

    sender: int
    nonce: bytes

    kind = Kind.REVEAL

    def encode(self, config: RoundConfig) -> bytes:
        return _header(self.kind, config, self.sender) + self.nonce

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "Reveal":
        return cls(sender, r.take(NONCE_BYTES_GRAPH))


@dataclass(frozen=True)
class Nonces:
    """The server relays every roster member's revealed nonce."""

    nonces: tuple[tuple[int, bytes], ...]  # (client, nonce), strictly increasing ids

    kind = Kind.NONCES
    sender = SERVER_ID

    def encode(self, config: RoundConfig) -> bytes:
        parts = [_header(self.kind, config, SERVER_ID), _U32.pack(len(self.nonces))]
        parts.extend(_U32.pack(c) + nonce for c, nonce in self.nonces)
        return b"".join(parts)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "Nonces":
        n = r.count(config.n)
        nonces = tuple(_NONCE_RECORD.iter_unpack(r.take(n * _NONCE_RECORD.size)))
        _check_ids([c for c, _ in nonces], config)
        return cls(nonces)


@dataclass(frozen=True)
class Roster:
    entries: tuple[RosterEntry, ...]

    kind = Kind.ROSTER
    sender = SERVER_ID

    def encode(self, config: RoundConfig) -> bytes:
        parts = [_header(self.kind, config, SERVER_ID), _U32.pack(len(self.entries))]
        for e in self.entries:
            parts.append(_U32.pack(e.client) + e.channel_key + e.mask_key + e.commitment
                         + _opt_sig(e.signature))
        return b"".join(parts)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "Roster":
        n = r.count(config.n)
        # One fixed-size unpack per entry (every client decodes the whole roster, so this is
        # the client's O(n) parsing work), then the optional signature.
        data, pos, size, end = r.data, r.pos, _ROSTER_RECORD.size, len(r.data)
        if end - pos == n * size:  # no signatures (semi-honest): one pass over the records
            records = list(_ROSTER_RECORD.iter_unpack(memoryview(data)[pos:end]))
            if any(rec[4] != 0 for rec in records):
                raise InvalidMessage("malformed signature flag")
            r.pos = end
            entries = [RosterEntry(c, ck, mk, cm, None) for c, ck, mk, cm, _ in records]
            _check_ids([e.client for e in entries], config)
            return cls(tuple(entries))
        entries = []
        for _ in range(n):
            if pos + size > end:
                raise InvalidMessage("message is truncated")
            client, c_pk, s_pk, commitment, has = _ROSTER_RECORD.unpack_from(data, pos)
            pos += size
            signature = None
            if has == 1:
                if pos + SIGNATURE_BYTES > end:
                    raise InvalidMessage("message is truncated")
                signature = bytes(data[pos:pos + SIGNATURE_BYTES])
                pos += SIGNATURE_BYTES
            elif has != 0:
                raise InvalidMessage("malformed signature flag")
            entries.append(RosterEntry(client, c_pk, s_pk, commitment, signature))
        r.pos = pos
        _check_ids([e.client for e in entries], config)
        return cls(tuple(entries))


@dataclass(frozen=True)
class Shares:
    """A client's encrypted shares, one per neighbour, and its commitment to its self-mask seed."""

    sender: int
    commitment: bytes
    sealed: tuple[tuple[int, bytes], ...]  # (recipient, nonce || ciphertext || tag)
    records: bytes = field(default=b"", compare=False, repr=False)
    """The (recipient, sealed share) records as they were on the wire, when decoded: the
    server routes them in bulk (:func:`encode_deliveries`)."""

    kind = Kind.SHARES

    def encode(self, config: RoundConfig) -> bytes:
        parts = [_header(self.kind, config, self.sender), self.commitment,
                 _U32.pack(len(self.sealed))]
        parts.extend(_U32.pack(v) + ct for v, ct in self.sealed)
        return b"".join(parts)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "Shares":
        commitment = r.take(COMMIT_BYTES)
        n = r.count(config.n - 1)
        records = r.take(n * _SEALED_RECORD.size)
        sealed = tuple(_SEALED_RECORD.iter_unpack(records))
        _check_ids([v for v, _ in sealed], config)
        return cls(sender, commitment, sealed, records)


@dataclass(frozen=True)
class Delivery:
    """The server forwards to one client the shares its live neighbours encrypted for it."""

    recipient: int
    sealed: tuple[tuple[int, bytes], ...]  # (sender, sealed share)

    kind = Kind.DELIVERY
    sender = SERVER_ID

    def encode(self, config: RoundConfig) -> bytes:
        parts = [_header(self.kind, config, SERVER_ID), _U32.pack(self.recipient),
                 _U32.pack(len(self.sealed))]
        parts.extend(_U32.pack(u) + ct for u, ct in self.sealed)
        return b"".join(parts)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "Delivery":
        recipient = r.u32()
        n = r.count(config.n - 1)
        sealed = _sealed_records(r, n)
        _check_ids([u for u, _ in sealed], config)
        return cls(recipient, sealed)


def encode_deliveries(config: RoundConfig, records: Mapping[int, bytes], *,
                      chunk: int = 64) -> dict[int, bytes]:
    """Every recipient's :class:`Delivery` from every sender's wire records (``Shares.records``),
    routed in bulk: byte for byte ``Delivery(v, ((u, sealed) for senders u in increasing order
    whose records name v)).encode(config)``, for each v in ``records``. Records naming a client
    outside ``records`` are dropped (that neighbour did not share its keys). ``chunk``
    recipients are gathered at a time (it bounds the transient copy, not the output)."""
    width = _SEALED_RECORD.size
    senders = sorted(records)
    header = _header(Kind.DELIVERY, config, SERVER_ID)
    blob = b"".join(records[u] for u in senders)
    if len(blob) % width:
        raise ValueError("records are not whole (recipient, sealed share) records")
    table = np.frombuffer(blob, dtype=np.uint8).reshape(-1, width)
    ids = np.array(senders, dtype=np.int64)
    sender_of = np.repeat(ids, [len(records[u]) // width for u in senders])
    recipient_of = table[:, :4].copy().view(">u4").ravel().astype(np.int64)
    order = np.lexsort((sender_of, recipient_of))
    order = order[np.isin(recipient_of[order], ids)]
    from_ids = sender_of.astype(">u4").view(np.uint8).reshape(-1, 4)
    recipients = recipient_of[order]
    starts = np.searchsorted(recipients, ids, side="left").tolist()
    stops = np.searchsorted(recipients, ids, side="right").tolist()
    out = {}
    pair = struct.Struct(">II").pack
    # A few recipients' rows at a time: one gather per chunk, then each recipient's slice of it
    # (no second copy of every share besides the output, and no numpy call per recipient).
    for first in range(0, len(senders), chunk):
        last = min(first + chunk, len(senders)) - 1
        lo, hi = starts[first], stops[last]
        rows = order[lo:hi]
        part = table[rows]
        part[:, :4] = from_ids[rows]
        blob = part.tobytes()
        for v, a, b in zip(senders[first:last + 1], starts[first:last + 1],
                           stops[first:last + 1]):
            out[v] = header + pair(v, b - a) + blob[(a - lo) * width:(b - lo) * width]
    return out


@dataclass(frozen=True)
class MaskedInput:
    sender: int
    packed: bytes | memoryview  # config.dim entries at config.modulus_bits bits

    kind = Kind.MASKED_INPUT

    def encode(self, config: RoundConfig) -> bytes:
        return _header(self.kind, config, self.sender) + bytes(self.packed)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "MaskedInput":
        size = packed_size(config.dim, config.modulus_bits)
        if len(r.data) - r.pos != size:
            raise InvalidMessage("masked input has the wrong length")
        return cls(sender, r.view(size))


@dataclass(frozen=True)
class ConsistencyRequest:
    """The survivor and dropped lists each client is asked to sign (malicious mode)."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    kind = Kind.CONSISTENCY_REQUEST
    sender = SERVER_ID

    def encode(self, config: RoundConfig) -> bytes:
        return _header(self.kind, config, SERVER_ID) + _ids(self.survivors) + _ids(self.dropped)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "ConsistencyRequest":
        return cls(r.ids(config.n, config), r.ids(config.n, config))


@dataclass(frozen=True)
class ConsistencySignature:
    sender: int
    signature: bytes

    kind = Kind.CONSISTENCY_SIGNATURE

    def encode(self, config: RoundConfig) -> bytes:
        return _header(self.kind, config, self.sender) + self.signature

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "ConsistencySignature":
        return cls(sender, r.take(SIGNATURE_BYTES))


@dataclass(frozen=True)
class UnmaskRequest:
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...] = ()

    kind = Kind.UNMASK_REQUEST
    sender = SERVER_ID

    def encode(self, config: RoundConfig) -> bytes:
        parts = [_header(self.kind, config, SERVER_ID), _ids(self.survivors), _ids(self.dropped),
                 _U32.pack(len(self.signatures))]
        parts.extend(_U32.pack(c) + sig for c, sig in self.signatures)
        return b"".join(parts)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "UnmaskRequest":
        survivors = r.ids(config.n, config)
        dropped = r.ids(config.n, config)
        n = r.count(config.n)
        signatures = tuple((r.u32(), r.take(SIGNATURE_BYTES)) for _ in range(n))
        _check_ids([c for c, _ in signatures], config)
        return cls(survivors, dropped, signatures)


@dataclass(frozen=True)
class UnmaskShares:
    sender: int
    shares: tuple[tuple[int, ShareKind, bytes], ...]  # (about client, which secret, share)

    kind = Kind.UNMASK_SHARES

    def encode(self, config: RoundConfig) -> bytes:
        parts = [_header(self.kind, config, self.sender), _U32.pack(len(self.shares))]
        parts.extend(_U32.pack(c) + _U8.pack(k) + s for c, k, s in self.shares)
        return b"".join(parts)

    @classmethod
    def _decode(cls, sender: int, r: _Reader, config: RoundConfig) -> "UnmaskShares":
        n = r.count(config.n)
        shares = []
        for about, kind, share in _UNMASK_RECORD.iter_unpack(r.take(n * _UNMASK_RECORD.size)):
            if kind > 1:
                raise InvalidMessage("unknown share kind")
            shares.append((about, _SHARE_KINDS[kind], share))
        _check_ids([c for c, _, _ in shares], config)
        return cls(sender, tuple(shares))


# The fast paths below recognise, without building a Python object per record, the one message
# an honest sender sends; anything else (None) goes through decode() and the state machine's
# own checks, so a bad message fails exactly as it always has, with the same error.

_SHARES_BODY = _HEADER.size + COMMIT_BYTES + 4
_UNMASK_BODY = _HEADER.size + 4


def expected_shares(data: bytes | memoryview, recipients: bytes) -> tuple[bytes, bytes] | None:
    """(commitment, wire records) of a :class:`Shares` body (header already checked) whose
    recipients are exactly ``recipients`` (big-endian u32 ids, increasing) and that has no
    trailing bytes; None for anything else. Equal recipients imply every check of
    :meth:`Shares._decode` (count, order, ids in the round) and the server's own."""
    count = len(recipients) // 4
    width = _SEALED_RECORD.size
    if len(data) != _SHARES_BODY + count * width or data[_SHARES_BODY - 4:_SHARES_BODY] \
            != _U32.pack(count):
        return None
    table = np.frombuffer(data, dtype=np.uint8, count=count * width, offset=_SHARES_BODY)
    if table.reshape(count, width)[:, :4].tobytes() != recipients:
        return None
    return bytes(data[_HEADER.size:_SHARES_BODY - 4]), bytes(data[_SHARES_BODY:])


def expected_unmask(data: bytes | memoryview, prefixes: bytes) -> bytes | None:
    """The wire records of an :class:`UnmaskShares` body (header already checked) that
    reveals exactly the (about, kind) records of ``prefixes`` (5 bytes each: big-endian u32 id,
    kind byte; ids increasing), every share a field element, with no trailing bytes; None
    for anything else."""
    count = len(prefixes) // 5
    width = _UNMASK_RECORD.size
    if len(data) != _UNMASK_BODY + count * width or data[_HEADER.size:_UNMASK_BODY] \
            != _U32.pack(count):
        return None
    table = np.frombuffer(data, dtype=np.uint8, count=count * width,
                          offset=_UNMASK_BODY).reshape(count, width)
    if table[:, :5].tobytes() != prefixes:
        return None
    # A share is below 2**521 - 1 (66 bytes: 0x01, then 65 of 0xFF): its top byte is 0 or 1,
    # and when it is 1 the rest is not all ones. With every top byte at most 1, the pair
    # 01 FF can only sit at a share's start: only such a share needs its other bytes read.
    tops = table[:, 5:7].tobytes()
    if max(tops[::2], default=0) > 1:
        return None
    if b"\x01\xff" in tops and (table[:, 5:] == _PRIME_BYTES).all(axis=1).any():
        return None
    return bytes(data[_UNMASK_BODY:])


_PRIME_BYTES = np.frombuffer(((1 << 521) - 1).to_bytes(SHARE_BYTES, "big"), dtype=np.uint8)


_TYPES = {cls.kind: cls for cls in (Advertise, Roster, Reveal, Nonces, Shares, Delivery,
                                    MaskedInput,
                                    ConsistencyRequest, ConsistencySignature, UnmaskRequest,
                                    UnmaskShares)}


def peek(data: bytes | memoryview, config: RoundConfig) -> tuple[Kind, int]:
    """Check the header against this round and return (kind, sender) without reading the body."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMessage("a message must be bytes")
    if len(data) < _HEADER.size:
        raise InvalidMessage("message is truncated")
    magic, version, kind, tag, sender, reserved = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidMessage("not a secure-aggregation message")
    if reserved != _RESERVED:
        raise InvalidMessage("reserved header bytes must be zero")
    if version != VERSION:
        raise InvalidMessage(f"unsupported message version {version}")
    if tag != config.tag:
        raise StageError("message belongs to another round")
    found = _KIND_OF.get(kind)
    if found is None:
        raise InvalidMessage("unknown message kind")
    return found, sender


_KIND_OF = {k.value: k for k in Kind}  # Kind(value) without an enum call per message


def decode(data: bytes | memoryview, config: RoundConfig, expected: Kind, *,
           checked: tuple[Kind, int] | None = None):
    """Decode a message of kind ``expected`` for this round, or raise InvalidMessage/StageError.
    ``checked`` is what :func:`peek` already returned for these bytes, if the caller peeked."""
    kind, sender = peek(data, config) if checked is None else checked
    if kind != expected:
        raise StageError(f"expected a {expected.name.lower()} message, got {kind.name.lower()}")
    r = _Reader(data, _HEADER.size)
    message = _TYPES[kind]._decode(sender, r, config)
    r.end()
    return message
