"""The coordinator's network service: one secure round over HTTPS with mutual TLS.

:class:`CoordinatorService` holds the roster and the open :class:`RoundSession`;
:func:`create_app` is its FastAPI app; :func:`serve_in_thread` serves it with uvicorn over TLS 1.3
with client certificates required. The wire envelope is :mod:`secagg.envelope`. Against a hostile
network: :class:`FileRoster` (revocation from the next request on), :class:`SiteRateLimiter`
(each site's request budget), :class:`ConnectionLimits` (deadlines for slow and stalled
connections).
"""

from __future__ import annotations

from .app import CoordinatorService, create_app
from .connections import ConnectionLimits
from .errors import BodyTimeout, MessageTooLarge, NoRound, RateLimited, WrongSender, status_for
from .limits import secagg_limits
from .ratelimit import RateLimit, SiteRateLimiter
from .roster import (FileRoster, MemoryRoster, SiteIdentity, SiteRoster, SiteStatus, fingerprint,
                     site_identity)
from .rounds import InboxStore, MemoryInbox, RoundHost, RoundSession, RoundState
from .server import ServerHandle, bind_socket, serve_in_thread, uvicorn_config
from .tls import PeerCertH11Protocol, peer_certificate, server_context

__all__ = [
    "CoordinatorService", "create_app", "bind_socket", "serve_in_thread", "ServerHandle", "uvicorn_config",
    "server_context", "PeerCertH11Protocol", "peer_certificate",
    "SiteIdentity", "SiteRoster", "SiteStatus", "MemoryRoster", "fingerprint", "site_identity",
    "RoundHost", "RoundSession", "RoundState", "InboxStore", "MemoryInbox", "secagg_limits",
    "MessageTooLarge", "BodyTimeout", "WrongSender", "NoRound", "status_for",
    "FileRoster", "ConnectionLimits", "RateLimit", "SiteRateLimiter", "RateLimited",
]
