"""The SecAgg+ server alone against its protocol floor: one round recorded, then replayed.

``python -m secagg bench`` simulates every client in the same process as the server, so the
server's timed calls share the core and its caches with the clients' work. This script runs
that bench once while recording every message the server receives (and when each stage
closes), then feeds the recorded bytes to fresh servers ``--repeats`` times. The server is a
pure state machine with no secrets of its own, so each replay is the same round. After each
replay the protocol floor of that round (raw AES-128-CTR for every mask the server expanded,
one X25519 per (dropped, surviving neighbour) pair, one add per expanded or received entry) is
priced at once, and the ratio of the two is printed with its range over the repeats.

The recording holds every masked vector (clients x packed dim bytes), so keep n * dim modest:

    python benchmarks/secagg_server_replay.py --clients 1000 --dim 100000 --dropout 0.1
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import numpy as np

import secagg.bench as bench
from secagg.bench import BenchConfig, protocol_floor_seconds, run_bench
from secagg.server import SecAggServer


def record(cfg: BenchConfig):
    """Run the bench once; return its report, the round's config and every server event."""
    events: list[tuple[str, str, int | None, bytes | None]] = []
    made: list[SecAggServer] = []

    class Recording(SecAggServer):
        def __init__(self, config, **kwargs):
            super().__init__(config, **kwargs)
            made.append(self)

        def receive(self, data, *, sender):
            events.append(("receive", self.state.value, sender, bytes(data)))
            return super().receive(data, sender=sender)

        def close_stage(self):
            events.append(("close", self.state.value, None, None))
            return super().close_stage()

    plain, bench.SecAggServer = bench.SecAggServer, Recording
    try:
        report = run_bench(cfg)
    finally:
        bench.SecAggServer = plain
    return report, made[0].config, events


def replay(config, events) -> tuple[float, dict[str, float], SecAggServer]:
    server = SecAggServer(config)
    stages: dict[str, float] = {}
    total = 0.0
    for what, stage, sender, data in events:
        start = time.perf_counter()
        if what == "receive":
            server.receive(data, sender=sender)
        else:
            server.close_stage()
        spent = time.perf_counter() - start
        total += spent
        stages[stage] = stages.get(stage, 0.0) + spent
    return total, stages, server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    report, config, events = record(BenchConfig(clients=args.clients, dim=args.dim,
                                                dropout=args.dropout, progress=False))
    expected = None
    runs = []
    for _ in range(args.repeats):
        gc.collect()
        seconds, stages, server = replay(config, events)
        result = server.result
        if expected is None:
            expected = result.aggregate.copy()
        assert np.array_equal(result.aggregate, expected), "a replay summed differently"
        floors = protocol_floor_seconds(expanded=report["server_prg_vectors"],
                                        exchanges=report["server_x25519_pairs"],
                                        received=len(result.included), dim=config.dim,
                                        modulus_bits=config.modulus_bits)
        runs.append({"server_seconds": seconds, "protocol_floor_seconds": floors["protocol"],
                     "ratio": seconds / floors["protocol"], "stage_seconds": stages})
    ratios = [r["ratio"] for r in runs]
    summary = {
        "clients": args.clients, "dim": args.dim, "dropout": args.dropout,
        "neighbors": config.neighbors, "threshold": config.threshold,
        "bench_server_seconds": report["server_seconds"],
        "bench_protocol_floor_seconds": report["protocol_floor_seconds"],
        "bench_ratio": report["server_over_protocol_floor"],
        "replay_ratio_min": min(ratios), "replay_ratio_median": statistics.median(ratios),
        "replay_ratio_max": max(ratios), "runs": runs,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"n={args.clients} dim={args.dim} dropout={args.dropout} k={config.neighbors} "
          f"t={config.threshold}")
    print(f"bench (clients in process): server {report['server_seconds']:.3f} s, protocol "
          f"floor {report['protocol_floor_seconds']:.3f} s, "
          f"{report['server_over_protocol_floor']:.2f}x")
    for r in runs:
        parts = " ".join(f"{k}={v:.3f}" for k, v in r["stage_seconds"].items())
        print(f"replay: server {r['server_seconds']:.3f} s, floor "
              f"{r['protocol_floor_seconds']:.3f} s, {r['ratio']:.2f}x  ({parts})")
    print(f"replay ratio: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x, "
          f"max {max(ratios):.2f}x over {len(ratios)} repeats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
