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
)
from secagg.errors import ConfigurationError, InvalidInput

__all__ = ["RoundAccountant"]

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
