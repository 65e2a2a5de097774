"""What the service knows about the consortium's sites: the roster input it consults on every
request.

A request's site is the roster entry whose certificate fingerprint (SHA-256 of the DER leaf the
TLS handshake verified) is the peer's; its identity key is what every envelope must verify under.
:class:`SiteRoster` is the shape the provisioned, CA-signed roster is adapted to;
:class:`MemoryRoster` holds entries in memory (tests, and until the provisioned roster lands).
Revocation takes effect from the next request on, because nothing is cached per connection.
"""

from __future__ import annotations

import enum
import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["SiteStatus", "SiteIdentity", "SiteRoster", "MemoryRoster", "fingerprint"]


def fingerprint(der: bytes) -> str:
    """The roster's name for a certificate: lowercase hex SHA-256 of its DER encoding."""
    return hashlib.sha256(der).hexdigest()


class SiteStatus(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True)
class SiteIdentity:
    site_name: str
    client_id: int
    identity_public: Ed25519PublicKey
    fingerprint: str
    status: SiteStatus = SiteStatus.ACTIVE


class SiteRoster(Protocol):
    def by_fingerprint(self, fingerprint: str) -> SiteIdentity | None: ...


class MemoryRoster:
    """An in-memory roster; thread-safe, since the test thread revokes while the server runs."""

    def __init__(self, sites: Iterable[SiteIdentity]) -> None:
        self._lock = threading.Lock()
        self._sites = {s.fingerprint: s for s in sites}
        if len({s.client_id for s in self._sites.values()}) != len(self._sites):
            raise ValueError("client ids in a roster must be unique")

    def by_fingerprint(self, fingerprint: str) -> SiteIdentity | None:
        with self._lock:
            return self._sites.get(fingerprint)

    def revoke(self, fingerprint: str) -> None:
        with self._lock:
            self._sites[fingerprint] = replace(self._sites[fingerprint],
                                               status=SiteStatus.REVOKED)
