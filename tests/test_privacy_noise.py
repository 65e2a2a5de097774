"""Discrete noise samplers: Skellam and the discrete Gaussian (vectorised and exact)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from privacy.errors import ConfigurationError
from privacy.noise import (
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    sample_discrete_gaussian,
    sample_discrete_gaussian_exact,
    sample_skellam,
)


def _mean_var_ok(draws: np.ndarray, variance: float, *, excess_kurtosis: float = 0.0) -> None:
    n = draws.size
    assert abs(draws.mean()) <= 5 * math.sqrt(variance / n)
    # Standard error of the sample variance: var * sqrt((2 + kurtosis excess) / n).
    se = variance * math.sqrt((2 + excess_kurtosis) / n)
    assert abs(draws.var() - variance) <= 5 * se


@pytest.mark.parametrize("variance", [0.3, 2.0, 50.0, 1e5])
def test_skellam_mean_and_variance(variance: float) -> None:
    draws = sample_skellam(variance=variance, size=200_000, rng=np.random.default_rng(1))
    assert draws.dtype == np.int64
    # Symmetric Skellam with variance v has excess kurtosis 1/v.
    _mean_var_ok(draws, variance, excess_kurtosis=1.0 / variance)


def test_skellam_pmf_chi_square() -> None:
    v = 3.0
    draws = sample_skellam(variance=v, size=100_000, rng=np.random.default_rng(2))
    ks = np.arange(-8, 9)
    pmf = stats.skellam.pmf(ks, v / 2, v / 2)
    observed = np.array([(draws == k).sum() for k in ks] + [(np.abs(draws) > 8).sum()])
    expected = np.append(pmf, 1 - pmf.sum()) * draws.size
    keep = expected > 5
    obs, exp = observed[keep], expected[keep]
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4


@pytest.mark.parametrize("sigma2", [0.25, 1.0, 7.5, 400.0])
def test_discrete_gaussian_mean_and_variance(sigma2: float) -> None:
    draws = sample_discrete_gaussian(sigma2=sigma2, size=200_000, rng=np.random.default_rng(3))
    true_var = discrete_gaussian_variance(sigma2)
    assert true_var <= sigma2 + 1e-12
    _mean_var_ok(draws, true_var, excess_kurtosis=1.0)


@pytest.mark.parametrize("sigma2", [0.6, 2.5])
def test_discrete_gaussian_pmf_chi_square(sigma2: float) -> None:
    draws = sample_discrete_gaussian(sigma2=sigma2, size=100_000, rng=np.random.default_rng(4))
    reach = int(5 * math.sqrt(sigma2)) + 1
    ks = np.arange(-reach, reach + 1)
    pmf = discrete_gaussian_pmf(sigma2, ks)
    observed = np.array([(draws == k).sum() for k in ks] + [(np.abs(draws) > reach).sum()])
    expected = np.append(pmf, max(0.0, 1 - pmf.sum())) * draws.size
    keep = expected > 5
    obs, exp = observed[keep], expected[keep]
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4


def test_exact_discrete_gaussian_matches_pmf() -> None:
    sigma2 = Fraction(3, 2)
    draws = np.array(sample_discrete_gaussian_exact(sigma2=sigma2, size=4000, rng=random.Random(5)))
    ks = np.arange(-3, 4)
    pmf = discrete_gaussian_pmf(float(sigma2), ks)
    observed = np.array([(draws == k).sum() for k in ks] + [(np.abs(draws) > 3).sum()])
    expected = np.append(pmf, 1 - pmf.sum()) * draws.size
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-4
    assert len(sample_discrete_gaussian_exact(sigma2=2, size=3)) == 3  # default: the OS CSPRNG


def test_zero_variance_and_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    assert not sample_skellam(variance=0.0, size=10, rng=rng).any()
    assert not sample_discrete_gaussian(sigma2=0.0, size=10, rng=rng).any()
    with pytest.raises(ConfigurationError):
        sample_skellam(variance=-1.0, size=10, rng=rng)
    with pytest.raises(ConfigurationError):
        sample_discrete_gaussian(sigma2=float("nan"), size=10, rng=rng)
    with pytest.raises(ConfigurationError):
        sample_discrete_gaussian_exact(sigma2=0)


def test_skellam_beyond_the_exact_sampler_range_is_refused() -> None:
    from privacy.noise import MAX_NOISE_VARIANCE

    rng = np.random.default_rng(0)
    with pytest.raises(ConfigurationError):
        sample_skellam(variance=MAX_NOISE_VARIANCE * 2, size=4, rng=rng)
    draws = sample_skellam(variance=MAX_NOISE_VARIANCE, size=200_000, rng=rng)
    assert abs(draws.var() / MAX_NOISE_VARIANCE - 1.0) < 0.02


def test_plan_caps_noise_variance_whatever_the_bits() -> None:
    from privacy import NoiseKind, plan_encoding
    from privacy.noise import MAX_NOISE_VARIANCE

    for bits in (32, 48, 64):
        cfg = plan_encoding(dim=1000, clip_norm=1.0, expected_clients=3, local_stddev=0.5,
                            noise=NoiseKind.SKELLAM, bits=bits)
        assert cfg.local_variance <= MAX_NOISE_VARIANCE * (1 + 1e-12)
