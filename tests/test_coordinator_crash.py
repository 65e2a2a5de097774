"""Kill -9 the coordinator in each stage of a round; restart it on the same state file; the job
ends as if nothing happened (issue 10).

A real ``python -m coordinator serve`` process is killed with SIGKILL as soon as its state file
holds the first message of the chosen stage (so the kill lands mid-stage, with some sites'
messages in and others not). It is restarted with the same ``--state``; the three site agents
(real ``python -m clients join`` processes) ride the outage out with back-off and carry on in the
same round. The final model must be bit-identical to an uncrashed run with the same test seed,
and every site's ledger must hold the same entries (the same release ids, settled with the same
events): no message or release lost or applied twice.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.provision import parse_consortium, provision
from net_procs import consortium_toml, free_port, policy_toml, stage_reached

ROOT = Path(__file__).resolve().parents[1]

JOB = """[job]
name = "crash"
rounds = 2
seed = 11
[data]
dataset = "breast_cancer"
[model]
kind = "logistic"
[privacy]
mode = "distributed"
noise_multiplier = 0.5
clip_norm = 2.0
[secagg]
modulus_bits = 32
[timeouts]
stage = 60
join = 120
poll_hold = 1
"""



def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _serve(kits: Path, out: Path, port: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "coordinator", "serve", "--kit", str(kits / "coordinator"),
         "--job", str(out.parent / "job.toml"), "--out", str(out), "--port", str(port),
         "--state", str(out.parent / "state.sqlite"), "--port-file", str(out.parent / "port")],
        env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _job(tmp: Path, *, kill_at: str | None) -> tuple[dict, dict]:
    kits = tmp / "kits"
    provision(parse_consortium(consortium_toml(3)), kits)
    for i in (1, 2, 3):
        (kits / f"site-{i}" / "policy.toml").write_text(policy_toml(3))
    (tmp / "job.toml").write_text(JOB)
    out = tmp / "out"
    port = free_port()
    logs = open(tmp / "coordinator.log", "w")
    coordinator = _serve(kits, out, port, logs)
    sites = []
    for i in (1, 2, 3):
        cmd = [sys.executable, "-m", "clients", "join", "--kit", str(kits / f"site-{i}"),
               "--url", f"https://127.0.0.1:{port}", "--data", f"builtin:breast_cancer:{i}/3",
               "--seed", "11", "--run-seconds", "400", "--report", str(tmp / f"site-{i}.json")]
        sites.append(subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                                      stderr=open(tmp / f"site-{i}.log", "w")))
    try:
        if kill_at is not None:
            until = time.monotonic() + 300
            while not stage_reached(tmp / "state.sqlite", kill_at, 1):
                assert coordinator.poll() is None, (tmp / "coordinator.log").read_text()
                for i, p in enumerate(sites, 1):
                    assert p.poll() is None, (tmp / f"site-{i}.log").read_text()
                assert time.monotonic() < until, "the stage was never reached"
                time.sleep(0.005)
            os.kill(coordinator.pid, signal.SIGKILL)
            coordinator.wait(10)
            time.sleep(1.0)  # the sites find nobody for a while
            coordinator = _serve(kits, out, port, logs)
        assert coordinator.wait(400) == 0, (tmp / "coordinator.log").read_text()
        for p in sites:
            assert p.wait(120) == 0
    finally:
        for p in [coordinator, *sites]:
            if p.poll() is None:
                p.kill()
        logs.close()
    summary = json.loads((out / "summary.json").read_text())
    ledgers = {}
    for i in (1, 2, 3):
        conn = sqlite3.connect(kits / f"site-{i}" / "ledger.sqlite")
        ledgers[i] = conn.execute("SELECT release_id, status, event FROM releases "
                                  "ORDER BY seq").fetchall()
        conn.close()
    return summary, ledgers


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _job(tmp_path_factory.mktemp("reference"), kill_at=None)


STAGES = ["advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask"]


@pytest.mark.parametrize("stage", [pytest.param(s, marks=[] if s == "masked_input"
                                                else [pytest.mark.slow]) for s in STAGES])
def test_sigkill_in_each_stage_then_restart_ends_the_job_as_if_nothing_happened(
        tmp_path, reference, stage) -> None:
    want_summary, want_ledgers = reference
    assert want_summary["rounds"] == 2 and want_summary["stopped"] is None
    summary, ledgers = _job(tmp_path, kill_at=stage)
    assert summary["rounds"] == 2 and summary["stopped"] is None
    assert summary["final_params_sha256"] == want_summary["final_params_sha256"]
    assert summary["epsilon"] == want_summary["epsilon"]
    assert ledgers == want_ledgers
    for rows in ledgers.values():
        assert [status for _, status, _ in rows] == ["settled", "settled"]
