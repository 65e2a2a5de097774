"""Scale (DESIGN 5a): sites without a size floor, sampled rounds and their accounting, the site
pool, and the Ray backend (tests marked ``ray``, skipped when Ray is not installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clients import (DatasetName, ModelKind, PartitionScheme, get_flat_params, load_dataset,
                     make_site_data, site_floor, split_dataset)
from coordinator.simulation import Backend, Simulation, SimulationConfig, run_simulation
from privacy import (GaussianEvent, Mechanism, SkellamEvent, compute_epsilon, largest_epsilon,
                     subsampled_epsilon)
from privacy import _rdp
from privacy._amplify import AMPLIFIED_ORDERS, poisson_subsampled_rdp
from secagg.errors import ConfigurationError

JOB = dict(dataset=DatasetName.DIGITS, models=(ModelKind.LOGISTIC,), local_epochs=1,
           baselines=False, dp=Mechanism.DISTRIBUTED, noise_multiplier=0.5)


def _model(sim: Simulation) -> np.ndarray:
    return get_flat_params(sim.consortium.global_model)


# -- 1. sites without a floor on their size ------------------------------------------------------
def test_a_thousand_sites_on_digits_are_dealt_a_handful_of_samples_each() -> None:
    splits = split_dataset(load_dataset(DatasetName.DIGITS), seed=0)
    pool = len(splits.pool)
    assert site_floor(pool, 10) == 5 and site_floor(pool, 1000) == 1
    for scheme in (PartitionScheme.IID, PartitionScheme.QUANTITY_LOGNORMAL,
                   PartitionScheme.LABEL_DIRICHLET):
        sites = make_site_data(splits, n_sites=1000, scheme=scheme, seed=0)
        sizes = np.array([len(s.train) + len(s.test) for s in sites])
        assert len(sites) == 1000 and sizes.min() >= 1 and sizes.sum() == pool
    # Cross-device quantity skew: sites of one sample beside sites of dozens.
    skewed = make_site_data(splits, n_sites=200, scheme=PartitionScheme.QUANTITY_LOGNORMAL,
                            sigma=2.0, min_samples=1, seed=0)
    sizes = np.array([len(s.train) + len(s.test) for s in skewed])
    assert sizes.max() >= 10 * np.median(sizes)
    one = [s for s in skewed if len(s.train) + len(s.test) == 1]
    assert one and all(len(s.train) == 1 and len(s.test) == 0 for s in one)


def test_more_sites_than_samples_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="one sample each"):
        site_floor(100, 101)


def test_small_consortia_keep_their_partitions() -> None:
    splits = split_dataset(load_dataset(DatasetName.BREAST_CANCER), seed=0)
    a = make_site_data(splits, n_sites=5, scheme=PartitionScheme.LABEL_DIRICHLET, seed=0)
    b = make_site_data(splits, n_sites=5, scheme=PartitionScheme.LABEL_DIRICHLET, seed=0,
                       min_samples=5)
    assert all(np.array_equal(x.train.y, y.train.y) for x, y in zip(a, b))


# -- 3. sampled rounds ---------------------------------------------------------------------------
def test_k_of_n_rounds_sum_k_sites_and_charge_only_those_rounds() -> None:
    cfg = SimulationConfig(sites=40, rounds=3, clients_per_round=10, **JOB)
    sim = Simulation(cfg)
    result = sim.run()
    assert [r.participants for r in result.rounds] == [10, 10, 10]
    assert [r.planned for r in result.rounds] == [10, 10, 10]
    # Without amplification, the worst site's own rounds: at most the three rounds, at least one.
    one = sim.accountant.rounds[0][1]
    assert compute_epsilon([one], delta=cfg.delta) <= result.epsilon \
        <= compute_epsilon([e for _, e in sim.accountant.rounds], delta=cfg.delta) + 1e-9
    assert result.epsilon_amplified is None


def test_poisson_rounds_report_both_epsilons_side_by_side(tmp_path: Path) -> None:
    cfg = SimulationConfig(sites=60, rounds=3, sample_rate=0.25, assume_secret_sampling=True,
                           **JOB)
    summary = run_simulation(cfg, tmp_path, progress=False, table=False)
    assert summary["epsilon"] is not None and summary["epsilon_amplified"] is not None
    assert summary["epsilon_amplified"] < summary["epsilon"]
    sampling = summary["sampling"]
    assert sampling["sample_rate"] == 0.25 and "coordinator" in sampling["epsilon_is"]
    assert "secret" in sampling["epsilon_amplified_is"]
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["epsilon_amplified"] is not None for r in records)
    assert len({r["participants"] for r in records}) >= 1


@pytest.mark.parametrize("bad", [
    dict(clients_per_round=5, sample_rate=0.1),
    dict(clients_per_round=1),
    dict(clients_per_round=41),
    dict(sample_rate=0.0),
    dict(assume_secret_sampling=True),                         # nothing sampled
    dict(clients_per_round=5, assume_secret_sampling=True),    # K of N: no Poisson bound
    dict(ray_address="ray://x:10001"),                         # not the Ray backend
])
def test_sampling_and_backend_settings_that_cannot_work_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigurationError):
        SimulationConfig(sites=40, **{**JOB, **bad})


def test_amplification_needs_dp() -> None:
    with pytest.raises(ConfigurationError):
        SimulationConfig(sites=40, sample_rate=0.1, assume_secret_sampling=True,
                         dataset=DatasetName.DIGITS)


@pytest.mark.parametrize("z,q", [(1.0, 0.01), (1.5, 0.04), (0.8, 0.1), (2.0, 0.5)])
def test_the_generic_subsampling_bound_never_undercuts_the_exact_gaussian_curve(z, q) -> None:
    ours = poisson_subsampled_rdp(GaussianEvent(noise_multiplier=z), q)
    exact = _rdp.gaussian_rdp(GaussianEvent(noise_multiplier=z, sample_rate=q),
                              [float(a) for a in AMPLIFIED_ORDERS])
    assert np.all(ours >= exact * (1 - 1e-9))
    plain = _rdp.gaussian_rdp(GaussianEvent(noise_multiplier=z), [float(a) for a in
                                                                    AMPLIFIED_ORDERS])
    assert np.all(ours <= plain + 1e-12)


def test_amplified_epsilon_shrinks_with_the_rate_and_is_the_plain_one_at_rate_one() -> None:
    e = SkellamEvent(variance=1e4, l2_sensitivity=30, l1_sensitivity=300)
    eps = [subsampled_epsilon([(e, q)] * 10, delta=1e-5) for q in (0.01, 0.1, 0.5)]
    assert eps[0] < eps[1] < eps[2]
    plain = compute_epsilon([e] * 10, delta=1e-5)
    assert subsampled_epsilon([(e, 1.0)] * 10, delta=1e-5) >= plain - 1e-9


def test_largest_epsilon_is_the_largest_exact_one() -> None:
    a = SkellamEvent(variance=1e4, l2_sensitivity=30, l1_sensitivity=300)
    b = SkellamEvent(variance=2e4, l2_sensitivity=30, l1_sensitivity=300)
    groups = [[a], [a, b], [b, b, b], [a, a], []]
    want = max(compute_epsilon(g, delta=1e-5) for g in groups if g)
    assert largest_epsilon(groups, delta=1e-5) == pytest.approx(want, rel=1e-12)


def test_cli_refuses_sampling_flags_that_would_do_nothing(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "coordinator", "simulate", *args,
                               "--out", str(tmp_path / "x")], capture_output=True, text=True,
                              timeout=300)
    for args in (["--assume-secret-sampling", "--dp", "distributed"],
                 ["--sample-rate", "0.5", "--assume-secret-sampling"],
                 ["--clients-per-round", "3", "--sample-rate", "0.5"],
                 ["--ray-actors", "3"],
                 ["--sites", "4", "--clients-per-round", "5"]):
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
    assert not (tmp_path / "x").exists()


# -- 2. the Ray backend --------------------------------------------------------------------------
def _need_ray():
    return pytest.importorskip("ray")


@pytest.fixture
def ray_session():
    ray_mod = _need_ray()
    yield ray_mod
    if ray_mod.is_initialized():
        ray_mod.shutdown()


@pytest.mark.ray
def test_ray_backend_gives_the_in_process_model(ray_session) -> None:
    base = dict(sites=30, rounds=2, clients_per_round=12, seed=5, **JOB)
    local = Simulation(SimulationConfig(**base))
    local_result = local.run()
    remote = Simulation(SimulationConfig(**base, backend=Backend.RAY, ray_actors=2))
    assert remote.pool.n_actors == 2
    remote_result = remote.run()
    assert np.array_equal(_model(local), _model(remote))
    assert local_result.epsilon == remote_result.epsilon
    assert [r.wrap_rate for r in local_result.rounds] == [r.wrap_rate
                                                          for r in remote_result.rounds]
    assert not ray_session.is_initialized()  # the run started Ray and shut it down


@pytest.mark.ray
def test_ray_backend_clear_sum_and_dropouts_match_in_process(ray_session) -> None:
    base = dict(sites=12, rounds=2, seed=2, dropout_rate=0.2, **JOB)
    for secure in (True, False):
        cfg = dict(base, secagg=secure) if secure else dict(base, secagg=False,
                                                            dp=Mechanism.NONE)
        a, b = Simulation(SimulationConfig(**cfg)), Simulation(
            SimulationConfig(**cfg, backend=Backend.RAY))
        ra, rb = a.run(), b.run()
        assert np.array_equal(_model(a), _model(b))
        assert [r.participants for r in ra.rounds] == [r.participants for r in rb.rounds]


@pytest.mark.ray
def test_ray_backend_refuses_what_it_does_not_run() -> None:
    from clients import StrategyName

    with pytest.raises(ConfigurationError):
        SimulationConfig(sites=6, algorithm=StrategyName.FEDPER, backend=Backend.RAY)


@pytest.mark.ray
@pytest.mark.slow
def test_a_thousand_sites_hundred_per_round_on_ray_match_in_process(ray_session) -> None:
    """The scale run: 1,000 digits sites, 100 sampled per round, FedAvg over SecAgg+ with
    distributed DP, on two Ray actors, gives the in-process model."""
    base = dict(sites=1000, rounds=3, clients_per_round=100, seed=0, **JOB)
    local = Simulation(SimulationConfig(**base))
    local.run()
    remote = Simulation(SimulationConfig(**base, backend=Backend.RAY, ray_actors=2))
    result = remote.run()
    assert [r.participants for r in result.rounds] == [100, 100, 100]
    assert np.array_equal(_model(local), _model(remote))
