"""Epsilon of logged events by a route independent of the one the run used.

The run's own accountant (``privacy.accountants``) composes Opacus's RDP curves and the
closed forms in ``privacy._rdp``. The audit recomputes every epsilon without that code:

* Gaussian events, subsampled or not, and a discrete Gaussian added by one party (central
  mode; Canonne, Kamath, Steinke 2020: as private as the continuous Gaussian of the same
  sigma) go to Google's ``dp-accounting`` (``RdpAccountant``), a separate implementation.
* Skellam (Agarwal, Kairouz, Liu 2021, Corollary 3.6) and the distributed discrete Gaussian
  (Kairouz, Liu, Steinke 2021, Proposition 14), which dp-accounting does not cover, are written
  out again here from the papers' closed forms, composed at every integer order up to 20 000
  and on a geometric tail to 10^9 with the exact best integer order found around the optimum,
  and converted with Balle et al. 2020, Theorem 21.

``route`` says which route answered, for the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import AuditError

__all__ = ["independent_epsilon", "route_for"]

_DENSE = np.arange(2, 20_001, dtype=float)
_TAIL = np.unique(np.round(20_000.0 * 1.005 ** np.arange(1, 4000)))
_ORDERS = np.concatenate([_DENSE, _TAIL[_TAIL <= 1e9]])


def _kind(event: Mapping[str, Any]) -> str:
    kind = event.get("kind")
    if kind not in ("gaussian", "skellam", "discrete_gaussian"):
        raise AuditError(f"event kind {kind!r} is unknown to the audit")
    return str(kind)


def _is_dpa(event: Mapping[str, Any]) -> bool:
    kind = _kind(event)
    return kind == "gaussian" or (kind == "discrete_gaussian" and int(event["num_clients"]) == 1)


def route_for(events: Sequence[Mapping[str, Any]]) -> str:
    if all(_is_dpa(e) for e in events):
        return "dp-accounting RDP"
    if any(_kind(e) == "gaussian" and float(e["sample_rate"]) < 1 for e in events):
        return "dp-accounting RDP + closed forms"
    return "closed-form RDP (Skellam / distributed discrete Gaussian)"


def _dpa_event(event: Mapping[str, Any]):
    import dp_accounting

    steps = int(event["steps"])
    if _kind(event) == "gaussian":
        inner = dp_accounting.GaussianDpEvent(float(event["noise_multiplier"]))
        q = float(event["sample_rate"])
        one = inner if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, inner)
    else:
        z = math.sqrt(float(event["local_variance"])) / float(event["l2_sensitivity"])
        one = dp_accounting.GaussianDpEvent(z)
    return dp_accounting.SelfComposedDpEvent(one, steps) if steps > 1 else one


def _closed_curve(event: Mapping[str, Any], a: np.ndarray) -> np.ndarray:
    """RDP at (integer) orders ``a`` of one logged closed-form event, steps included."""
    kind = _kind(event)
    steps = int(event["steps"])
    with np.errstate(over="ignore"):
        if kind == "skellam":
            mu = float(event["variance"])
            d2, d1 = float(event["l2_sensitivity"]), float(event["l1_sensitivity"])
            one = a * d2 ** 2 / (2 * mu) + np.minimum(((2 * a - 1) * d2 ** 2 + 6 * d1)
                                                      / (4 * mu ** 2), 3 * d1 / (2 * mu))
        elif kind == "discrete_gaussian":
            n = int(event["num_clients"])
            var = float(event["local_variance"])
            d = int(event["dim"])
            k = np.arange(1, n, dtype=float)
            tau = float(10.0 * np.exp(-2 * math.pi ** 2 * var * k / (k + 1)).sum())
            s2 = float(event["l2_sensitivity"]) / math.sqrt(n * var)
            s1 = float(event["l1_sensitivity"]) / math.sqrt(n * var)
            one = np.minimum.reduce([a / 2 * s2 ** 2 + tau * d,
                                     a / 2 * (s2 ** 2 + 2 * s1 * tau + tau ** 2 * d),
                                     a / 2 * (s2 + math.sqrt(d) * tau) ** 2])
        else:  # a Gaussian without subsampling
            one = a / (2 * float(event["noise_multiplier"]) ** 2)
    return steps * one


def _convert(a: np.ndarray, rdp: np.ndarray, delta: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        eps = rdp + np.log1p(-1.0 / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    return np.where(np.isnan(eps), np.inf, eps)


def _closed_epsilon(events: Sequence[Mapping[str, Any]], delta: float) -> float:
    total = sum(_closed_curve(e, _ORDERS) for e in events)
    eps = _convert(_ORDERS, total, delta)
    i = int(np.argmin(eps))
    best = float(eps[i])
    if i > 0 and _ORDERS[i] > 20_000 and math.isfinite(best):
        lo, hi = int(_ORDERS[i - 1]), int(_ORDERS[min(i + 1, _ORDERS.size - 1)])
        grid = np.arange(lo, hi + 1, dtype=float)
        local = _convert(grid, sum(_closed_curve(e, grid) for e in events), delta)
        best = min(best, float(local.min()))
    return max(0.0, best)


def independent_epsilon(events: Sequence[Mapping[str, Any]], *, delta: float) -> float:
    """Epsilon at ``delta`` of the composition of logged events (their JSON dicts)."""
    try:
        import dp_accounting  # noqa: F401
    except ImportError as exc:
        raise AuditError("the audit's independent accountant needs dp-accounting "
                         "(pip install 'cohort[audit]')") from exc
    if not 0 < delta < 1:
        raise AuditError(f"delta must lie in (0, 1), got {delta!r}")
    events = list(events)
    if not events:
        return 0.0
    if all(_is_dpa(e) for e in events):
        import dp_accounting
        from dp_accounting.rdp import RdpAccountant

        accountant = RdpAccountant()
        accountant.compose(dp_accounting.ComposedDpEvent([_dpa_event(e) for e in events]))
        return float(accountant.get_epsilon(delta))
    subsampled = [e for e in events if _kind(e) == "gaussian" and float(e["sample_rate"]) < 1]
    if not subsampled:
        return _closed_epsilon(events, delta)
    # A mix: dp-accounting's curve of the subsampled Gaussians at its own orders (read back
    # from the accountant), the closed forms added at the integer ones among them.
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    orders = [o for o in RdpAccountant().__dict__.get("_orders", []) if float(o).is_integer()]
    orders = orders or list(range(2, 257))
    accountant = RdpAccountant(orders=orders)
    accountant.compose(dp_accounting.ComposedDpEvent([_dpa_event(e) for e in subsampled]))
    a = np.asarray(orders, dtype=float)
    rdp = np.asarray(accountant._rdp, dtype=float)  # noqa: SLF001 - the composed curve
    rdp = rdp + sum(_closed_curve(e, a) for e in events if e not in subsampled)
    return max(0.0, float(_convert(a, rdp, delta).min()))
