"""``audit canaries``: on honest runs the audited figures stay at or below the claim; with the
noise switched off while epsilon is still claimed, they exceed it and the verdict names the
check (CONVENTIONS 12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

import privacy.encoding as encoding
from privacy import dpsgd
from privacy.audit import canary_report, client_canary_estimate, example_canary_run



def _data(n: int = 60):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return X[:n].astype(np.float32), y[:n]


def _mlp(d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 2))


SMALL = dict(n_classes=2, canaries=200, noise_multiplier=4.0, max_grad_norm=1.0, batch_size=32,
             epochs=4, lr=0.5, delta=1e-5, guess_grid=[10, 25, 50, 100], seed=1)


def test_example_level_honest_bound_is_below_the_claim() -> None:
    X, y = _data()
    r = example_canary_run(X, y, make_model=_mlp, **SMALL)
    assert 0.0 <= r.lower_bound <= r.claimed_epsilon
    assert "Bonferroni" in r.thresholds
    report = canary_report(r, None, subject="test", figures=[], confidence=0.95)
    assert report.passed


def test_planted_noise_off_exceeds_the_claim(monkeypatch) -> None:
    monkeypatch.setattr(dpsgd, "_TEST_ONLY_DEFECTS", frozenset({dpsgd._Defect.NOISE_OFF}))
    X, y = _data()
    r = example_canary_run(X, y, make_model=_mlp, **SMALL)
    assert r.lower_bound > r.claimed_epsilon, (r.lower_bound, r.claimed_epsilon)
    report = canary_report(r, None, subject="test", figures=[], confidence=0.95)
    assert [c.name for c in report.failed()] == ["example-level bound within claim"]


def test_client_statistic_separates_inserted_directions() -> None:
    rng = np.random.default_rng(0)
    d = 500
    z = rng.standard_normal((20, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    fresh = rng.standard_normal((300, d))
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    update = z.sum(0) + rng.normal(0, 0.01, d)  # no noise at all: the canaries stand out
    loud = client_canary_estimate(update, z, fresh, delta=1e-5)
    quiet = client_canary_estimate(z.sum(0) + rng.normal(0, 3.0, d), z, fresh, delta=1e-5)
    assert loud.estimate > quiet.estimate >= 0.0
    assert abs(loud.mean_out) < 0.02 and loud.mean_in > 0.1


def _client(tmp: Path, **extra):
    from coordinator.simulation import SimulationConfig
    from coordinator.simulation.audit_runs import client_canaries
    from privacy import Mechanism

    config = SimulationConfig(sites=3, rounds=3, local_epochs=1, baselines=False,
                              dp=Mechanism.DISTRIBUTED, noise_multiplier=20.0, seed=2)
    return client_canaries(config, inserted=20, unobserved=300, work_dir=tmp, **extra)


def test_client_level_honest_estimate_is_below_the_claim(tmp_path: Path) -> None:
    run = _client(tmp_path)
    assert run.estimate.estimate <= run.claimed_epsilon
    report = canary_report(None, run, subject="t", figures=[], confidence=0.95)
    assert report.passed


def test_client_level_planted_noise_off_exceeds_the_claim(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(encoding, "_PLANT_NOISE_OFF", True)
    run = _client(tmp_path)
    assert run.estimate.estimate > run.claimed_epsilon, (run.estimate.estimate,
                                                        run.claimed_epsilon)
    report = canary_report(None, run, subject="t", figures=[], confidence=0.95)
    assert [c.name for c in report.failed()] == ["client-level estimate within claim"]


def test_cli_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "a"
    from cohort.registry import main

    code = main(["audit", "canaries", "--sites", "3",
                           "--rounds", "2", "--local-epochs", "1", "--canaries", "100",
                           "--guesses", "20", "--client-canaries", "4", "--unobserved", "50",
                           "--noise-multiplier", "5", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    data = json.loads((out / "audit.json").read_text())
    assert data["verdict"] == "PASS"
    assert "fixed before the scores" in data["measured"]["example-level thresholds"]
    for name in ("audit.html", "canaries_example.png", "canaries_client.png"):
        assert (out / name).exists()
