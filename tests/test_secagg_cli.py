"""The command line: ``python -m secagg bench --json`` prints the documented fields, and
``simulate`` prints a report."""

from __future__ import annotations

import json
import subprocess
import sys

REQUIRED = {"clients", "dim", "neighbors", "threshold", "dropout", "client_seconds",
            "server_seconds", "upload_bytes_per_client", "expansion", "prg_floor_seconds",
            "protocol_floor_seconds"}


def run(*args):
    return subprocess.run([sys.executable, "-m", "secagg", *args], capture_output=True,
                          text=True, timeout=300)


def test_bench_json_has_the_documented_fields():
    proc = run("bench", "--clients", "12", "--dim", "20000", "--dropout", "0.2", "--json",
               "--no-progress", "--memory")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert REQUIRED <= report.keys()
    assert report["correct"] is True
    assert report["clients"] == 12 and report["dim"] == 20000
    assert report["modulus_bits"] == 16 + 4
    assert report["server_peak_bytes"] > 0
    # 20 bits per entry on the wire for 16-bit inputs: expansion just above 20/16 (keys and
    # the 11 encrypted shares of the complete graph add about 0.1 at this length).
    assert 20 / 16 <= report["expansion"] < 20 / 16 + 0.2


def test_bench_with_explicit_graph_and_modulus():
    proc = run("bench", "--clients", "10", "--dim", "500", "--neighbors", "4", "--threshold",
               "3", "--modulus-bits", "32", "--json", "--no-progress")
    report = json.loads(proc.stdout)
    assert (report["neighbors"], report["threshold"], report["modulus_bits"]) == (4, 3, 32)


def test_simulate_prints_a_report():
    proc = run("simulate", "--clients", "6", "--dim", "50")
    assert proc.returncode == 0, proc.stderr
    assert "sum equals the plain sum" in proc.stdout
    proc = run("simulate", "--clients", "6", "--dim", "50", "--malicious",
               "--adversary", "overlap")
    assert proc.returncode == 3
    assert "aborted" in proc.stdout
