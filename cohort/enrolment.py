"""Who belongs to a consortium: the CA-signed roster, checked the same way by sites and coordinator.

``cohort provision`` writes the roster as canonical JSON (``roster.json``: sorted keys, no
spaces, ASCII only, sites in increasing client id) with a detached ECDSA-SHA256 signature by the
consortium's CA key (``roster.sig``, DER). The roster names every site ever enrolled, its secagg
client id (assigned once, never reused), its Ed25519 identity public key, the SHA-256 of its TLS
client certificate's DER, and whether it is active or revoked; the roster ``version`` goes up by
one with every change (a site added, revoked or re-issued). Anyone holding ``ca.pem`` can check
it, OpenSSL included::

    openssl dgst -sha256 -verify <(openssl x509 -in ca.pem -pubkey -noout) \\
        -signature roster.sig roster.json

:func:`parse_roster` and :func:`load_roster` verify the signature *before* reading anything, then
insist on the one canonical encoding and on the schema; every failure is a :class:`RosterError`
(fail closed). :func:`verify_roster_update` is what a site runs on a roster pushed to it: signed
by its own CA, the same consortium, a higher version, no client id moved to another name, and no
revoked certificate or identity key active again. :meth:`Roster.require_active` raises
:class:`~cohort.contract.NotEnrolled` for a certificate or name that is not an active member.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secagg import _testing
from secagg.config import MAX_CLIENT_ID
from cohort.contract import NotEnrolled
from secagg.errors import CohortError

__all__ = [
    "ROSTER_FORMAT",
    "Roster",
    "RosterError",
    "RosterSite",
    "SiteStatus",
    "canonical_json",
    "fingerprint",
    "load_ca_certificate",
    "load_roster",
    "parse_roster",
    "verify_roster_update",
]

ROSTER_FORMAT = "cohort-roster/1"
# A site name is a folder name, a certificate CN and a DNS-label-like word; at most 63
# characters, so it can never be mistaken for a 64-digit certificate fingerprint.
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


class RosterError(CohortError):
    """A roster that cannot be trusted: its signature does not verify against the consortium CA,
    it is not in the one canonical encoding, it breaks the schema (unknown format, duplicate
    client id, name or key), or it is not a valid successor of the roster a party holds."""


class SiteStatus(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


def fingerprint(der: bytes) -> str:
    """The roster's name for a certificate: lowercase hex SHA-256 of its DER encoding."""
    return hashlib.sha256(der).hexdigest()


def canonical_json(value: Any) -> bytes:
    """The one encoding a roster is signed in: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class RosterSite:
    """One enrolled site (the coordinator service looks requests up by it)."""

    site_name: str
    client_id: int
    identity_public: Ed25519PublicKey
    fingerprint: str
    status: SiteStatus
    contact: str | None = None

    @property
    def identity_key_hex(self) -> str:
        return self.identity_public.public_bytes_raw().hex()

    @property
    def active(self) -> bool:
        return self.status is SiteStatus.ACTIVE


@dataclass(frozen=True)
class Roster:
    """A verified roster. Make one with :func:`parse_roster` or :func:`load_roster` only;
    ``raw`` and ``signature`` are the signed bytes, so it can be checked again anywhere."""

    consortium: str
    version: int
    issued_at: dt.datetime
    admin: Mapping[str, str | None]
    coordinator_hosts: tuple[str, ...]
    coordinator_port: int
    coordinator_fingerprint: str
    sites: tuple[RosterSite, ...]
    raw: bytes
    signature: bytes

    def site(self, name: str) -> RosterSite | None:
        return next((s for s in self.sites if s.site_name == name), None)

    def by_fingerprint(self, fingerprint: str) -> RosterSite | None:
        return next((s for s in self.sites if s.fingerprint == fingerprint.lower()), None)

    def by_client_id(self, client_id: int) -> RosterSite | None:
        return next((s for s in self.sites if s.client_id == client_id), None)

    def _find(self, who: str) -> RosterSite | None:
        if _FINGERPRINT.fullmatch(who.lower()):
            return self.by_fingerprint(who)
        return self.site(who)

    def is_active(self, fingerprint_or_name: str) -> bool:
        """Whether a certificate fingerprint (64 hex digits) or a site name is an active member.
        A certificate that was replaced by a re-issue is in no entry, so it is not active."""
        site = self._find(fingerprint_or_name)
        return site is not None and site.active

    def require_active(self, fingerprint_or_name: str) -> RosterSite:
        """The active site a fingerprint or name belongs to; :class:`NotEnrolled` otherwise."""
        site = self._find(fingerprint_or_name)
        if site is None or not site.active:
            raise NotEnrolled(f"not an active member of consortium {self.consortium!r} "
                              f"(roster version {self.version})")
        return site

    def directory(self) -> dict[int, Ed25519PublicKey]:
        """Every active site's identity key by client id (secagg's key directory)."""
        return {s.client_id: s.identity_public for s in self.sites if s.active}


def load_ca_certificate(ca: x509.Certificate | str | os.PathLike[str]) -> x509.Certificate:
    if isinstance(ca, x509.Certificate):
        return ca
    try:
        return x509.load_pem_x509_certificate(Path(ca).read_bytes())
    except ValueError as exc:
        raise RosterError(f"{ca}: not a PEM certificate") from exc


def _verify_signature(raw: bytes, signature: bytes, ca: x509.Certificate) -> None:
    key = ca.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise RosterError("the CA certificate does not hold an ECDSA P-256 key")
    if _testing.planted("roster_skips_signature"):
        return
    try:
        key.verify(signature, raw, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise RosterError("the roster's signature does not verify against the consortium CA") \
            from exc


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RosterError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _fields(obj: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != keys:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise RosterError(f"{where}: expected the keys {sorted(keys)}, found {found}")
    return obj


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise RosterError(f"{where}: wrong type {type(value).__name__}")
    return value


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("ascii"), object_pairs_hook=_no_duplicate_keys)
    except RosterError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RosterError("the roster is not JSON") from exc
    if not isinstance(body, dict) or body.get("format") != ROSTER_FORMAT:
        got = body.get("format") if isinstance(body, dict) else None
        raise RosterError(f"unknown roster format {got!r} (this code reads {ROSTER_FORMAT})")
    try:
        canonical = canonical_json(body)
    except ValueError as exc:
        raise RosterError("the roster holds a value outside its schema") from exc
    if canonical != raw:
        raise RosterError("the roster is not in its canonical encoding")
    return body


def _parse_site(entry: Any, where: str) -> RosterSite:
    e = _fields(entry, where, {"cert_sha256", "client_id", "contact", "identity_key", "name",
                               "status"})
    name = _typed(e["name"], str, f"{where}.name")
    if not SITE_NAME.fullmatch(name):
        raise RosterError(f"{where}.name: {name!r} is not a site name")
    client_id = _typed(e["client_id"], int, f"{where}.client_id")
    if not 1 <= client_id <= MAX_CLIENT_ID:
        raise RosterError(f"{where}.client_id: {client_id} is outside 1..{MAX_CLIENT_ID}")
    fp = _typed(e["cert_sha256"], str, f"{where}.cert_sha256")
    key_hex = _typed(e["identity_key"], str, f"{where}.identity_key")
    if not _FINGERPRINT.fullmatch(fp) or not _FINGERPRINT.fullmatch(key_hex):
        raise RosterError(f"{where}: cert_sha256 and identity_key are 64 lowercase hex digits")
    try:
        status = SiteStatus(e["status"])
    except ValueError as exc:
        raise RosterError(f"{where}.status: {e['status']!r} is not active or revoked") from exc
    if e["contact"] is not None:
        _typed(e["contact"], str, f"{where}.contact")
    try:
        identity = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
    except ValueError as exc:
        raise RosterError(f"{where}.identity_key: not an Ed25519 public key") from exc
    return RosterSite(name, client_id, identity, fp, status, e["contact"])


def parse_roster(raw: bytes, signature: bytes,
                 ca_cert: x509.Certificate | str | os.PathLike[str]) -> Roster:
    """Verify ``signature`` over ``raw`` against ``ca_cert``, then parse; RosterError if not."""
    ca = load_ca_certificate(ca_cert)
    raw, signature = bytes(raw), bytes(signature)
    _verify_signature(raw, signature, ca)  # first: nothing unsigned is even parsed
    body = _fields(_parse_body(raw), "roster", {"admin", "consortium", "coordinator", "format",
                                                "issued_at", "sites", "version"})
    version = _typed(body["version"], int, "version")
    if version < 1:
        raise RosterError(f"version: {version} is not a roster version (1, 2, …)")
    try:
        issued = dt.datetime.strptime(_typed(body["issued_at"], str, "issued_at"), _TIME)
    except ValueError as exc:
        raise RosterError("issued_at: not a UTC time like 2026-01-31T12:00:00Z") from exc
    consortium = _typed(body["consortium"], str, "consortium")
    admin = _fields(body["admin"], "admin", {"email", "name"})
    for key in ("email", "name"):
        if admin[key] is not None:
            _typed(admin[key], str, f"admin.{key}")
    coord = _fields(body["coordinator"], "coordinator", {"cert_sha256", "hosts", "port"})
    hosts = _typed(coord["hosts"], list, "coordinator.hosts")
    if not hosts or not all(isinstance(h, str) for h in hosts):
        raise RosterError("coordinator.hosts: a non-empty list of host names")
    port = _typed(coord["port"], int, "coordinator.port")
    coord_fp = _typed(coord["cert_sha256"], str, "coordinator.cert_sha256")
    if not _FINGERPRINT.fullmatch(coord_fp):
        raise RosterError("coordinator.cert_sha256: 64 lowercase hex digits")
    entries = _typed(body["sites"], list, "sites")
    sites = tuple(_parse_site(e, f"sites[{i}]") for i, e in enumerate(entries))
    ids = [s.client_id for s in sites]
    if ids != sorted(set(ids)):
        raise RosterError("sites: client ids must be unique and in increasing order")
    for what, values in (("name", [s.site_name.lower() for s in sites]),
                         ("certificate", [s.fingerprint for s in sites] + [coord_fp]),
                         ("identity key", [s.identity_key_hex for s in sites])):
        if len(set(values)) != len(values):
            raise RosterError(f"sites: two entries share a {what}")
    return Roster(consortium=consortium, version=version,
                  issued_at=issued.replace(tzinfo=dt.timezone.utc),
                  admin=dict(admin), coordinator_hosts=tuple(hosts), coordinator_port=port,
                  coordinator_fingerprint=coord_fp, sites=sites, raw=raw, signature=signature)


def load_roster(path: str | os.PathLike[str],
                ca_cert: x509.Certificate | str | os.PathLike[str], *,
                signature: str | os.PathLike[str] | None = None) -> Roster:
    """Read ``roster.json`` and its signature (default: ``roster.sig`` beside it) and verify
    them against ``ca_cert`` (a certificate, or the path of ``ca.pem``)."""
    path = Path(path)
    sig_path = Path(signature) if signature is not None else path.with_suffix(".sig")
    try:
        raw, sig = path.read_bytes(), sig_path.read_bytes()
    except OSError as exc:
        raise RosterError(f"cannot read the roster: {exc.strerror} ({exc.filename})") from exc
    return parse_roster(raw, sig, ca_cert)


def verify_roster_update(old: Roster, new: Roster,
                         ca_cert: x509.Certificate | str | os.PathLike[str]) -> Roster:
    """``new`` checked as a successor of ``old``: its signature again (a Roster built by hand
    proves nothing), the same consortium, a higher version, every old client id still naming
    the same site, and no revoked certificate or identity key active again. Returns the
    re-verified ``new``; RosterError otherwise."""
    checked = parse_roster(new.raw, new.signature, ca_cert)
    if checked.consortium != old.consortium:
        raise RosterError(f"the new roster is for consortium {checked.consortium!r}, not "
                          f"{old.consortium!r}")
    if checked.version <= old.version:
        raise RosterError(f"roster version {checked.version} is not newer than the version "
                          f"{old.version} held")
    for site in old.sites:
        now = checked.by_client_id(site.client_id)
        if now is None or now.site_name != site.site_name:
            raise RosterError(f"client id {site.client_id} ({site.site_name}) is missing or "
                              f"renamed in the new roster")
    revoked_certs = {s.fingerprint for s in old.sites if not s.active}
    revoked_keys = {s.identity_key_hex for s in old.sites if not s.active}
    for site in checked.sites:
        if site.active and (site.fingerprint in revoked_certs
                            or site.identity_key_hex in revoked_keys):
            raise RosterError(f"{site.site_name}: a revoked certificate or identity key is "
                              f"active again")
    return checked
