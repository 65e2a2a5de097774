"""The consortium roster as an auditor holds it: the sites' Ed25519 identity keys, trusted only
once the CA's signature over ``roster.json`` verifies.

Why not ``cohort.enrolment.load_roster``: the privacy package may not import ``cohort``
(tests/test_import_boundaries.py). This reader applies the same rules an auditor relies on —
the detached ECDSA-SHA256 signature (``roster.sig``, DER) by the CA's P-256 key is verified
*before* anything is parsed, the roster must be in its one canonical encoding and of the known
format, and every site entry must carry a client id, a name and a 32-byte key — and keeps only
what checking a transcript needs. tests/test_audit_state.py holds it to ``load_roster`` on a
provisioned consortium.

The trust anchor is the auditor's choice: a roster is read only from a path the auditor names
(``--kit`` / ``--roster``), never picked up from beside the state file under audit, since whoever
could rewrite that file could rewrite its neighbours too. Revoked sites keep their keys here: a
message signed before a revocation is still that site's message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import AuditError

__all__ = ["RosterKeys", "RosterSite", "read_roster", "roster_from_kit"]

ROSTER_FORMAT = "cohort-roster/1"


@dataclass(frozen=True)
class RosterSite:
    name: str
    client_id: int
    identity: Ed25519PublicKey
    active: bool


@dataclass(frozen=True)
class RosterKeys:
    """A verified roster: every enrolled site by its client id."""

    source: str
    consortium: str
    version: int
    sites: dict[int, RosterSite]

    def describe(self) -> str:
        return f"roster v{self.version} of consortium {self.consortium!r} ({self.source})"


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def read_roster(roster: str | Path, *, ca: str | Path | None = None,
                signature: str | Path | None = None) -> RosterKeys:
    """``roster.json`` checked against ``ca`` (default ``ca.pem`` beside it) with its signature
    (default ``roster.sig`` beside it); AuditError naming what failed."""
    path = Path(roster)
    ca_path = Path(ca) if ca is not None else path.parent / "ca.pem"
    sig_path = Path(signature) if signature is not None else path.with_suffix(".sig")
    try:
        raw, sig, pem = path.read_bytes(), sig_path.read_bytes(), ca_path.read_bytes()
    except OSError as exc:
        raise AuditError(f"--roster: cannot read {exc.filename}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise AuditError(f"--ca: {ca_path} is not a PEM certificate") from None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise AuditError(f"--ca: {ca_path} does not hold an ECDSA P-256 key")
    try:
        key.verify(sig, raw, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise AuditError(f"--roster: {path}'s signature does not verify against the CA "
                         f"{ca_path}") from None
    try:
        body = json.loads(raw.decode("ascii"))
        canonical = _canonical(body)
    except (UnicodeDecodeError, ValueError):
        raise AuditError(f"--roster: {path} is not a roster (not JSON)") from None
    if not isinstance(body, dict) or body.get("format") != ROSTER_FORMAT:
        raise AuditError(f"--roster: {path}: unknown roster format (this audit reads "
                         f"{ROSTER_FORMAT})")
    if canonical != raw:
        raise AuditError(f"--roster: {path} is not in its canonical encoding")
    sites: dict[int, RosterSite] = {}
    try:
        for i, entry in enumerate(body["sites"]):
            cid, name = entry["client_id"], entry["name"]
            if isinstance(cid, bool) or not isinstance(cid, int) or not isinstance(name, str):
                raise ValueError(f"sites[{i}]: client_id and name")
            if cid in sites:
                raise ValueError(f"sites[{i}]: client id {cid} appears twice")
            identity = Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry["identity_key"]))
            sites[cid] = RosterSite(name, cid, identity, entry["status"] == "active")
        consortium, version = str(body["consortium"]), int(body["version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"--roster: {path}: a site entry breaks the schema ({exc})") from None
    return RosterKeys(str(path), consortium, version, sites)


def roster_from_kit(kit: str | Path) -> RosterKeys:
    """The roster of a kit folder (a coordinator's or a site's: ``roster.json``,
    ``roster.sig`` and ``ca.pem``)."""
    kit = Path(kit)
    if not (kit / "roster.json").is_file():
        raise AuditError(f"--kit: {kit} holds no roster.json: not a Cohort kit")
    return read_roster(kit / "roster.json", ca=kit / "ca.pem")
