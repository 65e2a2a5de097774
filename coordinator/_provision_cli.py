"""``cohort provision`` (also ``python -m coordinator provision``): the consortium's CA,
certificates, identity keys and startup kits from one consortium file (:mod:`.provision`)."""

from __future__ import annotations

from pathlib import Path

import click

from cohort.errors import EXIT_CODES_HELP, Command, ExitCode
from cohort.options import refuse

__all__ = ["provision"]

_EPILOG = f"""\b
Examples:
  cohort provision consortium.toml --out kits/                  # a new consortium
  cohort provision consortium.toml --out kits/                  # again, after adding a [[sites]]
  cohort provision consortium.toml --out kits/ --add-site site-4   # the same, said explicitly
  cohort provision consortium.toml --out kits/ --revoke site-2
  cohort provision consortium.toml --out kits/ --reissue site-3    # new keys, same client id

\b
The consortium file (TOML):
  [consortium]  name = "north-sea-hospitals"
  [admin]       name = "Consortium admin"   email = "admin@example.org" (optional)
  [coordinator] hosts = ["fl.example.org", "127.0.0.1", "localhost"]   port = 8443 (optional)
  [certificates] validity_days = 365   ca_validity_days = 3650           (optional)
  [[sites]]     name = "site-1"   contact = "it@hospital-1.example" (optional), one per site

\b
What --out holds (kit folders 0700, private keys 0600):
  admin/        ca.key (the CA key: never leaves the admin), ca.pem, roster.json,
                roster.sig, history/ (every roster version signed)
  coordinator/  coordinator.toml, ca.pem, server.pem (SANs: the hosts; serverAuth),
                server.key, roster.json, roster.sig
  SITE/         site.toml (consortium, site, secagg client_id, coordinator URLs), ca.pem,
                client.pem (CN = SITE; clientAuth), client.key, identity.key (Ed25519,
                signs the site's protocol messages), roster.json, roster.sig, policy.toml

Send each SITE/ folder to its hospital and coordinator/ to the coordinator's machine over a
channel you trust; keep admin/ offline. roster.json is canonical JSON listing every site's
client id, identity key, certificate SHA-256 and status, signed by the CA (roster.sig, DER
ECDSA-SHA256; check it with: openssl dgst -sha256 -verify <(openssl x509 -in ca.pem -pubkey
-noout) -signature roster.sig roster.json).

Running again on the same --out only adds the sites new in the file, revokes (--revoke) or
re-issues (--reissue) the ones named, in a new roster version: every other key, certificate
and kit file stays byte-identical; only the roster copies change (send the new roster.json
and roster.sig to every site). With nothing to change, nothing is written. Everything is
checked before anything is created; the new state is renamed into place at the end.

{EXIT_CODES_HELP}"""


@click.command(cls=Command, epilog=_EPILOG,
               short_help="Make a consortium's CA, certificates and site kits.")
@click.argument("consortium_file", metavar="CONSORTIUM.toml",
                type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path), default=Path("kits"),
              help="The kits folder: new or empty for a new consortium, or one this command "
                   "made before (then it is updated).")
@click.option("--add-site", "add_sites", multiple=True, metavar="NAME",
              help="Add only this site (repeatable); it must be a [[sites]] entry of the file. "
                   "Without it, every site new in the file is added.")
@click.option("--revoke", multiple=True, metavar="NAME",
              help="Mark an enrolled site revoked in a new roster version (repeatable).")
@click.option("--reissue", multiple=True, metavar="NAME",
              help="Give an enrolled site a new TLS key, certificate and identity key under the "
                   "same client id (repeatable); its old certificate stops being accepted.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Refused: provisioning never replaces a consortium's keys wholesale. Use "
                   "--reissue NAME for one site, or remove the folder to start a new consortium.")
def provision(consortium_file: Path, out: Path, add_sites: tuple[str, ...],
              revoke: tuple[str, ...], reissue: tuple[str, ...], overwrite: bool) -> int:
    """Make a consortium's CA, server certificate and per-site kits (client certificate,
    Ed25519 identity key, site config, signed roster, policy template); add, revoke or
    re-issue sites later without touching the others."""
    from cohort.outputs import check_output_folder

    from .provision import load_consortium, provision as run

    consortium = load_consortium(consortium_file)
    existing = (out / "admin" / "ca.key").is_file()
    if overwrite:
        refuse(f"--overwrite would replace {'the consortium in ' if existing else ''}{out} "
               f"and every key in it; provisioning never does that: use --reissue NAME for a "
               f"site's keys, or remove {out} yourself to start a new consortium")
    if not existing:
        check_output_folder(out, markers=(), overwrite=False)
    result = run(consortium, out, add_sites=add_sites, revoke=revoke, reissue=reissue)
    _report(result, consortium_file)
    return ExitCode.OK


def _report(result, source: Path) -> None:
    out = result.out
    if not result.changed:
        click.echo(f"Nothing to change: {out} already matches {source} "
                   f"(roster version {result.roster_version}); nothing was written.")
        return
    click.echo(f"{out}: roster version {result.roster_version}")
    for label, names in (("added", result.added), ("revoked", result.revoked),
                         ("re-issued", result.reissued), ("contact updated", result.updated)):
        if names:
            click.echo(f"  {label}: {', '.join(names)}")
    click.echo(f"  roster written to: {', '.join(k + '/' for k in result.roster_copies)}")
    if result.kits_absent:
        click.echo(f"  not in {out} (sent already?): {', '.join(result.kits_absent)}; send them "
                   f"{out}/admin/roster.json and roster.sig")
    click.echo(f"Send each site's folder to that site and coordinator/ to the coordinator over "
               f"a channel you trust; {out}/admin/ holds the CA key and stays with the admin.")
