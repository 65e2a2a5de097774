"""Accountants: from a sequence of frozen privacy events to (epsilon, delta).

* ``Accountant.RDP`` composes any mix of Gaussian, Skellam and discrete-Gaussian events by
  adding their Rényi-DP curves (Gaussian from Opacus, the discrete ones from ``_rdp``), then
  converts with the same RDP -> DP formula as Opacus.
* ``Accountant.PRV`` wraps Opacus's PRV accountant (Gopi et al. 2021); it is tighter but only
  analyses (subsampled) Gaussian events and raises ``UnsupportedEvent`` for the others.

``PrivacyAccountant`` is the stateful form (record events, ask epsilon, ``state_dict``).
"""

from __future__ import annotations

import enum
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import _rdp
from . import _validate as v
from .errors import ConfigurationError, UnsupportedEvent
from .events import (
    GaussianEvent,
    PrivacyEvent,
    event_from_dict,
    event_to_dict,
)

__all__ = ["Accountant", "PrivacyAccountant", "compute_epsilon", "largest_epsilon"]


class Accountant(enum.Enum):
    """Which analysis turns events into (epsilon, delta)."""

    RDP = "rdp"
    PRV = "prv"


def _orders_for(events: Sequence[PrivacyEvent]) -> tuple[float, ...]:
    # Gaussian-only compositions use exactly Opacus's orders so that answers coincide with
    # Opacus's RDPAccountant; a mix of subsampled Gaussians and discrete mechanisms also gets
    # the large orders (Opacus's subsampled curve costs O(order) per integer order, so dense
    # large orders are out of reach there). Closed-form compositions go to ``dense_epsilon``.
    if all(isinstance(e, GaussianEvent) for e in events):
        return _rdp.OPACUS_ORDERS
    return _rdp.ORDERS


def compute_epsilon(events: Iterable[PrivacyEvent], *, delta: float,
                    accountant: Accountant = Accountant.RDP,
                    prv_eps_error: float = 0.01) -> float:
    """Epsilon at ``delta`` of the composition of ``events`` (0.0 for no events)."""
    delta = v.probability(delta, "delta")
    if not isinstance(accountant, Accountant):
        raise ConfigurationError(f"accountant must be an Accountant, got {accountant!r}")
    events = list(events)
    if not events:
        return 0.0
    if accountant is Accountant.RDP:
        with np.errstate(over="ignore", invalid="ignore"):
            if not all(isinstance(e, GaussianEvent) for e in events) \
                    and all(_rdp.is_closed_form(e) for e in events):
                eps, _ = _rdp.dense_epsilon(events, delta)
            else:
                orders = _orders_for(events)
                eps, _ = _rdp.rdp_to_epsilon(orders, _rdp.composed_rdp(events, orders), delta)
        if math.isnan(eps):
            raise UnsupportedEvent(f"epsilon of {events!r} is not a number")
        return eps
    for event in events:
        if not isinstance(event, GaussianEvent):
            raise UnsupportedEvent(f"the PRV accountant only analyses Gaussian events, not {event!r}")
    from opacus.accountants import PRVAccountant  # on first use (see _rdp._opacus_rdp)

    prv = PRVAccountant()
    # Opacus keeps (noise_multiplier, sample_rate, steps) triples as its history.
    prv.history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in events]
    # With sample_rate 1 Opacus takes log(1 - q) = log(0) on purpose; silence numpy about it.
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(prv.get_epsilon(delta=delta, eps_error=prv_eps_error))


class PrivacyAccountant:
    """Records events (validated before anything changes) and reports the epsilon spent."""

    def __init__(self, *, accountant: Accountant = Accountant.RDP) -> None:
        if not isinstance(accountant, Accountant):
            raise ConfigurationError(f"accountant must be an Accountant, got {accountant!r}")
        self._accountant = accountant
        self._events: list[PrivacyEvent] = []

    @property
    def accountant(self) -> Accountant:
        return self._accountant

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        return tuple(self._events)

    def record(self, event: PrivacyEvent) -> None:
        # Round-trip through the dict form: rejects non-events and is what a restore will see.
        checked = event_from_dict(event_to_dict(event))
        if self._accountant is Accountant.PRV and not isinstance(checked, GaussianEvent):
            raise UnsupportedEvent("the PRV accountant only analyses Gaussian events")
        self._events.append(checked)

    def epsilon(self, *, delta: float) -> float:
        return compute_epsilon(self._events, delta=delta, accountant=self._accountant)

    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self._accountant.value,
                "events": [event_to_dict(e) for e in self._events]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            kind = Accountant(state["accountant"])
            events = [event_from_dict(e) for e in state["events"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"not an accountant state: {exc}") from exc
        if kind is Accountant.PRV and not all(isinstance(e, GaussianEvent) for e in events):
            raise UnsupportedEvent("the PRV accountant only analyses Gaussian events")
        self._accountant, self._events = kind, events


def largest_epsilon(compositions: Iterable[Sequence[PrivacyEvent]], *, delta: float) -> float:
    """The largest :func:`compute_epsilon` (RDP) over several compositions of events — e.g.
    one per site of a sampled run, each the rounds that site took part in — without computing
    each one in full: every composition is first bounded on a coarse grid of orders (never
    below its exact figure), and only those whose bound can still beat the best exact figure
    found so far are computed exactly."""
    delta = v.probability(delta, "delta")
    distinct: dict[tuple, list[PrivacyEvent]] = {}
    for events in compositions:
        events = list(events)
        if events:
            distinct.setdefault(tuple(sorted(map(repr, events))), events)
    if not distinct:
        return 0.0
    curves: dict[PrivacyEvent, np.ndarray] = {}
    bounds = []
    for events in distinct.values():
        orders = (_rdp.OPACUS_ORDERS if all(isinstance(e, GaussianEvent) for e in events)
                  else _rdp.ORDERS)
        total = np.zeros(len(orders))
        for e in events:
            key = (e, len(orders))
            if key not in curves:
                curves[key] = _rdp.event_rdp(e, orders)
            total = total + curves[key]
        with np.errstate(over="ignore", invalid="ignore"):
            bound, _ = _rdp.rdp_to_epsilon(orders, total, delta)
        bounds.append((bound, events))
    bounds.sort(key=lambda b: -b[0])
    best = -1.0
    for bound, events in bounds:
        if bound <= best:
            break
        best = max(best, compute_epsilon(events, delta=delta))
    return best
