"""What the service knows about the consortium's sites: the roster it consults on every request.

A request's site is the roster entry whose certificate fingerprint (SHA-256 of the DER leaf the
TLS handshake verified) is the peer's; its identity key is what every envelope must verify under.
The roster is the provisioned, CA-signed :class:`cohort.enrolment.Roster` (its entries are
:class:`cohort.enrolment.RosterSite`); :class:`MemoryRoster` holds the same entries in memory
for tests, and can revoke one while the server runs. Revocation takes effect from the next
request on, because nothing is cached per connection.

:class:`FileRoster` is what ``cohort serve`` uses: the coordinator kit's ``roster.json`` and
``roster.sig``, re-read whenever either file changes (one ``stat`` of each per request, nothing
parsed unless they changed). A consortium revokes a site with ``cohort provision --revoke SITE``,
which signs a new roster version with the CA key, and copies the new ``roster.json`` and
``roster.sig`` into the coordinator's kit: the running service picks it up on its next request
and refuses the revoked certificate from then on, on connections already open too. A new file
is taken only if it verifies against the consortium CA and is a valid successor of the roster
held (:func:`cohort.enrolment.verify_roster_update`: a higher version, no client id renamed, no
revoked certificate active again); anything else is logged and the roster held stays in force,
so a half-copied pair (new json, old signature) is refused until its second file lands.

An open round's step stops waiting for revoked sites: ``revoked_clients()`` feeds the session's
``excluded`` sites (checked on every accepted message and every tick), so a step that waits only
for them closes at once, with them as its silent sites, instead of at its deadline.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cohort.enrolment import (Roster, RosterError, RosterSite, SiteStatus, fingerprint,
                              load_ca_certificate, load_roster, verify_roster_update)
from cohort.logs import event

__all__ = ["SiteStatus", "SiteIdentity", "SiteRoster", "MemoryRoster", "FileRoster",
           "fingerprint"]

log = logging.getLogger("cohort.service")

SiteIdentity = RosterSite
"""A roster entry (the service's former name for :class:`cohort.enrolment.RosterSite`)."""


class SiteRoster(Protocol):
    """What the service needs of a roster (``cohort.enrolment.Roster`` has it)."""

    def by_fingerprint(self, fingerprint: str) -> RosterSite | None: ...

    # Optional: ``revoked_clients() -> frozenset[int]``, the client ids of revoked sites, so an
    # open step stops waiting for them (a roster without it revokes nobody mid-step).


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

    def revoked_clients(self) -> frozenset[int]:
        """The client ids of every revoked site."""
        with self._lock:
            return frozenset(s.client_id for s in self._sites.values() if not s.active)


class FileRoster:
    """A kit's signed roster files, re-read when they change (see the module docstring).

    ``on_change(old, new)`` is called after a new roster version is taken (outside the lock)."""

    def __init__(self, path: str | os.PathLike[str],
                 ca: x509.Certificate | str | os.PathLike[str], *,
                 signature: str | os.PathLike[str] | None = None,
                 on_change: Callable[[Roster, Roster], None] | None = None) -> None:
        self.path = Path(path)
        self.signature_path = (Path(signature) if signature is not None
                               else self.path.with_suffix(".sig"))
        self._ca = load_ca_certificate(ca)
        self._lock = threading.Lock()
        self.on_change = on_change
        self.refused_updates = 0
        self._stamp = self._stat()
        self._set(load_roster(self.path, self._ca, signature=self.signature_path))

    def _set(self, roster: Roster) -> None:
        self._roster = roster
        self._by_fp = {s.fingerprint: s for s in roster.sites}
        self._revoked = frozenset(s.client_id for s in roster.sites if not s.active)

    def _stat(self) -> tuple | None:
        try:
            a, b = os.stat(self.path), os.stat(self.signature_path)
        except OSError:
            return None
        return (a.st_mtime_ns, a.st_size, a.st_ino, b.st_mtime_ns, b.st_size, b.st_ino)

    @property
    def roster(self) -> Roster:
        self.refresh()
        return self._roster

    @property
    def sites(self) -> tuple[RosterSite, ...]:
        return self.roster.sites

    def by_fingerprint(self, fingerprint: str) -> RosterSite | None:
        self.refresh()
        return self._by_fp.get(fingerprint)

    def revoked_clients(self) -> frozenset[int]:
        """The client ids of every site the roster in force has revoked (re-read if changed)."""
        self.refresh()
        return self._revoked

    def refresh(self) -> bool:
        """Take the files' roster if they changed and it is a valid successor; True if taken."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            old = self._roster
            try:
                new = verify_roster_update(
                    old, load_roster(self.path, self._ca, signature=self.signature_path),
                    self._ca)
            except RosterError as exc:
                self.refused_updates += 1
                event(log, logging.WARNING, "roster_refused",
                      "the changed roster file was not taken (%s); roster version %d stays",
                      exc, old.version, version=old.version, error=type(exc).__name__)
                return False
            self._set(new)
        revoked = sorted(s.site_name for s in new.sites if not s.active
                         and (old.site(s.site_name) is None or old.site(s.site_name).active))
        event(log, logging.WARNING if revoked else logging.INFO, "roster_updated",
              "roster version %d taken (was %d); revoked: %s", new.version, old.version,
              ", ".join(revoked) or "none", version=new.version, previous=old.version,
              revoked=revoked)
        if self.on_change is not None:
            self.on_change(old, new)
        return True
