"""Three hospitals and a coordinator, as separate processes on 127.0.0.1, one job to its end.

    python examples/three_hospitals/run.py --out runs/three_hospitals [--rounds 3] [--seed 7]

It writes a consortium file and provisions it (``cohort provision`` into ``OUT/kits``), gives each
site a policy with a privacy budget, writes a FedAvg job with secure aggregation and distributed
differential privacy (``OUT/job.toml``), starts ``cohort serve`` and three ``cohort join`` (each
site with its share of the bundled breast-cancer data set), waits for the job to end, and writes
``OUT/summary.json`` (the coordinator's summary, with each site's report of what it agreed to and
spent), ``OUT/metrics.jsonl`` (one line per round) and ``OUT/rounds.png`` (score, loss, sites
summed against sites asked, and epsilon per round). The kits, each site's ledger
(``OUT/kits/site-N/ledger.sqlite``) and every process's log (``OUT/logs/``: its output, and
its structured events as JSON lines, ``*.jsonl``) stay beside them.
``--seed`` is for tests only (the same seed gives ``cohort simulate``'s final model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
SITES = ("site-1", "site-2", "site-3")

CONSORTIUM = """\
[consortium]
name = "three-hospitals"

[admin]
name = "Consortium admin"
email = "admin@example.org"

[coordinator]
hosts = ["127.0.0.1", "localhost"]
port = 8443
""" + "".join(f'\n[[sites]]\nname = "{s}"\n' for s in SITES)

POLICY = """\
# What this hospital agrees to (clients.policy.SitePolicy): FedAvg only, secure aggregation
# with at least three sites, and at most epsilon 200 over everything it ever releases.
allowed_strategies = ["fedavg"]
min_participants = 3
require_secure_aggregation = true

[privacy_budget]
epsilon = 200.0
delta = 1e-5
"""


def job_toml(rounds: int, seed: int | None) -> str:
    return f"""\
[job]
name = "three-hospitals-fedavg"
rounds = {rounds}
strategy = "fedavg"
{'' if seed is None else f'seed = {seed}'}

[data]
dataset = "breast_cancer"

[model]
kind = "logistic"

[training]
epochs = 1
lr = 0.1
batch_size = 32

[privacy]
mode = "distributed"
noise_multiplier = 0.5
clip_norm = 2.0
delta = 1e-5

[secagg]
modulus_bits = 32
malicious = true  # signed keys and the consistency check: the coordinator is not trusted

[timeouts]
stage = 30
join = 300  # the job starts as soon as every site has joined; slow starts are fine
poll_hold = 2
"""


def _cohort(*args: str) -> list[str]:
    return [sys.executable, "-m", "cohort", *args]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None, help="tests only")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}

    (out / "consortium.toml").write_text(CONSORTIUM)
    kits = out / "kits"
    if not (kits / "coordinator").is_dir():
        subprocess.run(_cohort("provision", str(out / "consortium.toml"), "--out", str(kits)),
                       check=True, env=env, stdout=subprocess.DEVNULL)
    for site in SITES:
        (kits / site / "policy.toml").write_text(POLICY)
    (out / "job.toml").write_text(job_toml(args.rounds, args.seed))
    port_file = out / "port"
    port_file.unlink(missing_ok=True)

    started = time.monotonic()
    procs: dict[str, subprocess.Popen] = {}
    files = []
    try:
        log = open(logs / "coordinator.log", "w")
        files.append(log)
        procs["coordinator"] = subprocess.Popen(
            _cohort("serve", "--kit", str(kits / "coordinator"), "--job", str(out / "job.toml"),
                    "--out", str(out), "--port", "0", "--port-file", str(port_file),
                    "--log-file", str(logs / "coordinator.jsonl")),
            env=env, stdout=log, stderr=subprocess.STDOUT)
        while not port_file.exists() or not port_file.read_text().strip():
            if procs["coordinator"].poll() is not None or time.monotonic() - started > 60:
                print("the coordinator did not start; see", logs / "coordinator.log")
                return 1
            time.sleep(0.1)
        url = f"https://127.0.0.1:{port_file.read_text().strip()}"
        print(f"coordinator on {url}; starting {len(SITES)} hospitals", flush=True)
        for i, site in enumerate(SITES, 1):
            log = open(logs / f"{site}.log", "w")
            files.append(log)
            cmd = _cohort("join", "--kit", str(kits / site), "--url", url,
                          "--data", f"builtin:breast_cancer:{i}/{len(SITES)}",
                          "--report", str(out / f"{site}.json"),
                          "--log-file", str(logs / f"{site}.jsonl"))
            if args.seed is not None:
                cmd += ["--seed", str(args.seed)]
            procs[site] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        shown = 0
        with tqdm(total=args.rounds, unit="round", desc="job") as bar:
            while any(p.poll() is None for p in procs.values()):
                if time.monotonic() - started > args.timeout:
                    bar.write("timed out; stopping every process")
                    return 1
                metrics = out / "metrics.jsonl"
                lines = metrics.read_text().splitlines() if metrics.exists() else []
                for line in lines[shown:]:
                    m = json.loads(line)
                    acc = "-" if m["accuracy"] is None else f"{m['accuracy']:.3f}"
                    eps = "-" if m["epsilon"] is None else f"{m['epsilon']:.3g}"
                    bar.set_postfix_str(f"{m['participants']}/{m['planned']} sites summed, "
                                        f"accuracy {acc}, epsilon {eps}")
                    bar.update(1)
                shown = len(lines)
                time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in files:
            f.close()
    codes = {name: p.returncode for name, p in procs.items()}
    summary = json.loads((out / "summary.json").read_text())
    summary["exit_codes"] = codes
    summary["wall_seconds"] = time.monotonic() - started
    summary["site_reports"] = {s: json.loads((out / f"{s}.json").read_text())
                               for s in SITES if (out / f"{s}.json").exists()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done in {summary['wall_seconds']:.1f}s: {summary['rounds']} rounds, final accuracy "
          f"{summary['final_accuracy']}, epsilon {summary['epsilon']}; wrote {out}/summary.json")
    for s, r in summary["site_reports"].items():
        print(f"  {s}: {r['outcome']}, spent epsilon {r['spent_epsilon']} of "
              f"{r['budget_epsilon']}")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
