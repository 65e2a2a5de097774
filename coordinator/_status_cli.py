"""``cohort status`` (also ``python -m coordinator status``): a coordinator's job from its state
file, while it runs or after it ended.

It opens the state file read-only (SQLite WAL readers never block the running coordinator) and
prints the job, every round (state, sites summed, dropouts, score, epsilon), the open round's
step and stage with who has answered it and who has not, and the epsilon each site has spent as
the coordinator accounts it: the composition of the released rounds that summed that site.
Nothing in it is secret: the file holds masked messages, public round facts and releases.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click

from cohort.errors import EXIT_CODES_HELP, Command, ExitCode

__all__ = ["status", "job_status"]

_EPILOG = f"""\b
Examples:
  cohort status --state runs/job1/state.sqlite
  cohort status --state runs/job1/state.sqlite --json

{EXIT_CODES_HELP}"""


def job_status(path: Path) -> dict:
    """What ``cohort status`` prints, as a dict (``--json``)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return _read(conn, path)
    except sqlite3.DatabaseError as exc:
        raise click.BadParameter(f"{path} is not a coordinator state file ({exc})",
                                 param_hint="'--state'") from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, path: Path) -> dict:
    from cohort.contract import RoundWork, parse_job
    from privacy import event_from_json

    from .accounting import RoundAccountant

    version, = conn.execute("PRAGMA user_version").fetchone()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version < 2 or not {"job", "rounds", "messages", "steps", "round_sites"} <= tables:
        raise click.BadParameter(f"{path} is not a coordinator state file",
                                 param_hint="'--state'")
    spec = conn.execute("SELECT spec FROM job").fetchone()
    job = parse_job(spec[0], source=str(path)) if spec else None
    rounds = []
    per_site: dict[str, list] = {}
    for round_id, number, state, work in conn.execute(
            "SELECT round_id, number, state, work FROM rounds ORDER BY number"):
        announcement = RoundWork.from_bytes(bytes(work)).announcement
        cohort = list(announcement.cohort)
        name = dict(conn.execute("SELECT client, site FROM round_sites WHERE round_id = ?",
                                 (round_id,)).fetchall())
        site_of = lambda c: name.get(c, f"client {c}")  # noqa: E731
        steps = conn.execute("SELECT step, stage, answered, silent FROM steps WHERE "
                             "round_id = ? ORDER BY step", (round_id,)).fetchall()
        dropouts = sorted({site_of(c) for *_, s in steps for c in json.loads(s)})
        row = {"round": number, "state": state, "cohort": cohort, "dropouts": dropouts,
               "steps_closed": len(steps)}
        release = conn.execute("SELECT meta FROM releases WHERE round_id = ?",
                               (round_id,)).fetchone()
        if release is not None:
            meta = json.loads(release[0])
            row["summed"] = meta["included"]
            if meta["event"] is not None:
                for site in meta["included"]:
                    per_site.setdefault(site, []).append((number, meta["event"]))
        point = conn.execute("SELECT metrics FROM checkpoints WHERE number = ?",
                             (number,)).fetchone()
        if point is not None:
            m = json.loads(point[0])
            row.update(accuracy=m.get("accuracy"), epsilon=m.get("epsilon"))
        if state == "open":
            step = len(steps)
            answered = [site_of(s) for s, in conn.execute(
                "SELECT site FROM messages WHERE round_id = ? AND step = ? ORDER BY site",
                (round_id, step))]
            stage = conn.execute("SELECT stage FROM messages WHERE round_id = ? AND "
                                 "step = ? LIMIT 1", (round_id, step)).fetchone()
            row.update(step=step, stage=None if stage is None else stage[0],
                       answered=answered,
                       waiting=[s for s in cohort if s not in answered
                                and s not in dropouts])
        rounds.append(row)
    delta = job.delta if job is not None else 1e-5
    spent = {}
    for site, charges in sorted(per_site.items()):
        accountant = RoundAccountant()
        for number, event in charges:
            accountant.record(event_from_json(event), round_number=number)
        spent[site] = float(accountant.epsilon(delta=delta))
    return {"job": None if job is None else {"name": job.name, "rounds": job.rounds,
                                              "strategy": job.strategy.value,
                                              "dp": job.mode.value, "delta": job.delta},
            "rounds": rounds, "epsilon_by_site": spent}


@click.command(cls=Command, epilog=_EPILOG,
               short_help="Show a coordinator's job, rounds and who has answered.")
@click.option("--state", "state_file", required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The coordinator's state file (cohort serve --state; OUT/state.sqlite).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def status(state_file: Path, as_json: bool) -> int:
    """Show the job in a coordinator's state file: its rounds, the open round's stage and who
    has answered, and the epsilon each site has spent as the coordinator accounts it."""
    report = job_status(state_file)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return int(ExitCode.OK)
    job = report["job"]
    if job is not None:
        click.echo(f"job {job['name']!r}: {job['strategy']}, DP {job['dp']}, "
                   f"{len(report['rounds'])} of {job['rounds']} round(s) recorded")
    for r in report["rounds"]:
        acc = "-" if r.get("accuracy") is None else f"{r['accuracy']:.4f}"
        eps = "-" if r.get("epsilon") is None else f"{r['epsilon']:.4g}"
        summed = len(r.get("summed", []))
        line = (f"  round {r['round']}: {r['state']}, {summed} of {len(r['cohort'])} summed, "
                f"accuracy {acc}, epsilon {eps}")
        if r["dropouts"]:
            line += f", dropped: {', '.join(r['dropouts'])}"
        click.echo(line)
        if r["state"] == "open":
            click.echo(f"    step {r['step']} ({r['stage'] or 'no message yet'}): answered "
                       f"{', '.join(r['answered']) or 'nobody'}; waiting for "
                       f"{', '.join(r['waiting']) or 'nobody'}")
    for site, eps in report["epsilon_by_site"].items():
        click.echo(f"  {site}: epsilon {eps:.4g} spent (δ={job['delta'] if job else 1e-5:g})")
    return int(ExitCode.OK)
