"""``--dp-sgd`` in the simulation: example-level events on the EXAMPLE ledger track only,
site-level ones on the SITE track only, each reported on its own and equal to what an
accountant recomputes from its track; a site's example cap stops the run before training.

The track test is shown to catch a planted defect (example events on the site-level track).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from clients import DPSGDConfig, ModelKind, StrategyName, get_flat_params, site as site_module
from coordinator.simulation import Simulation, SimulationConfig, run_simulation
from privacy import Mechanism
from privacy import (DiscreteGaussianEvent, LedgerTrack, ReleaseStatus,
                     SiteLedger, compute_epsilon)
from privacy.dpsgd import dpsgd_event
from secagg.errors import ConfigurationError

DP = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0)
# batch 8 on ~130 records per site: q ≈ 1/17, cheap to account and a real subsampled Gaussian.
BASE = dict(sites=3, rounds=2, local_epochs=1, batch_size=8, baselines=False, seed=2)
BOTH = dict(**BASE, dp=Mechanism.CENTRAL_GAUSSIAN, noise_multiplier=2.0, target_epsilon=60.0,
            modulus_bits=24, dp_sgd=DP, example_epsilon=60.0, example_delta=1e-6)


def _assert_tracks_apart(sim: Simulation, result, rounds: int) -> None:
    """Every site: the SITE track holds exactly the round charges (central Gaussian, q = 1),
    the EXAMPLE track exactly its DP-SGD events (q < 1), both as read back from the file by
    fresh handles; the reported epsilons equal an accountant over each track's events."""
    cfg = sim.config
    site_events = []
    for site in sim.consortium.sites:
        path = site.ledger.path
        on_site = SiteLedger(path, site_id=site.site_id, track=LedgerTrack.SITE).entries()
        on_example = SiteLedger(path, site_id=site.site_id, track=LedgerTrack.EXAMPLE).entries()
        planned = dpsgd_event(n_samples=site.n_train, batch_size=cfg.batch_size,
                              epochs=cfg.local_epochs, noise_multiplier=DP.noise_multiplier)
        assert planned.sample_rate < 1
        central = [e.charged for e in on_site]
        # Central noise is a discrete Gaussian added to the aggregate inside the ring: one
        # release of sensitivity c/gamma and noise z*c/gamma per round, never a DP-SGD event.
        assert len(central) == rounds and all(
            isinstance(e, DiscreteGaussianEvent) and e.num_clients == 1 and e.steps == 1
            and math.isclose(math.sqrt(e.local_variance) / e.l2_sensitivity, 2.0, rel_tol=1e-3)
            for e in central), \
            f"{site.site_id}: the SITE track holds more than the site-level charges"
        assert [e.charged for e in on_example] == [planned] * rounds, \
            f"{site.site_id}: the EXAMPLE track does not hold exactly its DP-SGD events"
        assert all(e.status is ReleaseStatus.SETTLED for e in on_example)
        example_eps = compute_epsilon([e.charged for e in on_example], delta=cfg.example_delta)
        assert math.isclose(result.example_epsilon[site.site_id], example_eps, rel_tol=1e-9)
        assert math.isclose(result.rounds[-1].example_epsilon[site.site_id], example_eps,
                            rel_tol=1e-9)
        site_events = [e.charged for e in on_site]
    # The site-level epsilon is the site track's alone: nothing example-level composed in.
    assert math.isclose(result.epsilon, compute_epsilon(site_events, delta=cfg.delta),
                        rel_tol=1e-9)


def test_dp_sgd_events_stay_on_the_example_track(tmp_path: Path) -> None:
    sim = Simulation(SimulationConfig(**BOTH), work_dir=tmp_path)
    result = sim.run()
    assert result.stopped is None and len(result.rounds) == 2
    _assert_tracks_apart(sim, result, rounds=2)
    # Per round, the example epsilon grows for every site and is never the site-level one.
    first, last = result.rounds[0].example_epsilon, result.rounds[-1].example_epsilon
    assert all(0 < first[s] < last[s] for s in first)


def test_the_track_check_catches_example_events_on_the_site_track(tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(site_module, "_TEST_ONLY_EXAMPLE_EVENTS_ON_SITE_LEDGER", True)
    sim = Simulation(SimulationConfig(**{**BOTH, "rounds": 1}), work_dir=tmp_path)
    result = sim.run()
    with pytest.raises(AssertionError, match="track"):
        _assert_tracks_apart(sim, result, rounds=len(result.rounds))


def test_example_cap_stops_the_run_before_any_site_trains(tmp_path: Path) -> None:
    # One round of DP-SGD at z = 1, q ≈ 1/17 costs more than ε = 0.5 at δ = 1e-6.
    sim = Simulation(SimulationConfig(**{**BASE, "rounds": 1}, dp_sgd=DP, example_epsilon=0.5,
                                      example_delta=1e-6), work_dir=tmp_path)
    models = [get_flat_params(s.model) for s in sim.consortium.sites]
    result = sim.run()
    assert result.rounds == [] and "budget" in result.stopped and "example" in result.stopped
    for site, before in zip(sim.consortium.sites, models):
        assert np.array_equal(get_flat_params(site.model), before)
        assert site.example_ledger.entries() == []


@pytest.mark.parametrize("algorithm, extra", [
    (StrategyName.FEDPROX, {}),
    pytest.param(StrategyName.FEDADAM, {"server_lr": 0.01}, marks=pytest.mark.slow),
    (StrategyName.FEDREP, {}),
])
def test_dp_sgd_runs_with_the_shared_model_strategies(tmp_path: Path, algorithm, extra) -> None:
    summary = run_simulation(SimulationConfig(**{**BASE, "rounds": 1}, algorithm=algorithm,
                                              dp_sgd=DP, **extra),
                             tmp_path, progress=False, table=False)
    assert summary["rounds_completed"] == 1 and summary["epsilon"] is None
    assert set(summary["example_epsilon"]) == {"hospital-01", "hospital-02", "hospital-03"}
    assert all(e > 0 for e in summary["example_epsilon"].values())


def test_dp_sgd_with_distillation_is_refused_naming_the_flags() -> None:
    with pytest.raises(ConfigurationError, match="--dp-sgd.*--strategy distill"):
        SimulationConfig(algorithm=StrategyName.DISTILLATION,
                         models=(ModelKind.LOGISTIC, ModelKind.MLP), dp_sgd=DP)
    with pytest.raises(ConfigurationError, match="--dp-sgd"):
        SimulationConfig(example_epsilon=3.0)


def test_cli_reports_example_epsilon_apart(tmp_path: Path, capsys) -> None:
    from coordinator.__main__ import main

    out = tmp_path / "run"
    code = main(["simulate", "--sites", "3", "--rounds", "1", "--local-epochs", "1",
                 "--batch-size", "8", "--dp-sgd", "--dp-sgd-noise-multiplier", "1.5",
                 "--dp-sgd-max-grad-norm", "0.5", "--dp-sgd-epsilon", "40", "--no-baselines",
                 "--quiet", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert summary["epsilon"] is None and summary["example_delta"] == 1e-5
    assert summary["example_epsilon"] == record["example_epsilon"]
    assert summary["config"]["dp_sgd"] == {"noise_multiplier": 1.5, "max_grad_norm": 0.5}
    assert "example-level" in capsys.readouterr().out
