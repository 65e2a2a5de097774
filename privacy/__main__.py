"""Command line of the privacy package (``cohort epsilon``, ``cohort encoder-bench``,
``cohort ledger``); ``python -m privacy epsilon|bench|audit`` are the same commands.

    python -m privacy epsilon --mechanism gaussian --noise-multiplier 1.5 --sample-rate 0.04 \
        --steps 2250 --delta 1e-5 --accountant rdp --json
    python -m privacy epsilon --mechanism skellam --variance 1e6 --l2-sensitivity 1100 \
        --l1-sensitivity 40000 --steps 100 --delta 1e-5 --json
    python -m privacy bench --dim 1048576 --bits 16 --json
    python -m privacy audit --ledger site.db --site hospital-a --json

A flag that belongs to the other mechanism is refused, never ignored.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Sequence

import click

from cohort.errors import EXIT_CODES_HELP, Command, Group
from cohort.options import Integer, Real, given, refuse

from .accountants import Accountant, compute_epsilon
from .events import GaussianEvent, SkellamEvent, event_to_dict
from .ledger import LedgerTrack

__all__ = ["audit", "epsilon", "encoder_bench", "ledger", "main", "print_verdict"]

_GAUSSIAN_ONLY = ("noise_multiplier", "sample_rate")
_SKELLAM_ONLY = ("variance", "l2_sensitivity", "l1_sensitivity")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@click.command(cls=Command, epilog=f"""\b
Examples:
  cohort epsilon --mechanism gaussian --noise-multiplier 1.5 --sample-rate 0.04 --steps 2250 --delta 1e-5
  cohort epsilon --mechanism gaussian --noise-multiplier 1.1 --steps 30 --delta 1e-5 --accountant prv
  cohort epsilon --mechanism skellam --variance 1e6 --l2-sensitivity 1100 --l1-sensitivity 40000 --steps 100 --delta 1e-5

Gaussian takes --noise-multiplier and --sample-rate; Skellam takes --variance,
--l2-sensitivity and --l1-sensitivity; a flag of the other mechanism is refused.
Prints one line (or one JSON object with --json) on stdout; writes no files.

{EXIT_CODES_HELP}""")
@click.option("--mechanism", type=click.Choice(["gaussian", "skellam"]), required=True,
              help="The mechanism applied at each step.")
@click.option("--noise-multiplier", type=Real(min=0.0, min_open=True), default=None,
              show_default="none: required with gaussian", help="Gaussian (required): noise standard deviation / L2 sensitivity.")
@click.option("--sample-rate", type=Real(min=0.0, max=1.0, min_open=True), default=1.0,
              show_default="1, no subsampling: every step uses all the data",
              help="Gaussian: Poisson sampling rate q of each step.")
@click.option("--variance", type=Real(min=0.0, min_open=True), default=None,
              show_default="none: required with skellam", help="Skellam (required): total noise variance per coordinate (integer units).")
@click.option("--l2-sensitivity", type=Real(min=0.0, min_open=True), default=None,
              show_default="none: required with skellam", help="Skellam (required): L2 sensitivity in the scaled integer domain.")
@click.option("--l1-sensitivity", type=Real(min=0.0, min_open=True), default=None,
              show_default="none: required with skellam", help="Skellam (required): L1 sensitivity in the scaled integer domain.")
@click.option("--steps", type=Integer(min=1), required=True,
              help="Number of composed steps (rounds).")
@click.option("--delta", type=Real(min=0.0, max=1.0, min_open=True, max_open=True),
              required=True, help="Target delta of the (epsilon, delta) guarantee.")
@click.option("--accountant", type=click.Choice([a.value for a in Accountant]), default="rdp",
              help="rdp: Renyi DP (both mechanisms); prv: the PRV accountant (Gaussian only).")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print one JSON object instead of a sentence.")
@click.pass_context
def epsilon(ctx: click.Context, mechanism: str, noise_multiplier: float | None,
            sample_rate: float, variance: float | None, l2_sensitivity: float | None,
            l1_sensitivity: float | None, steps: int, delta: float, accountant: str,
            as_json: bool) -> int:
    """Epsilon of a mechanism composed over --steps steps, at --delta.

    An upper bound, never an optimistic approximation: RDP converts with the tight conversion;
    Skellam uses its own RDP bound (Agarwal, Kairouz, Liu 2021)."""
    own, other = ((_GAUSSIAN_ONLY, _SKELLAM_ONLY) if mechanism == "gaussian"
                  else (_SKELLAM_ONLY, _GAUSSIAN_ONLY))
    stray = [_flag(n) for n in other if given(ctx, n)]
    if stray:
        refuse(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to "
               f"--mechanism {mechanism} (it takes {', '.join(_flag(n) for n in own)})")
    values = ctx.params
    missing = [_flag(n) for n in own if values[n] is None]
    if missing:
        refuse(f"--mechanism {mechanism} needs {', '.join(missing)}")
    if accountant == Accountant.PRV.value and mechanism != "gaussian":
        refuse("--accountant prv analyses only --mechanism gaussian; use --accountant rdp")
    if mechanism == "gaussian":
        event = GaussianEvent(noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                              steps=steps)
    else:
        event = SkellamEvent(variance=variance, l2_sensitivity=l2_sensitivity,
                             l1_sensitivity=l1_sensitivity, steps=steps)
    try:
        eps = compute_epsilon([event], delta=delta, accountant=Accountant(accountant))
    except (ZeroDivisionError, OverflowError, FloatingPointError) as exc:
        from .errors import ConfigurationError

        raise ConfigurationError(f"these parameters are beyond what the {accountant} accountant "
                                 f"can compute (noise too small for the sensitivity?): {exc}")
    out = {"mechanism": mechanism, "accountant": accountant, "epsilon": eps, "delta": delta}
    out.update({k: v for k, v in event_to_dict(event).items() if k not in ("kind", "version")})
    if as_json:
        print(json.dumps(out))
    else:
        how = (f"noise multiplier {noise_multiplier:g}, sample rate {sample_rate:g}"
               + (" (no subsampling)" if sample_rate == 1 else "")
               if mechanism == "gaussian" else
               f"variance {variance:g}, L2 {l2_sensitivity:g}, L1 {l1_sensitivity:g}")
        print(f"epsilon = {eps:.6f} at delta = {delta:g} ({mechanism}: {how}; {steps} steps; "
              f"{accountant} accountant)")
    return 0


@click.command(cls=Command, epilog=f"""\b
Example:
  cohort encoder-bench --dim 1048576 --bits 16 --json

Prints the median encode and decode seconds, ours and plain numpy's, and their ratios;
writes no files.

{EXIT_CODES_HELP}""")
@click.option("--dim", type=Integer(min=1, max=1 << 28), default=1 << 20,
              help="Entries of the update vector.")
@click.option("--bits", type=Integer(min=2, max=64), default=16,
              help="Bits b of each encoded entry (the secure sum's modulus 2^b).")
@click.option("--clients", type=Integer(min=1), default=100,
              help="Clients the noise is shared among (sets each one's noise share).")
@click.option("--repeats", type=Integer(min=1), default=7,
              help="Timed repetitions; the median is reported.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print one JSON object instead of two lines.")
def encoder_bench(dim: int, bits: int, clients: int, repeats: int, as_json: bool) -> int:
    """Time the privacy encoding (rotate, clip, scale, round, Skellam noise, wrap) and its
    decoding against the same steps in plain numpy."""
    from ._bench import run_bench

    out = run_bench(dim=dim, bits=bits, clients=clients, repeats=repeats,
                    progress=not as_json and sys.stderr.isatty())
    if as_json:
        print(json.dumps(out))
    else:
        print(f"encode d={out['dim']} b={out['bits']} skellam: "
              f"{out['encode_seconds'] * 1e3:.1f} ms (plain numpy "
              f"{out['plain_encode_seconds'] * 1e3:.1f} ms, ratio {out['encode_ratio']:.2f})")
        print(f"decode: {out['decode_seconds'] * 1e3:.1f} ms (plain numpy "
              f"{out['plain_decode_seconds'] * 1e3:.1f} ms, ratio {out['decode_ratio']:.2f})")
    return 0


@click.command(cls=Command, epilog=f"""\b
Example:
  cohort ledger --ledger runs/dp/ledgers.sqlite --site hospital-01 --json

A simulation with --target-epsilon leaves its sites' ledgers in ledgers.sqlite.

{EXIT_CODES_HELP}""")
@click.option("--ledger", "path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The ledger database (SQLite), e.g. a run's ledgers.sqlite.")
@click.option("--site", required=True, help="The site id whose ledger to print.")
@click.option("--track", type=click.Choice([t.value for t in LedgerTrack]), default="site",
              help="site: client-level releases (the secure sum); example: example-level "
                   "(DP-SGD) releases.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print one JSON object instead of a summary and one line per event.")
def ledger(path: Path, site: str, track: str, as_json: bool) -> int:
    """Print a site's privacy ledger: its budget, what it spent, and every release on it."""
    from secagg.errors import ConfigurationError

    from .ledger import SiteLedger

    try:
        try:
            book = SiteLedger(path, site_id=site, track=LedgerTrack(track))
        except ConfigurationError as exc:  # a site the ledger has never seen
            raise click.BadParameter(f"{path} has no {track} ledger for {site!r} ({exc})",
                                     param_hint="'--site'") from exc
        out = {"site_id": book.site_id, "track": book.track.value,
               "epsilon_budget": book.budget.epsilon,
               "delta": book.budget.delta, "epsilon_spent": book.spent(),
               "overrun": book.overrun,
               "entries": [{"round_id": e.round_id, "release_id": e.release_id.hex(),
                            "status": e.status.value, "epsilon_after": e.epsilon_after,
                            "overrun": e.overrun, "worst": event_to_dict(e.worst),
                            "event": None if e.charged is None else event_to_dict(e.charged)}
                           for e in book.entries()]}
    except sqlite3.DatabaseError as exc:
        raise click.BadParameter(f"{path} is not a ledger database ({exc})",
                                 param_hint="'--ledger'") from exc
    if as_json:
        print(json.dumps(out))
    else:
        print(f"site {out['site_id']}: spent {out['epsilon_spent']:.4f} of "
              f"{out['epsilon_budget']:.4f} (delta {out['delta']:g}), "
              f"{len(out['entries'])} events")
        for e in out["entries"]:
            kind = "nothing released" if e["event"] is None else e["event"]["kind"]
            print(f"  {e['round_id']} [{e['status']}]: {kind} -> {e['epsilon_after']:.4f}"
                  + (" OVER BUDGET" if e["overrun"] else ""))
    return 0


class _AuditGroup(Group):
    """``audit``: its subcommands, or (the former ``audit`` command) a ledger with --ledger."""


@click.group(cls=_AuditGroup, invoke_without_command=True, epilog=f"""\b
Examples:
  cohort audit run runs/dp
  cohort audit run runs/dp --out audits/dp --json
  cohort audit run runs/job1/state.sqlite --kit kits/coordinator
  cohort audit canaries --out audits/canaries
  cohort audit mia --dp distributed --noise-multiplier 1 --out audits/mia

Each audit prints its verdict (PASS, FAIL, or INCOMPLETE when a check could not be made from
the records), every check by name, and writes audit.json and audit.html (with its figures)
into --out. The former form
'audit --ledger FILE --site ID' still prints one site's ledger.

{EXIT_CODES_HELP} An audit that FAILs, or is INCOMPLETE, exits 1.""")
@click.option("--ledger", "ledger_path", default=None, show_default="none: a subcommand runs",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="(The former 'audit' command) print this ledger database's --site ledger.")
@click.option("--site", default=None, show_default="none; required with --ledger",
              help="With --ledger: the site id.")
@click.option("--track", type=click.Choice([t.value for t in LedgerTrack]), default="site",
              help="With --ledger: site or example track.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="With --ledger: print one JSON object.")
@click.pass_context
def audit(ctx: click.Context, ledger_path: Path | None, site: str | None, track: str,
          as_json: bool) -> int:
    """Audit what a run did (run) and measure what it leaks (canaries, mia)."""
    if ctx.invoked_subcommand is not None:
        if ledger_path is not None or site is not None:
            refuse("--ledger and --site print a ledger; they do not go with a subcommand")
        return 0
    if ledger_path is None:
        click.echo(ctx.get_help())
        return 0
    if site is None:
        refuse("--ledger needs --site")
    return ctx.invoke(ledger, path=ledger_path, site=site, track=track, as_json=as_json)


def print_verdict(report, paths) -> None:
    """The verdict and every check, one line each, then where the files are."""
    made = len(report.checks) - len(report.not_made())
    passed = sum(1 for c in report.checks if c.passed)
    print(f"{report.title}: {report.verdict} ({passed} of {made} checks made passed"
          + (f"; {len(report.not_made())} not made" if report.not_made() else "") + ")")
    for check in report.checks:
        print(f"  [{check.status}] {check.name}: {check.evidence}")
    for key, value in report.claimed.items():
        print(f"  claimed  {key}: {_short(value)}")
    for key, value in report.measured.items():
        if not isinstance(value, (list, dict)) or key.endswith("recomputed"):
            print(f"  audited  {key}: {_short(value)}")
    print(f"wrote {paths[0]} and {paths[1]}")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items()) or "—"
    return "—" if value is None else str(value)


@audit.command("run", cls=Command, epilog=f"""\b
Examples:
  cohort audit run runs/dp
  cohort audit run runs/dp --out audits/dp --json
  cohort audit run runs/job1/state.sqlite --kit kits/coordinator
  cohort audit run runs/job1/state.sqlite --kit kits/coordinator --ledgers runs/job1/kits

PATH is a simulation's output folder (python -m coordinator simulate --out PATH), or a
coordinator's state file (cohort serve --state; a serve --out folder holding state.sqlite
will do). Checks, per secure round, from the coordinator's own view: survivors >= threshold;
one disjoint survivor/dropped view for every client; never both shares of one client; only
masked vectors received (a uniformity test per upload); the noise summed versus planned. Then
the ledgers: every release charged; every printed epsilon recomputed independently (within
0.5%); no site over its budget.

A state file holds only what the sites sent: the server's messages are regenerated by
replaying each round's inbox into a fresh secagg server (check: inbox replays as recorded),
and each stored release must be what the replayed sum decodes to (bit for bit; in central DP,
within the declared noise) and charge the event its announcement makes (check: the release
is the secure sum).
With --kit or --roster, every stored envelope is verified under its site's identity key from
the CA-signed roster; without, that check is not made. Site ledgers are kept at the sites:
give them with --ledger / --ledgers (or keep them beside the state file as
kits/SITE/ledger.sqlite); without any, the ledger checks are not made. metrics.jsonl and
summary.json beside the state file are audited too. The state file is only read, never
written. Writes audit.json and audit.html into --out (default PATH/audit for a folder,
PATH.audit/ beside a file).

{EXIT_CODES_HELP} A FAIL verdict, or an INCOMPLETE one (a check that could not be made from
these records), exits 1.""")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              show_default="PATH/audit for a folder, PATH.audit for a file",
              help="Folder for audit.json and audit.html.")
@click.option("--ledger", "ledger_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="State file only: one site's ledger database (repeat for each site).")
@click.option("--ledgers", "ledger_dirs", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="State file only: a folder of site ledgers (SITE/ledger.sqlite, as in a "
                   "kits folder, or *.sqlite).")
@click.option("--kit", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, show_default="none: signatures not verified",
              help="State file only: a kit folder (roster.json, roster.sig, ca.pem) whose "
                   "CA-signed roster the stored envelopes are verified against.")
@click.option("--roster", "roster_file", default=None, show_default="none",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="State file only: the consortium's roster.json (roster.sig beside it), "
                   "instead of --kit.")
@click.option("--ca", "ca_file", default=None, show_default="ca.pem beside --roster",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --roster: the consortium CA certificate it must be signed by.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print audit.json on stdout instead of the verdict lines.")
def audit_run_command(path: Path, out: Path | None, ledger_files: tuple[Path, ...],
                      ledger_dirs: tuple[Path, ...], kit: Path | None,
                      roster_file: Path | None, ca_file: Path | None, as_json: bool) -> int:
    """Verify from its records what a run did: the secure rounds and the privacy ledger."""
    from .audit import audit_run, open_records, write_report
    from .audit.roster import read_roster, roster_from_kit
    from .audit.state import ledger_files as ledgers_in

    if kit is not None and roster_file is not None:
        refuse("give --kit or --roster, not both")
    if ca_file is not None and roster_file is None:
        refuse("--ca goes with --roster (a kit holds its own ca.pem)")
    # Everything is read and checked before anything is written.
    roster = (roster_from_kit(kit) if kit is not None else
              read_roster(roster_file, ca=ca_file) if roster_file is not None else None)
    ledgers = None
    if ledger_files or ledger_dirs:
        ledgers = list(ledger_files)
        for folder in ledger_dirs:
            found = ledgers_in(folder)
            if not found:
                refuse(f"--ledgers {folder}: holds no site ledger database")
            ledgers += found
    records = open_records(path, ledgers=ledgers, roster=roster)
    report = audit_run(records, progress=not as_json and sys.stderr.isatty())
    target = out if out is not None else (path / "audit" if path.is_dir() else
                                          path.with_suffix(".audit"))
    paths = write_report(report, target)
    if as_json:
        print(paths[0].read_text(), end="")
    else:
        print_verdict(report, paths)
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m privacy`` (and the ``cohort-privacy`` script): privacy's commands."""
    from cohort.registry import role_main

    return role_main("privacy", argv, summary="Privacy: epsilon of a mechanism, the encoder "
                     "benchmark, a site's ledger, the audits.")


if __name__ == "__main__":
    sys.exit(main())
