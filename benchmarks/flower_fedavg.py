"""Flower 1.41's Ray simulation running the FedAvg job of ``benchmarks/scale.py``: one JSON line.

Run with the interpreter of an environment that has ``flwr[simulation]==1.41.0`` (Flower is not
a dependency of Cohort; ``scale.py --flower-python`` passes it). The job is the one Cohort runs:
digits, multinomial logistic regression (softmax over 64 pixels, 10 classes: 650 parameters),
one local epoch of minibatch SGD (batch 32, lr 0.1), FedAvg weighted by sample counts, K of the
N clients per round, the global model evaluated on the test split every round (server side).
The data are the sites' shares exactly as Cohort dealt them, read from ``--data`` (an ``.npz``
written by ``scale.py``), so this environment needs neither scikit-learn nor torch: the client
trains in numpy, which is if anything cheaper than Cohort's torch step. The sum is in the clear
(Flower's plain FedAvg).

Printed: ``startup_seconds`` (process start to the first round's fit), ``round_seconds`` (each
round, from one aggregation to the next; round 1 from its configure call), ``final_accuracy``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402


def _softmax_sgd(w: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, *, lr: float,
                 batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    for start in range(0, len(y), batch):
        idx = order[start:start + batch]
        logits = X[idx] @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(idx)), y[idx]] -= 1.0
        p /= len(idx)
        w = w - lr * (p.T @ X[idx])
        b = b - lr * p.sum(axis=0)
    return w, b


_SHARES: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}


def _shares(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every site's share, loaded once per worker process (Flower makes a client per message;
    reading the file each time would charge Flower for this script's storage format)."""
    if path not in _SHARES:
        with np.load(path) as data:
            _SHARES[path] = [(data[f"X_{i}"], data[f"y_{i}"]) for i in range(int(data["n_sites"]))]
    return _SHARES[path]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients-per-round", type=int, required=True)
    ap.add_argument("--cpus", type=float, default=2.0)
    ap.add_argument("--client-cpus", type=float, default=1.0)
    args = ap.parse_args(argv)

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import flwr
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    with np.load(args.data) as data:
        n_sites = int(data["n_sites"])
        Xtest, ytest = data["X_test"], data["y_test"]
        w0, b0 = data["w0"], data["b0"]
    marks: dict[str, list[float]] = {"configure": [], "aggregate": []}
    accuracy: list[float] = []
    failures_seen = [0]

    path = args.data

    class Site(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index
            self.X, self.y = _shares(path)[index]

        def fit(self, parameters, config):
            w, b = parameters
            w, b = _softmax_sgd(w, b, self.X, self.y, lr=0.1, batch=32,
                                seed=int(config.get("round", 0)) * 100_003 + self.index)
            return [w, b], len(self.y), {}

    def client_fn(context: Context):
        return Site(int(context.node_config["partition-id"])).to_client()

    def evaluate(server_round, parameters, config):
        w, b = parameters
        acc = float(np.mean((Xtest @ w.T + b).argmax(axis=1) == ytest))
        if server_round > 0:
            accuracy.append(acc)
        return 0.0, {"accuracy": acc}

    class Timed(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            marks["configure"].append(time.perf_counter())
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            failures_seen[0] += len(failures)
            out = super().aggregate_fit(server_round, results, failures)
            marks["aggregate"].append(time.perf_counter())
            return out

    fraction = args.clients_per_round / n_sites

    def server_fn(context: Context):
        strategy = Timed(fraction_fit=fraction, fraction_evaluate=0.0,
                         min_fit_clients=args.clients_per_round,
                         min_available_clients=n_sites, min_evaluate_clients=0,
                         evaluate_fn=evaluate,
                         on_fit_config_fn=lambda r: {"round": r},
                         initial_parameters=ndarrays_to_parameters([w0, b0]))
        return ServerAppComponents(strategy=strategy,
                                   config=ServerConfig(num_rounds=args.rounds))

    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=client_fn), num_supernodes=n_sites,
                   backend_config={"client_resources": {"num_cpus": args.client_cpus},
                                   "init_args": {"num_cpus": args.cpus,
                                                 "include_dashboard": False}})
    agg, conf = marks["aggregate"], marks["configure"]
    if failures_seen[0]:
        raise SystemExit(f"{failures_seen[0]} client fits failed")
    rounds = [agg[0] - conf[0]] + [agg[i] - agg[i - 1] for i in range(1, len(agg))]
    print(json.dumps({"flwr": flwr.__version__, "sites": n_sites,
                      "clients_per_round": args.clients_per_round,
                      "startup_seconds": conf[0] - T0 if conf else None,
                      "round_seconds": rounds,
                      "final_accuracy": accuracy[-1] if accuracy else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
