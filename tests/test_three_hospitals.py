"""examples/three_hospitals/run.py end to end: provision, one coordinator and three site agents
as separate processes over loopback TLS, a FedAvg job with secure aggregation and distributed
DP; with the same test-only seed, the final model is the simulation's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_three_hospitals_run_to_the_end_and_match_the_simulation(tmp_path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "three_hospitals" / "run.py"),
                           "--out", str(out), "--rounds", "2", "--seed", "5",
                           "--timeout", "240"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["stopped"] is None
    assert set(summary["exit_codes"].values()) == {0}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["participants"] for m in lines] == [3, 3]
    png = (out / "rounds.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    for site, report in summary["site_reports"].items():
        assert report["outcome"] == "job_done"
        assert [r["included"] for r in report["rounds"]] == [True, True]
        assert report["spent_epsilon"] == pytest.approx(summary["epsilon"])
        assert (out / "kits" / site / "ledger.sqlite").is_file()

    from clients import DatasetName, ModelKind, PartitionScheme, get_flat_params
    from clients.training import Optimizer
    from coordinator.simulation import Simulation, SimulationConfig
    from privacy import Mechanism

    config = SimulationConfig(dataset=DatasetName.BREAST_CANCER, sites=3, rounds=2,
                              partition=PartitionScheme.IID, models=(ModelKind.LOGISTIC,),
                              dp=Mechanism.DISTRIBUTED, noise_multiplier=0.5, clip=2.0,
                              local_epochs=1, lr=0.1, optimizer=Optimizer.SGD, batch_size=32,
                              modulus_bits=32, baselines=False, seed=5)
    sim = Simulation(config, work_dir=tmp_path / "sim")
    sim.run()
    np.testing.assert_allclose(np.load(out / "final_params.npy"),
                               get_flat_params(sim.consortium.global_model), rtol=1e-6,
                               atol=1e-9)
