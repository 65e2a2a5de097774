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

``--explain`` also prices, in the same run, the server's work that the protocol floor does not
count, so what is left above the floor can be told apart: reading each received vector once from
memory (the floor adds one cache-resident vector over and over), adding the received vectors as
the server must, packed at b bits per entry (lane unpacking included), deriving every mask key
(HKDF-SHA256), and recovering every secret from its revealed shares (the server's own recovery,
timed in a replay, with the bare Shamir arithmetic priced apart). "The rest" is the median replay
minus the floor and those parts: message parsing, checks and bookkeeping.
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


def _best(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def explain(config, events, report) -> dict[str, float]:
    """Seconds of the server's work beyond the floor's parts, each priced on this round."""
    import os

    from secagg.hazmat import crypto, shamir
    from secagg.hazmat.packing import PackedAccumulator
    from secagg.hazmat.prg import word_dtype
    from secagg.messages import HEADER_BYTES

    masked = [data for what, stage, _, data in events
              if what == "receive" and stage == "masked_input"]
    dtype = word_dtype(config.modulus_bits)
    # One distinct buffer per received vector, as the server receives them (not one reused).
    plain = [np.frombuffer(os.urandom(config.dim * dtype.itemsize), dtype=dtype)
             for _ in masked]
    acc = np.zeros(config.dim, dtype=dtype)

    def cold() -> None:
        for v in plain:
            np.add(acc, v, out=acc)

    def packed() -> None:
        pa = PackedAccumulator(config.modulus_bits, config.dim)
        for data in masked:
            pa.add(data, offset=HEADER_BYTES)

    keys = crypto.MaskKeys(config.tag)
    seeds = [os.urandom(32) for _ in range(report["server_prg_vectors"])]

    def derive() -> None:
        for i, seed in enumerate(seeds):
            keys.self_mask(seed, i)

    t = config.threshold
    xs = list(range(1, t + 1))
    secrets_ = [int.from_bytes(os.urandom(32), "big") for _ in range(config.n)]
    ys = [y for secret in secrets_ for y in shamir.split(secret, t, xs)]
    rows = np.tile(np.arange(1, t + 1, dtype=np.int64), (len(secrets_), 1))

    def reconstruct() -> None:
        out = shamir.reconstruct_rows(rows, ys)
        assert out[0] == secrets_[0]

    def recovery() -> float:
        """The server's own secret recovery (parsing the revealed shares, grouping them,
        reconstructing, checking each secret against its commitment), timed in one replay."""
        server = SecAggServer(config)
        inner, spent = server._recover, []

        def timed(wanted):
            start = time.perf_counter()
            try:
                return inner(wanted)
            finally:
                spent.append(time.perf_counter() - start)

        server._recover = timed
        for what, _, sender, data in events:
            server.receive(data, sender=sender) if what == "receive" else server.close_stage()
        return sum(spent)

    hot = np.frombuffer(os.urandom(config.dim * dtype.itemsize), dtype=dtype)
    return {
        "secret_recovery": min(recovery() for _ in range(3)),
        "received_hot_add": _best(lambda: [np.add(acc, hot, out=acc) for _ in masked]),
        "received_cold_add": _best(cold),
        "received_packed_add": _best(packed),
        "key_derivation": _best(derive),
        "shamir_reconstruction": _best(reconstruct),
        "received_vectors": len(masked),
        "mask_keys": len(seeds),
        "secrets": len(secrets_),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--explain", action="store_true",
                        help="also price the work above the floor, part by part")
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
    if args.explain:
        parts = explain(config, events, report)
        median = statistics.median(r["server_seconds"] for r in runs)
        floor = statistics.median(r["protocol_floor_seconds"] for r in runs)
        beyond = {
            "reading received vectors from memory": (parts["received_cold_add"]
                                                     - parts["received_hot_add"]),
            "packed lanes (beyond a plain add from memory)": (parts["received_packed_add"]
                                                              - parts["received_cold_add"]),
            "mask key derivation": parts["key_derivation"],
            "secret recovery (of which Shamir arithmetic "
            f"{parts['shamir_reconstruction'] * 1e3:.1f} ms)": parts["secret_recovery"],
        }
        beyond["the rest (parsing, checks, bookkeeping)"] = (median - floor
                                                             - sum(beyond.values()))
        summary["explain"] = {"parts": parts, "median_server_seconds": median,
                              "median_floor_seconds": floor, "beyond_floor": beyond}
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
    if args.explain:
        e = summary["explain"]
        print(f"above the floor: median server {e['median_server_seconds']:.3f} s - floor "
              f"{e['median_floor_seconds']:.3f} s = "
              f"{e['median_server_seconds'] - e['median_floor_seconds']:.3f} s; "
              f"1.25x would allow {0.25 * e['median_floor_seconds']:.3f} s")
        for name, seconds in e["beyond_floor"].items():
            print(f"  {name:55s} {seconds * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
