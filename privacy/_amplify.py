"""Amplification by Poisson subsampling for any of Cohort's events (an upper bound).

Zhu and Wang 2019, "Poisson Subsampled Rényi Differential Privacy" (ICML), Theorem 6: if a
mechanism M is (a, eps(a))-RDP at every integer order a >= 2 (add/remove neighbours), then
M applied to a Poisson subsample with rate q is (a, eps'(a))-RDP with

    eps'(a) <= 1/(a-1) * log( (1-q)^(a-1) (a q - q + 1)
                              + C(a,2) q^2 (1-q)^(a-2) e^{eps(2)}
                              + 3 sum_{l=3}^{a} C(a,l) (1-q)^(a-l) q^l e^{(l-1) eps(l)} ).

It holds for every mechanism (the Skellam and distributed discrete Gaussian sums included,
which have no tighter subsampled analysis here), at integer orders only; a test checks it
against Opacus's exact subsampled Gaussian curve, which it must never undercut.

Used only under the explicit secret-sampling assumption (who took part stays hidden from
whoever sees the releases); the coordinator itself knows who took part, and against it the
unamplified figure is the one that holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.special import gammaln, logsumexp

from . import _rdp
from . import _validate as v
from .events import PrivacyEvent

__all__ = ["AMPLIFIED_ORDERS", "poisson_subsampled_rdp", "subsampled_epsilon"]

# Integer orders only (the bound is for integers); the sum over l costs O(a) per order.
AMPLIFIED_ORDERS: tuple[int, ...] = tuple(range(2, 65)) + (80, 96, 128, 160, 192, 256)


def poisson_subsampled_rdp(event: PrivacyEvent, sample_rate: float,
                           orders: Sequence[int] = AMPLIFIED_ORDERS) -> np.ndarray:
    """The RDP curve, at integer ``orders``, of ``event`` run on a Poisson subsample of rate
    ``sample_rate`` (Zhu and Wang 2019, Theorem 6). ``sample_rate`` 1 gives the event's own
    curve."""
    q = v.bounded(sample_rate, "sample_rate", low=1e-12, high=1.0)
    orders = [int(a) for a in orders]
    top = max(orders)
    base = np.asarray(_rdp.event_rdp(event, np.arange(2, top + 1, dtype=float)), dtype=float)
    if q == 1.0:
        return base[np.asarray(orders) - 2]
    log_q, log_1q = math.log(q), math.log1p(-q)
    out = np.empty(len(orders))
    for i, a in enumerate(orders):
        terms = [(a - 1) * log_1q + math.log(a * q - q + 1.0)]
        terms.append(_log_binom(a, 2) + 2 * log_q + (a - 2) * log_1q + base[0])
        ls = np.arange(3, a + 1)
        if ls.size:
            terms.extend(math.log(3.0) + _log_binom(a, ls) + (a - ls) * log_1q + ls * log_q
                         + (ls - 1) * base[ls - 2])
        with np.errstate(over="ignore"):
            out[i] = float(logsumexp(np.asarray(terms, dtype=float))) / (a - 1)
    # Subsampling never costs more than the release itself (Rényi divergence is jointly
    # quasi-convex), so the smaller of the two is a bound too.
    return np.minimum(out, base[np.asarray(orders) - 2])


def _log_binom(n: int, k):
    return gammaln(n + 1) - gammaln(np.asarray(k) + 1) - gammaln(n - np.asarray(k) + 1)


def subsampled_epsilon(rounds: Iterable[tuple[PrivacyEvent, float]], *, delta: float) -> float:
    """Epsilon at ``delta`` of the composition of (event, Poisson sample rate) rounds."""
    delta = v.probability(delta, "delta")
    rounds = list(rounds)
    if not rounds:
        return 0.0
    orders = np.asarray(AMPLIFIED_ORDERS, dtype=float)
    total = np.zeros(orders.size)
    cache: dict[tuple, np.ndarray] = {}
    for event, q in rounds:
        key = (event, float(q))
        if key not in cache:
            cache[key] = poisson_subsampled_rdp(event, q)
        total = total + cache[key]
    eps, _ = _rdp.rdp_to_epsilon(orders, total, delta)
    return eps
