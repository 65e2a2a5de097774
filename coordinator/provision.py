"""Provisioning a hospital consortium: the CA, the certificates, the identity keys and the kits.

From one consortium file (:func:`load_consortium`) :func:`provision` makes, in ``--out``::

    kits/
      admin/            stays with the consortium's admin; never copied to anyone
        ca.key          0600  the root CA's ECDSA P-256 key (needed to add, revoke, re-issue)
        ca.pem          0644  the root CA certificate
        roster.json     0644  the current roster (canonical JSON) ...
        roster.sig      0644  ... and the CA's ECDSA-SHA256 signature of it (DER)
        history/roster-v0001.json, roster-v0001.sig, ...   every roster ever signed
      coordinator/      for the coordinator's machine
        coordinator.toml      consortium, host names, port, URLs, file names
        ca.pem, roster.json, roster.sig
        server.pem      0644  TLS server certificate (SANs: the file's hosts; EKU serverAuth)
        server.key      0600  its ECDSA P-256 key
      <site>/           one per site, for that hospital only
        site.toml             consortium, site name, secagg client id, coordinator URLs, files
        ca.pem, roster.json, roster.sig
        client.pem      0644  TLS client certificate (CN = the site; EKU clientAuth)
        client.key      0600  its ECDSA P-256 key
        identity.key    0600  the site's Ed25519 identity key (PKCS8 PEM): signs every
                              protocol message; its public half is in the roster
        policy.toml           a site-policy template (clients.policy.SitePolicy's fields)

Kit folders are 0700. Keys are created with ``os.open(..., 0o600)``, so they are never readable
by anyone else, not even for an instant; no key is written outside its own kit, and none is ever
printed.

Running again on the same ``--out`` changes only what the consortium file and the flags ask for,
in a new roster version: a site new in the file (or named by ``add_sites``) gets its kit; a
``revoke``d site is marked revoked; a ``reissue``d site gets a new TLS key, certificate and
identity key under the same client id (its old certificate then matches no roster entry). Every
other key, certificate and kit file stays byte-identical; only the roster copies are replaced.
A run with nothing to change writes nothing. Client ids are assigned once, in order, and never
reused. Everything is checked first; the new tree is built in a hidden folder beside ``--out``
(unchanged files hard-linked, not copied) and renamed into place at the end, so ``--out`` is
either the new consortium state or exactly what it was.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cohort.enrolment import (
    ROSTER_FORMAT,
    SITE_NAME,
    Roster,
    RosterError,
    SiteStatus,
    canonical_json,
    fingerprint,
    load_roster,
    parse_roster,
)
from cohort.outputs import StagedFolder
from secagg.config import MAX_CLIENT_ID
from secagg.errors import CohortError, ConfigurationError

__all__ = [
    "Consortium",
    "ProvisionError",
    "ProvisionResult",
    "SiteSpec",
    "issue_client_certificate",
    "issue_server_certificate",
    "load_consortium",
    "new_ca",
    "parse_consortium",
    "provision",
    "POLICY_TEMPLATE",
]

DEFAULT_PORT = 8443
RESERVED = ("admin", "coordinator")
KIT_MARKERS = ("admin",)
_CONSORTIUM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_CLOCK_SKEW = dt.timedelta(minutes=5)  # not-before is backdated a little for clocks behind


class ProvisionError(CohortError):
    """A kits folder or a request that provisioning cannot act on (a site to revoke that is
    not enrolled, a kits folder that holds something else, a change it cannot make safely)."""


# ---------------------------------------------------------------------------------------------
# The consortium file


@dataclass(frozen=True)
class SiteSpec:
    name: str
    contact: str | None = None


@dataclass(frozen=True, kw_only=True)
class Consortium:
    """A parsed consortium file. ``source`` names the file in error messages."""

    name: str
    admin_name: str
    admin_email: str | None
    hosts: tuple[str, ...]
    port: int = DEFAULT_PORT
    sites: tuple[SiteSpec, ...]
    validity_days: int = 365
    ca_validity_days: int = 3650
    source: str = "consortium.toml"

    @property
    def urls(self) -> tuple[str, ...]:
        return coordinator_urls(self.hosts, self.port)


def coordinator_urls(hosts: Iterable[str], port: int) -> tuple[str, ...]:
    out = []
    for host in hosts:
        shown = f"[{host}]" if ":" in host else host  # an IPv6 address
        out.append(f"https://{shown}:{port}")
    return tuple(out)


class _Fields:
    """Reads one table of the consortium file; every error names the file and the field."""

    def __init__(self, source: str, table: Any, where: str, *, allowed: Sequence[str]) -> None:
        self.source, self.where = source, where
        if not isinstance(table, dict):
            self.fail(where, f"must be a table, not {_toml_type(table)}")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            self.fail(f"{self._at(unknown[0])}",
                      f"unknown key (a {where or 'top-level'} entry takes "
                      f"{', '.join(allowed)})")
        self.table = table

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, field: str, message: str) -> None:
        raise ConfigurationError(f"{self.source}: {field}: {message}")

    def get(self, key: str, kind: type, *, default: Any = ..., check=None) -> Any:
        if key not in self.table:
            if default is ...:
                self.fail(self._at(key), "missing")
            return default
        value = self.table[key]
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
            self.fail(self._at(key), f"must be {_toml_kind(kind)}, not {_toml_type(value)}")
        if check is not None:
            problem = check(value)
            if problem:
                self.fail(self._at(key), problem)
        return value


def _toml_kind(kind: type) -> str:
    return {str: "a string", int: "an integer", list: "an array", dict: "a table",
            bool: "true or false"}[kind]


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "an integer", float: "a float", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _text(limit: int):
    def check(value: str) -> str | None:
        if not value.strip():
            return "must not be empty"
        if len(value) > limit:
            return f"longer than {limit} characters"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            return "holds a control character"
        return None
    return check


def _between(lo: int, hi: int):
    return lambda v: None if lo <= v <= hi else f"{v} is outside {lo}..{hi}"


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be a coordinator SAN (None: it can): an IP address, or a DNS name of
    letters, digits and hyphens (no wildcard, no trailing dot, not all-numeric at the end)."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if len(host) > 253:
        return f"host name {host!r} is longer than 253 characters"
    labels = host.lower().split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return (f"{host!r} is neither an IP address nor a host name (letters, digits and "
                f"hyphens between dots)")
    return None


def _normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def parse_consortium(text: str, *, source: str = "consortium.toml") -> Consortium:
    """Parse a consortium file; one :class:`ConfigurationError` naming the field if it is bad.

    The file::

        [consortium]
        name = "north-sea-hospitals"
        [admin]
        name = "Consortium admin"
        email = "admin@example.org"        # optional
        [coordinator]
        hosts = ["fl.example.org", "127.0.0.1", "localhost"]
        port = 8443                        # optional
        [certificates]                     # optional
        validity_days = 365                # server and site certificates
        ca_validity_days = 3650
        [[sites]]
        name = "site-1"
        contact = "it@hospital-1.example"  # optional
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from exc
    top = _Fields(source, data, "", allowed=("consortium", "admin", "coordinator",
                                             "certificates", "sites"))
    for key in ("consortium", "admin", "coordinator"):
        top.get(key, dict)
    cons = _Fields(source, data["consortium"], "consortium", allowed=("name",))
    name = cons.get("name", str, check=lambda v: None if _CONSORTIUM_NAME.fullmatch(v) else
                    f"{v!r}: letters, digits, spaces, '.', '_' and '-', at most 64")
    admin = _Fields(source, data["admin"], "admin", allowed=("name", "email"))
    admin_name = admin.get("name", str, check=_text(200))
    admin_email = admin.get("email", str, default=None,
                            check=lambda v: _text(200)(v) or (None if "@" in v else
                                                              f"{v!r} is not an e-mail address"))
    coord = _Fields(source, data["coordinator"], "coordinator", allowed=("hosts", "port"))
    raw_hosts = coord.get("hosts", list, check=lambda v: None if v else "must name a host")
    hosts: list[str] = []
    for i, host in enumerate(raw_hosts):
        where = f"coordinator.hosts[{i}]"
        if not isinstance(host, str):
            coord.fail(where, f"must be a string, not {_toml_type(host)}")
        problem = host_problem(host)
        if problem:
            coord.fail(where, problem)
        if _normal_host(host) in hosts:
            coord.fail(where, f"duplicate host {host!r}")
        hosts.append(_normal_host(host))
    port = coord.get("port", int, default=DEFAULT_PORT, check=_between(1, 65535))
    certs = _Fields(source, data.get("certificates", {}), "certificates",
                    allowed=("validity_days", "ca_validity_days"))
    validity = certs.get("validity_days", int, default=365, check=_between(1, 3650))
    ca_validity = certs.get("ca_validity_days", int, default=3650,
                            check=lambda v: _between(1, 36500)(v) or (
                                None if v >= validity else
                                f"{v} is shorter than validity_days ({validity})"))
    raw_sites = top.get("sites", list, check=lambda v: None if v else "must list a site")
    sites: list[SiteSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw_sites):
        site = _Fields(source, entry, f"sites[{i}]", allowed=("name", "contact"))
        site_name = site.get("name", str, check=lambda v: None if SITE_NAME.fullmatch(v) else (
            f"{v!r}: a site name starts with a letter or digit and holds letters, digits, "
            f"'.', '_' and '-', at most 63"))
        key = site_name.lower()
        if key in RESERVED:
            site.fail(f"sites[{i}].name", f"{site_name!r} is reserved for the {key} kit")
        if key in seen:
            site.fail(f"sites[{i}].name", f"duplicate site name {site_name!r} "
                                          f"(sites[{seen[key]}] has it)")
        seen[key] = i
        sites.append(SiteSpec(site_name, site.get("contact", str, default=None,
                                                  check=_text(200))))
    if len(sites) > MAX_CLIENT_ID:
        top.fail("sites", f"more than {MAX_CLIENT_ID} sites")
    return Consortium(name=name, admin_name=admin_name, admin_email=admin_email,
                      hosts=tuple(hosts), port=port, sites=tuple(sites),
                      validity_days=validity, ca_validity_days=ca_validity, source=source)


def load_consortium(path: str | os.PathLike[str]) -> Consortium:
    """Read and parse a consortium file (errors name ``path`` as given)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the consortium file "
                                 f"({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text") from exc
    return parse_consortium(text, source=str(path))


# ---------------------------------------------------------------------------------------------
# Certificates


def _name(consortium: str, common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_USAGE = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
              key_agreement=False, encipher_only=False, decipher_only=False)


def new_ca(consortium: str, *, now: dt.datetime, days: int
           ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A root CA: ECDSA P-256, may sign certificates (path length 0) and rosters."""
    now = now.replace(microsecond=0)  # certificates keep whole seconds
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(consortium, f"Cohort CA {consortium}"[:64])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, **_USAGE), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, subject: x509.Name,
          usage: x509.ObjectIdentifier, *, now: dt.datetime, days: int,
          sans: Sequence[x509.GeneralName] = ()
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = now.replace(microsecond=0)  # certificates keep whole seconds
    not_after = now + dt.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        raise ProvisionError(f"a certificate valid until {not_after:%Y-%m-%d} would outlive the "
                             f"CA (valid until {ca_cert.not_valid_after_utc:%Y-%m-%d}); "
                             f"shorten certificates.validity_days")
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - _CLOCK_SKEW).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                            crl_sign=False, **_USAGE), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_cert.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def issue_server_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *,
                             consortium: str, hosts: Sequence[str], now: dt.datetime,
                             days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The coordinator's TLS certificate: SANs = ``hosts`` (DNS names and IP addresses)."""
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return _leaf(ca_key, ca_cert, _name(consortium, "coordinator"),
                 ExtendedKeyUsageOID.SERVER_AUTH, now=now, days=days, sans=sans)


def issue_client_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *,
                             consortium: str, site: str, now: dt.datetime,
                             days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A site's TLS client certificate: CN = the site's name, EKU clientAuth."""
    return _leaf(ca_key, ca_cert, _name(consortium, site), ExtendedKeyUsageOID.CLIENT_AUTH,
                 now=now, days=days)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _fp(cert: x509.Certificate) -> str:
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def sign_roster(body: Mapping[str, Any], ca_key: ec.EllipticCurvePrivateKey,
                ca_cert: x509.Certificate) -> Roster:
    """Sign ``body`` with the CA key, then read it back through the verifier every party uses."""
    raw = canonical_json(dict(body))
    return parse_roster(raw, ca_key.sign(raw, ec.ECDSA(hashes.SHA256())), ca_cert)


# ---------------------------------------------------------------------------------------------
# Kit files


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def _toml(header: str, values: Mapping[str, Any], files: Mapping[str, str]) -> bytes:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    lines += ["", "[files]"] + [f"{k} = {_toml_value(v)}" for k, v in files.items()]
    return ("\n".join(lines) + "\n").encode("ascii")


_COMMON_FILES = {"ca": "ca.pem", "roster": "roster.json", "roster_signature": "roster.sig"}
SITE_FILES = {**_COMMON_FILES, "certificate": "client.pem", "key": "client.key",
              "identity_key": "identity.key", "policy": "policy.toml"}
COORDINATOR_FILES = {**_COMMON_FILES, "certificate": "server.pem", "key": "server.key"}


def site_config(consortium: str, site: str, client_id: int, urls: Sequence[str]) -> bytes:
    return _toml(f"Cohort site kit of {site}, made by 'cohort provision'. Keep this folder on\n"
                 f"the site's machine only: client.key and identity.key are its private keys.\n"
                 f"client_id is the site's secagg id, fixed for the consortium's lifetime.",
                 {"consortium": consortium, "site": site, "client_id": client_id,
                  "coordinator_urls": list(urls)}, SITE_FILES)


def coordinator_config(consortium: str, hosts: Sequence[str], port: int) -> bytes:
    return _toml("Cohort coordinator kit, made by 'cohort provision'. server.key is the\n"
                 "coordinator's TLS key: keep this folder on the coordinator's machine only.",
                 {"consortium": consortium, "hosts": list(hosts), "port": port,
                  "urls": list(coordinator_urls(hosts, port))}, COORDINATOR_FILES)


# The fields of clients.policy.SitePolicy, with its defaults; tests parse it back through
# clients.policy_file and compare it with SitePolicy(), and check that it names every field and
# every choice, so the template cannot drift from the class.
POLICY_TEMPLATE = """\
# Site policy: what this hospital agrees to take part in (clients.policy.SitePolicy).
# The site agent judges every job and every round against it before computing anything.
# As written it is SitePolicy's default; narrow it to what your site has approved.

# Strategies the coordinator may run with this site.
allowed_strategies = ["fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi", \
"distillation", "fedper", "fedrep", "transfer"]

# What a round may ask: train ("fit"), report test metrics ("evaluate"), or predict on the
# public reference set ("predict_public", distillation).
allowed_tasks = ["fit", "evaluate", "predict_public"]

# A round must have at least this many participants, so the site's update hides in a crowd.
min_participants = 3

# Outputs leave only through secure aggregation (the coordinator sees masked sums only).
require_secure_aggregation = true

# Example-level DP-SGD in local training: "allow", "require" or "refuse".
dp_sgd = "allow"

# The (epsilon, delta) budget for everything the site ever releases. Once set, every release
# must carry a privacy charge, and the site's ledger refuses what would go over.
# [privacy_budget]
# epsilon = 8.0
# delta = 1e-5

# An example-level (one patient record) budget for DP-SGD; requires dp_sgd "allow" or "require".
# [example_budget]
# epsilon = 3.0
# delta = 1e-5
"""


# ---------------------------------------------------------------------------------------------
# Planning and writing


@dataclass(frozen=True)
class ProvisionResult:
    """What a run did. ``changed`` False: nothing needed doing and nothing was written."""

    out: Path
    roster_version: int
    changed: bool
    added: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    reissued: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()  # sites whose roster entry changed otherwise (contact)
    roster_copies: tuple[str, ...] = ()  # kit folders whose roster was replaced
    kits_absent: tuple[str, ...] = ()  # enrolled sites whose kit is not in --out (shipped)


@dataclass
class _Plan:
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # relative path
    dirs: set[str] = field(default_factory=set)


@dataclass
class _State:
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    roster: Roster


def _utc(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.timezone.utc).replace(microsecond=0)


def _load_state(out: Path) -> _State | None:
    """The consortium already in ``out`` (verified), or None for a new or empty folder."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ProvisionError(f"{out} is a file, not a kits folder")
    entries = sorted(p.name for p in out.iterdir())
    admin = out / "admin"
    if not (admin / "ca.key").is_file():
        if entries:
            raise ProvisionError(f"{out} holds other files ({', '.join(entries[:3])}) and no "
                                 f"consortium (admin/ca.key); kits go into a new or empty folder")
        return None
    for path in out.rglob("*"):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ProvisionError(f"{path}: not a regular file or folder; refusing to touch "
                                 f"this kits folder")
    try:
        ca_cert = x509.load_pem_x509_certificate((admin / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((admin / "ca.key").read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisionError(f"{admin}: cannot read the CA (ca.pem, ca.key)") from exc
    if (not isinstance(ca_key, ec.EllipticCurvePrivateKey)
            or ca_key.public_key() != ca_cert.public_key()):
        raise ProvisionError(f"{admin}: ca.key is not the key of ca.pem")
    try:
        roster = load_roster(admin / "roster.json", ca_cert)
    except RosterError as exc:
        raise ProvisionError(f"{admin / 'roster.json'}: {exc}") from exc
    return _State(ca_key, ca_cert, roster)


def _roster_body(c: Consortium, *, version: int, now: dt.datetime, coordinator_fp: str,
                 sites: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"format": ROSTER_FORMAT, "consortium": c.name, "version": version,
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "admin": {"name": c.admin_name, "email": c.admin_email},
            "coordinator": {"hosts": list(c.hosts), "port": c.port,
                            "cert_sha256": coordinator_fp},
            "sites": sorted(sites, key=lambda s: s["client_id"])}


def _entry(site: Any) -> dict[str, Any]:
    return {"name": site.site_name, "client_id": site.client_id,
            "identity_key": site.identity_key_hex, "cert_sha256": site.fingerprint,
            "status": site.status.value, "contact": site.contact}


def _new_site_kit(plan: _Plan, c: Consortium, state: _State, spec: SiteSpec, client_id: int,
                  now: dt.datetime, *, keep_policy: bool) -> dict[str, Any]:
    tls_key, cert = issue_client_certificate(state.ca_key, state.ca_cert, consortium=c.name,
                                             site=spec.name, now=now, days=c.validity_days)
    identity = Ed25519PrivateKey.generate()
    kit = spec.name
    plan.dirs.add(kit)
    plan.files[f"{kit}/site.toml"] = (site_config(c.name, spec.name, client_id, c.urls), 0o644)
    plan.files[f"{kit}/ca.pem"] = (_pem(state.ca_cert), 0o644)
    plan.files[f"{kit}/client.pem"] = (_pem(cert), 0o644)
    plan.files[f"{kit}/client.key"] = (_key_pem(tls_key), 0o600)
    plan.files[f"{kit}/identity.key"] = (_key_pem(identity), 0o600)
    if not keep_policy:
        plan.files[f"{kit}/policy.toml"] = (POLICY_TEMPLATE.encode("ascii"), 0o644)
    return {"name": spec.name, "client_id": client_id, "contact": spec.contact,
            "identity_key": identity.public_key().public_bytes_raw().hex(),
            "cert_sha256": _fp(cert), "status": SiteStatus.ACTIVE.value}


def _names(values: Iterable[str], flag: str) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(values))
    for name in out:
        if not SITE_NAME.fullmatch(name):
            raise ProvisionError(f"{flag} {name!r}: not a site name")
    return out


def _fresh(c: Consortium, now: dt.datetime, plan: _Plan, *, add_sites: Sequence[str],
           revoke: Sequence[str], reissue: Sequence[str]) -> tuple[_State, Roster, dict]:
    if add_sites or revoke or reissue:
        raise ProvisionError("--add-site, --revoke and --reissue change an existing "
                             "consortium; this kits folder is new (every site in the file "
                             "is provisioned)")
    ca_key, ca_cert = new_ca(c.name, now=now, days=c.ca_validity_days)
    server_key, server_cert = issue_server_certificate(ca_key, ca_cert, consortium=c.name,
                                                       hosts=c.hosts, now=now,
                                                       days=c.validity_days)
    plan.dirs.update({"admin", "coordinator"})
    plan.files["admin/ca.key"] = (_key_pem(ca_key), 0o600)
    plan.files["admin/ca.pem"] = (_pem(ca_cert), 0o644)
    plan.files["coordinator/coordinator.toml"] = (coordinator_config(c.name, c.hosts, c.port),
                                                  0o644)
    plan.files["coordinator/ca.pem"] = (_pem(ca_cert), 0o644)
    plan.files["coordinator/server.pem"] = (_pem(server_cert), 0o644)
    plan.files["coordinator/server.key"] = (_key_pem(server_key), 0o600)
    state = _State(ca_key, ca_cert, roster=None)  # type: ignore[arg-type]
    entries = [_new_site_kit(plan, c, state, spec, i, now, keep_policy=False)
               for i, spec in enumerate(c.sites, start=1)]
    body = _roster_body(c, version=1, now=now, coordinator_fp=_fp(server_cert), sites=entries)
    return state, sign_roster(body, ca_key, ca_cert), {
        "added": tuple(s.name for s in c.sites)}


def _update(c: Consortium, out: Path, state: _State, now: dt.datetime, plan: _Plan, *,
            add_sites: Sequence[str], revoke: Sequence[str],
            reissue: Sequence[str]) -> tuple[Roster | None, dict]:
    old = state.roster
    src = c.source
    if c.name != old.consortium:
        raise ProvisionError(f"{src}: consortium.name: {c.name!r}, but {out} holds consortium "
                             f"{old.consortium!r}")
    if c.hosts != old.coordinator_hosts or c.port != old.coordinator_port:
        raise ProvisionError(
            f"{src}: coordinator: hosts {list(c.hosts)} port {c.port} differ from the ones "
            f"provisioned ({list(old.coordinator_hosts)} port {old.coordinator_port}); changing "
            f"them needs a new server certificate and new site configs, which an update does "
            f"not make yet")
    by_lower = {s.site_name.lower(): s for s in old.sites}
    in_file = {s.name.lower(): s for s in c.sites}
    for spec in c.sites:
        known = by_lower.get(spec.name.lower())
        if known is not None and known.site_name != spec.name:
            raise ProvisionError(f"{src}: site {spec.name!r} is enrolled as "
                                 f"{known.site_name!r}; sites cannot be renamed")
    new = [s for s in c.sites if s.name.lower() not in by_lower]
    for flag, names in (("--revoke", revoke), ("--reissue", reissue)):
        for name in names:
            if name not in {s.site_name for s in old.sites}:
                raise ProvisionError(f"{flag} {name}: not an enrolled site (the roster has "
                                     f"{', '.join(s.site_name for s in old.sites)})")
    both = set(revoke) & set(reissue)
    if both:
        raise ProvisionError(f"{sorted(both)[0]}: both --revoke and --reissue")
    for name in revoke:
        if not old.site(name).active:  # type: ignore[union-attr]
            raise ProvisionError(f"--revoke {name}: already revoked (roster version "
                                 f"{old.version})")
    if add_sites:
        new_names = {s.name for s in new}
        for name in add_sites:
            if name not in new_names:
                why = ("already enrolled" if name.lower() in by_lower else
                       f"not in {src}: add a [[sites]] entry for it first")
                raise ProvisionError(f"--add-site {name}: {why}")
        extra = sorted(new_names - set(add_sites))
        if extra:
            raise ProvisionError(f"{src} also has the new site {extra[0]!r}; name every site "
                                 f"to add with --add-site, or leave --add-site out")
    for site in old.sites:
        if site.active and site.site_name.lower() not in in_file and site.site_name not in revoke:
            raise ProvisionError(f"{src}: site {site.site_name!r} is enrolled and active but no "
                                 f"longer in the file; put it back, or revoke it with "
                                 f"--revoke {site.site_name}")
    for spec in new:
        if (out / spec.name).exists():
            raise ProvisionError(f"{out / spec.name} exists, but {spec.name!r} is not enrolled; "
                                 f"move it away first")
    entries = {s.client_id: _entry(s) for s in old.sites}
    updated = []
    for site in old.sites:
        spec = in_file.get(site.site_name.lower())
        if spec is not None and spec.contact != site.contact:
            entries[site.client_id]["contact"] = spec.contact
            updated.append(site.site_name)
    for name in revoke:
        entries[old.site(name).client_id]["status"] = SiteStatus.REVOKED.value  # type: ignore
    for name in reissue:
        site = old.site(name)
        assert site is not None
        spec = in_file.get(name.lower(), SiteSpec(name, site.contact))
        entries[site.client_id] = _new_site_kit(
            plan, c, state, spec, site.client_id, now,
            keep_policy=(out / name / "policy.toml").is_file())
    next_id = max(entries, default=0) + 1
    for spec in new:
        if next_id > MAX_CLIENT_ID:
            raise ProvisionError(f"no secagg client id left for {spec.name!r}")
        entries[next_id] = _new_site_kit(plan, c, state, spec, next_id, now, keep_policy=False)
        next_id += 1
    admin = {"name": c.admin_name, "email": c.admin_email}
    if not (new or revoke or reissue or updated) and admin == dict(old.admin):
        return None, {}
    body = _roster_body(c, version=old.version + 1, now=now,
                        coordinator_fp=old.coordinator_fingerprint, sites=entries.values())
    return sign_roster(body, state.ca_key, state.ca_cert), {
        "added": tuple(s.name for s in new), "revoked": tuple(revoke),
        "reissued": tuple(reissue), "updated": tuple(updated)}


def _write_file(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL and the mode at creation: a key is never, even briefly, readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        if fd != -1:
            os.close(fd)
    os.chmod(path, mode)  # the umask may have narrowed a certificate's 0644


def _mirror(src: Path, dst: Path, replace: set[str]) -> None:
    """Hard-link every file of ``src`` into ``dst`` (copy if links are refused), except the
    relative paths in ``replace``; folders keep their modes."""
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        for d in dirs:
            target = dst / rel / d
            target.mkdir()
            target.chmod((Path(folder) / d).stat().st_mode & 0o7777)
        for name in files:
            if (rel / name).as_posix() in replace:
                continue
            source, target = Path(folder) / name, dst / rel / name
            try:
                os.link(source, target)
            except OSError:
                _write_file(target, source.read_bytes(), source.stat().st_mode & 0o777)


def provision(consortium: Consortium, out: str | os.PathLike[str], *,
              add_sites: Sequence[str] = (), revoke: Sequence[str] = (),
              reissue: Sequence[str] = (), now: dt.datetime | None = None) -> ProvisionResult:
    """Make (or update) the consortium's kits in ``out``; see the module docstring.

    ``now`` is the clock, for tests (a past ``now`` makes certificates that have expired)."""
    now = _utc(now)
    out = Path(out)
    add_sites = _names(add_sites, "--add-site")
    revoke, reissue = _names(revoke, "--revoke"), _names(reissue, "--reissue")
    state = _load_state(out)
    plan = _Plan()
    if state is None:
        state, roster, what = _fresh(consortium, now, plan, add_sites=add_sites, revoke=revoke,
                                     reissue=reissue)
    else:
        roster, what = _update(consortium, out, state, now, plan, add_sites=add_sites,
                               revoke=revoke, reissue=reissue)
        if roster is None:
            return ProvisionResult(out, state.roster.version, changed=False,
                                   kits_absent=_absent(out, state.roster))
    copies = ["admin"] + [k for k in ["coordinator", *(s.site_name for s in roster.sites)]
                          if k in plan.dirs or (out / k).is_dir()]
    for kit in copies:
        plan.files[f"{kit}/roster.json"] = (roster.raw, 0o644)
        plan.files[f"{kit}/roster.sig"] = (roster.signature, 0o644)
    history = f"admin/history/roster-v{roster.version:04d}"
    plan.files[f"{history}.json"] = (roster.raw, 0o644)
    plan.files[f"{history}.sig"] = (roster.signature, 0o644)
    with StagedFolder(out) as staged:
        assert staged.path is not None
        if out.is_dir():
            _mirror(out, staged.path, set(plan.files))
        for rel, (data, mode) in sorted(plan.files.items()):
            path = staged.path / rel
            for parent in reversed(path.relative_to(staged.path).parents[:-1]):
                folder = staged.path / parent
                if not folder.is_dir():
                    folder.mkdir(mode=0o700)
            if path.exists():
                path.unlink()  # a hard link to the old file: unlink, never write through it
            _write_file(path, data, mode)
        staged.commit()
    return ProvisionResult(out, roster.version, changed=True,
                           added=what.get("added", ()), revoked=what.get("revoked", ()),
                           reissued=what.get("reissued", ()), updated=what.get("updated", ()),
                           roster_copies=tuple(copies), kits_absent=_absent(out, roster))


def _absent(out: Path, roster: Roster) -> tuple[str, ...]:
    return tuple(s.site_name for s in roster.sites if not (out / s.site_name).is_dir())
