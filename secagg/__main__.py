"""Command line of the secure-aggregation package.

``python -m secagg bench``     time one round (JSON with ``--json``), see :mod:`secagg.bench`.
``python -m secagg simulate``  run one round of the harness and print a readable report.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

__all__ = ["main"]


def _bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, run_bench

    report = run_bench(BenchConfig(
        clients=args.clients, dim=args.dim, dropout=args.dropout, neighbors=args.neighbors,
        threshold=args.threshold, input_bits=args.input_bits, modulus_bits=args.modulus_bits,
        malicious=args.malicious, seed=args.seed, memory=args.memory,
        progress=not args.no_progress))
    if args.json:
        print(json.dumps(report))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0 if report["correct"] else 1


def _simulate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import ProtocolAbort, exposed_clients, simulate_round
    from .params import required_modulus_bits

    rng = np.random.default_rng(args.seed)
    n = args.clients
    bits = args.modulus_bits or required_modulus_bits(n, args.input_bits)
    inputs = {c: rng.integers(0, 1 << args.input_bits, args.dim) for c in range(n)}
    dropped = rng.choice(n, size=int(round(args.dropout * n)), replace=False).tolist()
    console = Console()
    try:
        result = simulate_round(inputs, modulus_bits=bits, malicious=args.malicious,
                                dropouts={args.drop_stage: dropped} if dropped else None,
                                adversary=args.adversary, input_bits=args.input_bits)
    except ProtocolAbort as exc:
        console.print(f"[bold red]round aborted[/] in stage {exc.stage}: {exc}")
        console.print("Nothing was revealed: the server never held enough shares to unmask.")
        return 3
    expected = sum(inputs[c].astype(np.uint64) for c in result.included) % (1 << bits)
    exact = bool(np.array_equal(result.aggregate.astype(np.uint64), expected))
    config = result.config
    table = Table(title="One secure-aggregation round (SecAgg+)")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("clients", n), ("vector length", args.dim), ("input bits", args.input_bits),
        ("modulus bits", bits),
        ("neighbours per client (k)", config.neighbors), ("threshold (t)", config.threshold),
        ("mode", "malicious server" if config.malicious else "semi-honest"),
        (f"dropped before {args.drop_stage}", len(dropped)),
        ("clients in the sum", len(result.included)),
        ("clients that aborted", len(result.aborted)),
        ("messages rejected", len(result.rejected)),
        ("messages seen by the server", len(result.transcript)),
        ("bytes seen by the server", result.transcript.total_bytes()),
        ("inputs the server could unmask", len(exposed_clients(result.transcript))),
        ("sum equals the plain sum of included inputs", "yes" if exact else "NO"),
    ]
    for what, value in rows:
        table.add_row(what, str(value))
    console.print(table)
    console.print(f"first entries of the sum: {result.aggregate[:8].tolist()}")
    return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secagg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="time one round against the machine's AES-CTR speed")
    bench.add_argument("--clients", type=int, default=100)
    bench.add_argument("--dim", type=int, default=100_000)
    bench.add_argument("--dropout", type=float, default=0.1,
                       help="fraction of clients that drop before sending their masked input")
    bench.add_argument("--neighbors", type=int, default=None,
                       help="graph degree k (default: parameter finder; clients-1 = classic)")
    bench.add_argument("--threshold", type=int, default=None)
    bench.add_argument("--input-bits", type=int, default=16)
    bench.add_argument("--modulus-bits", type=int, default=None,
                       help="default: input bits + ceil(log2 clients)")
    bench.add_argument("--malicious", action="store_true")
    bench.add_argument("--memory", action="store_true",
                       help="also trace the server's peak memory (slower; not for timing)")
    bench.add_argument("--seed", type=int, default=0, help="bench inputs and dropout choice")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--no-progress", action="store_true")
    bench.set_defaults(func=_bench)

    sim = sub.add_parser("simulate", help="run one round of the protocol harness")
    sim.add_argument("--clients", type=int, default=10)
    sim.add_argument("--dim", type=int, default=1000)
    sim.add_argument("--input-bits", type=int, default=16)
    sim.add_argument("--modulus-bits", type=int, default=None)
    sim.add_argument("--dropout", type=float, default=0.2)
    sim.add_argument("--drop-stage", default="masked_input")
    sim.add_argument("--malicious", action="store_true")
    sim.add_argument("--adversary", default=None,
                     choices=["overlap", "inconsistent_views", "forged_key", "replay", "tamper"])
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_simulate)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
