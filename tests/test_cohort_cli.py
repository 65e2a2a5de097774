"""``cohort``, as a person meets it: each class of bad input ends in one line on stderr, the
documented exit code, no traceback, and an output folder that is untouched; Ctrl-C writes a
summary and a plot and exits 130; a run whose every round aborted fails; help is complete."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cohort.errors import ExitCode
from cohort.registry import COMMANDS, cohort_group, main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--sites", "3", "--rounds", "2", "--local-epochs", "1", "--no-baselines"]


def cohort(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``cohort`` in a subprocess (a real process: tracebacks, signals, exit status)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cohort", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=env)


def cohort_here(capfd, *args: str) -> subprocess.CompletedProcess:
    """``cohort`` in this process (fast: torch is imported once), captured the same way."""
    capfd.readouterr()
    code = main(list(args))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def tree_hash(folder: Path) -> str:
    """Names, sizes and bytes of everything under ``folder`` (and whether it exists)."""
    h = hashlib.sha256()
    if not folder.exists():
        return "absent"
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def assert_one_line_error(proc: subprocess.CompletedProcess, code: ExitCode, *needles: str):
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.match(r"^[A-Z]\w+: \S", lines[0]), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory) -> Path:
    """A finished run, reused as the folder that every refused command must leave alone."""
    from coordinator.simulation import SimulationConfig, run_simulation

    out = tmp_path_factory.mktemp("prev") / "run"
    run_simulation(SimulationConfig(sites=3, rounds=2, local_epochs=1, baselines=False), out,
                   progress=False, table=False)
    assert {"metrics.jsonl", "summary.json", "rounds.png"} <= {p.name for p in out.iterdir()}
    return out


def _bad_csv(tmp: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    path = tmp / "site.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*data.feature_names[:4], "diagnosis"])
        for i, (row, label) in enumerate(zip(data.data[:80, :4], data.target)):
            cells = [str(x) for x in row]
            if i == 6:
                cells[2] = "1e308"  # finite as a float64, not as the float32 a model trains on
            writer.writerow([*cells, label])
    return path


CASES = {
    "bad number": (["--rounds", "three"], ExitCode.USAGE, ["--rounds"]),
    "out of range": (["--modulus-bits", "70"], ExitCode.USAGE, ["--modulus-bits"]),
    "not finite": (["--alpha", "nan"], ExitCode.USAGE, ["--alpha"]),
    "unknown choice": (["--partition", "bogus"], ExitCode.USAGE, ["--partition", "iid"]),
    "unknown flag": (["--bogus"], ExitCode.USAGE, ["--bogus"]),
    "noise without dp": (["--noise-multiplier", "2"], ExitCode.USAGE, ["--noise-multiplier",
                                                                        "--dp"]),
    "dp none with noise": (["--dp", "none", "--noise-multiplier", "2"], ExitCode.USAGE,
                           ["--noise-multiplier"]),
    "missing data file": (["--dataset", "no_such_file.csv"], ExitCode.USAGE, ["--dataset"]),
    "label column, bundled data": (["--label-column", "y"], ExitCode.USAGE, ["--label-column"]),
    "config conflict": (["--dp", "distributed", "--no-secagg"], ExitCode.USAGE,
                        ["ConfigurationError"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_leaves_the_run_alone(case: str, previous_run: Path,
                                                        capfd) -> None:
    args, code, needles = CASES[case]
    before = tree_hash(previous_run)
    proc = cohort_here(capfd, "simulate", *FAST, *args, "--out", str(previous_run),
                       "--overwrite")
    assert_one_line_error(proc, code, *needles)
    assert tree_hash(previous_run) == before


def test_bad_input_in_a_real_process(previous_run: Path) -> None:
    before = tree_hash(previous_run)
    proc = cohort("simulate", *FAST, "--modulus-bits", "70", "--out", str(previous_run))
    assert_one_line_error(proc, ExitCode.USAGE, "--modulus-bits")
    proc = cohort("harness", "--clients", "-5")
    assert_one_line_error(proc, ExitCode.USAGE, "--clients")
    assert tree_hash(previous_run) == before


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_in_a_real_process_every_class(case: str, previous_run: Path) -> None:
    args, code, needles = CASES[case]
    before = tree_hash(previous_run)
    proc = cohort("simulate", *FAST, *args, "--out", str(previous_run), "--overwrite")
    assert_one_line_error(proc, code, *needles)
    assert tree_hash(previous_run) == before


def test_bad_csv_cell_names_row_and_column(tmp_path: Path, capfd) -> None:
    csv_path = _bad_csv(tmp_path)
    out = tmp_path / "out"
    proc = cohort_here(capfd, "simulate", *FAST, "--dataset", str(csv_path), "--label-column",
                       "diagnosis", "--out", str(out))
    assert_one_line_error(proc, ExitCode.USAGE, "InvalidInput", "row 8", "column 3",
                          "mean perimeter", "1e308")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["site.csv"]


def test_out_that_is_a_file_or_holds_a_run(tmp_path: Path, previous_run: Path, capfd) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    proc = cohort_here(capfd, "simulate", *FAST, "--out", str(a_file))
    assert_one_line_error(proc, ExitCode.USAGE, "--out", "is a file")
    assert a_file.read_text() == "keep me"
    before = tree_hash(previous_run)
    proc = cohort_here(capfd, "simulate", *FAST, "--out", str(previous_run))  # no --overwrite
    assert_one_line_error(proc, ExitCode.USAGE, "--out", "--overwrite")
    assert tree_hash(previous_run) == before


def test_secagg_and_privacy_refusals_name_their_flags(capfd) -> None:
    proc = cohort_here(capfd, "harness", "--clients", "10", "--neighbors", "50")
    assert_one_line_error(proc, ExitCode.USAGE, "--neighbors", "--clients")
    proc = cohort_here(capfd, "epsilon", "--mechanism", "skellam", "--sample-rate", "0.01", "--steps", "3",
                  "--delta", "1e-5", "--variance", "1e6", "--l2-sensitivity", "10",
                  "--l1-sensitivity", "100")
    assert_one_line_error(proc, ExitCode.USAGE, "--sample-rate", "skellam")
    proc = cohort_here(capfd, "status")  # built: its required flag is named
    assert_one_line_error(proc, ExitCode.USAGE, "--state")
    proc = cohort_here(capfd, "serve")  # built: its required flags are named
    assert_one_line_error(proc, ExitCode.USAGE, "--kit")


def test_every_round_aborted_fails_with_the_reason(tmp_path: Path, capfd) -> None:
    out = tmp_path / "run"
    proc = cohort_here(capfd, "simulate", *FAST, "--dropout-rate", "0.95", "--out", str(out))
    assert_one_line_error(proc, ExitCode.PROTOCOL_ABORT, "ProtocolAbort", "every round aborted")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "aborted" and summary["final_accuracy"] is None
    assert summary["rounds_aborted"] == [1, 2]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["aborted"] for r in records)


def test_sigint_finishes_the_round_then_writes_summary_and_plot(tmp_path: Path,
                                                                previous_run: Path) -> None:
    before = tree_hash(previous_run)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cohort", "simulate", "--sites", "3",
                             "--rounds", "1000", "--local-epochs", "1", "--no-baselines",
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        for line in proc.stdout:  # one line per round off a terminal
            if line.startswith("round 2/"):
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    summary = json.loads((out / "summary.json").read_text())
    n = int(re.fullmatch(r"interrupted at round (\d+)", summary["stopped"]).group(1))
    assert summary["status"] == "interrupted" and n >= 2
    assert summary["rounds_completed"] == n
    assert (out / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == n
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    assert tree_hash(previous_run) == before


def _commands():
    group = cohort_group()
    ctx = click.Context(group)
    return [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]


def test_every_option_has_help_and_a_stated_default() -> None:
    for name, command in _commands():
        assert command.help, name
        assert "Exit codes" in (command.epilog or ""), name
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            assert param.help and param.help.endswith("."), (name, param.name)
            if param.is_flag or param.required:
                continue
            stated = param.default is not None or isinstance(param.show_default, str)
            assert stated, f"{name} {param.opts[0]} has no stated default"


def test_simulate_help_lists_the_output_files_and_choices(capfd) -> None:
    proc = cohort_here(capfd, "simulate", "--help")
    assert proc.returncode == 0
    for text in ("metrics.jsonl", "summary.json", "rounds.png", "ledgers.sqlite", "Examples",
                 "label_dirichlet", "Exit codes"):
        assert text in proc.stdout, text
    assert {e.name for e in COMMANDS} >= {"simulate", "harness", "bench", "epsilon"}


def test_cli_noise_multiplier_range_is_the_events_range():
    """The simulate flags check the range the privacy events accept, without importing torch."""
    from coordinator.__main__ import NOISE_MULTIPLIER_RANGE
    from privacy.events import NOISE_MULTIPLIER_RANGE as EVENTS_RANGE

    assert NOISE_MULTIPLIER_RANGE == EVENTS_RANGE
