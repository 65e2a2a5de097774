"""Rényi-DP curves of Cohort's privacy events and the RDP -> (epsilon, delta) conversion.

Gaussian curves come from Opacus (``opacus.accountants.analysis.rdp``); the Skellam and
distributed discrete Gaussian curves are implemented here from the papers, since neither Opacus
nor dp-accounting has them. The conversion is the one Opacus uses (Balle et al. 2020,
"Hypothesis testing interpretations and Rényi differential privacy", Theorem 21).
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import numpy as np

from .errors import ConfigurationError, UnsupportedEvent
from .events import DiscreteGaussianEvent, GaussianEvent, PrivacyEvent, SkellamEvent

# Opacus's default orders (so Gaussian-only answers match Opacus to the last digit) plus larger
# integer orders, which the discrete mechanisms need at small epsilon.
OPACUS_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
ORDERS: tuple[float, ...] = OPACUS_ORDERS + (64, 80, 96, 128, 192, 256, 512, 1024)

# For compositions whose every curve is closed form (Skellam, discrete Gaussian, Gaussian
# without subsampling): every integer order up to 4096, then orders 1% apart up to 10^9, and
# the best of those is refined to the exact best integer order (see ``dense_epsilon``).
_DENSE_INTEGERS = np.arange(2, 4097, dtype=float)
_SPARSE_TAIL = np.unique(np.round(4096.0 * 1.01 ** np.arange(1, 1500)))
_SPARSE_TAIL = _SPARSE_TAIL[_SPARSE_TAIL <= 1e9]
DENSE_ORDERS: np.ndarray = np.concatenate([
    [o for o in OPACUS_ORDERS if not float(o).is_integer()], _DENSE_INTEGERS, _SPARSE_TAIL])



@functools.cache
def _opacus_rdp():
    """Opacus's RDP analysis, imported on first use: importing opacus loads its per-layer
    gradient samplers too (about a second), which every role would otherwise wait for at start,
    a coordinator restarting after a crash included, even when no Gaussian curve is needed."""
    from opacus.accountants.analysis import rdp

    return rdp

def gaussian_rdp(event: GaussianEvent, orders: Sequence[float]) -> np.ndarray:
    """RDP of ``steps`` Poisson-subsampled Gaussian mechanisms (Mironov et al. 2019, via Opacus)."""
    return event.steps * _one_step_gaussian(float(event.sample_rate),
                                            float(event.noise_multiplier), tuple(orders))


@functools.lru_cache(maxsize=512)
def _one_step_gaussian(q: float, z: float, orders: tuple[float, ...]) -> np.ndarray:
    # RDP composes by multiplying one step's curve by the step count (Opacus does the same),
    # and events are frozen, so one step's curve per (q, z, orders) can be kept: a ledger
    # recomposes every past event on each check, and Opacus's subsampled curve costs ~0.5 s
    # at large q.
    curve = np.asarray(_opacus_rdp().compute_rdp(q=q, noise_multiplier=z, steps=1,
                                              orders=list(orders)), dtype=float)
    curve.setflags(write=False)
    return curve


def skellam_rdp_single(order: int, *, variance: float, l1: float, l2: float) -> float:
    """RDP at integer ``order`` of one release with symmetric Skellam noise of ``variance``.

    Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for Differentially Private Federated
    Learning", Corollary 3.6 (multi-dimensional Skellam, variance mu per coordinate):
    eps(a) <= a*D2^2/(2 mu) + min(((2a - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu)).
    """
    return float(_skellam_curve(np.asarray([float(order)]), variance, l1, l2)[0])


def _skellam_curve(a: np.ndarray, mu: float, l1: float, l2: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        return a * l2 * l2 / (2.0 * mu) + np.minimum(((2.0 * a - 1.0) * l2 * l2 + 6.0 * l1)
                                                     / (4.0 * mu * mu), 3.0 * l1 / (2.0 * mu))


def skellam_rdp(event: SkellamEvent, orders: Sequence[float]) -> np.ndarray:
    """Skellam RDP composed over ``steps``; infinite at fractional orders (the bound is for
    integer orders), which takes those orders out of the minimum."""
    a = np.asarray(orders, dtype=float)
    usable = (a >= 2) & (np.floor(a) == a)
    curve = event.steps * _skellam_curve(np.where(usable, a, 2.0), event.variance,
                                         event.l1_sensitivity, event.l2_sensitivity)
    return np.where(usable, curve, np.inf)


def ddg_tau(local_variance: float, num_clients: int) -> float:
    """Kairouz, Liu, Steinke 2021, Theorem 1: tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1)).

    It measures how far a sum of n discrete Gaussians is from one discrete Gaussian; 0 for n=1.
    """
    k = np.arange(1, num_clients, dtype=float)
    return float(10.0 * np.exp(-2.0 * math.pi ** 2 * local_variance * k / (k + 1.0)).sum())


def discrete_gaussian_rdp(event: DiscreteGaussianEvent, orders: Sequence[float]) -> np.ndarray:
    """RDP of the distributed discrete Gaussian (Kairouz, Liu, Steinke 2021, Proposition 14):

    eps(a) = min(a/2 * s2^2 + tau*d,  a/2 * (s2^2 + 2 s1 tau + tau^2 d),  a/2 * (s2 + sqrt(d) tau)^2)
    with s_p = D_p / (sqrt(n) sigma). With n = 1 (tau = 0) it is the continuous Gaussian's curve,
    which Canonne, Kamath, Steinke 2020 prove for the single discrete Gaussian.
    """
    n = event.num_clients
    sigma = math.sqrt(event.local_variance)
    tau = ddg_tau(event.local_variance, n)
    s2 = event.l2_sensitivity / (math.sqrt(n) * sigma)
    s1 = event.l1_sensitivity / (math.sqrt(n) * sigma)
    d = event.dim
    a = np.asarray(orders, dtype=float)
    t1 = a / 2.0 * s2 ** 2 + tau * d
    t2 = a / 2.0 * (s2 ** 2 + 2.0 * s1 * tau + tau ** 2 * d)
    t3 = a / 2.0 * (s2 + math.sqrt(d) * tau) ** 2
    return event.steps * np.minimum(np.minimum(t1, t2), t3)


def event_rdp(event: PrivacyEvent, orders: Sequence[float]) -> np.ndarray:
    if isinstance(event, GaussianEvent):
        return gaussian_rdp(event, orders)
    if isinstance(event, SkellamEvent):
        return skellam_rdp(event, orders)
    if isinstance(event, DiscreteGaussianEvent):
        return discrete_gaussian_rdp(event, orders)
    raise UnsupportedEvent(f"no RDP analysis for {event!r}")


def composed_rdp(events: Iterable[PrivacyEvent], orders: Sequence[float]) -> np.ndarray:
    total = np.zeros(len(orders))
    for event in events:
        total = total + event_rdp(event, orders)
    return total


def rdp_to_epsilon(orders: Sequence[float], rdp: Sequence[float], delta: float) -> tuple[float, float]:
    """(epsilon, best order) from an RDP curve, by Balle et al. 2020 Theorem 21 (Opacus's formula):

    eps = min_a  rdp(a) - (log(delta) + log(a)) / (a - 1) + log((a - 1) / a),  clipped at 0.
    """
    if not 0 < delta < 1:
        raise ConfigurationError(f"delta must be in (0, 1), got {delta!r}")
    a = np.asarray(orders, dtype=float)
    r = np.asarray(rdp, dtype=float)
    if a.shape != r.shape:
        raise ConfigurationError("orders and rdp must have the same length")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        eps = r - (math.log(delta) + np.log(a)) / (a - 1.0) + np.log((a - 1.0) / a)
    eps = np.where(np.isnan(eps), np.inf, eps)
    i = int(np.argmin(eps))
    return max(0.0, float(eps[i])), float(a[i])


def is_closed_form(event: PrivacyEvent) -> bool:
    """Whether the event's RDP curve is a closed form cheap at any order (no subsampling)."""
    return isinstance(event, (SkellamEvent, DiscreteGaussianEvent)) or (
        isinstance(event, GaussianEvent) and event.sample_rate == 1.0)


def dense_epsilon(events: Sequence[PrivacyEvent], delta: float) -> tuple[float, float]:
    """(epsilon, best order) of closed-form events over :data:`DENSE_ORDERS`, refined to the
    best integer order between the grid's neighbours of its optimum (all of them when the
    bracket is small, else an integer ternary search: the converted bound is unimodal in the
    order). Any order gives a valid bound, so the refinement only ever tightens it."""
    grid = DENSE_ORDERS
    eps, best = rdp_to_epsilon(grid, composed_rdp(events, grid), delta)
    if best <= 4096 or not math.isfinite(eps):
        return eps, best
    i = int(np.searchsorted(grid, best))
    lo, hi = int(grid[max(i - 1, 0)]), int(grid[min(i + 1, grid.size - 1)])

    def at(orders: np.ndarray) -> np.ndarray:
        a = np.asarray(orders, dtype=float)
        r = composed_rdp(events, a)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            out = r - (math.log(delta) + np.log(a)) / (a - 1.0) + np.log((a - 1.0) / a)
        return np.where(np.isnan(out), np.inf, out)

    while hi - lo > 4096:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        f1, f2 = at(np.array([m1, m2]))
        if f1 <= f2:
            hi = m2
        else:
            lo = m1
    candidates = np.arange(lo, hi + 1, dtype=float)
    values = at(candidates)
    j = int(np.argmin(values))
    if values[j] < eps:
        return max(0.0, float(values[j])), float(candidates[j])
    return eps, best
