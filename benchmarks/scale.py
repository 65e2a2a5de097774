"""Rounds per second and memory against the number of simulated sites, Cohort (in process and
on Ray, secure sum on and in the clear) beside Flower 1.41's Ray simulation of the same job.

The job (DESIGN 5a): digits, multinomial logistic regression (650 parameters), one local epoch
of SGD (batch 32, lr 0.1), FedAvg; N sites (the pool dealt by Cohort's partition, IID, sites of
a handful of samples once N is large), K sampled per round. Cohort's secure arm is FedAvg over
SecAgg+ with distributed DP (Skellam noise, noise multiplier 0.5), the graph from the parameter
table; its clear arm sums the same updates in the clear (``--no-secagg``, no DP); Flower runs
plain FedAvg in the clear (``benchmarks/flower_fedavg.py`` under ``--flower-python``, on the
sites' shares exactly as Cohort dealt them).

Each arm runs in its own process; memory is the peak resident set of that process and all its
descendants (Ray's raylet, GCS and workers included), sampled from /proc every 50 ms. Round
times exclude start-up (reported apart: building the sites, starting Ray); the figure is the
median of rounds 2..R (round 1 warms caches and, for Flower, starts the workers).

Per-site protocol work (in-process secure arm): the time each site spends in its secagg client
(advertise, roster check, share keys, masked input, unmask), averaged over the cohort, best
round of the run, and the same for one site (client 0) that shares none of the broadcast checks
the simulated sites of one process share (secagg._views), as a lone site pays; against its floor priced in the same process right after: the site's own
X25519 work (two key pairs and one agreement per live neighbour on each of its two keys, peer
keys loaded from bytes), best of 30.

    python benchmarks/scale.py --flower-python /work/flwr-venv/bin/python
    python benchmarks/scale.py --grid 100/100,100/1000,1000/1000 --rounds 5 --png scale.png

Prints a table and writes ``--json`` and ``--png``. Figures are this machine's, in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOWER_SCRIPT = Path(__file__).resolve().parent / "flower_fedavg.py"


# -- memory of a process tree ------------------------------------------------------------------
def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every descendant (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], *, env: dict | None = None) -> tuple[dict, int]:
    """Run ``cmd`` (it prints one JSON line last) and sample its tree's peak RSS."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n{err[-3000:]}")
    line = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    return json.loads(line), peak[0]


# -- one Cohort arm, in a child process ---------------------------------------------------------
def _config(sites: int, k: int, rounds: int, *, secure: bool, backend: str, seed: int):
    from clients import DatasetName, ModelKind, PartitionScheme
    from coordinator.simulation import Backend, SimulationConfig
    from privacy import Mechanism

    return SimulationConfig(
        dataset=DatasetName.DIGITS, sites=sites, rounds=rounds, partition=PartitionScheme.IID,
        models=(ModelKind.LOGISTIC,), local_epochs=1, lr=0.1, batch_size=32,
        secagg=secure, dp=Mechanism.DISTRIBUTED if secure else Mechanism.NONE,
        noise_multiplier=0.5, clients_per_round=None if k >= sites else k,
        backend=Backend(backend), baselines=False, seed=seed)


def _price_floor(neighbours: int, repeats: int = 30) -> float:
    """A site's own X25519 work: two key pairs, one agreement per live neighbour per key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (X25519PrivateKey,
                                                                  X25519PublicKey)

    peers = [X25519PrivateKey.generate().public_key().public_bytes_raw()
             for _ in range(2 * neighbours)]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        c, s = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        c.public_key().public_bytes_raw()
        s.public_key().public_bytes_raw()
        for i, p in enumerate(peers):
            (c if i % 2 else s).exchange(X25519PublicKey.from_public_bytes(p))
        best = min(best, time.perf_counter() - t)
    return best


def child(args: argparse.Namespace) -> int:
    import secagg.client as sc
    from coordinator.simulation import Simulation
    from coordinator.simulation.engine import single_threaded_torch

    per_round: list[float] = []
    clock = {"t": 0.0, "n": 0, "live": []}
    if args.backend == "inprocess" and args.secure:  # the sites' protocol work, timed
        for name in ("advertise_keys", "reveal_nonce", "share_keys", "masked_input", "unmask"):
            original = getattr(sc.SecAggClient, name)

            def timed(self, *a, _f=original, _name=name, **kw):
                t = time.perf_counter()
                try:
                    return _f(self, *a, **kw)
                finally:
                    clock["t"] += time.perf_counter() - t
                    if _name == "advertise_keys":
                        clock["n"] += 1
                    if _name == "masked_input":
                        clock["live"].append(len(self.live_neighbors))
            setattr(sc.SecAggClient, name, timed)

    t0 = time.perf_counter()
    config = _config(args.sites, args.k, args.rounds, secure=args.secure, backend=args.backend,
                     seed=args.seed)
    with single_threaded_torch():
        sim = Simulation(config, work_dir=Path(tempfile.mkdtemp(prefix="cohort-scale-")))
        startup = time.perf_counter() - t0
        if args.data:  # the same sites' shares and starting model, for Flower
            _write_flower_data(sim, Path(args.data))

        def on_round(record) -> None:
            per_round.append((clock["t"], clock["n"]))

        result = sim.run(on_round=on_round)
    out = {"sites": args.sites, "clients_per_round": min(args.k, args.sites),
           "backend": args.backend, "secure": args.secure, "startup_seconds": startup,
           "round_seconds": [r.seconds for r in result.rounds],
           "final_accuracy": result.final_accuracy, "epsilon": result.epsilon}
    if per_round and clock["n"]:
        deltas, prev = [], (0.0, 0)
        for t, n in per_round:
            if n > prev[1]:
                deltas.append((t - prev[0]) / (n - prev[1]))
            prev = (t, n)
        live = sorted(clock["live"])[len(clock["live"]) // 2]
        out["site_protocol_seconds"] = min(deltas[1:] or deltas)
        out["site_protocol_mean_seconds"] = sum(deltas) / len(deltas)
        out["site_floor_seconds"] = _price_floor(live)
        out["live_neighbours"] = live
    print(json.dumps(out))
    return 0


def _write_flower_data(sim, path: Path) -> None:
    import numpy as np

    c = sim.consortium
    arrays = {"n_sites": np.array(len(c.site_data))}
    for i, d in enumerate(c.site_data):
        arrays[f"X_{i}"] = np.asarray(d.train.X, dtype=np.float32).reshape(len(d.train), -1)
        arrays[f"y_{i}"] = np.asarray(d.train.y, dtype=np.int64)
    arrays["X_test"] = np.asarray(c.splits.test.X, dtype=np.float32).reshape(len(c.splits.test),
                                                                             -1)
    arrays["y_test"] = np.asarray(c.splits.test.y, dtype=np.int64)
    model = c.global_model
    w = model.state_dict()
    weight = [v for k, v in w.items() if k.endswith("weight")][0].numpy()
    bias = [v for k, v in w.items() if k.endswith("bias")][0].numpy()
    arrays["w0"], arrays["b0"] = weight.astype(np.float32), bias.astype(np.float32)
    np.savez(path, **arrays)


# -- per-site protocol work against its floor, interleaved ---------------------------------------
def protocol_vs_floor(clients: int = 100, dim: int = 651, repeats: int = 7) -> dict:
    """One secure round of ``clients`` (the harness, SecAgg+ graph from the parameter table),
    ``repeats`` times. In each repeat: the mean time a client spends in its secagg client, then,
    right after, the same clients' floor priced as one block (each client's two key pairs and
    one X25519 agreement per live neighbour on each key, peer keys loaded from bytes). Best
    repeat of each, so that a loaded machine penalises neither side more than the other."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.x25519 import (X25519PrivateKey,
                                                                  X25519PublicKey)

    import secagg.client as sc
    from secagg import simulate_round

    from secagg import _views

    clock = {"t": 0.0, "live": [], "alone": 0.0}
    originals = {}
    for name in ("advertise_keys", "reveal_nonce", "share_keys", "masked_input", "unmask"):
        originals[name] = getattr(sc.SecAggClient, name)

        def timed(self, *a, _f=originals[name], _name=name, **kw):
            if self.id == 0:
                # Client 0 shares none of the broadcast checks that the clients of one process
                # share (secagg._views): what a site that runs alone pays.
                _views.forget()
            t = time.perf_counter()
            try:
                return _f(self, *a, **kw)
            finally:
                spent = time.perf_counter() - t
                clock["t"] += spent
                if self.id == 0:
                    clock["alone"] += spent
                if _name == "masked_input":
                    clock["live"].append(len(self.live_neighbors))
        setattr(sc.SecAggClient, name, timed)
    rng = np.random.default_rng(0)
    inputs = {c: rng.integers(0, 2 ** 16, dim, dtype=np.uint32) for c in range(clients)}
    peers = [X25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(512)]
    work, floor, alone = [], [], []
    try:
        for _ in range(repeats):
            clock["t"], clock["live"], clock["alone"] = 0.0, [], 0.0
            simulate_round(inputs, modulus_bits=32)
            work.append(clock["t"] / clients)
            alone.append(clock["alone"])
            live = clock["live"]
            t = time.perf_counter()
            for k in live:
                c, s = X25519PrivateKey.generate(), X25519PrivateKey.generate()
                c.public_key().public_bytes_raw()
                s.public_key().public_bytes_raw()
                for i in range(k):
                    c.exchange(X25519PublicKey.from_public_bytes(peers[(2 * i) % 512]))
                    s.exchange(X25519PublicKey.from_public_bytes(peers[(2 * i + 1) % 512]))
            floor.append((time.perf_counter() - t) / len(live))
    finally:
        for name, f in originals.items():
            setattr(sc.SecAggClient, name, f)
    return {"clients": clients, "dim": dim, "live_neighbours": sorted(live)[len(live) // 2],
            "site_protocol_seconds": min(work), "site_floor_seconds": min(floor),
            "ratio": min(work) / min(floor), "site_alone_seconds": min(alone),
            "ratio_alone": min(alone) / min(floor), "repeats": repeats}


# -- the driver --------------------------------------------------------------------------------
def _median_tail(xs: list[float]) -> float:
    tail = sorted(xs[1:] or xs)
    return tail[len(tail) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="10/10,100/100,100/1000,1000/1000",
                    help="K/N pairs: K sampled per round of N sites")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="inprocess,ray")
    ap.add_argument("--flower-python", default=None,
                    help="interpreter with flwr[simulation]==1.41.0 (none: Flower skipped)")
    ap.add_argument("--no-clear", action="store_true", help="skip Cohort's clear arm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol-clients", default="100,1000",
                    help="cohort sizes of the per-site protocol-work measurement ('' skips)")
    ap.add_argument("--json", default="benchmarks/out/scale.json")
    ap.add_argument("--png", default="benchmarks/out/scale.png")
    # the child
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sites", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--secure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    protocol = []
    for n in [int(x) for x in args.protocol_clients.split(",") if x]:
        p = protocol_vs_floor(n, repeats=7 if n <= 200 else 3)
        protocol.append(p)
        print(f"per-site protocol work, {n} clients (k={p['live_neighbours']} live neighbours, "
              f"dim 651): {1e3 * p['site_protocol_seconds']:.2f} ms vs its X25519 floor "
              f"{1e3 * p['site_floor_seconds']:.2f} ms priced in the same run: "
              f"{p['ratio']:.2f}x (one site sharing no broadcast check: "
              f"{1e3 * p['site_alone_seconds']:.2f} ms, {p['ratio_alone']:.2f}x)", flush=True)
    grid = [tuple(int(x) for x in pair.split("/")) for pair in args.grid.split(",")]
    rows = []
    for k, n in grid:
        data = Path(tempfile.mkdtemp(prefix="cohort-scale-")) / "sites.npz"
        arms = [(b, True) for b in args.backends.split(",")]
        if not args.no_clear:
            arms += [(b, False) for b in args.backends.split(",")]
        for i, (backend, secure) in enumerate(arms):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--sites", str(n),
                   "--k", str(k), "--rounds", str(args.rounds), "--backend", backend,
                   "--seed", str(args.seed)] + (["--secure"] if secure else [])
            if i == 0:
                cmd += ["--data", str(data)]
            out, peak = run_measured(cmd, env=env)
            out["peak_rss_bytes"] = peak
            out["system"] = "cohort"
            out["arm"] = f"cohort {backend} {'secure+DDP' if secure else 'clear'}"
            rows.append(out)
            _show(out)
        if args.flower_python:
            cmd = [args.flower_python, str(FLOWER_SCRIPT), "--data", str(data), "--rounds",
                   str(args.rounds), "--clients-per-round", str(k)]
            out, peak = run_measured(cmd)
            out.update(peak_rss_bytes=peak, system="flower", backend="ray", secure=False,
                       arm="flower 1.41 ray clear")
            rows.append(out)
            _show(out)
    for r in rows:
        r["seconds_per_round"] = _median_tail(r["round_seconds"])
        r["rounds_per_second"] = 1.0 / r["seconds_per_round"]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"arms": rows, "protocol": protocol}, indent=1)
                               + "\n")
    _table(rows)
    for p in protocol:
        print(f"per-site protocol work, {p['clients']} clients: "
              f"{1e3 * p['site_protocol_seconds']:.2f} ms vs floor "
              f"{1e3 * p['site_floor_seconds']:.2f} ms = {p['ratio']:.2f}x; alone "
              f"{1e3 * p['site_alone_seconds']:.2f} ms = {p['ratio_alone']:.2f}x")
    _plot(rows, Path(args.png))
    print(f"wrote {args.json} and {args.png}")
    return 0


def _show(r: dict) -> None:
    print(f"  {r['arm']:<32} {r['clients_per_round']:>5}/{r['sites']:<6} "
          f"{_median_tail(r['round_seconds']):7.3f} s/round  start-up "
          f"{r['startup_seconds']:5.1f} s  peak {r['peak_rss_bytes'] / 2**30:5.2f} GiB",
          flush=True)


def _table(rows: list[dict]) -> None:
    print()
    print(f"{'arm':<32} {'K/N':>11} {'s/round':>8} {'rounds/s':>9} {'start s':>8} "
          f"{'peak GiB':>9} {'vs flower':>9}")
    for r in rows:
        flower = next((f for f in rows if f["system"] == "flower" and f["sites"] == r["sites"]
                       and f["clients_per_round"] == r["clients_per_round"]), None)
        ratio = (f"{r['rounds_per_second'] / flower['rounds_per_second']:8.2f}x"
                 if flower is not None and r is not flower else "")
        print(f"{r['arm']:<32} {r['clients_per_round']:>5}/{r['sites']:<5} "
              f"{r['seconds_per_round']:8.3f} {r['rounds_per_second']:9.2f} "
              f"{r['startup_seconds']:8.1f} {r['peak_rss_bytes'] / 2**30:9.2f} {ratio:>9}")
    for r in rows:
        if "site_protocol_seconds" in r:
            print(f"per-site protocol work, {r['clients_per_round']}/{r['sites']} "
                  f"(k={r['live_neighbours']} live neighbours): "
                  f"{1e3 * r['site_protocol_seconds']:.2f} ms (mean over rounds "
                  f"{1e3 * r['site_protocol_mean_seconds']:.2f} ms) vs its X25519 floor "
                  f"{1e3 * r['site_floor_seconds']:.2f} ms: "
                  f"{r['site_protocol_seconds'] / r['site_floor_seconds']:.2f}x")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = sorted({r["arm"] for r in rows})
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = sorted({(r["clients_per_round"], r["sites"]) for r in rows},
                    key=lambda x: (x[1], x[0]))
    xs = {lab: i for i, lab in enumerate(labels)}
    for arm in arms:
        pts = sorted(((xs[(r["clients_per_round"], r["sites"])], r) for r in rows
                      if r["arm"] == arm), key=lambda p: p[0])
        style = "--" if "flower" in arm else ("-" if "secure" in arm else ":")
        a.plot([p[0] for p in pts], [p[1]["rounds_per_second"] for p in pts], style, marker="o",
               label=arm)
        b.plot([p[0] for p in pts], [p[1]["peak_rss_bytes"] / 2**30 for p in pts], style,
               marker="o", label=arm)
    for ax, title in ((a, "rounds per second (median of rounds 2..R)"),
                      (b, "peak memory, process tree (GiB)")):
        ax.set_xticks(range(len(labels)), [f"{k} of {n}" for k, n in labels])
        ax.set_xlabel("sites sampled per round of N simulated sites")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    a.set_yscale("log")
    a.legend(fontsize=8)
    fig.suptitle("digits, multinomial logistic, 1 local epoch, FedAvg — Cohort vs Flower 1.41")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
