"""Mutual TLS for the coordinator service, and how the verified peer certificate reaches the app.

The server context accepts TLS 1.3 only and requires a client certificate chaining to the
consortium CA (``ssl.CERT_REQUIRED``): a missing, expired or foreign certificate fails the
handshake and no request is ever parsed.

uvicorn's HTTP protocols do not put the peer certificate into the ASGI scope. asyncio's SSL
transport calls the protocol's ``connection_made`` only after the handshake, so
:class:`PeerCertH11Protocol` reads the verified leaf there (``ssl_object.getpeercert(True)``) and
wraps that connection's app so every request's scope carries the ASGI TLS extension,
``scope["extensions"]["tls"]`` with ``client_cert_chain`` (PEM, leaf first) and ``tls_version``.
The extension is written by the server process itself, after verification; nothing a client
sends can set it. The app refuses any request without it (fail closed).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn's C parser (httptools); the pure-Python h11 protocol otherwise
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency; h11 still works
    HttpToolsProtocol = None

__all__ = ["server_context", "PeerCertH11Protocol", "PeerCertHttpToolsProtocol",
           "peer_certificate"]

_TLS13 = 0x0304


def server_context(*, certfile: str | Path, keyfile: str | Path,
                   cafile: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(certfile), str(keyfile))
    ctx.load_verify_locations(cafile=str(cafile))
    return ctx


ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class _PeerCert:
    """Mixin for a uvicorn HTTP protocol: the handshake's verified client certificate in every
    request's scope."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            return  # no verified certificate: the app sees no TLS extension and refuses
        tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
               "tls_version": _TLS13 if ssl_object.version() == "TLSv1.3" else None,
               "client_cert_name": None, "client_cert_error": None, "server_cert": None,
               "cipher_suite": None}
        inner: ASGIApp = self.app

        async def app(scope: dict, receive: Callable, send: Callable) -> None:
            scope = dict(scope)
            scope["extensions"] = {**scope.get("extensions", {}), "tls": tls}
            await inner(scope, receive, send)

        self.app = app


def peer_certificate(scope: dict) -> bytes | None:
    """The DER leaf certificate the handshake verified, or None."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain or tls.get("tls_version") != _TLS13:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])


class PeerCertH11Protocol(_PeerCert, H11Protocol):
    """uvicorn's h11 (pure Python) protocol with the verified client certificate."""


PeerCertHttpToolsProtocol = (None if HttpToolsProtocol is None else
                             type("PeerCertHttpToolsProtocol", (_PeerCert, HttpToolsProtocol),
                                  {"__doc__": "uvicorn's httptools protocol with the verified "
                                              "client certificate.", "__module__": __name__}))
