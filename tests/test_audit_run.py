"""``audit run``: an honest run passes every check; each planted defect is caught and named
(CONVENTIONS 12): both shares given, a release missing from a ledger, an epsilon in the summary
that its events do not support, an unmasked upload, a record altered after the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clients.round as site_round
import coordinator.simulation.report as sim_report
from coordinator.simulation import SimulationConfig, run_simulation
from privacy import Mechanism
from privacy.audit import audit_run, open_records, uniformity_pvalue, write_report
from privacy.errors import AuditError
from secagg import _testing

BASE = dict(sites=5, rounds=3, local_epochs=1, baselines=False, modulus_bits=20, seed=3)


def _run(tmp: Path, **extra) -> Path:
    config = SimulationConfig(**{**BASE, **extra})
    run_simulation(config, tmp, progress=False, table=False)
    return tmp


def _dp(tmp: Path, **extra) -> Path:
    return _run(tmp, dp=Mechanism.DISTRIBUTED, noise_multiplier=0.5, **extra)


def _failed(path: Path) -> dict[str, list[str]]:
    report = audit_run(open_records(path))
    return {c.name: c.details for c in report.checks if not c.passed}


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Path:
    return _dp(tmp_path_factory.mktemp("honest") / "run", dropout_rate=0.2)


def test_an_honest_dp_run_passes_every_check(honest: Path) -> None:
    report = audit_run(open_records(honest))
    assert report.passed, [(c.name, c.evidence) for c in report.failed()]
    names = {c.name for c in report.checks}
    assert {"survivors >= threshold", "one disjoint survivor/dropped view",
            "never both shares of one client", "only masked vectors received",
            "noise summed vs planned", "every release charged",
            "every printed epsilon recomputed", "no site over its budget"} <= names
    summary = json.loads((honest / "summary.json").read_text())
    assert report.measured["site-level epsilon recomputed"] == pytest.approx(
        summary["epsilon"], rel=5e-3)
    # The dropouts left a shortfall, which is reported.
    assert any(r["shortfall"] > 0 for r in report.measured["noise_by_round"])


def test_a_dp_run_without_a_budget_keeps_its_ledgers(honest: Path) -> None:
    summary = json.loads((honest / "summary.json").read_text())
    assert summary["epsilon_budget"] is None
    assert {"ledgers.sqlite", "secagg_rounds.jsonl", "transcripts"} <= set(summary["outputs"])


def test_a_run_without_dp_passes_its_secure_checks(tmp_path: Path) -> None:
    report = audit_run(open_records(_run(tmp_path / "run")))
    assert report.passed
    assert "every release charged" not in {c.name for c in report.checks}


def test_a_budgeted_run_and_dp_sgd_are_recomputed(tmp_path: Path) -> None:
    from clients import DPSGDConfig

    path = _dp(tmp_path / "run", target_epsilon=200.0,
               dp_sgd=DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0))
    report = audit_run(open_records(path))
    assert report.passed, [(c.name, c.evidence) for c in report.failed()]
    assert report.claimed["example-level epsilon (per site)"]
    assert report.measured["example-level epsilon recomputed"]


def test_planted_both_shares_is_caught(tmp_path: Path) -> None:
    with _testing.plant("client_reveals_both_shares"):
        path = _dp(tmp_path / "run")
    failed = _failed(path)
    assert "never both shares of one client" in failed
    assert any("gave both shares" in d or "obtained both secrets" in d
               for d in failed["never both shares of one client"])


def test_planted_missing_release_is_caught(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(site_round, "_PLANT_SKIP_CHARGE", frozenset({"hospital-02"}))
    path = _dp(tmp_path / "run")
    failed = _failed(path)
    assert any("missing from hospital-02's ledger" in d or "hospital-02" in d
               for d in failed["every release charged"])


def test_planted_summary_epsilon_is_caught(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sim_report, "_PLANT_SUMMARY_EPSILON_SCALE", 0.9)
    path = _dp(tmp_path / "run")
    failed = _failed(path)
    assert set(failed) == {"every printed epsilon recomputed"}
    assert any(d.startswith("summary.json: epsilon") for d in failed[
        "every printed epsilon recomputed"])


def test_planted_unmasked_upload_is_caught(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(site_round, "_PLANT_SEND_UNMASKED", True)
    path = _dp(tmp_path / "run")
    failed = _failed(path)
    assert "only masked vectors received" in failed


def test_an_altered_transcript_fails_closed(honest: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(honest, copy)
    victim = sorted((copy / "transcripts").iterdir())[0]
    blob = bytearray(victim.read_bytes())
    blob[-1] ^= 1
    victim.write_bytes(bytes(blob))
    failed = _failed(copy)
    assert any("SHA-256" in d for d in failed["never both shares of one client"])


def test_a_garbled_round_line_fails_closed(honest: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(honest, copy)
    rounds = copy / "secagg_rounds.jsonl"
    lines = rounds.read_text().splitlines()
    lines[0] = lines[0].replace('"threshold": ', '"threshold": "x', 1)
    rounds.write_text("\n".join(lines) + "\n")
    assert "records readable" in _failed(copy)


def test_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError):
        open_records(tmp_path)
    db = tmp_path / "x.sqlite"
    import sqlite3

    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(AuditError, match="not a coordinator state file"):
        open_records(db)


def test_report_files(honest: Path, tmp_path: Path) -> None:
    report = audit_run(open_records(honest))
    js, page = write_report(report, tmp_path / "audit")
    data = json.loads(js.read_text())
    assert data["verdict"] == "PASS" and data["audit"] == "run"
    text = page.read_text()
    assert "PASS" in text and "every printed epsilon recomputed" in text


def test_cli_verdict_and_exit_code(honest: Path, tmp_path: Path, monkeypatch,
                                   capsys) -> None:
    from cohort.registry import main, role_main

    assert role_main("privacy", ["audit", "run", str(honest), "--out", str(tmp_path / "a")],
                     summary="") == 0
    assert "PASS" in capsys.readouterr().out and (tmp_path / "a" / "audit.html").exists()
    monkeypatch.setattr(sim_report, "_PLANT_SUMMARY_EPSILON_SCALE", 0.9)
    bad = _dp(tmp_path / "bad")
    assert main(["audit", "run", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "FAIL"
    assert [c["name"] for c in data["checks"] if not c["passed"]] == [
        "every printed epsilon recomputed"]


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(8, 32), dim=st.sampled_from([256, 1024, 4096]), seed=st.integers(0, 10**6))
def test_uniform_residues_pass_and_small_ones_fail(bits: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    uniform = rng.integers(0, 1 << bits, size=dim, dtype=np.uint64)
    assert uniformity_pvalue(uniform, bits) > 1e-9
    # An unmasked encoding: small signed integers wrapped into [0, 2^b).
    small = (rng.integers(-50, 50, size=dim) % (1 << bits)).astype(np.uint64)
    assert uniformity_pvalue(small, bits) < 1e-12
