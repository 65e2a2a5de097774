"""How the SecAgg+ server scales with the number of clients: time against the PRG floor, and
vector memory against n.

For each n it runs ``secagg.bench.run_bench`` twice — once timed, once with memory tracing (which
slows Python down, so it is never timed) — and prints a table; ``--plot FILE.png`` draws server
time and its PRG floor, and the server's vector memory, against n. Memory should stay flat: the
server keeps one accumulator, not one vector per client.

    python benchmarks/secagg_scaling.py --clients 100 200 400 800 --dim 100000 --plot scaling.png
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from secagg.bench import BenchConfig, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--input-bits", type=int, default=16)
    parser.add_argument("--plot", default=None, help="write a PNG here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    rows = []
    for n in tqdm(args.clients, desc="client counts", file=sys.stderr):
        base = dict(clients=n, dim=args.dim, dropout=args.dropout, input_bits=args.input_bits,
                    progress=False)
        timed = run_bench(BenchConfig(**base))
        traced = run_bench(BenchConfig(**base, memory=True))
        rows.append({
            "clients": n,
            "neighbors": timed["neighbors"],
            "threshold": timed["threshold"],
            "server_seconds": timed["server_seconds"],
            "prg_floor_seconds": timed["prg_floor_seconds"],
            "server_over_prg_floor": timed["server_over_prg_floor"],
            "client_seconds": timed["client_seconds"],
            "server_vector_peak_bytes": traced["server_vector_peak_bytes"],
            "server_peak_bytes_by_stage": traced["server_peak_bytes_by_stage"],
            "correct": timed["correct"] and traced["correct"],
        })
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'n':>6} {'k':>4} {'t':>4} {'server s':>9} {'floor s':>8} {'ratio':>6} "
              f"{'client ms':>9} {'vector MB':>9} {'correct':>7}")
        for r in rows:
            print(f"{r['clients']:>6} {r['neighbors']:>4} {r['threshold']:>4} "
                  f"{r['server_seconds']:>9.3f} {r['prg_floor_seconds']:>8.3f} "
                  f"{r['server_over_prg_floor']:>6.2f} {1e3 * r['client_seconds']:>9.2f} "
                  f"{r['server_vector_peak_bytes'] / 1e6:>9.2f} {str(r['correct']):>7}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ns = [r["clients"] for r in rows]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot(ns, [r["server_seconds"] for r in rows], "o-", label="server")
        left.plot(ns, [r["prg_floor_seconds"] for r in rows], "s--", label="PRG floor (AES-CTR)")
        left.set_xlabel("clients")
        left.set_ylabel("seconds per round")
        left.set_title(f"server time, m={args.dim}, {args.dropout:.0%} dropouts")
        left.legend()
        right.plot(ns, [r["server_vector_peak_bytes"] / 1e6 for r in rows], "o-")
        right.axhline(args.dim * 4 / 1e6, color="grey", ls=":", label="one uint32 vector")
        right.set_ylim(bottom=0)
        right.set_xlabel("clients")
        right.set_ylabel("MB")
        right.set_title("server vector memory (peak)")
        right.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
