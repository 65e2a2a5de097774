"""The one exception tree of Cohort.

Every error Cohort raises on purpose derives from :class:`CohortError`, so a caller can catch the
whole family at once, and the specific subclasses say what went wrong without saying anything
secret: a failed decryption or signature check never tells which check failed. The base lives
here, in the lowest package; errors about sites live with the sites (``clients.PolicyViolation``)
and enrolment with the contract (``cohort.contract.NotEnrolled``).
"""

from __future__ import annotations

__all__ = [
    "CohortError",
    "ConfigurationError",
    "InvalidInput",
    "InvalidMessage",
    "ProtocolAbort",
    "StageError",
]


class CohortError(Exception):
    """Base class of every error Cohort raises deliberately."""


class ConfigurationError(CohortError, ValueError):
    """Parameters that cannot work together (e.g. a modulus too small for the sum)."""


class InvalidInput(CohortError, ValueError):
    """A caller's own data that the operation cannot take (wrong shape, type or range)."""


class InvalidMessage(CohortError):
    """A protocol message that is malformed, oversized, forged, replayed or fails its integrity
    check. The message is rejected before any state changes, its sender's standing included (a
    stage that closes without a valid message from the sender counts it as dropped)."""


class StageError(InvalidMessage):
    """A message that belongs to another stage or round than the one the receiver is in."""


class ProtocolAbort(CohortError):
    """The secure-aggregation round stopped without revealing anything: too few clients were
    left, or a client detected a misbehaving server."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage

