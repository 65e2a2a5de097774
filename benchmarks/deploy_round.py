"""One secure round over loopback mutual TLS against the same round in process.

    python benchmarks/deploy_round.py --sites 5 --dim 100000 [--repeats 3] [--json]

Both sides drive real :class:`secagg.SecAggServer` / :class:`secagg.SecAggClient` objects through
the transport's ``RoundHost`` / ``RoundParticipant`` adapters (``tests/net_round.py``): in process,
a loop hands each message straight to the other side; over the network, the coordinator service
runs uvicorn on 127.0.0.1 (TLS 1.3, client certificates) in a thread and each site agent runs in
its own thread with its own HTTPS connection, so the figure includes TLS, HTTP, the signed
envelopes, long-poll wake-ups and the GIL shared by every party on one machine. It prints the
wall time of each (best of ``--repeats``), their ratio, and the wire bytes per site of the
masked-input step against the protocol message itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from net_pki import make_consortium  # noqa: E402
from net_round import (SecAggHost, SecAggParticipant, inputs_for, make_agent,  # noqa: E402
                       open_secagg_round, round_config, run_agents, start_service)
from secagg import SecAggClient, SecAggServer, envelope  # noqa: E402


def in_process(config, inputs) -> float:
    t0 = time.perf_counter()
    host = SecAggHost(SecAggServer(config))
    parts = {c: SecAggParticipant(SecAggClient(c, config), inputs[c]) for c in config.clients}
    outbox = {c: None for c in config.clients}
    while outbox:
        for c, message in outbox.items():
            reply = parts[c].start() if message is None else parts[c].on_message(message)
            if reply is not None:
                host.receive(c, reply)
        outbox = host.close_stage()
    elapsed = time.perf_counter() - t0
    assert np.array_equal(host.server.result.aggregate,
                          sum(v.astype(np.uint64) for v in inputs.values()).astype(np.uint32))
    return elapsed


def over_tls(pki, config, inputs) -> tuple[float, int, int]:
    run = start_service(pki, poll_hold=10.0, body_timeout=60.0)
    try:
        server, session = open_secagg_round(run, config, stage_timeout=120.0)
        agents = {c: make_agent(pki, run.url, c,
                                SecAggParticipant(SecAggClient(c, config), inputs[c]),
                                poll_wait=10.0, run_seconds=600.0)
                  for c in config.clients}
        # The agents' TLS handshakes happen on their first request; the round opened just above,
        # so the clock covers the whole round including connection set-up.
        t0 = time.perf_counter()
        run_agents(agents, timeout=600.0)
        elapsed = time.perf_counter() - t0
        assert np.array_equal(server.result.aggregate,
                              sum(v.astype(np.uint64) for v in inputs.values())
                              .astype(np.uint32))
        masked = [raw for step, site, stage, raw in session.inbox.envelopes(config.round_id)
                  if stage == "masked_input" and site == 1][0]
        return elapsed, len(masked), len(envelope.parse(masked).body)
    finally:
        run.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--dim", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.disable(logging.INFO)
    config_args = dict(n=args.sites, dim=args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_consortium(Path(tmp), args.sites)
        local, remote, wire, body = [], [], 0, 0
        for i in range(args.repeats):
            config = round_config(**config_args)
            inputs = inputs_for(config, i)
            local.append(in_process(config, inputs))
            config = round_config(**config_args)
            t, wire, body = over_tls(pki, config, inputs)
            remote.append(t)
    out = {"sites": args.sites, "dim": args.dim, "repeats": args.repeats,
           "in_process_seconds": min(local), "loopback_tls_seconds": min(remote),
           "ratio": min(remote) / min(local),
           "masked_input_envelope_bytes": wire, "masked_input_message_bytes": body,
           "masked_input_overhead": wire / body}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:30s} {v:.4g}" if isinstance(v, float) else f"{k:30s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
