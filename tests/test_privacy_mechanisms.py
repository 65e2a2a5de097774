"""Mechanisms (none, central, distributed, local) and the Opacus DP-SGD helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privacy.accountants import Accountant, compute_epsilon
from privacy.dpsgd import train_with_dp
from privacy.encoding import Encoder, centre_lift
from privacy.errors import ConfigurationError
from privacy.events import DiscreteGaussianEvent, GaussianEvent, SkellamEvent
from privacy.mechanisms import Mechanism, RoundPrivacy
from privacy.noise import NoiseKind
from privacy.randomness import RandomSource

SEED = b"mechanism-tests-rotation-seed"


def _round(privacy: RoundPrivacy, n: int, dim: int, survivors: int, seed: int):
    cfg = privacy.plan(dim=dim, expected_clients=n)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    rs = RandomSource.for_simulation(seed)
    zero = np.zeros(dim)
    agg = enc.modular_sum([enc.encode(zero, randomness=rs) for _ in range(survivors)])
    return cfg, enc, agg


def test_none_adds_no_noise_and_charges_nothing() -> None:
    p = RoundPrivacy(mechanism=Mechanism.NONE, clip_norm=1.0)
    cfg, enc, agg = _round(p, 4, 256, 4, 0)
    assert cfg.noise is NoiseKind.NONE and not agg.any()
    assert p.event(cfg, survivors=4) is None


@pytest.mark.parametrize("noise", [NoiseKind.SKELLAM, NoiseKind.DISCRETE_GAUSSIAN])
def test_distributed_noise_and_the_charge_follow_the_survivors(noise: NoiseKind) -> None:
    n, survivors, dim, z = 8, 5, 1 << 13, 1.0
    p = RoundPrivacy(mechanism=Mechanism.DISTRIBUTED, clip_norm=1.0, noise_multiplier=z,
                     noise=noise, bits=24)
    cfg, enc, agg = _round(p, n, dim, survivors, 1)
    total = centre_lift(agg, cfg.bits).astype(float)
    # The sum carries survivors/n of the planned central variance (z c / gamma)^2.
    planned_central = (z * 1.0 * cfg.scale) ** 2
    assert total.var() == pytest.approx(planned_central * survivors / n, rel=0.1)
    event = p.event(cfg, survivors=survivors)
    full = p.event(cfg, survivors=n)
    if noise is NoiseKind.SKELLAM:
        assert isinstance(event, SkellamEvent)
        assert event.variance == pytest.approx(survivors * cfg.local_variance)
    else:
        assert isinstance(event, DiscreteGaussianEvent) and event.num_clients == survivors
    assert compute_epsilon([event], delta=1e-5) > compute_epsilon([full], delta=1e-5)


def test_local_mechanism_each_client_adds_full_noise() -> None:
    n, dim, z = 4, 1 << 12, 1.0
    p = RoundPrivacy(mechanism=Mechanism.LOCAL, clip_norm=1.0, noise_multiplier=z, bits=30)
    cfg, enc, agg = _round(p, n, dim, n, 2)
    total = centre_lift(agg, cfg.bits).astype(float)
    assert total.var() == pytest.approx(n * (z * cfg.scale) ** 2, rel=0.1)
    event = p.event(cfg, survivors=n)
    assert event.variance == pytest.approx(cfg.local_variance)  # only the site's own noise counts
    assert compute_epsilon([event], delta=1e-5) == pytest.approx(
        compute_epsilon([GaussianEvent(noise_multiplier=z)], delta=1e-5), rel=0.05)


def test_central_gaussian_noise_and_charge() -> None:
    z, c = 2.0, 0.5
    p = RoundPrivacy(mechanism=Mechanism.CENTRAL_GAUSSIAN, clip_norm=c, noise_multiplier=z, bits=32)
    cfg, enc, agg = _round(p, 4, 1 << 14, 4, 3)
    assert cfg.noise is NoiseKind.NONE and not agg.any()
    noisy = enc.decode(p.central_ring_noise(agg, cfg, randomness=RandomSource.for_simulation(3),
                                            simulation=True))
    assert noisy.std() == pytest.approx(z * c, rel=0.05)
    event = p.event(cfg, survivors=4)
    # One discrete Gaussian in the ring, charged against the rounding-inflated sensitivity:
    # sigma / sensitivity slightly less than z.
    assert isinstance(event, DiscreteGaussianEvent) and event.num_clients == 1
    assert 0.9 * z < math.sqrt(event.local_variance) / event.l2_sensitivity < z


@pytest.mark.parametrize("kwargs", [
    dict(mechanism="distributed", clip_norm=1.0, noise_multiplier=1.0),
    dict(mechanism=Mechanism.DISTRIBUTED, clip_norm=1.0, noise_multiplier=0.0),
    dict(mechanism=Mechanism.NONE, clip_norm=1.0, noise_multiplier=1.0),
    dict(mechanism=Mechanism.DISTRIBUTED, clip_norm=-1.0, noise_multiplier=1.0),
    dict(mechanism=Mechanism.LOCAL, clip_norm=1.0, noise_multiplier=1.0, noise=NoiseKind.NONE),
    dict(mechanism=Mechanism.DP_SGD, clip_norm=1.0, noise_multiplier=1.0),
])
def test_bad_mechanisms_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        RoundPrivacy(**kwargs)


def test_survivors_must_be_positive() -> None:
    p = RoundPrivacy(mechanism=Mechanism.DISTRIBUTED, clip_norm=1.0, noise_multiplier=1.0)
    cfg = p.plan(dim=16, expected_clients=4)
    with pytest.raises(ConfigurationError):
        p.event(cfg, survivors=0)


@pytest.mark.parametrize("accountant", [Accountant.RDP, Accountant.PRV])
def test_dp_sgd_trains_within_target_epsilon(accountant: Accountant) -> None:
    torch.manual_seed(0)
    data = load_breast_cancer()
    x = torch.tensor((data.data - data.data.mean(0)) / data.data.std(0), dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    model = nn.Sequential(nn.Linear(30, 2))
    before = [p.detach().clone() for p in model.parameters()]
    result = train_with_dp(model, loader, target_epsilon=3.0, target_delta=1e-5, epochs=3,
                           max_grad_norm=1.0, learning_rate=0.5, accountant=accountant)
    assert 0 < result.epsilon <= 3.0 * 1.01
    assert result.steps >= 3 * len(loader) - 1
    assert result.sample_rate == pytest.approx(1 / len(loader))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # The event the site charges reproduces Opacus's figure with our accountant.
    ours = compute_epsilon([result.event], delta=1e-5, accountant=accountant)
    assert ours == pytest.approx(result.epsilon, rel=0.02)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.8
    assert math.isfinite(result.final_loss)


def test_dp_sgd_bad_arguments() -> None:
    loader = DataLoader(TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)), batch_size=2)
    with pytest.raises(ConfigurationError):
        train_with_dp(nn.Linear(2, 2), loader, target_epsilon=-1.0, target_delta=1e-5, epochs=1,
                      max_grad_norm=1.0)
