"""``python -m privacy``: the epsilon, bench and audit commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from privacy.__main__ import main
from privacy.events import GaussianEvent
from privacy.ledger import Budget, SiteLedger

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_gaussian_rdp_known_answer(capsys) -> None:
    out = _run(capsys, ["epsilon", "--mechanism", "gaussian", "--noise-multiplier", "1.5",
                        "--sample-rate", "0.04", "--steps", "2250", "--delta", "1e-5",
                        "--accountant", "rdp", "--json"])
    assert out["epsilon"] == pytest.approx(7.32911117143, abs=1e-6)
    assert out["delta"] == 1e-5 and out["noise_multiplier"] == 1.5 and out["steps"] == 2250


def test_gaussian_prv(capsys) -> None:
    out = _run(capsys, ["epsilon", "--mechanism", "gaussian", "--noise-multiplier", "1.5",
                        "--sample-rate", "0.04", "--steps", "2250", "--delta", "1e-5",
                        "--accountant", "prv", "--json"])
    assert out["epsilon"] == pytest.approx(6.78, abs=0.01)
    assert out["accountant"] == "prv"


def test_skellam(capsys) -> None:
    out = _run(capsys, ["epsilon", "--mechanism", "skellam", "--variance", "1e6",
                        "--l2-sensitivity", "1000", "--l1-sensitivity", "30000", "--steps", "10",
                        "--delta", "1e-5", "--json"])
    gauss = _run(capsys, ["epsilon", "--mechanism", "gaussian", "--noise-multiplier", "1.0",
                          "--steps", "10", "--delta", "1e-5", "--json"])
    assert out["epsilon"] >= gauss["epsilon"] * 0.99
    assert out["epsilon"] == pytest.approx(gauss["epsilon"], rel=0.05)
    assert out["variance"] == 1e6 and out["l1_sensitivity"] == 30000


def test_text_output_and_errors(capsys) -> None:
    assert main(["epsilon", "--mechanism", "gaussian", "--noise-multiplier", "2", "--steps", "3",
                 "--delta", "1e-5"]) == 0
    assert "epsilon =" in capsys.readouterr().out
    # A rejected parameter: exit status 2, nothing on stdout, one line on stderr that names
    # the flag (not the Python parameter).
    assert main(["epsilon", "--mechanism", "gaussian", "--noise-multiplier", "-1", "--steps", "3",
                 "--delta", "1e-5", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--noise-multiplier" in captured.err
    assert captured.err.count("\n") == 1
    assert main(["epsilon", "--mechanism", "skellam", "--steps", "3", "--delta", "1e-5"]) == 2
    assert "--variance" in capsys.readouterr().err


def test_bench_prints_figures_and_ratio(capsys) -> None:
    out = _run(capsys, ["bench", "--dim", "4096", "--bits", "16", "--repeats", "1", "--json"])
    for key in ("encode_seconds", "decode_seconds", "plain_encode_seconds", "encode_ratio"):
        assert out[key] > 0
    assert out["decode_agreement_max_abs"] < 1e-9


def test_audit(tmp_path: Path, capsys) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=Budget(epsilon=5.0, delta=1e-5))
    ledger.charge(GaussianEvent(noise_multiplier=4.0), round_id="r1")
    out = _run(capsys, ["audit", "--ledger", str(tmp_path / "l.db"), "--site", "h1", "--json"])
    assert out["epsilon_spent"] == pytest.approx(ledger.spent())
    assert [e["round_id"] for e in out["entries"]] == ["r1"]


def test_module_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "privacy", "epsilon", "--mechanism", "gaussian",
                           "--noise-multiplier", "1.5", "--sample-rate", "0.04", "--steps", "2250",
                           "--delta", "1e-5", "--json"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, check=True)
    assert json.loads(proc.stdout)["epsilon"] == pytest.approx(7.32911117143, abs=1e-6)
