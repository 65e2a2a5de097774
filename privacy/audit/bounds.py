"""Empirical privacy from one run: the statistics behind ``audit canaries``.

* :func:`one_run_epsilon_lower_bound` — Steinke, Nasr, Jagielski 2023, "Privacy Auditing with
  One (1) Training Run" (Theorem 3.1 and their Appendix D code): m canaries each included with
  probability 1/2; an auditor guesses r of them (the rest abstain) and v guesses are right. For
  an (eps, delta)-DP run, P[v or more right] <= P[Binomial(r, e^eps/(1+e^eps)) >= v] + 2 m delta
  * alpha(v), alpha from the binomial's lower tail. The lower bound is the largest eps that this
  p-value rejects at ``1 - confidence``: with delta = 0 and confidence 0.95, r = v = 100 gives
  3.4930, r = v = 1000 gives 5.8091, r = 100, v = 90 gives 1.6308.
* :func:`guesses_from_scores` — guess "in" for the k highest scores and "out" for the k lowest,
  abstain on the rest.
* :func:`gaussian_pair_epsilon` — Andrew et al. 2024, "One-shot empirical privacy estimation
  for federated learning": the cosines between the final model update and the inserted
  canaries' directions, against those of directions never inserted, are fitted with two
  Gaussians; the estimate is the epsilon at delta of the pair (the exact privacy profile of two
  Gaussians, computed numerically; ``canaries`` fits both with the null's spread). An
  *estimate*, not a bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import ConfigurationError

__all__ = ["audit_p_value", "one_run_epsilon_lower_bound", "guesses_from_scores",
           "Guesses", "gaussian_pair_epsilon", "gaussian_pair_delta"]


def audit_p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of observing ``v`` right of ``r`` guesses over ``m`` canaries under
    (epsilon, delta)-DP (Steinke et al. 2023, Appendix D)."""
    if not (0 <= v <= r <= m):
        raise ConfigurationError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not epsilon >= 0 or not 0 <= delta <= 1:
        raise ConfigurationError("epsilon must be >= 0 and delta in [0, 1]")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    alpha = 0.0
    if delta > 0 and v > 0:
        # alpha = max_i P[v > Binomial(r, q) >= v - i] / i over i = 1..v (the paper's loop,
        # vectorised: the running sum of the pmf from v - 1 down, divided by i).
        tail = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
        alpha = float(np.max(tail / np.arange(1, v + 1)))
    return min(1.0, beta + alpha * delta * 2 * m)


def one_run_epsilon_lower_bound(*, m: int, r: int, v: int, delta: float = 0.0,
                                confidence: float = 0.95) -> float:
    """The largest epsilon the observation rejects at level ``1 - confidence`` (0 when it
    rejects none): every (eps', delta)-DP run with eps' below it would make ``v`` or more right
    guesses less likely than ``1 - confidence``."""
    if not 0 < confidence < 1:
        raise ConfigurationError(f"confidence must lie in (0, 1), got {confidence!r}")
    p = 1.0 - confidence
    if audit_p_value(m=m, r=r, v=v, epsilon=0.0, delta=delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while audit_p_value(m=m, r=r, v=v, epsilon=hi, delta=delta) < p:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        if audit_p_value(m=m, r=r, v=v, epsilon=mid, delta=delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Guesses:
    k_in: int
    k_out: int
    right: int

    @property
    def made(self) -> int:
        return self.k_in + self.k_out


def guesses_from_scores(scores: Sequence[float], included: Sequence[bool], *,
                        k_in: int, k_out: int) -> Guesses:
    """Guess "in" for the ``k_in`` highest scores, "out" for the ``k_out`` lowest (ties broken
    by index, which carries no information), abstain on the rest; count the right ones."""
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1:
        raise ConfigurationError("scores and included must be 1-D of the same length")
    if k_in < 0 or k_out < 0 or k_in + k_out > s.size:
        raise ConfigurationError(f"cannot make {k_in} + {k_out} guesses on {s.size} canaries")
    order = np.argsort(-s, kind="stable")
    right = int(inc[order[:k_in]].sum()) + int((~inc[order[s.size - k_out:]]).sum()
                                               if k_out else 0)
    return Guesses(k_in=k_in, k_out=k_out, right=right)


def gaussian_pair_delta(epsilon: float, mu1: float, s1: float, mu0: float, s0: float) -> float:
    """delta(epsilon) of distinguishing N(mu1, s1^2) from N(mu0, s0^2), both directions."""
    def one_way(ma: float, sa: float, mb: float, sb: float) -> float:
        # E_P[(1 - e^{eps - L})_+], L = log p/q, on a fine grid over P's mass.
        lo = min(ma - 12 * sa, mb - 12 * sb)
        hi = max(ma + 12 * sa, mb + 12 * sb)
        x = np.linspace(lo, hi, 40_001)
        logp = stats.norm.logpdf(x, ma, sa)
        logq = stats.norm.logpdf(x, mb, sb)
        integrand = np.exp(logp) - np.exp(np.minimum(logq + epsilon, 700.0))
        return float(np.trapezoid(np.clip(integrand, 0, None), x))
    return max(one_way(mu1, s1, mu0, s0), one_way(mu0, s0, mu1, s1))


def gaussian_pair_epsilon(mu1: float, s1: float, mu0: float, s0: float, *,
                          delta: float) -> float:
    """The smallest epsilon with delta(epsilon) <= ``delta`` for the two Gaussians."""
    if not (s1 > 0 and s0 > 0) or not 0 < delta < 1:
        raise ConfigurationError("standard deviations must be > 0 and delta in (0, 1)")
    if gaussian_pair_delta(0.0, mu1, s1, mu0, s0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gaussian_pair_delta(hi, mu1, s1, mu0, s0) > delta:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            return math.inf
    for _ in range(50):
        mid = (lo + hi) / 2
        if gaussian_pair_delta(mid, mu1, s1, mu0, s0) > delta:
            lo = mid
        else:
            hi = mid
    return hi
