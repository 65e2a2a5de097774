"""The signed envelope every protocol message travels in between a site and the coordinator.

A deployment's transport is authenticated twice: TLS with a client certificate says which
connection a request came on, and this envelope says which site's identity key vouches for the
bytes. The coordinator accepts a message only when both name the same site, so one site's
certificate cannot speak for another, and the stored envelopes are a transcript anyone holding the
roster can verify later. It is byte-oriented: the body is whatever the round's protocol sends
(a secagg message today), and the envelope binds it to one round, one step of that round and the
stage's name.

It lives in ``secagg`` because that is the one package both the site (``clients``) and the
coordinator may import, and it is pure (no I/O, no clock). Layout, big-endian::

    magic "CTE" | version u8 | len(round_id) u8 | round_id | client u32 | step u32
    | len(stage) u8 | stage (ascii) | sha256(body) (32) || signature (64) || body

The signature is Ed25519 over ``DOMAIN || header`` (everything before the signature), so it covers
the body through its digest. Parsing checks every length before reading; verification raises
:class:`InvalidSignature` and says nothing about which check failed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import InvalidMessage

__all__ = ["seal_parts", "DOMAIN", "MAGIC", "VERSION", "MAX_OVERHEAD", "Envelope", "InvalidSignature",
           "MalformedEnvelope", "seal", "parse"]

MAGIC = b"CTE"
VERSION = 1
DOMAIN = b"cohort/transport/v1/message\x00"
MAX_ROUND_ID = 32
MAX_STAGE = 32
_SIGNATURE = 64
_DIGEST = 32
_U32 = struct.Struct(">I")
MAX_OVERHEAD = 3 + 1 + 1 + MAX_ROUND_ID + 4 + 4 + 1 + MAX_STAGE + _DIGEST + _SIGNATURE
"""The most bytes an envelope adds to its body."""


class MalformedEnvelope(InvalidMessage):
    """Bytes that do not parse as an envelope."""


class InvalidSignature(InvalidMessage):
    """An envelope whose signature does not verify under the key it was checked against."""


@dataclass(frozen=True)
class Envelope:
    round_id: bytes
    client: int
    step: int
    stage: str
    digest: bytes
    signature: bytes
    body: memoryview  # a read-only view into the parsed bytes: a large body is never copied
    signed: bytes  # the header the signature covers (without DOMAIN)

    def verify(self, public: Ed25519PublicKey) -> None:
        """Raise :class:`InvalidSignature` unless ``public`` signed this envelope and the body is
        the one it names."""
        try:
            if hashlib.sha256(self.body).digest() != self.digest:
                raise _CryptoInvalidSignature
            public.verify(self.signature, DOMAIN + self.signed)
        except _CryptoInvalidSignature:
            raise InvalidSignature("signature check failed") from None


def _header(round_id: bytes, client: int, step: int, stage: str, digest: bytes) -> bytes:
    stage_bytes = stage.encode("ascii")
    if not 1 <= len(round_id) <= MAX_ROUND_ID or not 1 <= len(stage_bytes) <= MAX_STAGE:
        raise MalformedEnvelope("round id or stage name out of range")
    if not 0 <= client < 1 << 32 or not 0 <= step < 1 << 32:
        raise MalformedEnvelope("client id or step out of range")
    return (MAGIC + bytes([VERSION, len(round_id)]) + round_id + _U32.pack(client)
            + _U32.pack(step) + bytes([len(stage_bytes)]) + stage_bytes + digest)


def seal(identity: Ed25519PrivateKey, *, round_id: bytes, client: int, step: int, stage: str,
         body: bytes) -> bytes:
    """The envelope around ``body``, signed with the site's identity key."""
    head, body = seal_parts(identity, round_id=round_id, client=client, step=step, stage=stage,
                            body=body)
    return head + body


def seal_parts(identity: Ed25519PrivateKey, *, round_id: bytes, client: int, step: int,
               stage: str, body: bytes) -> tuple[bytes, bytes]:
    """:func:`seal` as (everything before the body, the body): the same bytes, for a sender
    that writes them one after the other instead of copying a model-sized body into one."""
    header = _header(round_id, client, step, stage, hashlib.sha256(body).digest())
    return header + identity.sign(DOMAIN + header), body


def parse(data: bytes) -> Envelope:
    """Split an envelope into its fields without verifying it (see :meth:`Envelope.verify`)."""
    view = memoryview(data)
    try:
        if bytes(view[:3]) != MAGIC or view[3] != VERSION:
            raise MalformedEnvelope("not a transport envelope")
        pos = 4
        n = view[pos]
        if not 1 <= n <= MAX_ROUND_ID:
            raise MalformedEnvelope("round id out of range")
        round_id = bytes(view[pos + 1:pos + 1 + n])
        pos += 1 + n
        client = _U32.unpack_from(view, pos)[0]
        step = _U32.unpack_from(view, pos + 4)[0]
        pos += 8
        n = view[pos]
        if not 1 <= n <= MAX_STAGE:
            raise MalformedEnvelope("stage name out of range")
        stage_raw = bytes(view[pos + 1:pos + 1 + n])
        if len(stage_raw) != n:
            raise MalformedEnvelope("envelope is truncated")
        pos += 1 + n
        digest = bytes(view[pos:pos + _DIGEST])
        pos += _DIGEST
        signature = bytes(view[pos:pos + _SIGNATURE])
        if len(round_id) != view[4] or len(digest) != _DIGEST or len(signature) != _SIGNATURE:
            raise MalformedEnvelope("envelope is truncated")
        stage = stage_raw.decode("ascii")
        if not stage.isprintable():
            raise MalformedEnvelope("stage name is not printable")
    except (IndexError, struct.error, UnicodeDecodeError):
        raise MalformedEnvelope("envelope is truncated or malformed") from None
    body = memoryview(data).toreadonly()[pos + _SIGNATURE:]
    return Envelope(round_id, client, step, stage, digest, signature, body, bytes(view[:pos]))
