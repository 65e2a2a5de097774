"""The service's errors and the one place where a typed error becomes an HTTP status.

Every refusal the service makes is a :class:`~secagg.errors.CohortError`; :func:`status_for` maps
the family to codes (most specific class first), and the app's single exception handler uses it,
so no bad input reaches a 500. Error bodies carry the error's type and its message, which never
contains key material or a message's bytes.
"""

from __future__ import annotations

from secagg.envelope import InvalidSignature, MalformedEnvelope
from cohort.contract import NotEnrolled
from secagg.errors import CohortError, InvalidMessage, ProtocolAbort, StageError

__all__ = ["InvalidRequest", "MessageTooLarge", "BodyTimeout", "WrongSender", "NoRound",
           "NotReady", "RateLimited", "status_for"]


class InvalidRequest(CohortError):
    """A request whose parameters make no sense (not a protocol message at all)."""


class MessageTooLarge(InvalidMessage):
    """A body over the size limit of the step it was posted to."""


class BodyTimeout(InvalidMessage):
    """A body that did not arrive in full within the read deadline."""


class WrongSender(InvalidMessage):
    """An envelope that names another site than the client certificate it came with."""


class NoRound(StageError):
    """A request for a round that is not the open one."""


class NotReady(CohortError):
    """The coordinator is still rebuilding its state after a start (retry shortly)."""


class RateLimited(CohortError):
    """A site over its request budget (HTTP 429 with ``Retry-After``); nothing was done."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many requests from this site; retry in {retry_after:.2f}s")
        self.retry_after = retry_after


# Ordered: the first class an error is an instance of decides its status.
_STATUS: tuple[tuple[type[CohortError], int], ...] = (
    (NotReady, 503),
    (RateLimited, 429),
    (NotEnrolled, 403),
    (WrongSender, 403),
    (InvalidSignature, 401),
    (MessageTooLarge, 413),
    (BodyTimeout, 408),
    (StageError, 409),
    (ProtocolAbort, 409),
    (MalformedEnvelope, 400),
    (InvalidMessage, 400),
    (CohortError, 400),
)


def status_for(exc: CohortError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400
