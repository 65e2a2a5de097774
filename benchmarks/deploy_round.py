"""One secure round over loopback mutual TLS against the same round in process.

    python benchmarks/deploy_round.py --sites 20 --dim 1000000 [--repeats 3] [--json]

Both sides drive real :class:`secagg.SecAggServer` / :class:`secagg.SecAggClient` objects through
the transport's ``RoundHost`` / ``RoundParticipant`` adapters (``tests/net_round.py``).

- **In process**: one loop hands each message straight to the other side (one core, no copies,
  no crypto beyond the protocol's own).
- **Over loopback TLS**: the coordinator service runs uvicorn on 127.0.0.1 (TLS 1.3, client
  certificates, signed envelopes, long polls) in this process, and every site agent is its own
  process, as in a deployment where each hospital is its own machine. Agents are forked before
  the service starts (so no thread is ever forked), build their client and TLS context only
  after the start signal (key generation is inside the clock, as in process), and report their
  CPU time. Sites in threads of one process would measure the interpreter lock's convoy (every
  socket call gives the lock up and waits up to a switch interval to get it back behind a
  thread expanding masks), which no deployment has.

It prints the wall time of each (best of ``--repeats``) and their ratio, with the median of
each network round's ratio to the in-process round run right after it; the CPU seconds all
parties spent (the service process plus every agent) against the in-process CPU, which is the
overhead TLS, HTTP and the envelopes cost whatever the parallelism; and the wire bytes per site
of the masked-input step against the protocol message itself. On a machine with fewer cores than
sites the agents share cores, so the wall ratio understates what separate machines would see.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from net_pki import make_consortium  # noqa: E402
from net_round import (SecAggHost, SecAggParticipant, inputs_for, make_agent,  # noqa: E402
                       open_secagg_round, round_config, start_service)
from cohort.runtime import keep_large_buffers  # noqa: E402
from coordinator.service import bind_socket  # noqa: E402
from coordinator.service.rounds import RoundState  # noqa: E402
from secagg import SecAggClient, SecAggServer, envelope  # noqa: E402


def in_process(config, inputs) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    host = SecAggHost(SecAggServer(config))
    parts = {c: SecAggParticipant(SecAggClient(c, config), inputs[c]) for c in config.clients}
    outbox = {c: None for c in config.clients}
    while outbox:
        for c, message in outbox.items():
            reply = parts[c].start() if message is None else parts[c].on_message(message)
            if reply is not None:
                host.receive(c, reply)
        outbox = host.close_stage()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert np.array_equal(host.server.result.aggregate,
                          sum(v.astype(np.uint64) for v in inputs.values()).astype(np.uint32))
    return elapsed, cpu


def _agent_main(pki, client_id: int, conn, url: str, values: list[np.ndarray]) -> None:
    """One site's process: a job-mode agent that runs every round the service opens; the
    round's configuration and this site's input arrive on ``conn`` (the benchmark's control
    channel) when the round's step 0 does, and are generated before the clock starts."""
    logging.disable(logging.INFO)
    keep_large_buffers()  # as `cohort join` does

    def participant(round_id: bytes, _body: bytes):
        config, i = conn.recv()
        assert config.round_id == round_id
        return SecAggParticipant(SecAggClient(client_id, config), values[i])

    agent = make_agent(pki, url, client_id, None, rounds=participant, poll_wait=10.0,
                       run_seconds=3600.0, max_polls=100_000)
    try:
        report = agent.run()
    finally:
        agent.close()
    conn.send(report.outcome)


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far, in nanosecond resolution (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


class Deployment:
    """The service in this process, one forked agent process per site, kept for every round
    (as a running job keeps its sites connected)."""

    def __init__(self, pki, config_args: dict, seeds: list[int]) -> None:
        self.config_args = config_args
        n = config_args["n"]
        # The configs (and so the inputs) of every round are made up front, so each agent
        # generates its inputs before any clock starts.
        self.configs = [round_config(**config_args) for _ in seeds]
        self.inputs = [inputs_for(c, seed) for c, seed in zip(self.configs, seeds)]
        ctx = mp.get_context("fork")
        self.run = None
        # The service binds its socket first so the agents know where it is, but it starts
        # serving (threads) only after every agent is forked.
        sock = bind_socket()
        url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        self.conns, self.procs = {}, []
        for c in range(1, n + 1):
            parent, child = ctx.Pipe()
            mine = [inputs[c] for inputs in self.inputs]
            p = ctx.Process(target=_agent_main, args=(pki, c, child, url, mine), daemon=True)
            p.start()
            self.conns[c] = parent
            self.procs.append(p)
        self.run = start_service(pki, sock=sock, poll_hold=10.0, body_timeout=60.0)
        # Every agent connects (TLS handshake, first long poll) before the first round opens,
        # as sites of a job do while it waits for them.
        until = time.monotonic() + 120
        while len(self.run.service.last_seen) < n:
            if time.monotonic() > until:
                raise RuntimeError("the agents did not connect")
            time.sleep(0.01)

    def round(self, i: int) -> dict:
        config, inputs = self.configs[i], self.inputs[i]
        done = threading.Event()
        for conn in self.conns.values():
            conn.send((config, i))
        agents0 = sum(_cpu_seconds(p.pid) for p in self.procs)
        c0, t0 = time.process_time(), time.perf_counter()
        server, session = open_secagg_round(self.run, config, stage_timeout=120.0)
        notify = session.on_change

        def on_change() -> None:
            notify()
            if session.state is not RoundState.OPEN:
                done.set()

        session.on_change = on_change  # the round needs every site's first message to move
        try:
            if not done.wait(600):
                raise RuntimeError("the round did not end in time")
            elapsed = time.perf_counter() - t0
        finally:
            # The closure refers to the session: left in place it would make a reference cycle
            # that keeps every ended round's envelopes alive until a full garbage collection,
            # and each round's buffers would then be fresh memory (page faults) for the service.
            session.on_change = notify
        service_cpu = time.process_time() - c0
        if session.state.value != "done":
            raise RuntimeError(f"the round ended {session.state.value}: "
                               f"{session.abort_reason}")
        # The agents are idle (long-polling) from here: their CPU since the open is the round's.
        time.sleep(0.05)
        agents_cpu = sum(_cpu_seconds(p.pid) for p in self.procs) - agents0
        assert np.array_equal(server.result.aggregate,
                              sum(v.astype(np.uint64) for v in inputs.values())
                              .astype(np.uint32))
        masked = [raw for step, site, stage, raw in session.inbox.envelopes(config.round_id)
                  if stage == "masked_input" and site == 1][0]
        return {"seconds": elapsed, "cpu": service_cpu + agents_cpu,
                "service_cpu": service_cpu, "agents_cpu": agents_cpu,
                "wire": len(masked), "body": len(envelope.parse(masked).body)}

    def close(self) -> None:
        self.run.service.finish()
        for c, conn in self.conns.items():
            if conn.poll(30):
                outcome = conn.recv()
                if outcome != "job_done":
                    print(f"site {c} ended as {outcome}", file=sys.stderr)
        for p in self.procs:
            p.join(10)
        self.run.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--dim", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.sites < 3 or args.dim < 1 or args.repeats < 1:
        ap.error("--sites must be at least 3, --dim and --repeats at least 1")
    logging.disable(logging.INFO)
    keep_large_buffers()  # as `cohort serve` does (the forked agents inherit it, and set it too)
    config_args = dict(n=args.sites, dim=args.dim)
    # Round 0 over the network is the job's first: it carries the processes' first-use costs
    # (the handshakes happened while the job waited for its sites). The rest are steady-state
    # rounds of a running job.
    rounds = args.repeats + 1
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_consortium(Path(tmp), args.sites)
        deployment = Deployment(pki, config_args, list(range(rounds)))
        try:
            local, remote = [], []
            for i in range(rounds):
                remote.append(deployment.round(i))
                local.append(in_process(deployment.configs[i], deployment.inputs[i]))
        finally:
            deployment.close()
    first = remote[0]
    local, remote = local[1:], remote[1:]
    best_local = min(local)
    best_remote = min(remote, key=lambda r: r["seconds"])
    out = {"sites": args.sites, "dim": args.dim, "repeats": args.repeats,
           "cores": os.cpu_count(),
           "in_process_seconds": best_local[0], "loopback_tls_seconds": best_remote["seconds"],
           "ratio": best_remote["seconds"] / best_local[0],
           # Each network round against the in-process round run right after it: on a shared
           # machine the best-of ratio above can pair a lucky round with an unlucky one.
           "paired_ratio_median": statistics.median(
               r["seconds"] / lo[0] for r, lo in zip(remote, local)),
           "first_round_seconds": first["seconds"],
           "first_round_ratio": first["seconds"] / best_local[0],
           "in_process_cpu_seconds": min(c for _, c in local),
           "loopback_tls_cpu_seconds": min(r["cpu"] for r in remote),
           "service_cpu_seconds": min(r["service_cpu"] for r in remote),
           "cpu_ratio": min(r["cpu"] for r in remote) / min(c for _, c in local),
           "masked_input_envelope_bytes": best_remote["wire"],
           "masked_input_message_bytes": best_remote["body"],
           "masked_input_overhead": best_remote["wire"] / best_remote["body"]}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:30s} {v:.4g}" if isinstance(v, float) else f"{k:30s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
