"""The coordinator's HTTPS API (FastAPI), version 1.

``GET  /v1/work?after=N[&done=R]``        long-poll: the open round's message for the calling
                                           site at step >= N (200, binary body, headers
                                           ``Cohort-Round``/``Cohort-Step``/``Cohort-Stage``),
                                           204 when nothing came within the hold time, 410 with
                                           ``{"state": done|aborted|dropped|not_in_round}`` when
                                           the site has nothing more to do in this round.
``POST /v1/rounds/{round}/steps/{step}[?wait=W]``
                                           one signed envelope (``application/octet-stream``);
                                           200 ``{"outcome": "accepted"|"duplicate"}``; with
                                           ``wait``, the site's next message (as from
                                           ``/v1/work?after=step+1``, plus ``Cohort-Outcome``)
                                           when it is ready within W seconds, which saves the
                                           site one request per step.
``GET  /v1/rounds/{round}/outcome[?wait=W]`` the round's outcome (binary) for a site of its
                                           cohort, one that dropped out too; 204 while unknown.
``GET  /v1/status``                        the open round's state, and the caller's standing.

Who is calling is the roster entry of the client certificate the TLS handshake verified (see
:mod:`.tls`), looked up on every request, so a revoked site is refused from its next request on
(:class:`.roster.FileRoster` re-reads the kit's signed roster when it changes); no header or
body field is ever taken as an identity. Each site then spends a token of its own request
budget (:mod:`.ratelimit`): over it, 429 with ``Retry-After`` and nothing done. A posted envelope must name that same site
and verify under its identity key before :meth:`RoundSession.accept` sees it. Bodies are checked
against the step's size limit before they are read (Content-Length) and while they are read (a
length that lies, or chunked bodies), within a read deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from secagg import envelope
from cohort.contract import NotEnrolled
from cohort.logs import event
from secagg.errors import CohortError, InvalidMessage

from .errors import (BodyTimeout, InvalidRequest, MessageTooLarge, NoRound, NotReady,
                     RateLimited, WrongSender, status_for)
from .ratelimit import SiteRateLimiter
from .rounds import (Finished, InboxStore, MemoryInbox, RoundHost, RoundSession, RoundState,
                     Work)
from .roster import SiteIdentity, SiteRoster, fingerprint
from .tls import peer_certificate

__all__ = ["CoordinatorService", "create_app"]

log = logging.getLogger("cohort.service")

_PAST_ROUNDS = 16  # ended rounds whose outcome a site that dropped out may still ask for


@dataclass(frozen=True)
class EndedRound:
    """What the service keeps of a round once the next one opens: enough to give a site that
    dropped out the outcome, nothing more. The round's session (its inbox of model-sized
    envelopes, its host's vectors) is let go, so a long job holds one round's messages at a
    time and the next round's buffers reuse the last round's memory."""

    round_id: bytes
    cohort: frozenset[int]
    state: RoundState
    outcome_bytes: bytes | None

    @classmethod
    def of(cls, session: RoundSession) -> "EndedRound":
        return cls(session.round_id, session.cohort, session.state, session.outcome_bytes)


class CoordinatorService:
    """The service's state: the roster it consults and the round it runs (one at a time)."""

    def __init__(self, roster: SiteRoster, *, poll_hold: float = 10.0,
                 body_timeout: float = 30.0, tick: float = 0.05, ready: bool = True,
                 rate: SiteRateLimiter | None = None) -> None:
        self.roster = roster
        self.rate = rate  # each site's request budget; None: unlimited (tests of other things)
        # False while a restarted coordinator rebuilds its rounds from its state file: every
        # request gets 503 (retried by the sites), never an answer from half-restored state.
        self.ready = ready
        self.poll_hold = poll_hold
        self.body_timeout = body_timeout
        self.tick_seconds = tick
        self.session: RoundSession | None = None
        self.finished = False  # the job is over: no more rounds will open
        self.requests = 0  # requests that reached the app (a refused handshake never does)
        self.last_seen: dict[int, float] = {}
        self._lock = threading.Lock()
        self._past: dict[bytes, EndedRound] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def open_round(self, round_id: bytes, host: RoundHost, *, cohort: frozenset[int],
                   limits: Callable[[object], int], stage_timeout: float,
                   inbox: InboxStore | None = None,
                   first: dict[int, bytes] | None = None,
                   replay: Callable[[bytes], bytes] | None = None) -> RoundSession:
        """Open a round; ``first`` is each site's step-0 body (a job's round work). With
        ``replay`` (stored envelope -> protocol message), the round is rebuilt from the
        inbox's stored messages before any site can see it (a restart)."""
        session = RoundSession(round_id, host, frozenset(cohort), limits, stage_timeout,
                               inbox=inbox if inbox is not None else MemoryInbox(),
                               on_change=self._notify, first=first, excluded=self._revoked)
        if replay is not None:
            replayed = session.replay(replay)
            event(log, logging.INFO, "round_rebuilt", "round %s rebuilt from %d stored messages "
                  "at step %d", round_id.hex()[:16], replayed, session.step,
                  round=round_id.hex(), messages=replayed, step=session.step,
                  stage=session.stage)
        with self._lock:
            if self.session is not None:  # kept for its outcome, for sites that dropped out
                self._past[self.session.round_id] = EndedRound.of(self.session)
                while len(self._past) > _PAST_ROUNDS:
                    self._past.pop(next(iter(self._past)))
            self.session = session
        event(log, logging.INFO, "round_open", "round %s open: %d sites, stage timeout %.1fs",
              round_id.hex()[:16], len(cohort), stage_timeout, round=round_id.hex(),
              sites=len(cohort), stage=session.stage, stage_timeout=stage_timeout)
        self._notify()
        return session

    def _revoked(self) -> frozenset[int]:
        """Client ids the roster has revoked: an open step no longer waits for them."""
        revoked = getattr(self.roster, "revoked_clients", None)
        return revoked() if revoked is not None else frozenset()

    def finish(self) -> None:
        """No more rounds: every site's next poll is told the job is over."""
        self.finished = True
        self._notify()

    # -- wake-ups for long polls (set from the loop, or from another thread) ---------------------
    def _notify(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire()
        else:
            loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        if self._event is not None:
            self._event.set()
        self._event = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        event = self._event
        if event is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def ticker(self) -> None:
        while True:
            session = self.session
            if session is not None:
                session.tick()
            await asyncio.sleep(self.tick_seconds)

    # -- identity --------------------------------------------------------------------------------
    def identify(self, request: Request) -> SiteIdentity:
        self.requests += 1
        if not self.ready:
            raise NotReady("the coordinator is restoring its state; retry shortly")
        der = peer_certificate(request.scope)
        if der is None:
            raise NotEnrolled("no verified client certificate on this connection")
        site = self.roster.by_fingerprint(fingerprint(der))
        if site is None or not site.active:
            raise NotEnrolled("this certificate is not an active site of the consortium")
        if self.rate is not None:
            self.rate.take(site.client_id)  # RateLimited: refused before anything is read
        self.last_seen[site.client_id] = time.monotonic()
        return site

    def find(self, round_hex: str) -> RoundSession | EndedRound:
        """The open round or one of the last few, by id (NoRound otherwise)."""
        try:
            round_id = bytes.fromhex(round_hex)
        except ValueError:
            raise NoRound("not a round id") from None
        session = self.session
        if session is not None and session.round_id == round_id:
            return session
        with self._lock:
            past = self._past.get(round_id)
        if past is None:
            raise NoRound("no such round")
        return past

    def current(self, round_hex: str) -> RoundSession:
        session = self.session
        try:
            round_id = bytes.fromhex(round_hex)
        except ValueError:
            raise NoRound("not a round id") from None
        if session is None or session.round_id != round_id:
            raise NoRound("no such open round")
        return session


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidMessage("bad Content-Length")
        if int(declared) > limit:
            raise MessageTooLarge(f"the body is over this step's limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise MessageTooLarge(f"the body is over this step's limit of {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise BodyTimeout("the body did not arrive in time") from None
    return b"".join(chunks)  # one copy of the body, however many chunks it came in


def create_app(service: CoordinatorService) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service._loop = asyncio.get_running_loop()
        service._fire()
        task = asyncio.create_task(service.ticker())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="Cohort coordinator", version="1", lifespan=lifespan)

    @app.exception_handler(CohortError)
    async def refused(request: Request, exc: CohortError) -> JSONResponse:
        status = status_for(exc)
        event(log, logging.INFO, "request_refused", "refused %s %s: %d %s", request.method,
              request.url.path, status, type(exc).__name__, method=request.method,
              path=request.url.path, status=status, error=type(exc).__name__)
        headers = None
        if isinstance(exc, RateLimited):  # whole seconds (RFC 9110), never less than one
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status,
                            headers=headers)

    async def next_work(site: SiteIdentity, after: int, hold: float, done: str,
                        current: str, *, only_work: bool = False) -> Response | None:
        """The long poll: the site's message at step >= ``after`` within ``hold`` seconds.

        With ``only_work`` (a POST that also waits), anything but a message is None: the site
        learns how the round ended from its next GET, which answers it the same way."""
        until = time.monotonic() + hold
        while True:
            session = service.session
            item = None
            if current and (session is None or session.round_id.hex() != current.lower()):
                # the caller's round is no longer the open one: it is over for the caller
                return None if only_work else JSONResponse(
                    {"state": "done", "round": current.lower()}, 410)
            if session is not None and session.round_id.hex() != done.lower():
                item = session.work_for(site.client_id, after)
            if item is None and service.finished:
                return None if only_work else JSONResponse({"state": "job_done"}, 410)
            if isinstance(item, Work):
                return Response(item.body, media_type="application/octet-stream", headers={
                    "Cohort-Round": session.round_id.hex(), "Cohort-Step": str(item.step),
                    "Cohort-Stage": item.stage})
            if isinstance(item, Finished):
                return None if only_work else JSONResponse(
                    {"state": item.reason, "round": session.round_id.hex()}, 410)
            remaining = until - time.monotonic()
            if remaining <= 0:
                return None if only_work else Response(status_code=204)
            await service.wait_change(remaining)

    def hold_for(wait: float | None) -> float:
        if wait is not None and not math.isfinite(wait):
            raise InvalidRequest("wait must be a finite number of seconds")
        return service.poll_hold if wait is None else max(0.0, min(wait, service.poll_hold))

    @app.get("/v1/work")
    async def work(request: Request, after: int = 0, wait: float | None = None,
                   done: str = "", current: str = "") -> Response:
        site = service.identify(request)
        return await next_work(site, after, hold_for(wait), done, current)

    @app.post("/v1/rounds/{round_hex}/steps/{step}", openapi_extra={"requestBody": {
        "required": True, "description": "one signed envelope (secagg.envelope)",
        "content": {"application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}}}})
    async def post_message(request: Request, round_hex: str, step: int,
                           wait: float | None = None) -> Response:
        site = service.identify(request)
        hold = 0.0 if wait is None else hold_for(wait)
        session = service.current(round_hex)
        limit = session.limit_for(step) + envelope.MAX_OVERHEAD
        data = await _read_body(request, limit, service.body_timeout)
        sealed = envelope.parse(data)
        if sealed.client != site.client_id:
            raise WrongSender("the envelope names another site than this connection's")
        sealed.verify(site.identity_public)
        if sealed.round_id != session.round_id or sealed.step != step:
            raise InvalidMessage("the envelope is for another round or step than its URL")
        outcome = session.accept(site.client_id, sealed.round_id, sealed.step, sealed.stage,
                                 sealed.body, data, digest=sealed.digest)
        event(log, logging.INFO, "step_received", "site %s step %d (%s): %s, %d bytes",
              site.site_name, step, sealed.stage, outcome.value, len(sealed.body),
              round=round_hex, site=site.site_name, step=step, stage=sealed.stage,
              outcome=outcome.value, bytes=len(sealed.body))
        if hold > 0:
            # The reply to this step and the poll for the next in one request: the site's
            # next message comes back as this response's body when it is ready in time.
            nxt = await next_work(site, step + 1, hold, "", session.round_id.hex(),
                                  only_work=True)
            if nxt is not None:
                nxt.headers["Cohort-Outcome"] = outcome.value
                return nxt
        return JSONResponse({"outcome": outcome.value, "step": step})

    @app.get("/v1/rounds/{round_hex}/outcome")
    async def round_outcome(request: Request, round_hex: str,
                            wait: float | None = None) -> Response:
        """The round's outcome (``application/octet-stream``, the job's RoundOutcome) for a
        site of its cohort, also one that dropped out; 204 if it is not known within the
        wait. Refused for a site outside the round's cohort (403) and for an unknown round
        (409, as everywhere in this API)."""
        site = service.identify(request)
        session = service.find(round_hex)
        if site.client_id not in session.cohort:
            raise NotEnrolled("this site is not in that round's cohort")
        until = time.monotonic() + hold_for(wait)
        while True:
            data = session.outcome_bytes
            if data is not None:
                return Response(data, media_type="application/octet-stream")
            remaining = until - time.monotonic()
            if remaining <= 0 or session.state is not RoundState.OPEN:
                return Response(status_code=204)
            await service.wait_change(remaining)

    @app.get("/v1/status")
    async def status(request: Request) -> JSONResponse:
        site = service.identify(request)
        session = service.session
        if session is None:
            return JSONResponse({"round": None, "you": site.site_name})
        snap = session.snapshot()
        you = {"site": site.site_name, "in_round": site.client_id in session.cohort,
               "answered_this_step": site.client_id in snap["answered"],
               "dropped": site.client_id in snap["dropouts"]}
        return JSONResponse({"round": snap["round"], "state": snap["state"],
                             "step": snap["step"], "stage": snap["stage"],
                             "answered": len(snap["answered"]), "pending": len(snap["pending"]),
                             "dropouts": len(snap["dropouts"]),
                             "deadline_in": snap["deadline_in"], "you": you})

    return app
