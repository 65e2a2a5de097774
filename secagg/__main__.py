"""Command line of the secure-aggregation package (``cohort harness`` and ``cohort bench``).

``python -m secagg harness``   run one round of the protocol harness and print a readable report
                               (``python -m secagg simulate`` is the same command, its old name).
``python -m secagg bench``     time one round (JSON with ``--json``), see :mod:`secagg.bench`.

Every argument is checked here, before anything runs, with messages that name the flags; the
protocol's own checks stay in the library. Errors and exit codes: :mod:`cohort.errors`.
"""

from __future__ import annotations

import json
import sys

import click

from cohort.errors import EXIT_CODES_HELP, Command, ExitCode
from cohort.options import Integer, Real, given, refuse

from .adversary import ADVERSARIES, REGRESSION_ATTACKS, make_adversary
from .config import MAX_DIM
from .errors import ConfigurationError
from .params import DEFAULT_DROPOUT_RATE, choose_parameters, required_modulus_bits
from .stages import Stage

__all__ = ["bench", "harness", "main"]

_STAGES = [s.value for s in Stage]


def _graph(*, clients: int, neighbors: int | None, threshold: int | None, malicious: bool,
           dropout_rate: float):
    """The degree and threshold the round will use, or a refusal that names the flags."""
    if neighbors is not None and not neighbors <= clients - 1:
        refuse(f"--neighbors {neighbors} is too many for --clients {clients}: each client has "
               f"at most {clients - 1} neighbours ({clients - 1} is the complete graph)")
    try:
        return choose_parameters(clients, neighbors=neighbors, threshold=threshold,
                                 dropout_rate=dropout_rate, malicious=malicious)
    except ConfigurationError as exc:
        given_flags = [f"--clients {clients}"]
        if neighbors is not None:
            given_flags.append(f"--neighbors {neighbors}")
        if threshold is not None:
            given_flags.append(f"--threshold {threshold}")
        if malicious:
            given_flags.append("--malicious")
        refuse(f"{' '.join(given_flags)}: {exc}")


def _modulus(*, clients: int, input_bits: int, modulus_bits: int | None) -> int:
    need = required_modulus_bits(clients, input_bits)
    if need > 64:
        refuse(f"--clients {clients} inputs of --input-bits {input_bits} need a {need}-bit "
               "modulus; the protocol has at most 64: lower --input-bits")
    if modulus_bits is not None and modulus_bits < need:
        refuse(f"--modulus-bits {modulus_bits} is too small: the sum of --clients {clients} "
               f"inputs of --input-bits {input_bits} needs at least {need} bits, or it wraps")
    return modulus_bits or need


_COMMON = [
    click.option("--input-bits", type=Integer(min=1, max=63), default=16,
                 help="Bits of each input entry: entries are drawn uniformly from "
                      "[0, 2^input_bits)."),
    click.option("--modulus-bits", type=Integer(min=1, max=64), default=None,
                 show_default="input bits + ceil(log2 clients), the smallest that cannot wrap",
                 help="Bits b of the sum's modulus 2^b."),
    click.option("--neighbors", type=Integer(min=1), default=None,
                 show_default="the SecAgg+ parameter finder; the complete graph up to 32 clients",
                 help="Neighbour-graph degree k (clients - 1 is classic SecAgg)."),
    click.option("--threshold", type=Integer(min=1), default=None,
                 show_default="the parameter finder's, for the degree",
                 help="Shamir threshold t: the fewest survivors a round accepts."),
    click.option("--malicious", is_flag=True, default=False,
                 help="Malicious-server mode: signed keys and the consistency check."),
]


def _common(f):
    for option in reversed(_COMMON):
        f = option(f)
    return f


@click.command(cls=Command, epilog=f"""\b
Examples:
  cohort harness --clients 10 --dim 1000 --dropout 0.2
  cohort harness --clients 10 --malicious --adversary inconsistent_views
  cohort harness --clients 20 --dropout 0.3 --drop-stage share_keys --neighbors 19

Prints a table on stdout: the graph, who was summed, what the server saw, and whether the sum is
exact; writes no files. An aborted round prints what happened, then exits 3.

{EXIT_CODES_HELP}""")
@click.option("--clients", type=Integer(min=2), default=10, help="Number of clients n.")
@click.option("--dim", type=Integer(min=1, max=MAX_DIM), default=1000,
              help="Length of each client's input vector (entries).")
@_common
@click.option("--dropout", type=Real(min=0.0, max=1.0, max_open=True), default=0.2,
              help="Fraction of the clients that drop out (round(dropout * clients) of them).")
@click.option("--drop-stage", type=click.Choice(_STAGES), default="masked_input",
              help="Stage before which the dropped clients stop (consistency_check needs "
                   "--malicious).")
@click.option("--adversary", type=click.Choice(ADVERSARIES + REGRESSION_ATTACKS), default=None,
              show_default="none: an honest server",
              help="An attack by the server: a canned one, or a regression attack of the "
                   "review (two_views, private_roster, graph_grinding, forged_header, "
                   "lying_shares); inconsistent_views, forged_key, two_views and "
                   "private_roster need --malicious.")
@click.option("--corrupt", type=Integer(min=0), default=0,
              help="Clients 0..N-1 collude with the server: they hand over every share they "
                   "hold (and the attacks use them).")
@click.option("--seed", type=Integer(), default=0,
              help="Seed of the random inputs and of the dropout choice (never of keys).")
@click.pass_context
def harness(ctx: click.Context, clients: int, dim: int, input_bits: int,
            modulus_bits: int | None, neighbors: int | None, threshold: int | None,
            malicious: bool, dropout: float, drop_stage: str, adversary: str | None,
            corrupt: int, seed: int) -> int:
    """Run one secure-aggregation round (SecAgg+) in process and report what the server saw.

    The inputs are random; the report checks the revealed sum against the plain sum of the
    included clients' inputs, and counts the inputs the server could unmask (always none).
    """
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from . import ProtocolAbort, exposed_clients, simulate_round
    from .oracle import leakage

    if given(ctx, "drop_stage") and dropout == 0:
        refuse("--drop-stage applies only with a --dropout above 0")
    if drop_stage == Stage.CONSISTENCY_CHECK.value and not malicious:
        refuse("--drop-stage consistency_check exists only with --malicious (the semi-honest "
               "round has no consistency check)")
    if adversary is not None and make_adversary(adversary, earlier=()).needs_malicious_mode \
            and not malicious:
        refuse(f"--adversary {adversary} is stopped only by malicious-server mode: add "
               "--malicious")
    if corrupt >= clients:
        refuse(f"--corrupt {corrupt} must leave at least one honest client of --clients "
               f"{clients}")
    bits = _modulus(clients=clients, input_bits=input_bits, modulus_bits=modulus_bits)
    graph = _graph(clients=clients, neighbors=neighbors, threshold=threshold,
                   malicious=malicious, dropout_rate=DEFAULT_DROPOUT_RATE)

    rng = np.random.default_rng(seed)
    inputs = {c: rng.integers(0, 1 << input_bits, dim, dtype=np.uint64) for c in range(clients)}
    dropped = rng.choice(clients, size=int(round(dropout * clients)), replace=False).tolist()
    console = Console(soft_wrap=True)
    attack = None if adversary is None else make_adversary(adversary, earlier=None) \
        if adversary != "replay" else adversary
    colluding = frozenset(range(corrupt))
    if attack is not None and not isinstance(attack, str):
        attack.corrupt = colluding
    try:
        # The round is planned for at least the dropouts asked for (the model's minimum of
        # survivors follows from it).
        result = simulate_round(inputs, modulus_bits=bits, malicious=malicious,
                                neighbors=graph.neighbors, threshold=graph.threshold,
                                dropouts={drop_stage: dropped} if dropped else None,
                                adversary=attack, input_bits=input_bits, corrupt=colluding,
                                dropout_rate=max(DEFAULT_DROPOUT_RATE, dropout))
    except ProtocolAbort as exc:
        console.print(f"[bold red]round aborted[/] in stage {exc.stage}: {exc}")
        leaked = leakage(exc.transcript, exc.coalition).exposed
        console.print("Nothing was revealed: the server and its corrupt clients never held "
                      "enough shares to unmask anyone." if not leaked else
                      f"[bold red]LEAK[/]: inputs of clients {sorted(leaked)} are recoverable")
        raise
    expected = sum(inputs[c] for c in result.included)  # uint64: wraps mod 2^64
    if bits < 64:
        expected %= np.uint64(1 << bits)
    exact = bool(np.array_equal(result.aggregate.astype(np.uint64), expected))
    config = result.config
    table = Table(title="One secure-aggregation round (SecAgg+)")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("clients", clients), ("vector length", dim), ("input bits", input_bits),
        ("modulus bits", bits),
        ("neighbours per client (k)", config.neighbors), ("threshold (t)", config.threshold),
        ("mode", "malicious server" if config.malicious else "semi-honest"),
        ("adversary", adversary or "none"),
        (f"dropped before {drop_stage}", len(dropped)),
        ("clients in the sum", len(result.included)),
        ("clients that aborted", len(result.aborted)),
        ("messages rejected", len(result.rejected)),
        ("messages seen by the server", len(result.transcript)),
        ("bytes seen by the server", result.transcript.total_bytes()),
        ("corrupt clients colluding with the server", corrupt),
        ("inputs the server could unmask",
         len(exposed_clients(result.transcript, corrupt=colluding))),
        ("inputs the coalition could recover (oracle)",
         len(leakage(result.transcript, result.coalition).exposed)),
        ("share holders caught lying (ids)", ", ".join(map(str, sorted(result.liars))) or "none"),
        ("sum equals the plain sum of included inputs", "yes" if exact else "NO"),
    ]
    for what, value in rows:
        table.add_row(what, str(value))
    console.print(table)
    console.print(f"first entries of the sum: {result.aggregate[:8].tolist()}")
    return ExitCode.OK if exact else ExitCode.CHECK_FAILED


@click.command(cls=Command, epilog=f"""\b
Examples:
  cohort bench --clients 100 --dim 100000 --dropout 0.1 --json
  cohort bench --clients 1000 --dim 100000 --neighbors 72 --threshold 24 --memory

Prints one JSON object (--json) or a two-column table on stdout: clients, dim, neighbors,
threshold, dropout, client_seconds, server_seconds, upload_bytes_per_client, expansion,
prg_floor_seconds, server_stage_seconds (reveal_nonces is the graph-nonce step), correct,
...; writes no files. Exits 1 if the sum was wrong. The simulated clients share one process
and the checks of identical broadcasts (roster, nonces, views, signatures): client_seconds is
their mean; client_seconds_alone is one client that shared none, what a lone site pays.

{EXIT_CODES_HELP}""")
@click.option("--clients", type=Integer(min=2), default=100, help="Number of clients n.")
@click.option("--dim", type=Integer(min=1, max=MAX_DIM), default=100_000,
              help="Length of each client's input vector (entries).")
@_common
@click.option("--dropout", type=Real(min=0.0, max=1.0, max_open=True), default=0.1,
              help="Fraction of the clients that drop before sending their masked input.")
@click.option("--memory", is_flag=True, default=False,
              help="Also trace the server's peak memory (slower: not for timing).")
@click.option("--seed", type=Integer(), default=0,
              help="Seed of the bench inputs and the dropout choice (never of keys).")
@click.option("--batch", type=Integer(min=1), default=16,
              help="Messages the simulated clients produce before the server takes them back "
                   "to back (1: the server's calls interleave with every client's work).")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print one JSON object instead of a table.")
@click.option("--no-progress", is_flag=True, default=False,
              help="No progress bar on stderr (it is shown only on a terminal anyway).")
def bench(clients: int, dim: int, input_bits: int, modulus_bits: int | None,
          neighbors: int | None, threshold: int | None, malicious: bool, dropout: float,
          memory: bool, seed: int, batch: int, as_json: bool, no_progress: bool) -> int:
    """Time one SecAgg+ round: clients and server separately, against the cost of the same
    mask expansion as raw AES-128-CTR on this machine, measured in the same run."""
    from .bench import BenchConfig, run_bench

    bits = _modulus(clients=clients, input_bits=input_bits, modulus_bits=modulus_bits)
    graph = _graph(clients=clients, neighbors=neighbors, threshold=threshold,
                   malicious=malicious, dropout_rate=max(dropout, 0.01))
    survivors = clients - int(round(dropout * clients))
    if survivors < graph.threshold:
        refuse(f"--dropout {dropout:g} leaves {survivors} of --clients {clients}, fewer than "
               f"the threshold t={graph.threshold}: the round would abort, with nothing to time")
    report = run_bench(BenchConfig(
        clients=clients, dim=dim, dropout=dropout, neighbors=graph.neighbors,
        threshold=graph.threshold, input_bits=input_bits, modulus_bits=bits,
        malicious=malicious, seed=seed, memory=memory, batch=batch,
        progress=not no_progress and sys.stderr.isatty()))
    if as_json:
        print(json.dumps(report))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return ExitCode.OK if report["correct"] else ExitCode.CHECK_FAILED


def main(argv: list[str] | None = None) -> int:
    """``python -m secagg`` (and the ``cohort-secagg`` script): secagg's commands of ``cohort``."""
    from cohort.registry import role_main

    return role_main("secagg", argv, summary="Secure aggregation (SecAgg+): the protocol "
                     "harness and its benchmark.")


if __name__ == "__main__":
    sys.exit(main())
