"""The site agent's HTTPS connection to its coordinator: one kept-alive TLS 1.3 connection.

Why the standard library's :mod:`http.client` and not httpx: a site sends a handful of requests
per protocol step, and in a deployment every one of them is CPU the round waits for. Measured on
loopback TLS (``benchmarks/deploy_round.py``, and per request against ``/v1/status``), an httpx
request costs the site about 0.75 ms of CPU (URL parsing and merging with the base URL, cookie
extraction, its request and response models, httpcore's event machinery) against about 0.2 ms
for ``http.client`` on the same connection: at 20 sites and 7 requests each per round, httpx
alone was a sixth of a round's CPU. The agent needs nothing httpx adds (no redirects, cookies,
proxies, HTTP/2 or connection pools: one coordinator, one connection, requests in turn), and
``http.client`` is what every Python HTTP client is built from for HTTP/1.1 framing.

What this module adds to it, and nothing else:

- the connection is kept alive between requests, and replaced when the coordinator has closed it
  (an idle connection that has become readable has been closed or reset by the peer: it is
  dropped before a request is written, never after);
- any failure to connect, write or read (refused, reset, TLS failure, timeout, a malformed
  response) closes the connection and raises :class:`TransportError`, which the agent retries
  with back-off; nothing half-read is ever reused;
- bodies are sent from several buffers without joining them (a signed envelope's header and its
  model-sized body), with an explicit Content-Length, so no copy of the body is made for the
  request;
- every request has a deadline: the socket's timeout is set per request (connect, each write and
  each read), so a coordinator that stops answering costs at most that timeout.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CoordinatorConnection", "Reply", "TransportError"]

Buffer = bytes | bytearray | memoryview


class TransportError(Exception):
    """The request did not get a complete response (the coordinator is down, restarting, or the
    connection broke or timed out). Retryable: the agent backs off and sends it again."""


@dataclass(frozen=True)
class Reply:
    """A complete response: status, headers (case-insensitive lookup), body."""

    status_code: int
    headers: "Headers"
    content: bytes

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.content)


class Headers(Mapping[str, str]):
    """Response headers, looked up by lower-cased name (the last value of a repeated one)."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = {k.lower(): v for k, v in items}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class CoordinatorConnection:
    """One HTTPS connection to ``base_url`` (``https://host:port``) with the site's TLS context.

    ``timeout`` bounds each request (connect, every write and every read); ``connect_timeout``
    the TCP and TLS handshake of a new connection."""

    def __init__(self, base_url: str, tls: ssl.SSLContext, *, timeout: float,
                 connect_timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("base_url must be https://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("base_url must not carry a path, query or fragment")
        self.host = parts.hostname
        self.port = parts.port or 443
        self._tls = tls
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: http.client.HTTPSConnection | None = None
        self._host_header = (f"[{self.host}]" if ":" in self.host else self.host) + (
            "" if self.port == 443 else f":{self.port}")

    # -- the connection ----------------------------------------------------------------------
    def _fresh(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._tls,
                                           timeout=self.connect_timeout)
        conn.connect()
        return conn

    def _usable(self) -> http.client.HTTPSConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None and _closed_by_peer(conn.sock):
            self.close()
            conn = None
        if conn is None or conn.sock is None:
            conn = self._conn = self._fresh()
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- one request ---------------------------------------------------------------------------
    def request(self, method: str, path: str, *,
                content: Buffer | Sequence[Buffer] | None = None,
                headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Reply:
        """Send one request and read its whole response; TransportError on any failure."""
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        parts: Sequence[Buffer] = (() if content is None else
                                   (content,) if isinstance(content, (bytes, bytearray,
                                                                      memoryview))
                                   else tuple(content))
        try:
            conn = self._usable()
            conn.sock.settimeout(self.timeout if timeout is None else timeout)
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self._host_header)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if parts or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(sum(memoryview(p).nbytes for p in parts)))
            conn.endheaders()
            for p in parts:
                conn.send(p)
            response = conn.getresponse()
            body = response.read()
            reply = Reply(response.status, Headers(response.getheaders()), body)
            if response.will_close:
                self.close()
            return reply
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # OSError covers refused/reset/timeouts and ssl.SSLError; ValueError a response
            # http.client could not parse. The connection may be mid-message: never reuse it.
            self.close()
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    def __enter__(self) -> "CoordinatorConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle kept-alive connection is readable only when the peer closed or reset it (or sent
    something unasked, which leaves it unusable too)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
