"""The simulation engine and ``python -m coordinator simulate`` end to end, on small settings."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clients import DatasetName, ModelKind, PartitionScheme, StrategyName
from coordinator.simulation import (
    Simulation,
    SimulationConfig,
    Transfer,
    run_simulation,
)
from privacy import Mechanism
from secagg.errors import ConfigurationError

SMALL = dict(sites=3, rounds=3, local_epochs=1, baselines=False)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordinator", "simulate", *args],
                          capture_output=True, text=True, timeout=600)


def test_cli_writes_metrics_summary_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = cli("--sites", "3", "--rounds", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3]
    for r in records:
        assert {"accuracy", "loss", "participants", "epsilon", "seconds"} <= r.keys()
        assert r["participants"] == 3 and r["epsilon"] is None
    summary = json.loads((out / "summary.json").read_text())
    for key in ("final_accuracy", "epsilon", "site_accuracy", "local_only_accuracy",
                "centralized_accuracy"):
        assert key in summary
    assert summary["epsilon"] is None
    assert set(summary["site_accuracy"]) == set(summary["local_only_accuracy"])
    assert 0.5 < summary["final_accuracy"] <= 1.0
    png = (out / "rounds.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "final accuracy" in proc.stdout


def test_secure_run_matches_the_clear_run_closely(tmp_path: Path) -> None:
    base = dict(dataset=DatasetName.BREAST_CANCER, sites=4, rounds=8, baselines=False, seed=3)
    secure = run_simulation(SimulationConfig(**base), tmp_path / "s", progress=False,
                            table=False)
    clear = run_simulation(SimulationConfig(**base, secagg=False), tmp_path / "c",
                           progress=False, table=False)
    assert abs(secure["final_accuracy"] - clear["final_accuracy"]) <= 0.02
    # The secure sum is not a no-op: the run's rounds moved bytes through secagg.
    records = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().split("\n")
               if x]
    assert all(r["secure_bytes"] > 0 for r in records)


def test_budget_stops_training_cleanly_and_never_overspends(tmp_path: Path) -> None:
    config = SimulationConfig(**{**SMALL, "rounds": 20}, dp=Mechanism.CENTRAL_GAUSSIAN,
                              noise_multiplier=2.0, target_epsilon=3.0, modulus_bits=20)
    sim = Simulation(config, work_dir=tmp_path)
    result = sim.run()
    assert result.stopped is not None and "budget" in result.stopped
    assert 0 < len(result.rounds) < 20
    for site in sim.consortium.sites:
        assert site.ledger.spent() <= 3.0
        assert len(site.ledger.entries()) == len(result.rounds)
    eps = [r.epsilon for r in result.rounds]
    assert all(a < b for a, b in zip(eps, eps[1:]))


def test_dropouts_shrink_the_sum_and_distributed_noise_is_charged(tmp_path: Path) -> None:
    config = SimulationConfig(sites=6, rounds=6, local_epochs=1, baselines=False,
                              dropout_rate=0.3, dp=Mechanism.DISTRIBUTED,
                              noise_multiplier=0.5, modulus_bits=20, seed=5)
    result = Simulation(config, work_dir=tmp_path).run()
    participants = [r.participants for r in result.rounds]
    assert min(participants) < 6
    assert all(r.planned == 6 for r in result.rounds)
    assert result.epsilon is not None and result.epsilon > 0


@pytest.mark.parametrize("algorithm, extra", [
    (StrategyName.FEDPER, {}),
    (StrategyName.FEDREP, {}),
    (StrategyName.DISTILLATION, {"models": (ModelKind.LOGISTIC, ModelKind.MLP, ModelKind.CNN),
                                 "dataset": DatasetName.DIGITS}),
    (StrategyName.FEDADAM, {"server_lr": 0.01}),
    (StrategyName.FEDPROX, {}),
])
def test_each_algorithm_runs_end_to_end(tmp_path: Path, algorithm: StrategyName, extra) -> None:
    summary = run_simulation(SimulationConfig(**{**SMALL, "algorithm": algorithm, **extra}),
                             tmp_path, progress=False, table=False)
    assert summary["rounds_completed"] == 3
    assert len(summary["site_accuracy"]) == 3
    if algorithm is StrategyName.DISTILLATION:
        assert summary["student_accuracy"] is not None


def test_frozen_transfer_keeps_the_backbone_fixed(tmp_path: Path) -> None:
    from clients import Part, get_flat_params

    config = SimulationConfig(**SMALL, transfer=Transfer.FROZEN, pretrain_epochs=3)
    sim = Simulation(config, work_dir=tmp_path)
    model = sim.consortium.global_model
    body_before = [p.detach().clone() for p in model.body.parameters()]
    sim.run()
    for before, after in zip(body_before, model.body.parameters()):
        assert np.array_equal(before.numpy(), after.detach().numpy())
    assert get_flat_params(model).size < sum(p.numel() for p in model.parameters())
    assert Part.HEAD  # the federated vector is the head alone


def test_regression_reports_r2(tmp_path: Path) -> None:
    summary = run_simulation(SimulationConfig(**SMALL, dataset=DatasetName.DIABETES), tmp_path,
                             progress=False, table=False)
    assert summary["metric"] == "r2"


def test_csv_data_set_end_to_end(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    path = tmp_path / "site.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*data.feature_names[:6], "diagnosis"])
        for row, label in zip(data.data[:, :6], data.target):
            writer.writerow([*row, "malignant" if label == 0 else "benign"])
    proc = cli("--dataset", str(path), "--label-column", "diagnosis", "--sites", "3",
               "--rounds", "2", "--partition", "iid", "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metric"] == "accuracy" and summary["final_accuracy"] > 0.5


def test_bad_settings_are_refused_with_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SimulationConfig(dp=Mechanism.DISTRIBUTED, secagg=False)
    with pytest.raises(ConfigurationError):
        SimulationConfig(target_epsilon=1.0)  # a budget without a DP mode
    with pytest.raises(ConfigurationError):
        SimulationConfig(models=(ModelKind.MLP, ModelKind.CNN))  # heterogeneous, not distill
    with pytest.raises(ConfigurationError):
        SimulationConfig(algorithm=StrategyName.TRANSFER)  # transfer is a start, not a strategy
    # Errors are one line on stderr (they went to stdout before issue 8), and nothing is made.
    proc = cli("--dp", "distributed", "--no-secagg", "--out", str(tmp_path / "x"), "--quiet")
    assert proc.returncode == 2 and proc.stderr.startswith("ConfigurationError: ")
    assert len(proc.stderr.splitlines()) == 1 and proc.stdout == ""
    proc = cli("--dataset", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "y"))
    assert proc.returncode == 2 and "--dataset" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_partition_and_seed_make_runs_reproducible(tmp_path: Path) -> None:
    config = SimulationConfig(**SMALL, partition=PartitionScheme.IID, seed=11)
    a = Simulation(config, work_dir=tmp_path / "a").run()
    b = Simulation(config, work_dir=tmp_path / "b").run()
    assert [r.accuracy for r in a.rounds] == [r.accuracy for r in b.rounds]


def test_distillation_with_a_budget_charges_each_release_once(tmp_path: Path) -> None:
    config = SimulationConfig(**SMALL, algorithm=StrategyName.DISTILLATION,
                              models=(ModelKind.LOGISTIC, ModelKind.MLP),
                              dp=Mechanism.CENTRAL_GAUSSIAN, noise_multiplier=5.0, target_epsilon=50.0,
                              modulus_bits=24)
    sim = Simulation(config, work_dir=tmp_path)
    result = sim.run()
    assert result.stopped is None and len(result.rounds) == 3
    for site in sim.consortium.sites:
        assert len(site.ledger.entries()) == 3
