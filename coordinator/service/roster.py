"""What the service knows about the consortium's sites: the roster it consults on every request.

A request's site is the roster entry whose certificate fingerprint (SHA-256 of the DER leaf the
TLS handshake verified) is the peer's; its identity key is what every envelope must verify under.
The roster is the provisioned, CA-signed :class:`cohort.enrolment.Roster` (its entries are
:class:`cohort.enrolment.RosterSite`); :class:`MemoryRoster` holds the same entries in memory
for tests, and can revoke one while the server runs. Revocation takes effect from the next
request on, because nothing is cached per connection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cohort.enrolment import RosterSite, SiteStatus, fingerprint

__all__ = ["SiteStatus", "SiteIdentity", "SiteRoster", "MemoryRoster", "fingerprint"]

SiteIdentity = RosterSite
"""A roster entry (the service's former name for :class:`cohort.enrolment.RosterSite`)."""


class SiteRoster(Protocol):
    """What the service needs of a roster (``cohort.enrolment.Roster`` has it)."""

    def by_fingerprint(self, fingerprint: str) -> RosterSite | None: ...


def site_identity(site_name: str, client_id: int, identity_public: Ed25519PublicKey,
                  fingerprint: str) -> RosterSite:
    """An active roster entry (tests)."""
    return RosterSite(site_name, client_id, identity_public, fingerprint, SiteStatus.ACTIVE)


class MemoryRoster:
    """An in-memory roster; thread-safe, since the test thread revokes while the server runs."""

    def __init__(self, sites: Iterable[RosterSite]) -> None:
        self._lock = threading.Lock()
        self._sites = {s.fingerprint: s for s in sites}
        if len({s.client_id for s in self._sites.values()}) != len(self._sites):
            raise ValueError("client ids in a roster must be unique")

    def by_fingerprint(self, fingerprint: str) -> RosterSite | None:
        with self._lock:
            return self._sites.get(fingerprint)

    def revoke(self, fingerprint: str) -> None:
        with self._lock:
            self._sites[fingerprint] = replace(self._sites[fingerprint],
                                               status=SiteStatus.REVOKED)
