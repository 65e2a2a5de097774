"""Privacy-specific errors, all under Cohort's one exception tree (``secagg.errors``).

Parameter problems raise :class:`secagg.errors.ConfigurationError`; the classes here name the
failures that only the privacy layer can have.
"""

from __future__ import annotations

from secagg.errors import CohortError, ConfigurationError

__all__ = [
    "AuditError",
    "BudgetExceeded",
    "ConfigurationError",
    "InvalidUpdate",
    "LedgerError",
    "LedgerVersionError",
    "ReleaseMismatch",
    "ReleaseRepeated",
    "UnsupportedEvent",
]


class BudgetExceeded(CohortError):
    """A charge would take a site over its (epsilon, delta) budget. Nothing was charged."""

    def __init__(self, message: str, *, spent: float, requested: float, budget: float) -> None:
        super().__init__(message)
        self.spent = spent
        self.requested = requested
        self.budget = budget


class InvalidUpdate(CohortError, ValueError):
    """A model update that cannot be encoded: NaN or infinite entries, or the wrong shape."""


class UnsupportedEvent(CohortError, TypeError):
    """An accountant was asked about a privacy event it cannot analyse (e.g. Skellam under PRV)."""


class LedgerError(CohortError):
    """The ledger's store is inconsistent with what the caller asked (e.g. the same round charged
    twice with different events, or a budget that differs from the one on record)."""


class ReleaseRepeated(LedgerError):
    """A release id that is already on the ledger (reserved, settled or void): a site releases
    at most once per round, so a second release for the same round is refused."""


class LedgerVersionError(LedgerError):
    """A ledger file whose schema version this code cannot read or migrate."""


class ReleaseMismatch(CohortError):
    """A stored release is not what the secure sum it claims to release decodes to (or, with
    central noise, differs from it by more, or less, than the declared noise)."""


class AuditError(CohortError):
    """What an audit was pointed at is not something it can audit (not a run folder, an
    unknown database). Anything unreadable *inside* a run is a failed check, not this."""
