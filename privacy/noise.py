"""Discrete noise for the secure sum: Skellam and the discrete Gaussian.

* Skellam with variance ``v``: Poisson(v/2) - Poisson(v/2) (a symmetric Skellam). Sums of
  independent Skellams are Skellam, so n clients adding variance v/n each give variance v.
* Discrete Gaussian N_Z(0, s2): P(x) proportional to exp(-x^2 / (2 s2)) on the integers, sampled
  by Canonne, Kamath, Steinke 2020 ("The Discrete Gaussian for Differential Privacy",
  Algorithm 3): discrete Laplace proposals with scale t = floor(sqrt(s2)) + 1, accepted with
  probability exp(-(|y| - s2/t)^2 / (2 s2)). :func:`sample_discrete_gaussian` is the vectorised
  form (the discrete Laplace as a difference of two geometric variables; acceptance tested in
  float64, so it is exact up to float64 rounding of the acceptance probability, with no tail
  truncation). :func:`sample_discrete_gaussian_exact` is the paper's exact algorithm in rational
  arithmetic (Bernoulli(exp(-g)) by Algorithm 1), for small batches and as a reference.
"""

from __future__ import annotations

import enum
import math
import random
from fractions import Fraction

import numpy as np

from . import _validate as v
from .errors import ConfigurationError

__all__ = [
    "MAX_NOISE_VARIANCE",
    "NoiseKind",
    "discrete_gaussian_pmf",
    "discrete_gaussian_variance",
    "sample_discrete_gaussian",
    "sample_discrete_gaussian_exact",
    "sample_skellam",
]

# Largest per-draw noise variance (integer units) sampled: 2^40. numpy's Poisson sampler is
# exact to within float64 rounding well past this, and a variance of 10^12 already makes the
# rounding error (< 1 unit) negligible, so the encoder never needs more.
MAX_NOISE_VARIANCE = float(2 ** 40)


class NoiseKind(enum.Enum):
    """Which integer noise a client adds before the secure sum."""

    NONE = "none"
    SKELLAM = "skellam"
    DISCRETE_GAUSSIAN = "discrete_gaussian"


def sample_skellam(*, variance: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of the symmetric Skellam distribution with the given variance (int64).

    numpy's Poisson sampler loses accuracy for very large means (its variance is 3% off at
    1e15), so variances above :data:`MAX_NOISE_VARIANCE` are refused rather than sampled
    wrongly; :func:`~privacy.encoding.plan_encoding` never asks for more.
    """
    variance = v.nonnegative(variance, "variance")
    size = v.integer(size, "size", minimum=0)
    if variance > MAX_NOISE_VARIANCE:
        raise ConfigurationError(
            f"Skellam variance {variance:.3g} exceeds {MAX_NOISE_VARIANCE:.3g}, beyond which the "
            "Poisson sampler is not exact enough; use a larger scale factor gamma")
    if variance == 0.0:
        return np.zeros(size, dtype=np.int64)
    lam = variance / 2.0
    out = rng.poisson(lam, size)
    out -= rng.poisson(lam, size)
    return out


def sample_discrete_gaussian(*, sigma2: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of N_Z(0, sigma2) by CKS rejection from the discrete Laplace (int64)."""
    sigma2 = v.nonnegative(sigma2, "sigma2")
    size = v.integer(size, "size", minimum=0)
    out = np.zeros(size, dtype=np.int64)
    if sigma2 == 0.0 or size == 0:
        return out
    t = math.floor(math.sqrt(sigma2)) + 1
    p = -math.expm1(-1.0 / t)  # success probability of the geometric; 1 - exp(-1/t)
    todo = np.arange(size)
    while todo.size:
        m = todo.size
        # Difference of two geometric failure counts: P(y) proportional to exp(-|y|/t).
        y = rng.geometric(p, m) - rng.geometric(p, m)
        accept = rng.random(m) < np.exp(-((np.abs(y) - sigma2 / t) ** 2) / (2.0 * sigma2))
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


def _bernoulli(p: Fraction, rng: random.Random) -> bool:
    return rng.randrange(p.denominator) < p.numerator


def _bernoulli_exp_le1(gamma: Fraction, rng: random.Random) -> bool:
    # CKS Algorithm 1 for 0 <= gamma <= 1.
    k = 1
    while _bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def _bernoulli_exp(gamma: Fraction, rng: random.Random) -> bool:
    while gamma > 1:
        if not _bernoulli_exp_le1(Fraction(1), rng):
            return False
        gamma -= 1
    return _bernoulli_exp_le1(gamma, rng)


def _discrete_laplace_exact(t: int, rng: random.Random) -> int:
    # CKS Algorithm 2 with integer scale t: P(x) proportional to exp(-|x|/t).
    while True:
        u = rng.randrange(t)
        if not _bernoulli_exp(Fraction(u, t), rng):
            continue
        w = 0
        while _bernoulli_exp(Fraction(1), rng):
            w += 1
        x = u + t * w
        negative = rng.randrange(2) == 1
        if negative and x == 0:
            continue
        return -x if negative else x


def sample_discrete_gaussian_exact(*, sigma2: Fraction | int, size: int = 1,
                                   rng: random.Random | None = None) -> list[int]:
    """Exact N_Z(0, sigma2) for rational ``sigma2`` (CKS 2020, Algorithm 3), in pure Python.

    ``rng`` defaults to ``random.SystemRandom()`` (the OS CSPRNG); slow, for small batches.
    """
    s2 = Fraction(sigma2)
    if s2 <= 0:
        raise ConfigurationError("sigma2 must be positive")
    rng = rng if rng is not None else random.SystemRandom()
    t = math.isqrt(s2.numerator // s2.denominator) + 1
    out: list[int] = []
    while len(out) < size:
        y = _discrete_laplace_exact(t, rng)
        gamma = (abs(y) - s2 / t) ** 2 / (2 * s2)
        if _bernoulli_exp(gamma, rng):
            out.append(y)
    return out


def discrete_gaussian_pmf(sigma2: float, support: np.ndarray) -> np.ndarray:
    """P(X = k) for X ~ N_Z(0, sigma2) at the integers ``support`` (normalised over all Z)."""
    sigma2 = v.positive(sigma2, "sigma2")
    reach = int(math.ceil(40.0 * math.sqrt(sigma2))) + 40
    ks = np.arange(-reach, reach + 1, dtype=np.float64)
    z = np.exp(-(ks ** 2) / (2.0 * sigma2)).sum()
    s = np.asarray(support, dtype=np.float64)
    return np.exp(-(s ** 2) / (2.0 * sigma2)) / z


def discrete_gaussian_variance(sigma2: float) -> float:
    """Exact variance of N_Z(0, sigma2) (slightly below sigma2 for small sigma2)."""
    sigma2 = v.positive(sigma2, "sigma2")
    reach = int(math.ceil(40.0 * math.sqrt(sigma2))) + 40
    ks = np.arange(-reach, reach + 1, dtype=np.float64)
    return float((ks ** 2 * discrete_gaussian_pmf(sigma2, ks)).sum())
