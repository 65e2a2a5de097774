"""``cohort join`` (also ``python -m clients join``): a hospital's site agent for one job.

It reads the site's kit (``site.toml``, ``client.pem``/``client.key``, ``identity.key``,
``ca.pem``, the CA-signed roster, ``policy.toml``), loads the site's data (a CSV file, or a
bundled data set's share for tests and demos), builds its :class:`clients.Site` with its ledger
in the kit folder (``ledger.sqlite``, when the policy names a privacy budget), and runs the agent
(:class:`clients.agent.SiteAgent`, outbound HTTPS only) until the coordinator says the job is
over. Every round is judged against the site policy before anything is computed; only catalogue
models run. At the end it prints what it agreed to and what it spent.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import click

from cohort.errors import EXIT_CODES_HELP, Command, ExitCode

__all__ = ["join"]

_EPILOG = f"""\b
Examples:
  cohort join --kit kits/site-1 --data /data/cohort.csv --label-column outcome
  cohort join --kit kits/site-1 --data builtin:breast_cancer:1/3 --seed 7   # demo and tests

\b
--data builtin:NAME:I/N is the I-th of N IID shares of a bundled data set (breast_cancer,
digits, diabetes), split as 'cohort simulate --seed S' splits it.

\b
Logs: --log-json writes one JSON object per line on stderr (time, level, event, round, stage,
step, status ...); --log-file FILE appends the same JSON lines, at INFO, to FILE. No log line
holds key material, shares, masks, update values or message bodies.

{EXIT_CODES_HELP}"""


@click.command(cls=Command, epilog=_EPILOG,
               short_help="Run a site agent that joins a coordinator's job.")
@click.option("--kit", type=click.Path(path_type=Path, file_okay=False, exists=True),
              required=True, help="The site's kit folder made by 'cohort provision'.")
@click.option("--data", "data_spec", required=True,
              help="The site's data: a CSV file, or builtin:NAME:I/N (tests and demos).")
@click.option("--label-column", default=None, show_default="none",
              help="The label column of a CSV file.")
@click.option("--url", default=None, show_default="the kit's first coordinator URL",
              help="The coordinator's URL.")
@click.option("--seed", type=int, default=None, show_default="none: the OS's randomness",
              help="Test-only seed for the data split and local shuffling.")
@click.option("--run-seconds", type=float, default=3600.0,
              help="Give up after this long.")
@click.option("--report", type=click.Path(path_type=Path), default=None, show_default="none",
              help="Also write what was agreed and spent as JSON here.")
@click.option("--verbose", is_flag=True, help="Log every request and step.")
@click.option("--log-json", is_flag=True, help="Log on stderr as JSON lines, not text.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              show_default="none", help="Also append every event, as JSON lines, to this file.")
def join(kit: Path, data_spec: str, label_column: str | None, url: str | None,
         seed: int | None, run_seconds: float, report: Path | None, verbose: bool,
         log_json: bool, log_file: Path | None) -> int:
    """Join the coordinator named in the kit and take part in its job until it ends."""
    # The commands' own handlers replace any a dependency installed at import (opacus
    # configures the root logger), so --verbose and --log-json mean what they say.
    from cohort.logs import configure_logging

    configure_logging(verbose=verbose, json_lines=log_json, file=log_file)
    from cohort.runtime import keep_large_buffers

    keep_large_buffers()
    from cryptography.hazmat.primitives import serialization

    from cohort.enrolment import load_roster
    from privacy import SiteLedger

    from . import ModelKind, Site, make_model
    from .agent import SiteAgent, site_tls_context
    from .deployed import SiteWorker, load_site_data
    from .policy_file import load_policy

    try:
        config = tomllib.loads((kit / "site.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{kit}: not a site kit ({exc})", param_hint="'--kit'") from None
    files = config.get("files", {})
    name, client_id = config["site"], int(config["client_id"])
    roster = load_roster(kit / files.get("roster", "roster.json"), kit / files.get("ca", "ca.pem"))
    roster.require_active(name)
    identity = serialization.load_pem_private_key(
        (kit / files.get("identity_key", "identity.key")).read_bytes(), password=None)
    policy = load_policy(kit / files.get("policy", "policy.toml"))
    local = load_site_data(data_spec, seed=0 if seed is None else seed,
                           label_column=label_column)
    ledger = None
    if policy.privacy_budget is not None:
        ledger = SiteLedger(kit / "ledger.sqlite", site_id=name, budget=policy.privacy_budget)
    url = url or config["coordinator_urls"][0]

    def site_for(training) -> Site:
        model = make_model(ModelKind(training.model), input_shape=local.feature_shape,
                           n_outputs=local.n_outputs, hidden=training.hidden, seed=seed)
        return Site(name, data=local.data, model=model, policy=policy, ledger=ledger,
                    seed=None if seed is None else seed + 31 * client_id)

    directory = {s.site_name: s.identity_public for s in roster.sites if s.active}
    worker = SiteWorker(name, site_for, identity, directory)
    tls = site_tls_context(certfile=kit / files.get("certificate", "client.pem"),
                           keyfile=kit / files.get("key", "client.key"),
                           cafile=kit / files.get("ca", "ca.pem"))
    click.echo(f"{name}: joining {url} with {len(local.data.train.y)} training records "
               f"({local.source}); ledger "
               f"{'none (the policy names no budget)' if ledger is None else kit / 'ledger.sqlite'}",
               err=True)
    with SiteAgent(base_url=url, tls=tls, identity=identity, client_id=client_id,
                   rounds=worker.begin, poll_wait=5.0, run_seconds=run_seconds,
                   max_polls=1_000_000) as agent:
        result = agent.run()
    spent = worker.spent()
    for e in worker.log:
        how = ("aborted" if e.aborted else "in the sum" if e.included
               else "not in the sum" if e.included is False else "no outcome (worst case kept)")
        click.echo(f"{name}: round {e.round}: agreed to {e.strategy} with {e.cohort} sites, "
                   f"DP {e.mechanism}"
                   + ("" if e.epsilon_if_worst is None else
                      f", at worst taking its epsilon to {e.epsilon_if_worst:.4g}")
                   + f"; {how}")
    budget = "" if ledger is None else f" of budget epsilon {ledger.budget.epsilon:g}"
    click.echo(f"{name}: {result.outcome}{': ' + result.detail if result.detail else ''}; "
               f"{len(worker.log)} rounds; spent epsilon "
               f"{'n/a' if spent is None else f'{spent:.4g}'}{budget}")
    if report is not None:
        report.write_text(json.dumps({
            "site": name, "outcome": result.outcome, "detail": result.detail,
            "rounds": [e.__dict__ for e in worker.log], "spent_epsilon": spent,
            "budget_epsilon": None if ledger is None else ledger.budget.epsilon}, indent=2))
    if result.outcome == "refused":
        return int(ExitCode.POLICY)
    return int(ExitCode.OK) if result.outcome == "job_done" else int(ExitCode.CHECK_FAILED)
