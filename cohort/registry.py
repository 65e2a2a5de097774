"""The command tree: which role package contributes which command.

Each role package defines its commands in its own ``__main__`` module; :data:`COMMANDS` says
where each lives and what it is called in ``cohort`` and in ``python -m <role>``. Commands are
imported only when run (``cohort --help`` imports no torch). A planned command (:data:`PLANNED`)
is listed in the help and refused with a clear message until its role package provides it: to
add one, write the click command in the role's ``__main__`` and move its entry to COMMANDS.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import click

from .errors import EXIT_CODES_HELP, Group, run

__all__ = ["Entry", "COMMANDS", "PLANNED", "ROLES", "cohort_group", "role_group", "main",
           "role_main"]

ROLES = ("coordinator", "secagg", "privacy", "clients")


@dataclass(frozen=True)
class Entry:
    """One command: its name in ``cohort``, the role package and attribute that define it, a
    one-line summary, and its names under ``python -m <role>`` (the first is the main one)."""

    name: str
    role: str
    attribute: str
    summary: str
    role_names: tuple[str, ...] = ()

    @property
    def names_in_role(self) -> tuple[str, ...]:
        return self.role_names or (self.name,)


COMMANDS: tuple[Entry, ...] = (
    Entry("simulate", "coordinator", "simulate",
          "Simulate a hospital consortium training over secure aggregation."),
    Entry("harness", "secagg", "harness",
          "Run one secure-aggregation round of the protocol harness and report it.",
          role_names=("harness", "simulate")),
    Entry("bench", "secagg", "bench",
          "Time one secure-aggregation round against this machine's AES-CTR floor."),
    Entry("epsilon", "privacy", "epsilon",
          "Epsilon of a composed Gaussian or Skellam mechanism."),
    Entry("encoder-bench", "privacy", "encoder_bench",
          "Time the privacy encoding (rotate, clip, round, noise, wrap) against plain numpy.",
          role_names=("bench",)),
    Entry("ledger", "privacy", "ledger", "Print a site's privacy ledger."),
    Entry("audit", "privacy", "audit",
          "Audit a run (run) and measure what it leaks (canaries, mia)."),
    Entry("provision", "coordinator", "provision",
          "Make a consortium's CA, certificates and site kits; add or revoke sites later."),
    Entry("serve", "coordinator", "serve",
          "Run the coordinator service for one job (HTTPS, mutual TLS) until it ends."),
    Entry("join", "clients", "join",
          "Run a site agent that joins a coordinator's job with the site's kit and data."),
    Entry("status", "coordinator", "status",
          "Show a coordinator's job from its state file: rounds, who answered, epsilon."),
)

# The deployment commands of the next issues, with the role package that will provide each.
PLANNED: tuple[Entry, ...] = ()

# Subcommands of a role's group that another role package provides: the audits that must
# train the consortium's models (canaries, mia) are driven from the coordinator's simulation,
# which may import the sites; privacy may not (DESIGN section 1). Their modules import only
# the CLI layer at load time.
SUBCOMMANDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "audit": (("canaries", "coordinator.simulation._audit_cli", "canaries"),
              ("mia", "coordinator.simulation._audit_cli", "mia")),
}


def _load(entry: Entry) -> click.Command:
    module = importlib.import_module(f"{entry.role}.__main__")
    command = getattr(module, entry.attribute)
    for name, path, attribute in SUBCOMMANDS.get(entry.name, ()):
        if isinstance(command, click.Group) and name not in command.commands:
            command.add_command(getattr(importlib.import_module(path), attribute), name)
    return command


class _Registry(Group):
    """A group that imports each command only when it runs; planned ones are refused."""

    def __init__(self, *args: object, entries: dict[str, Entry],
                 planned: dict[str, Entry], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.entries = entries
        self.planned = planned

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.entries)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = self.entries.get(name)
        if entry is not None:
            return _load(entry)  # under a role's other name too: click shows the typed one
        if name in self.planned:
            raise click.UsageError(
                f"'{name}' is planned but not built yet "
                f"({self.planned[name].summary.removesuffix(' (planned).')})", ctx)
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Summaries come from the registry, so help imports none of the commands.
        rows = [(name, e.summary if name not in e.names_in_role[1:] else
                 f"The same as '{e.names_in_role[0]}' (its former name).")
                for name, e in self.entries.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
        if self.planned:
            with formatter.section("Planned (not built yet)"):
                formatter.write_dl([(name, e.summary) for name, e in self.planned.items()])


_EPILOG = f"""\b
Examples:
  cohort simulate --out runs/demo
  cohort simulate --dp distributed --noise-multiplier 0.5 --target-epsilon 50 --out runs/dp
  cohort harness --clients 10 --malicious --adversary overlap
  cohort bench --clients 100 --dim 100000 --dropout 0.1 --json
  cohort epsilon --mechanism gaussian --noise-multiplier 1.5 --sample-rate 0.04 --steps 2250 --delta 1e-5
  cohort provision consortium.toml --out kits/
  cohort serve --kit kits/coordinator --job job.toml --out runs/job
  cohort join --kit kits/site-1 --data site1.csv --label-column outcome
  cohort audit run runs/dp
  cohort audit canaries --out audits/canaries

Run 'cohort COMMAND --help' for a command's options, defaults and output files.
The role packages keep their own entry points as aliases:
python -m coordinator simulate|provision|serve, python -m clients join,
python -m secagg harness|simulate|bench, python -m privacy epsilon|bench|audit.

{EXIT_CODES_HELP}"""


def cohort_group() -> click.Group:
    """``cohort``: every role's commands in one tree."""
    return _Registry(
        name="cohort", entries={e.name: e for e in COMMANDS},
        planned={e.name: e for e in PLANNED}, epilog=_EPILOG,
        help="Cohort: privacy-preserving federated learning between hospitals (secure "
             "aggregation, differential privacy, FedAvg, distillation, personalisation).")


def role_group(role: str, *, summary: str) -> click.Group:
    """``python -m <role>``: the commands ``role`` contributes, under its own names."""
    entries = {name: e for e in COMMANDS if e.role == role for name in e.names_in_role}
    planned = {e.name: e for e in PLANNED if e.role == role}
    return _Registry(name=f"python -m {role}", entries=entries, planned=planned, help=summary,
                     epilog=f"The same commands are in 'cohort' (see 'cohort --help').\n\n"
                            f"{EXIT_CODES_HELP}")


def main(argv: Sequence[str] | None = None) -> int:
    return run(cohort_group(), argv, prog_name="cohort")


def role_main(role: str, argv: Sequence[str] | None = None, *, summary: str) -> int:
    return run(role_group(role, summary=summary), argv, prog_name=f"python -m {role}")

