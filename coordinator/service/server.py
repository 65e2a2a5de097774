"""Serving the app: uvicorn over mutual TLS, in the current thread or a background one.

:func:`serve_in_thread` binds the socket itself (port 0 picks a free one), so the caller knows
the address before the server starts, and returns a handle whose :meth:`ServerHandle.stop`
ends the server within a bounded time.
"""

from __future__ import annotations

import importlib.util
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import uvicorn

from .connections import ConnectionLimits, with_deadlines
from .tls import PeerCertH11Protocol, PeerCertHttpToolsProtocol

__all__ = ["ServerHandle", "bind_socket", "uvicorn_config", "serve_in_thread"]


def uvicorn_config(app, context: ssl.SSLContext, *, log_level: str = "warning",
                   connections: ConnectionLimits = ConnectionLimits()) -> uvicorn.Config:
    """uvicorn's configuration for the service: our TLS context, the peer certificate in each
    request's scope, the connection deadlines of :mod:`.connections` (``connections.idle`` is
    also the keep-alive timeout), and uvicorn's own log records left to the process's logging
    set-up (``log_config=None``: JSON lines under ``cohort serve --log-json``), no access log."""
    # httptools parses in C and uvloop's TLS transport runs in C: together they cut the service's
    # CPU per uploaded megabyte by about half against h11 on asyncio's Python SSL layer.
    http = with_deadlines(PeerCertHttpToolsProtocol or PeerCertH11Protocol, connections)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return uvicorn.Config(app, http=http, loop=loop, ws="none", lifespan="on",
                          ssl_context_factory=lambda config, default: context,
                          log_level=log_level, log_config=None, timeout_graceful_shutdown=2,
                          timeout_keep_alive=connections.idle, access_log=False)


@dataclass
class ServerHandle:
    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound TCP socket for :func:`serve_in_thread` (port 0 picks a free one)."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every response waits ~40 ms for the peer's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve_in_thread(app, context: ssl.SSLContext, *, host: str = "127.0.0.1", port: int = 0,
                    start_timeout: float = 10.0, sock: socket.socket | None = None,
                    connections: ConnectionLimits = ConnectionLimits()) -> ServerHandle:
    """Serve ``app`` from a background thread on ``sock`` (or a new socket on host:port)."""
    if sock is None:
        sock = bind_socket(host, port)
    host = sock.getsockname()[0]
    server = uvicorn.Server(uvicorn_config(app, context, connections=connections))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="cohort-service", daemon=True)
    thread.start()
    until = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > until:
            server.should_exit = True
            raise RuntimeError("the coordinator service did not start")
        time.sleep(0.01)
    return ServerHandle(server, thread, host, sock.getsockname()[1])
