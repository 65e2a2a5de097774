"""Restart-to-resume time of a deployed job: kill -9 the coordinator mid-round, start it again on
the same state file, and time how long until the round goes on.

    python benchmarks/restart_resume.py --sites 20 [--stage masked_input] [--rounds 4] [--json F]

Everything is real and on 127.0.0.1: ``cohort provision`` makes the consortium's kits, the
coordinator is a ``python -m coordinator serve --state ...`` process, every site is its own
``python -m clients join`` process (mutual TLS, signed envelopes, the sites' ledgers). When the
state file holds the first message of ``--stage`` in round 2, the coordinator gets SIGKILL and is
started again at once with the same command. The phases, from the relaunch:

- ``listening``: the new process serves TLS again (its port file is written);
- ``ready``: it has rebuilt the job from its state (releases re-applied, checkpoints checked, the
  open round's inbox replayed into a fresh secagg server) and answers requests (503 before);
- ``resumed``: the first site message of the interrupted round is accepted after the restart
  (the sites have been retrying with back-off while it was down);
- ``round_done``: the interrupted round ends.

Beside them: how many messages the restart replayed, the state file's size, and the median
duration of the rounds after the interrupted one in the same run (uninterrupted rounds of the
same job, sites warm), so the cost of a crash reads as a multiple of a round. The job must then finish with every round summed by every site.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tqdm import tqdm  # noqa: E402

from clients.agent import site_tls_context  # noqa: E402
from clients.connection import CoordinatorConnection, TransportError  # noqa: E402
from coordinator.provision import parse_consortium, provision  # noqa: E402
from net_procs import (consortium_toml, free_port, policy_toml, query_state,  # noqa: E402
                       stage_reached)

STAGES = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask")


def _job(rounds: int, model: str) -> str:
    return (f'[job]\nname = "restart"\nrounds = {rounds}\nseed = 5\n'
            f'[data]\ndataset = "breast_cancer"\n[model]\nkind = "{model}"\n'
            '[privacy]\nmode = "distributed"\nnoise_multiplier = 0.5\nclip_norm = 2.0\n'
            '[secagg]\nmodulus_bits = 32\n'
            '[timeouts]\nstage = 120\njoin = 600\npoll_hold = 1\n')


def _wait(what: str, check, until: float, procs: list[subprocess.Popen], poll: float = 0.005):
    while True:
        value = check()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a process ended while waiting for {what} "
                                   f"(exit {p.returncode})")
        if time.monotonic() > until:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--stage", choices=STAGES, default="masked_input")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--model", default="logistic")
    ap.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    ap.add_argument("--keep", type=Path, default=None,
                    help="Work in this new folder and keep it (kits, logs, state, ledgers).")
    args = ap.parse_args(argv)
    if args.sites < 3:
        ap.error("--sites must be at least 3")
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (round 2 is interrupted, later ones are the "
                 "uninterrupted reference)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=False)
            tmp = args.keep
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        kits = tmp / "kits"
        provision(parse_consortium(consortium_toml(args.sites)), kits)
        for i in range(1, args.sites + 1):
            (kits / f"site-{i}" / "policy.toml").write_text(policy_toml(2))
        (tmp / "job.toml").write_text(_job(args.rounds, args.model))
        out, state, port_file = tmp / "out", tmp / "state.sqlite", tmp / "port"
        port = free_port()
        log = open(tmp / "coordinator.log", "w")
        serve = [sys.executable, "-m", "coordinator", "serve", "--kit", str(kits / "coordinator"),
                 "--job", str(tmp / "job.toml"), "--out", str(out), "--port", str(port),
                 "--state", str(state), "--port-file", str(port_file), "--verbose"]
        coordinator = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
        sites = [subprocess.Popen(
            [sys.executable, "-m", "clients", "join", "--kit", str(kits / f"site-{i}"),
             "--url", f"https://127.0.0.1:{port}",
             "--data", f"builtin:breast_cancer:{i}/{args.sites}", "--seed", "5",
             "--run-seconds", "1200", "--report", str(tmp / f"site-{i}.json")],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / f"site-{i}.log", "w"))
            for i in range(1, args.sites + 1)]
        kit = kits / "site-1"
        tls = site_tls_context(certfile=kit / "client.pem", keyfile=kit / "client.key",
                               cafile=kit / "ca.pem")
        figures: dict = {"sites": args.sites, "stage": args.stage, "model": args.model}
        try:
            bar = tqdm(total=5, desc="restart benchmark", unit="phase")
            until = time.monotonic() + 900
            bar.set_postfix_str(f"running to round 2's {args.stage}")
            _wait(f"round 2's {args.stage}", lambda: stage_reached(state, args.stage, 2),
                  until, [coordinator, *sites])
            os.kill(coordinator.pid, signal.SIGKILL)
            killed = time.time()
            coordinator.wait(10)
            bar.update()
            port_file.unlink(missing_ok=True)
            relaunch = time.time()
            t_relaunch = time.monotonic()
            coordinator = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
            procs = [coordinator, *sites]
            bar.set_postfix_str("waiting for the coordinator to listen")
            _wait("the port file", port_file.exists, until, procs)
            figures["listening_seconds"] = time.monotonic() - t_relaunch
            bar.update()
            bar.set_postfix_str("waiting for the coordinator to be ready")

            def ready() -> bool:
                try:
                    with CoordinatorConnection(f"https://127.0.0.1:{port}", tls, timeout=5,
                                               connect_timeout=5) as conn:
                        return conn.request("GET", "/v1/status").status_code == 200
                except TransportError:
                    return False

            _wait("readiness", ready, until, procs, poll=0.02)
            figures["ready_seconds"] = time.monotonic() - t_relaunch
            bar.update()
            bar.set_postfix_str("waiting for the round to resume")
            resumed = _wait("a message after the restart", lambda: query_state(
                state, "SELECT MIN(received) FROM messages m JOIN rounds r USING (round_id) "
                       "WHERE r.number = 2 AND m.received > ?", (relaunch,))[0][0], until, procs)
            figures["resumed_seconds"] = resumed - relaunch
            bar.update()
            bar.set_postfix_str("waiting for round 2 to end")
            ended = _wait("round 2's end", lambda: query_state(
                state, "SELECT ended FROM rounds WHERE number = 2 AND ended IS NOT NULL")
                [:1], until, procs)[0][0]
            figures["round_done_seconds"] = ended - relaunch
            figures["kill_to_round_done_seconds"] = ended - killed
            bar.update()
            bar.close()
            if coordinator.wait(900) != 0:
                raise RuntimeError("the restarted coordinator failed: "
                                   + (tmp / "coordinator.log").read_text()[-2000:])
            for p in sites:
                p.wait(120)
        finally:
            for p in [coordinator, *sites]:
                if p.poll() is None:
                    p.kill()
            log.close()
        text = (tmp / "coordinator.log").read_text()
        replayed = re.findall(r"rebuilt from (\d+) stored messages at step (\d+)", text)
        figures["messages_replayed"] = int(replayed[-1][0]) if replayed else 0
        figures["replayed_to_step"] = int(replayed[-1][1]) if replayed else None
        figures["state_file_bytes"] = state.stat().st_size
        # Round 1 waits for the sites to start (their imports); rounds after the interrupted
        # one are what an uninterrupted round of this job costs, sites warm.
        later = sorted(e - o for o, e in query_state(
            state, "SELECT opened, ended FROM rounds WHERE number > 2 AND ended IS NOT NULL"))
        figures["uninterrupted_round_seconds"] = later[len(later) // 2]
        figures["restart_cost_in_rounds"] = (figures["kill_to_round_done_seconds"]
                                             / figures["uninterrupted_round_seconds"])
        summary = json.loads((out / "summary.json").read_text())
        figures["job_rounds"] = summary["rounds"]
        figures["job_stopped"] = summary["stopped"]
        reports = [json.loads((tmp / f"site-{i}.json").read_text())
                   for i in range(1, args.sites + 1)]
        figures["sites_done"] = sum(r.get("outcome") == "job_done" for r in reports)
    for k, v in figures.items():
        print(f"{k:30s} {v:.4g}" if isinstance(v, float) else f"{k:30s} {v}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["job_rounds"] == args.rounds and figures["job_stopped"] is None \
        and figures["sites_done"] == args.sites
    if not ok:
        print("the job did not finish as planned after the restart", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
