"""The running privacy cost of a whole training run, round by round.

Each successful round yields at most one frozen event (``SecureSumResult.event``: None when
the mode is NONE). :class:`RoundAccountant` records them under strictly increasing round
numbers, so a round replayed after a restart cannot be charged twice, and composes them with
``privacy.PrivacyAccountant`` into the epsilon at a given delta.

The figure is that of a site that took part in every recorded round; a site that sat some out
was charged for fewer events, so this is an upper bound for every site. Each site still keeps
its own ``privacy.SiteLedger``, which is what enforces its budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privacy import (
    Accountant,
    PrivacyAccountant,
    PrivacyEvent,
    UnsupportedEvent,
    compute_epsilon,
    event_from_dict,
    event_to_dict,
    largest_epsilon,
    subsampled_epsilon,
)
from secagg.errors import ConfigurationError, InvalidInput

__all__ = ["RoundAccountant", "SampledAccountant"]

STATE_VERSION = 1


class RoundAccountant:
    """Records each round's event (or None) and reports the epsilon spent so far."""

    def __init__(self, *, accountant: Accountant = Accountant.RDP) -> None:
        self._inner = PrivacyAccountant(accountant=accountant)
        self._rounds: list[tuple[int, PrivacyEvent | None]] = []

    @property
    def accountant(self) -> Accountant:
        return self._inner.accountant

    @property
    def rounds(self) -> tuple[tuple[int, PrivacyEvent | None], ...]:
        """(round number, event) for every recorded round, in order."""
        return tuple(self._rounds)

    @property
    def last_round(self) -> int | None:
        return self._rounds[-1][0] if self._rounds else None

    def record(self, event: PrivacyEvent | None, *, round_number: int) -> None:
        """Charge round ``round_number`` with ``event`` (None: the round had no privacy cost).

        Round numbers must increase strictly; a repeated or earlier one raises InvalidInput,
        an event the accountant cannot analyse raises, and in either case nothing changes.
        """
        if isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 0:
            raise InvalidInput(f"round_number must be an integer >= 0, got {round_number!r}")
        last = self.last_round
        if last is not None and round_number <= last:
            raise InvalidInput(f"round {round_number} is not after the last recorded round {last}")
        if event is not None:
            self._inner.record(event)  # validates the event before it appends anything
        self._rounds.append((round_number, self._inner.events[-1] if event is not None else None))

    def epsilon(self, *, delta: float) -> float:
        """Epsilon at ``delta`` of everything recorded (0.0 when nothing cost anything)."""
        return self._inner.epsilon(delta=delta)

    def epsilon_after(self, event: PrivacyEvent | None, *, delta: float) -> float:
        """What :meth:`epsilon` would be after one more round with ``event`` (nothing recorded):
        for deciding whether a round fits a target before running it."""
        events = list(self._inner.events) + ([event] if event is not None else [])
        return compute_epsilon(events, delta=delta, accountant=self.accountant)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "accountant": self.accountant.value,
            "rounds": [{"round": r, "event": None if e is None else event_to_dict(e)}
                       for r, e in self._rounds],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved state (checked in full first; a bad one changes nothing)."""
        try:
            if state["version"] != STATE_VERSION:
                raise ConfigurationError(f"unknown accountant state version {state['version']!r}")
            fresh = RoundAccountant(accountant=Accountant(state["accountant"]))
            for entry in state["rounds"]:
                raw = entry["event"]
                fresh.record(None if raw is None else event_from_dict(raw),
                             round_number=entry["round"])
        except (ConfigurationError, UnsupportedEvent):
            raise
        except (KeyError, TypeError, ValueError) as exc:  # InvalidInput is a ValueError
            raise ConfigurationError(f"not a round accountant state: {exc}") from exc
        self._inner, self._rounds = fresh._inner, fresh._rounds


class SampledAccountant:
    """The privacy cost of a run whose rounds each sum a sample of the sites (DESIGN 5a).

    :meth:`epsilon` is the default claim and makes no use of the sampling: the coordinator
    knows who took part, so each site's cost is the composition of the rounds it was summed in,
    and the run's figure is the largest over the sites (each site's ledger holds the same
    events). :meth:`amplified_epsilon` is reported only under the explicit secret-sampling
    assumption (``SimulationConfig.assume_secret_sampling``): every round is a Poisson
    subsample of rate q followed by the round's sum, with the round's event taken with one site
    fewer summed (so it bounds the release with or without any one site), composed with the
    Zhu–Wang subsampled-RDP bound (``privacy.subsampled_epsilon``).
    """

    def __init__(self, site_ids: list[str]) -> None:
        self._index = {s: i for i, s in enumerate(site_ids)}
        self._rounds: list[tuple[int, PrivacyEvent, frozenset[int]]] = []
        self._amplified: list[tuple[PrivacyEvent, float]] = []

    def record(self, event: PrivacyEvent | None, *, round_number: int, included,
               sample_rate: float | None = None,
               amplified_event: PrivacyEvent | None = None) -> None:
        if self._rounds and round_number <= self._rounds[-1][0]:
            raise InvalidInput(f"round {round_number} is not after the last recorded round")
        if event is None:
            return
        members = frozenset(self._index[s] for s in included)
        self._rounds.append((round_number, event, members))
        if sample_rate is not None:
            self._amplified.append((amplified_event or event, float(sample_rate)))

    def epsilon(self, *, delta: float) -> float:
        """The largest, over the sites, epsilon of the rounds the site was summed in."""
        per_site: list[list[PrivacyEvent]] = [[] for _ in self._index]
        for _, event, members in self._rounds:
            for i in members:
                per_site[i].append(event)
        return largest_epsilon(per_site, delta=delta)

    def amplified_epsilon(self, *, delta: float) -> float:
        """Epsilon under the secret-sampling assumption (see the class docstring)."""
        return subsampled_epsilon(self._amplified, delta=delta)
