"""The site agent's network loop: outbound HTTPS only, long-polling for work, every reply signed.

The agent drives a :class:`RoundParticipant` (the site-side half of one round) against the
coordinator's ``/v1`` API::

    after = 0
    loop (bounded by max_polls and run_seconds):
        GET /v1/work?after=<after>            (retried with back-off on transport errors/5xx)
          204 -> poll again
          410 -> the round is over for this site (done, aborted, dropped): stop
          200 -> step, stage, round from the headers; the body is the coordinator's message
                 reply = participant.start() at step 0, else participant.on_message(body)
                 None -> stop (the participant is done)
                 POST /v1/rounds/<round>/steps/<step>?wait=<poll_wait> the reply in a signed
                      envelope (retried: the coordinator treats the same bytes again as a
                      duplicate); when the response carries the next message (Cohort-Step
                      headers), that is the next poll's answer and no GET is sent
                 after = step + 1

In job mode (``rounds=``, a factory of one participant per round) the agent runs round after
round: step 0's body is the round's work, handed to the factory, which judges it before the
site computes anything (a refusal stops the agent); a 410 for a round, or a reply of None,
finishes that round, and the agent long-polls (``done=<round>``) for the next one until the
service says ``job_done``. It names its round in progress (``current=<round>``), so a round
that ended while it was between requests is never mistaken for the next one.

Connections are TLS 1.3 with the site's client certificate, the coordinator checked against the
consortium CA and its host name. A retryable answer (503 while the coordinator restores its
state, 429 when this site is over its request budget) is retried after the longer of the
back-off and the answer's ``Retry-After``. The report and the log (structured events of
:mod:`cohort.logs`) say what was sent (steps, stages, byte counts, status codes), never key
material or message contents.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cohort.logs import event
from secagg import envelope

from .connection import CoordinatorConnection, Reply, TransportError
from secagg.errors import CohortError, ProtocolAbort

__all__ = ["RoundParticipant", "SiteAgent", "AgentReport", "StepSent", "site_tls_context",
           "backoff_delay", "retry_after"]

log = logging.getLogger("cohort.agent")

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 60.0  # a longer Retry-After is waited out in steps of this, within the run


def retry_after(response: Reply) -> float | None:
    """The seconds a response's ``Retry-After`` asks for (delta-seconds form), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP-date, or junk: the back-off alone decides
    if not seconds >= 0 or seconds == float("inf"):
        return None
    return min(seconds, _MAX_RETRY_AFTER)


class RoundParticipant(Protocol):
    """The site side of one round. In job mode the agent also calls the participant's
    ``finished(how, outcome)``, if it has one, when the round ends for the site (``done``,
    ``dropped``, ``aborted: ...``, ``missed``), whether or not the round's last message reached
    it; ``outcome`` is the round's outcome fetched from the coordinator when the participant's
    ``wants_outcome()`` says it still needs one, else None."""

    def start(self) -> bytes: ...

    def on_message(self, data: bytes) -> bytes | None: ...


def site_tls_context(*, certfile: str | Path, keyfile: str | Path,
                     cafile: str | Path) -> ssl.SSLContext:
    """TLS 1.3, the coordinator checked against the consortium CA, the site's own certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(certfile), str(keyfile))
    return ctx


def backoff_delay(attempt: int, *, base: float, cap: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Exponential back-off with jitter: uniform in [d/2, d] for d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** attempt))
    return d / 2 + rng() * d / 2


@dataclass(frozen=True)
class StepSent:
    step: int
    stage: str
    bytes: int
    outcome: str


@dataclass
class AgentReport:
    client_id: int
    outcome: str = "stopped"  # done, aborted, dropped, not_in_round, refused, gave_up, ...
    detail: str = ""
    steps: list[StepSent] = field(default_factory=list)
    polls: int = 0
    retries: int = 0
    seconds: float = 0.0


class _GiveUp(Exception):
    pass


class SiteAgent:
    def __init__(self, *, base_url: str, tls: ssl.SSLContext, identity: Ed25519PrivateKey,
                 client_id: int, participant: RoundParticipant | None = None,
                 rounds: Callable[[bytes, bytes], RoundParticipant] | None = None,
                 poll_wait: float = 10.0,
                 max_polls: int = 1000, run_seconds: float = 600.0, max_attempts: int = 6,
                 max_outage: float = 300.0,
                 backoff_base: float = 0.1, backoff_cap: float = 5.0, start_after: int = 0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url
        self.identity = identity
        self.client_id = client_id
        if participant is not None and rounds is not None:
            raise ValueError("give a participant (one round) or rounds (a job), not both")
        self.participant = participant
        self.rounds = rounds  # job mode: (round id, step-0 body) -> that round's participant
        self.rounds_done: list[tuple[str, str]] = []  # job mode: (round hex, how it ended)
        self.poll_wait = poll_wait
        self.max_polls = max_polls
        self.run_seconds = run_seconds
        self.max_attempts = max_attempts
        self.max_outage = max_outage
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.start_after = start_after  # first step to ask for (a participant already under way)
        self._sleep = sleep
        self._http = CoordinatorConnection(base_url, tls, timeout=poll_wait + 30.0,
                                           connect_timeout=10.0)
        self.report = AgentReport(client_id)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "SiteAgent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one request, retried -------------------------------------------------------------------
    def _request(self, method: str, url: str, *, deadline: float, **kwargs) -> Reply:
        """One request, retried with back-off. A coordinator that answers with a retryable
        status gets ``max_attempts``; one that cannot be reached at all (down, restarting) is
        retried for up to ``max_outage`` seconds of back-off (within the run time), so a site
        rides out a coordinator restart and resumes where the coordinator's state says the
        round is."""
        attempt = answered = 0
        outage = 0.0  # seconds slept waiting for a coordinator that could not be reached
        while True:
            asked = status = None
            try:
                response = self._http.request(method, url, **kwargs)
                if response.status_code not in _RETRY_STATUS:
                    return response
                why, status = f"HTTP {response.status_code}", response.status_code
                answered += 1
                asked = retry_after(response)
            except TransportError as exc:
                why = str(exc).split(':')[0]
            attempt += 1
            if answered >= self.max_attempts:
                break
            delay = backoff_delay(min(attempt - 1, 30), base=self.backoff_base,
                                  cap=self.backoff_cap)
            if asked is not None:  # the coordinator said when: never sooner than that
                delay = max(delay, asked)
            if time.monotonic() + delay > deadline or (
                    answered == 0 and outage + delay > self.max_outage):
                break
            outage += delay if answered == 0 else 0.0
            self.report.retries += 1
            event(log, logging.INFO, "request_retry", "site %d: %s %s failed (%s); retrying in "
                  "%.2fs", self.client_id, method, url.split("?")[0], why, delay,
                  client=self.client_id, method=method, path=url.split("?")[0], error=why,
                  status=status, delay=round(delay, 3))
            self._sleep(delay)
        raise _GiveUp(f"{method} {url.split('?')[0]}: {why} after {attempt} attempts")

    def _fetch_outcome(self, round_hex: str, deadline: float) -> bytes | None:
        """A round's outcome for a site that was not told it (it dropped out after its masked
        input left): a few long polls, then None (the worst case stays charged)."""
        for _ in range(3):
            try:
                r = self._request("GET", f"/v1/rounds/{round_hex}/outcome?wait={self.poll_wait}",
                                  deadline=deadline)
            except _GiveUp:
                return None
            if r.status_code == 200:
                return r.content
            if r.status_code != 204:
                event(log, logging.INFO, "outcome_refused", "site %d: the outcome of round %s "
                      "was refused: %s", self.client_id, round_hex[:16], _refusal(r),
                      client=self.client_id, round=round_hex, status=r.status_code)
                return None
        return None

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> AgentReport:
        report = self.report
        start = time.monotonic()
        deadline = start + self.run_seconds
        after = self.start_after
        job = self.rounds is not None
        current: bytes | None = None  # job mode: the round in progress
        done = ""  # job mode: the last round this site is finished with

        def finish_round(round_hex: str, how: str) -> None:
            nonlocal after, current, done
            self.rounds_done.append((round_hex, how))
            ended = getattr(self.participant, "finished", None)
            if ended is not None:  # the participant settles what it can know for itself
                wants = getattr(self.participant, "wants_outcome", None)
                outcome = (self._fetch_outcome(round_hex, deadline)
                           if wants is not None and wants() else None)
                ended(how, outcome)
            event(log, logging.INFO, "round_ended", "site %d: round %s %s", self.client_id,
                  round_hex[:16], how, client=self.client_id, round=round_hex,
                  outcome=how.split(":")[0])
            after, current, done = 0, None, round_hex
            self.participant = None

        try:
            ahead: Reply | None = None  # the next message, from a POST's response
            while report.polls < self.max_polls and time.monotonic() < deadline:
                report.polls += 1
                mine = "" if current is None else current.hex()
                if ahead is not None:
                    r, ahead = ahead, None
                else:
                    r = self._request("GET", f"/v1/work?after={after}&wait={self.poll_wait}"
                                      f"&done={done}&current={mine}", deadline=deadline)
                if r.status_code == 204:
                    continue
                if r.status_code == 410:
                    state = _json(r).get("state", "finished")
                    if job and state != "job_done":
                        finish_round(_json(r).get("round", ""), state)
                        continue
                    report.outcome = state
                    break
                if r.status_code != 200:
                    report.outcome, report.detail = "refused", _refusal(r)
                    break
                round_id = bytes.fromhex(r.headers["cohort-round"])
                step = int(r.headers["cohort-step"])
                stage = r.headers["cohort-stage"]
                if job and round_id != current:
                    if step != 0:  # a round that started without this site
                        finish_round(round_id.hex(), "missed")
                        continue
                    try:  # the site judges the round before it computes anything
                        self.participant = self.rounds(round_id, r.content)
                    except CohortError as exc:
                        report.outcome, report.detail = "refused", f"{type(exc).__name__}: {exc}"
                        break
                    current = round_id
                try:
                    reply = (self.participant.start() if step == 0
                             else self.participant.on_message(r.content))
                except ProtocolAbort as exc:
                    if job:
                        finish_round(round_id.hex(), f"aborted: {exc}")
                        continue
                    report.outcome, report.detail = "aborted", f"{type(exc).__name__}: {exc}"
                    break
                if reply is None:
                    if job:
                        finish_round(round_id.hex(), "done")
                        continue
                    report.outcome = "done"
                    break
                sealed = envelope.seal_parts(self.identity, round_id=round_id,
                                             client=self.client_id, step=step, stage=stage,
                                             body=reply)
                p = self._request("POST", f"/v1/rounds/{round_id.hex()}/steps/{step}"
                                  f"?wait={self.poll_wait}", content=sealed, deadline=deadline,
                                  headers={"content-type": "application/octet-stream"})
                if p.status_code == 200:
                    if "cohort-step" in p.headers:  # accepted, and the next message came back
                        outcome = p.headers.get("cohort-outcome", "accepted")
                        ahead = p
                    else:
                        outcome = _json(p).get("outcome", "accepted")
                    report.steps.append(StepSent(step, stage, len(reply), outcome))
                    event(log, logging.INFO, "step_sent", "site %d: step %d (%s) sent %d bytes: "
                          "%s", self.client_id, step, stage, len(reply), outcome,
                          client=self.client_id, round=round_id.hex(), step=step, stage=stage,
                          bytes=len(reply), outcome=outcome, status=p.status_code)
                    after = step + 1
                elif p.status_code == 409:
                    # The round moved on without us (our step closed): ask what is left.
                    event(log, logging.INFO, "step_too_late", "site %d: step %d (%s) refused as "
                          "too late: %s", self.client_id, step, stage, _refusal(p),
                          client=self.client_id, round=round_id.hex(), step=step, stage=stage,
                          status=p.status_code)
                    after = step + 1
                else:
                    report.outcome, report.detail = "refused", _refusal(p)
                    break
            else:
                report.outcome = "gave_up"
                report.detail = "poll budget or run time exhausted"
        except _GiveUp as exc:
            report.outcome, report.detail = "gave_up", str(exc)
        except CohortError as exc:
            report.outcome, report.detail = "error", f"{type(exc).__name__}: {exc}"
        report.seconds = time.monotonic() - start
        event(log, logging.INFO, "agent_finished", "site %d: %s after %d polls, %d steps, %d "
              "retries (%s)", self.client_id, report.outcome, report.polls, len(report.steps),
              report.retries, report.detail, client=self.client_id, outcome=report.outcome,
              polls=report.polls, steps=len(report.steps), retries=report.retries)
        return report


def _json(r: Reply) -> dict:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _refusal(r: Reply) -> str:
    data = _json(r)
    return f"HTTP {r.status_code} {data.get('error', '')}: {data.get('detail', '')}".strip()
