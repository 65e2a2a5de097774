"""Deadlines for slow, stalled and half-open connections, one timer per connection.

What uvicorn bounds by itself, and the gaps this module closes:

- a TCP connection that never finishes the TLS handshake: the event loop's handshake timeout
  (60 s in asyncio and uvloop; uvicorn does not expose it), after which it is dropped;
- an idle keep-alive connection after a response: ``timeout_keep_alive``;
- **a connection that says nothing after the handshake, or sends part of a request's head and
  stalls (slowloris), or sends one byte after a response** (which cancels uvicorn's keep-alive
  timer): nothing in uvicorn bounds these. :class:`ConnectionDeadlines` closes a connection
  that has no request under way for ``idle`` seconds, whatever it has sent;
- a body that stalls once the head is in: the app's read deadline (``body_timeout``, 408);
- **a request under way for longer than any honest one can take** (a client that stops reading
  its response, a peer that vanished without a FIN): closed after ``request`` seconds.

The check is a timer per connection, a few times per ``idle`` period; it reads the protocol's
``cycle`` (uvicorn's request/response cycle, set once a request's head is parsed, in both the
httptools and the h11 protocol), so nothing is added to the path of a request or of its body.
A stalled connection costs the event loop nothing while it waits, so it never delays another
site's requests; these deadlines bound how long it holds a socket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ConnectionLimits", "ConnectionDeadlines", "with_deadlines"]


@dataclass(frozen=True)
class ConnectionLimits:
    """``idle``: most seconds a connection may spend with no request under way (from the
    handshake, or from the end of its last response), however many bytes of a request's head
    it has sent; also uvicorn's keep-alive timeout. ``request``: most seconds one request may
    take from its head to the end of its response."""

    idle: float = 30.0
    request: float = 600.0

    def __post_init__(self) -> None:
        for name in ("idle", "request"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a finite number of seconds > 0")

    @property
    def interval(self) -> float:
        """How often a connection is checked: a quarter of the shorter deadline, at most 1 s."""
        return min(1.0, max(0.02, min(self.idle, self.request) / 4))


class ConnectionDeadlines:
    """Mixin for a uvicorn HTTP protocol class (before it in the bases): closes a connection
    past :class:`ConnectionLimits`. :func:`with_deadlines` makes the class with its limits."""

    limits: ConnectionLimits = ConnectionLimits()
    closed_by_deadline = 0  # connections closed for a deadline, across the class (tests, logs)

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._watched_cycle, self._was_busy = None, False
        self._since = time.monotonic()  # when the connection became idle, or its request began
        self._watch = self.loop.call_later(self.limits.interval, self._check_deadlines)

    def connection_lost(self, exc: Exception | None) -> None:
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.cancel()
            self._watch = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _check_deadlines(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self._watch = None
            return
        now = time.monotonic()
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if cycle is not self._watched_cycle or busy is not self._was_busy:
            # A request's head came in, or the request under way finished: its clock starts.
            self._watched_cycle, self._was_busy, self._since = cycle, busy, now
        limit = self.limits.request if busy else self.limits.idle
        if now - self._since > limit:
            type(self).closed_by_deadline += 1
            if busy:
                cycle.keep_alive = False
                cycle.disconnected = True
            transport.close()
            self._watch = None
            return
        self._watch = self.loop.call_later(self.limits.interval, self._check_deadlines)


def with_deadlines(protocol: type, limits: ConnectionLimits) -> type:
    """``protocol`` (a uvicorn HTTP protocol class) with :class:`ConnectionDeadlines` at
    ``limits``."""
    return type(f"Deadline{protocol.__name__}", (ConnectionDeadlines, protocol),
                {"limits": limits, "__module__": __name__,
                 "__doc__": f"{protocol.__name__} with connection deadlines."})
