"""A throw-away consortium PKI for the network tests: a CA, a server certificate for
127.0.0.1/localhost, per site a client certificate and an Ed25519 identity key, plus the
certificates a test needs to be refused (another CA's, an expired one), and the in-memory roster.
Stands in for ``cohort provision`` until it lands."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coordinator.service import MemoryRoster, fingerprint, site_identity


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    fingerprint: str


@dataclass(frozen=True)
class SiteKit:
    name: str
    client_id: int
    tls: CertFiles
    identity: Ed25519PrivateKey


@dataclass
class Consortium:
    ca: Path
    server: CertFiles
    sites: dict[int, SiteKit]
    roster: MemoryRoster
    foreign: CertFiles  # a client certificate from another CA
    expired: CertFiles  # issued by the consortium CA, expired yesterday


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, cn: str, *, server: bool, expired: bool = False,
          sans: list[x509.GeneralName] | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    start, end = ((now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired
                  else (now - dt.timedelta(hours=1), now + dt.timedelta(days=7)))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(out: Path, stem: str, key, cert) -> CertFiles:
    cert_path, key_path = out / f"{stem}.crt", out / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return CertFiles(cert_path, key_path,
                     fingerprint(cert.public_bytes(serialization.Encoding.DER)))


def make_consortium(out: Path, n_sites: int) -> Consortium:
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("Cohort test consortium CA")
    ca_path = out / "ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = _write(out, "server", *_leaf(ca_key, ca_cert, "coordinator", server=True, sans=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    sites: dict[int, SiteKit] = {}
    for i in range(1, n_sites + 1):
        files = _write(out, f"site-{i}", *_leaf(ca_key, ca_cert, f"site-{i}", server=False))
        sites[i] = SiteKit(f"site-{i}", i, files, Ed25519PrivateKey.generate())
    roster = MemoryRoster(site_identity(k.name, k.client_id, k.identity.public_key(),
                                       k.tls.fingerprint) for k in sites.values())
    other_key, other_cert = _ca("Some other CA")
    foreign = _write(out, "foreign", *_leaf(other_key, other_cert, "site-1", server=False))
    expired = _write(out, "expired", *_leaf(ca_key, ca_cert, "site-1", server=False,
                                            expired=True))
    return Consortium(ca_path, server, sites, roster, foreign, expired)
