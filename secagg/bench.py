"""``python -m secagg bench``: time one SecAgg+ round against this machine's own AES-CTR speed.

Clients and server are the real state machines; the server takes messages one at a time (so it
never holds more than one masked vector besides its accumulator). The simulated clients of a
batch (``batch``, default 16) produce their messages first and the server then takes them back
to back, as it would take a transport's backlog: with one client's O(k * dim) work between every
two server calls, the bench would time the clients evicting the server's accumulator from cache.
Each party's compute is timed separately. The PRG floor is what the server's mask expansion alone
costs as raw AES-128-CTR ``update_into`` on this machine (one cipher context per key through the
same call the server makes), measured in the same run on exactly the number of mask vectors the
server had to expand, so ``server_seconds / prg_floor_seconds`` is a ratio that the machine's
speed and load cancel out of. The protocol floor adds what else the server cannot avoid, priced
the same way: one X25519 per (dropped, surviving neighbour) pair and one in-place add per vector
expanded or received (``protocol_floor_seconds``). Everything else the server does (parsing and
checking messages, routing sealed shares, Shamir reconstruction and the commitment checks, key
derivation, unpacking the packed vectors) is above the floor.

With ``memory``, tracemalloc runs inside the server's calls only (the clients run untraced), and
the report gives the largest allocation peak of any one call plus the accumulator the server
holds between calls. ``server_stream_peak_bytes`` (the accumulator plus one masked vector taken
in) is O(dim) whatever the number of clients: the figure to compare across n.
``server_vector_peak_bytes`` adds the closes of masked_input and unmask, where the server plans
and then reconstructs from every revealed share (O(clients * neighbours) small records, as the
protocol makes it hold them), and ``server_peak_bytes`` the share_keys relay, whose
O(clients * neighbours) sealed shares pass through the server for a stage. Tracing slows the
server: take timings from a run without it.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import _views
from .client import SecAggClient
from .config import RoundConfig
from .hazmat.prg import MaskGenerator, word_dtype
from .params import DEFAULT_CORRUPT_RATE, choose_parameters, required_modulus_bits
from .server import SecAggServer

__all__ = ["BenchConfig", "run_bench", "prg_floor_seconds", "x25519_floor_seconds",
           "add_floor_seconds", "protocol_floor_seconds"]


@dataclass(frozen=True)
class BenchConfig:
    clients: int = 100
    dim: int = 100_000
    dropout: float = 0.1
    neighbors: int | None = None
    threshold: int | None = None
    input_bits: int = 16
    modulus_bits: int | None = None
    malicious: bool = False
    seed: int = 0
    memory: bool = False
    progress: bool = True
    batch: int = 16
    """Messages the simulated clients produce before the server takes them, back to back."""


def prg_floor_seconds(vectors: int, dim: int, modulus_bits: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` time of ``vectors`` raw AES-128-CTR expansions of ``dim`` words."""
    gen = MaskGenerator(dim, modulus_bits)
    keys = [os.urandom(16) for _ in range(min(vectors, 256))]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(vectors):
            gen.expand(keys[i % len(keys)])
        best = min(best, time.perf_counter() - start)
    return best


def x25519_floor_seconds(exchanges: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` time of ``exchanges`` raw X25519 key agreements (keys loaded once)."""
    privates = [X25519PrivateKey.generate() for _ in range(16)]
    publics = [X25519PrivateKey.generate().public_key() for _ in range(16)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(exchanges):
            privates[i & 15].exchange(publics[(i >> 4) & 15])
        best = min(best, time.perf_counter() - start)
    return best


def add_floor_seconds(vectors: int, dim: int, modulus_bits: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` time of ``vectors`` in-place wrapping adds of ``dim`` words."""
    dtype = word_dtype(modulus_bits)
    acc = np.zeros(dim, dtype=dtype)
    other = np.frombuffer(os.urandom(dim * dtype.itemsize), dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(vectors):
            np.add(acc, other, out=acc)
        best = min(best, time.perf_counter() - start)
    return best


def protocol_floor_seconds(*, expanded: int, exchanges: int, received: int, dim: int,
                           modulus_bits: int, repeats: int = 3) -> dict[str, float]:
    """What the server's irreducible work costs on this machine, priced now: raw AES-128-CTR
    for every mask it must expand, one X25519 per (dropped, surviving neighbour) pair, and one
    add per entry expanded or received. Returns each part and their sum (``protocol``)."""
    parts = {
        "prg": prg_floor_seconds(expanded, dim, modulus_bits, repeats),
        "x25519": x25519_floor_seconds(exchanges, repeats),
        "add": add_floor_seconds(expanded + received, dim, modulus_bits, repeats),
    }
    parts["protocol"] = parts["prg"] + parts["x25519"] + parts["add"]
    return parts


class _Clock:
    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self, fn: Callable, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.total += time.perf_counter() - start


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety; the bench itself needs only numpy
        return None
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, unit="client")


def run_bench(cfg: BenchConfig) -> dict:
    n = cfg.clients
    modulus_bits = cfg.modulus_bits or required_modulus_bits(n, cfg.input_bits)
    if modulus_bits < required_modulus_bits(n, cfg.input_bits):
        raise SystemExit(f"--modulus-bits {modulus_bits} is too small for {n} inputs of "
                         f"{cfg.input_bits} bits")
    params = choose_parameters(n, neighbors=cfg.neighbors, threshold=cfg.threshold,
                               dropout_rate=max(cfg.dropout, 0.01),
                               corrupt_rate=DEFAULT_CORRUPT_RATE, malicious=cfg.malicious)
    rng = np.random.default_rng(cfg.seed)  # bench inputs only; never used for masks or keys
    config = RoundConfig(round_id=os.urandom(32), clients=tuple(range(n)), dim=cfg.dim,
                         modulus_bits=modulus_bits, neighbors=params.neighbors,
                         threshold=params.threshold, malicious=cfg.malicious,
                         corrupt_rate=DEFAULT_CORRUPT_RATE,
                         dropout_rate=max(cfg.dropout, 0.01))
    dropped = set(rng.choice(n, size=int(round(cfg.dropout * n)), replace=False).tolist())
    bases = [rng.integers(0, 1 << cfg.input_bits, cfg.dim, dtype=np.uint64)
             .astype(word_dtype(modulus_bits)) for _ in range(4)]

    identities = directory = None
    if cfg.malicious:
        identities = {c: Ed25519PrivateKey.generate() for c in range(n)}
        directory = {c: k.public_key() for c, k in identities.items()}
    alone = min(set(range(n)) - dropped)  # survives every stage
    clients = {c: SecAggClient(c, config, identity=identities and identities[c],
                               directory=directory) for c in range(n)}
    server = SecAggServer(config, directory=directory)
    client_clock = {c: _Clock() for c in range(n)}
    server_clock = _Clock()
    stage_seconds: dict[str, float] = {}
    upload = {c: 0 for c in range(n)}
    # Per server call: the peak of what the call allocated (traced from its start, so the
    # clients' state, allocated between calls, is never counted).
    peaks: dict[str, int] = {}
    by_call: dict[str, dict[str, int]] = {}

    def traced(stage: str, fn, *args):
        if not cfg.memory:
            return server_clock(fn, *args)
        # Traced only inside the server's calls, so the clients run at full speed (tracing
        # slows allocation-heavy Python severalfold: take timings from a run without --memory).
        tracemalloc.start()
        try:
            out = server_clock(fn, *args)
            peak = tracemalloc.get_traced_memory()[1]
            peaks[stage] = max(peaks.get(stage, 0), peak)
            call = by_call.setdefault(stage, {"receive": 0, "close": 0})
            side = "close" if fn == server.close_stage else "receive"
            call[side] = max(call[side], peak)
        finally:
            tracemalloc.stop()
        return out

    def to_server(stage: str, c: int, message: bytes) -> None:
        upload[c] += len(message)
        traced(stage, lambda m: server.receive(m, sender=c), message)

    def close(stage: str) -> dict[int, bytes]:
        before_total = server_clock.total
        out = traced(stage, server.close_stage)
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + server_clock.total - before_total
        return out

    def stage(name: str, outgoing: dict[int, bytes] | None, act) -> dict[int, bytes]:
        bar = _progress(n, name, cfg.progress)
        before_total = server_clock.total
        # The server takes the messages of a batch of clients back to back, as a transport
        # hands it a backlog; one client's O(k * dim) work between every two server calls
        # would evict the server's accumulator from cache and time the simulation, not the
        # server. The server still sees one message at a time.
        pending: list[tuple[int, bytes]] = []
        for c in range(n):
            if bar is not None:
                bar.update()
            if outgoing is not None and c not in outgoing:
                continue
            if name == "masked_input" and c in dropped:
                continue
            if c == alone:
                # This client shares no check with the others (see _views): its time is what
                # a site that runs alone, as in a deployment, pays.
                _views.forget()
            message = client_clock[c](act, clients[c], None if outgoing is None else outgoing[c])
            pending.append((c, message))
            if len(pending) >= cfg.batch:
                for sender, data in pending:
                    to_server(name, sender, data)
                pending.clear()
        for sender, data in pending:
            to_server(name, sender, data)
        pending.clear()
        if bar is not None:
            bar.close()
        stage_seconds[name] = server_clock.total - before_total
        return close(name)

    out = stage("advertise_keys", None, lambda cl, _: cl.advertise_keys())
    # The graph nonces' commit-then-reveal: the protocol step that keeps the server from
    # choosing the neighbour graph (timed on its own so its overhead is visible).
    out = stage("reveal_nonces", out, lambda cl, m: cl.reveal_nonce(m))
    out = stage("share_keys", out, lambda cl, m: cl.share_keys(m))
    out = stage("masked_input", out, lambda cl, m: cl.masked_input(m, bases[cl.id % 4]))
    if cfg.malicious:
        out = stage("consistency_check", out, lambda cl, m: cl.consistency_check(m))
    stage("unmask", out, lambda cl, m: cl.unmask(m))
    result = server.result
    survivors = sorted(result.included)
    expected = np.zeros(cfg.dim, dtype=np.uint64)
    for c in survivors:
        expected += bases[c % 4]
    expected &= np.uint64((1 << modulus_bits) - 1) if modulus_bits < 64 else np.uint64(2**64 - 1)
    correct = bool(np.array_equal(result.aggregate.astype(np.uint64), expected))

    alive = set(survivors)
    pairs = sum(len(server.neighbors[d] & alive) for d in sorted(dropped)
                if d in server.neighbors)
    prg_vectors = len(survivors) + pairs
    floors = protocol_floor_seconds(expanded=prg_vectors, exchanges=pairs,
                                    received=len(survivors), dim=cfg.dim,
                                    modulus_bits=modulus_bits)
    floor = floors["prg"]
    client_times = [client_clock[c].total for c in survivors]
    upload_mean = sum(upload[c] for c in survivors) / len(survivors)
    report = {
        "clients": n,
        "dim": cfg.dim,
        "neighbors": config.neighbors,
        "threshold": config.threshold,
        "dropout": cfg.dropout,
        "dropped": len(dropped),
        "input_bits": cfg.input_bits,
        "modulus_bits": modulus_bits,
        "malicious": cfg.malicious,
        "batch": cfg.batch,
        "client_seconds": sum(client_times) / len(client_times),
        "client_seconds_max": max(client_times),
        # Simulated clients of one process share the checks of identical broadcasts
        # (secagg._views): client_seconds is their mean; this one client shared nothing.
        "client_seconds_alone": client_clock[alone].total,
        "server_seconds": server_clock.total,
        "server_stage_seconds": stage_seconds,
        "upload_bytes_per_client": upload_mean,
        "expansion": upload_mean / (cfg.dim * cfg.input_bits / 8),
        "server_prg_vectors": prg_vectors,
        "prg_floor_seconds": floor,
        "server_over_prg_floor": server_clock.total / floor,
        "server_x25519_pairs": pairs,
        "x25519_floor_seconds": floors["x25519"],
        "add_floor_seconds": floors["add"],
        "protocol_floor_seconds": floors["protocol"],
        "server_over_protocol_floor": server_clock.total / floors["protocol"],
        "correct": correct,
    }
    if cfg.memory:
        # Vector memory lives in masked_input and unmask: the accumulator and its scratch buffer
        # (held between calls) plus what one call allocates (PRG buffer, views of one incoming
        # vector): O(dim); their closes also hold the O(n*k) share records. share_keys relays
        # O(n*k) small encrypted shares.
        held = 2 * cfg.dim * word_dtype(modulus_bits).itemsize
        report["server_peak_bytes_by_stage"] = peaks
        report["server_vector_peak_bytes"] = held + max(peaks.get("masked_input", 0),
                                                        peaks.get("unmask", 0))
        report["server_peak_bytes"] = held + max(peaks.values())
        # Streaming the masked vectors in: the accumulator plus what one receive allocates.
        report["server_peak_bytes_by_call"] = by_call
        report["server_stream_peak_bytes"] = held + by_call.get("masked_input",
                                                                {}).get("receive", 0)
    return report
