"""Key agreement, key derivation, authenticated encryption and signatures for one round.

X25519 (RFC 7748), AES-GCM and Ed25519 (RFC 8032) come from ``cryptography``; HKDF-SHA256
(RFC 5869) is the standard library's HMAC-SHA256 in the RFC's two steps. Every derived key is
bound by HKDF to the round tag and to the ordered pair of parties, with a label per purpose,
so no key serves two purposes, two pairs or two rounds.
Failures of decryption or verification raise :class:`~secagg.errors.InvalidMessage` with one fixed
text: an attacker learns nothing about which check failed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ..errors import InvalidMessage
from .prg import MASK_KEY_BYTES

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "SIGNATURE_BYTES",
    "KeyPair",
    "agree",
    "hkdf",
    "channel_key",
    "pairwise_mask_key",
    "self_mask_key",
    "MaskKeys",
    "seal",
    "open_sealed",
    "sign",
    "verify",
    "public_bytes",
    "load_public",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64
_LABEL = b"cohort/secagg/v1/"
_PAIR = struct.Struct(">II")


class KeyPair:
    """An ephemeral X25519 key pair; the private half never leaves this object except for Shamir
    sharing through :meth:`private_bytes`."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self._private = private if private is not None else X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_private_bytes(cls, data: bytes) -> "KeyPair":
        return cls(X25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def exchange(self, peer_public: bytes | X25519PublicKey) -> bytes:
        return agree(self._private, peer_public)

    def __repr__(self) -> str:  # never show the private key
        return f"KeyPair(public={self.public.hex()[:16]}…)"


def load_public(data: bytes) -> X25519PublicKey:
    if len(data) != KEY_BYTES:
        raise InvalidMessage("malformed public key")
    try:
        return X25519PublicKey.from_public_bytes(data)
    except ValueError:
        raise InvalidMessage("malformed public key") from None


def agree(private: X25519PrivateKey, peer_public: bytes | X25519PublicKey) -> bytes:
    """X25519; a low-order peer key (all-zero shared secret) is refused."""
    peer = load_public(peer_public) if isinstance(peer_public, (bytes, bytearray)) else peer_public
    try:
        return private.exchange(peer)
    except ValueError:
        raise InvalidMessage("key agreement failed") from None


def hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869), extract then expand.

    Written on the standard library's one-shot HMAC (OpenSSL underneath) because the server
    derives thousands of keys per round and building an HKDF object per key cost more than the
    hashing; the RFC 5869 vectors in the tests pin it to the specification.
    """
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output length must be in 1..8160")
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    if length <= 32:  # every key Cohort derives: one expand block (T(1)), no loop
        return hmac.digest(prk, info + b"\x01", "sha256")[:length]
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]


def channel_key(shared: bytes, round_tag: bytes, sender: int, recipient: int) -> bytes:
    """AES-256-GCM key for the one encrypted message ``sender`` sends ``recipient`` this round."""
    return hkdf(shared, salt=round_tag, info=_LABEL + b"channel" + _PAIR.pack(sender, recipient),
                length=KEY_BYTES)


def pairwise_mask_key(shared: bytes, round_tag: bytes, a: int, b: int) -> bytes:
    """AES-128 key of the mask shared by clients a and b (symmetric in a, b)."""
    lo, hi = (a, b) if a < b else (b, a)
    return hkdf(shared, salt=round_tag, info=_LABEL + b"pair-mask" + _PAIR.pack(lo, hi),
                length=MASK_KEY_BYTES)


def self_mask_key(seed: bytes, round_tag: bytes, client: int) -> bytes:
    """AES-128 key of a client's self mask, from its 256-bit self-mask seed."""
    return hkdf(seed, salt=round_tag, info=_LABEL + b"self-mask" + struct.pack(">I", client),
                length=MASK_KEY_BYTES)


class MaskKeys:
    """:func:`pairwise_mask_key` and :func:`self_mask_key` of one round, for a party that
    derives thousands of them (the server). HKDF's extract step is HMAC keyed by the round tag
    for every key of the round, so the tag's two padded key blocks are hashed once here
    (RFC 2104's precomputation) instead of once per key; the bytes are the same."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, round_tag: bytes) -> None:
        key = round_tag if len(round_tag) <= 64 else hashlib.sha256(round_tag).digest()
        key = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def _derive(self, ikm: bytes, info: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(ikm)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return hmac.digest(outer.digest(), info + b"\x01", "sha256")[:MASK_KEY_BYTES]

    def pairwise(self, shared: bytes, a: int, b: int) -> bytes:
        lo, hi = (a, b) if a < b else (b, a)
        return self._derive(shared, _LABEL + b"pair-mask" + _PAIR.pack(lo, hi))

    def self_mask(self, seed: bytes, client: int) -> bytes:
        return self._derive(seed, _LABEL + b"self-mask" + struct.pack(">I", client))


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-GCM with a fresh random 96-bit nonce, returned as nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise InvalidMessage("decryption failed")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise InvalidMessage("decryption failed") from None


def _signed_bytes(purpose: bytes, payload: bytes) -> bytes:
    # The purpose is NUL-terminated, so it must not contain NUL: otherwise (b"a\x00b", b"") and
    # (b"a", b"b\x00") would sign the same bytes.
    if b"\x00" in purpose:
        raise ValueError("a signature purpose must not contain NUL bytes")
    return _LABEL + purpose + b"\x00" + payload


def sign(identity: Ed25519PrivateKey, purpose: bytes, payload: bytes) -> bytes:
    return identity.sign(_signed_bytes(purpose, payload))


def verify(public: Ed25519PublicKey, signature: bytes, purpose: bytes, payload: bytes) -> None:
    try:
        # A purpose that could never have been signed fails like any other forgery.
        public.verify(signature, _signed_bytes(purpose, payload))
    except (InvalidSignature, ValueError):
        raise InvalidMessage("signature check failed") from None


def public_bytes(identity: Ed25519PublicKey) -> bytes:
    return identity.public_bytes(Encoding.Raw, PublicFormat.Raw)
