"""One round as the service runs it: steps, deadlines, dropouts and the inbox.

The service is byte-oriented and does not know what is summed. It drives a :class:`RoundHost`
(the coordinator-side half of one round) through *steps*: step 0 is every cohort member's first
message; each later step is the host's answer to :meth:`RoundHost.close_stage`, one message per
site. A stage with two client messages (secagg's advertise_keys: advertise, then the nonce
reveal) is two steps with the same stage name.

State machine of a :class:`RoundSession`::

    OPEN(step s, deadline) --every pending site answered (or every one left is revoked), or
                             the deadline passed-->
        close_stage(): {} -> DONE | messages -> OPEN(step s + 1, new deadline)
                       | ProtocolAbort -> ABORTED
    a site still pending when its step closes is a dropout: it gets no later work.

Every message goes through :meth:`RoundSession.accept`, which checks it against the open round
(round id, step, stage, the site's standing), hands it to the host, and only then records it in
the :class:`InboxStore`, the seam where durable state plugs in: same (round, step, site) and
same bytes again is an idempotent duplicate, different bytes are refused, and nothing a refused
message carried changes anything. The session never reads a clock itself except through the
``clock`` it is given, and never touches the network.
"""

from __future__ import annotations

import enum
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from secagg.errors import CohortError, ProtocolAbort, StageError

from .errors import NoRound

# Test-only knob (CONVENTIONS 12): True plants a coordinator that does not record a step it
# closed on its deadline, so a restart reopens that step (tests/test_coordinator_store.py).
_PLANT_FORGET_DEADLINE_CLOSE = False
# Test-only knob (CONVENTIONS 12): True plants a session that records a message in the inbox
# before the host has checked it, so a refused message leaves a row behind (the hostile-network
# fuzz in tests/test_net_fuzz.py must catch it).
_PLANT_STORE_BEFORE_CHECK = False
# Test-only knob (CONVENTIONS 12): True plants a session that waits for its deadline even when
# every site it still waits for has been revoked (tests/test_net_hostile.py must catch it).
_PLANT_WAIT_FOR_REVOKED = False

__all__ = ["RoundHost", "InboxStore", "MemoryInbox", "StoredMessage", "StoredStep", "RoundState", "RoundSession", "Work",
           "Finished", "Outcome", "StepRecord"]


class RoundHost(Protocol):
    """The coordinator side of one round."""

    stage: object

    def receive(self, sender: int, data: bytes) -> None: ...

    def close_stage(self) -> dict[int, bytes]: ...

    def pending(self) -> frozenset[int]: ...


class InboxStore(Protocol):
    """Every accepted message, keyed by (round, step, site); the durable store replaces this."""

    def digest(self, round_id: bytes, step: int, site: int) -> bytes | None: ...

    def put(self, round_id: bytes, step: int, stage: str, site: int, envelope: bytes,
            digest: bytes) -> None: ...

    def count(self, round_id: bytes) -> int: ...

    def messages(self, round_id: bytes, step: int) -> list["StoredMessage"]: ...

    def close_step(self, round_id: bytes, step: int, stage: str, answered, silent) -> None: ...

    def steps(self, round_id: bytes) -> list["StoredStep"]: ...


@dataclass(frozen=True)
class StoredMessage:
    """One accepted message as an inbox keeps it."""

    round_id: bytes
    step: int
    site: int
    stage: str
    envelope: bytes
    digest: bytes


@dataclass(frozen=True)
class StoredStep:
    """One closed step: who answered and who fell silent (the dropouts)."""

    round_id: bytes
    step: int
    stage: str
    answered: frozenset[int]
    silent: frozenset[int]


class MemoryInbox:
    def __init__(self) -> None:
        self._messages: dict[tuple[bytes, int, int], tuple[str, bytes, bytes]] = {}
        self._steps: dict[tuple[bytes, int], StoredStep] = {}

    def digest(self, round_id: bytes, step: int, site: int) -> bytes | None:
        entry = self._messages.get((round_id, step, site))
        return None if entry is None else entry[2]

    def put(self, round_id: bytes, step: int, stage: str, site: int, envelope: bytes,
            digest: bytes) -> None:
        self._messages[(round_id, step, site)] = (stage, envelope, digest)

    def count(self, round_id: bytes) -> int:
        return sum(1 for key in self._messages if key[0] == round_id)

    def envelopes(self, round_id: bytes) -> list[tuple[int, int, str, bytes]]:
        """(step, site, stage, envelope) for a round, in order: the verifiable transcript."""
        return sorted((step, site, stage, env) for (r, step, site), (stage, env, _)
                      in self._messages.items() if r == round_id)

    def messages(self, round_id: bytes, step: int) -> list[StoredMessage]:
        return [StoredMessage(r, st, site, stage, env, d) for (r, st, site), (stage, env, d)
                in sorted(self._messages.items()) if r == round_id and st == step]

    def close_step(self, round_id: bytes, step: int, stage: str, answered, silent) -> None:
        self._steps[(round_id, step)] = StoredStep(round_id, step, stage, frozenset(answered),
                                                   frozenset(silent))

    def steps(self, round_id: bytes) -> list[StoredStep]:
        return [c for (r, _), c in sorted(self._steps.items()) if r == round_id]


class RoundState(enum.Enum):
    OPEN = "open"
    DONE = "done"
    ABORTED = "aborted"


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Work:
    step: int
    stage: str
    body: bytes


@dataclass(frozen=True)
class Finished:
    reason: str  # done, aborted, dropped, not_in_round


@dataclass(frozen=True)
class StepRecord:
    step: int
    stage: str
    answered: frozenset[int]
    silent: frozenset[int]
    reason: str = "answered"
    """Why it closed: "answered" (no site left to wait for), "deadline", "revoked" (every site
    left was revoked) or "replayed" (rebuilt from the inbox after a restart)."""


def stage_name(stage: object) -> str:
    value = getattr(stage, "value", stage)
    return str(value)


@dataclass
class RoundSession:
    round_id: bytes
    host: RoundHost
    cohort: frozenset[int]
    limits: Callable[[object], int]  # the host's stage -> most body bytes a site may send
    stage_timeout: float
    inbox: InboxStore = field(default_factory=MemoryInbox)
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[], None] = lambda: None
    first: Mapping[int, bytes] | None = None  # step 0's body per site (default: empty)
    # Sites that may no longer send anything (revoked in the roster): once every site a step
    # still waits for is one of them, nothing more can arrive, and the step closes then, not at
    # its deadline. They become that step's silent sites, recorded as any close is.
    excluded: Callable[[], frozenset[int]] = frozenset

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self.state = RoundState.OPEN
        self.step = 0
        self.stage = stage_name(self.host.stage)
        self._step_stages: dict[int, object] = {0: self.host.stage}
        first = self.first or {}
        self._outbox: Mapping[int, bytes] = {c: first.get(c, b"") for c in self.cohort}
        self._answered: set[int] = set()
        self.deadline = self.clock() + self.stage_timeout
        self.dropouts: set[int] = set()
        self.history: list[StepRecord] = []
        self.abort_reason: str | None = None

    @property
    def outcome_bytes(self) -> bytes | None:
        """The round's outcome as its host gives it to a site that asks (None until known, or
        for a host that has none)."""
        return getattr(self.host, "outcome_bytes", None)

    # -- what a site may ask -----------------------------------------------------------------
    def work_for(self, site: int, after: int) -> Work | Finished | None:
        with self._lock:
            if site not in self.cohort:
                return Finished("not_in_round")
            if site in self.dropouts or (self.state is RoundState.OPEN
                                         and site not in self._outbox):
                return Finished("dropped")
            if self.state is RoundState.DONE:
                return Finished("done")
            if self.state is RoundState.ABORTED:
                return Finished("aborted")
            if self.step >= after:
                return Work(self.step, self.stage, self._outbox[site])
            return None

    def limit_for(self, step: int) -> int:
        """Most body bytes a site may post to ``step`` (refused with 409 when no such step)."""
        with self._lock:
            if step not in self._step_stages:
                raise StageError("no such step in this round")
            return self.limits(self._step_stages[step])

    # -- the one path every message takes -----------------------------------------------------
    def accept(self, site: int, round_id: bytes, step: int, stage: str, body: bytes,
               envelope: bytes, *, digest: bytes | None = None) -> Outcome:
        """``digest`` is sha256(body) when the caller has already checked it (a verified
        envelope), to save hashing a large body twice."""
        if digest is None:
            digest = hashlib.sha256(body).digest()
        with self._lock:
            if round_id != self.round_id:
                raise NoRound("the message belongs to another round")
            prior = self.inbox.digest(round_id, step, site)
            if prior is not None:
                if prior == digest:
                    return Outcome.DUPLICATE
                raise StageError("another message from this site was already accepted at "
                                 "this step")
            if self.state is not RoundState.OPEN:
                raise StageError(f"the round is {self.state.value}")
            if step != self.step or stage != self.stage:
                raise StageError("the message is for another step than the open one")
            if site not in self.host.pending():
                raise StageError("this site may not send at this step")
            if _PLANT_STORE_BEFORE_CHECK:
                self.inbox.put(round_id, step, stage, site, envelope, digest)
            self.host.receive(site, body)  # InvalidMessage / StageError propagate
            if not _PLANT_STORE_BEFORE_CHECK:
                self.inbox.put(round_id, step, stage, site, envelope, digest)
            self._answered.add(site)
            reason = self._closable()
            if reason is not None:
                self._close(reason=reason)
            return Outcome.ACCEPTED

    def tick(self) -> None:
        """Close the open step if its deadline has passed, or if every site it still waits for
        has been revoked."""
        with self._lock:
            if self.state is not RoundState.OPEN:
                return
            reason = "deadline" if self.clock() >= self.deadline else self._closable()
            if reason is not None:
                self._close(reason=reason)

    def _closable(self) -> str | None:
        """Why the open step can close now without its deadline: "answered" (nobody left to
        wait for), "revoked" (everybody left is revoked), or None."""
        pending = self.host.pending()
        if not pending:
            return "answered"
        if not _PLANT_WAIT_FOR_REVOKED and frozenset(pending) <= self.excluded():
            return "revoked"
        return None

    # -- a restart --------------------------------------------------------------------------
    def replay(self, body_of: Callable[[bytes], bytes]) -> int:
        """Bring a fresh session (and its fresh host) to where the stored inbox says the round
        was: every closed step's messages are handed to the host again and the step closed as it
        was (the same silent sites become dropouts), then the open step's messages. Nothing is
        written. ``body_of`` takes a stored envelope to the protocol message it carries. Returns
        the number of messages replayed; ``StageError`` if the host does not reproduce a stored
        step (the state file and the code disagree: nothing is guessed)."""
        replayed = 0
        with self._lock:
            closed = {c.step: c for c in self.inbox.steps(self.round_id)}
            while True:
                for m in self.inbox.messages(self.round_id, self.step):
                    if m.stage != self.stage or m.site not in self.host.pending():
                        raise StageError("the stored inbox does not fit the round's replay")
                    self.host.receive(m.site, body_of(m.envelope))
                    self._answered.add(m.site)
                    replayed += 1
                record = closed.get(self.step)
                if record is None:
                    break
                if frozenset(self.host.pending()) != record.silent or \
                        frozenset(self._answered) != record.answered:
                    raise StageError("the replay does not reproduce a stored step")
                self._close(record_step=False, reason="replayed")
                if self.state is not RoundState.OPEN:
                    break
            if self.state is RoundState.OPEN and not self.host.pending():
                self._close()
        return replayed

    def _close(self, *, record_step: bool = True, reason: str = "answered") -> None:
        silent = frozenset(self.host.pending())
        if record_step and not (_PLANT_FORGET_DEADLINE_CLOSE and silent):
            # Durable before the next step's messages exist: a restart must close this step the
            # same way, or two different survivor lists could leave an honest coordinator.
            self.inbox.close_step(self.round_id, self.step, self.stage, self._answered, silent)
        self.history.append(StepRecord(self.step, self.stage, frozenset(self._answered), silent,
                                       reason))
        self.dropouts |= silent
        try:
            out = self.host.close_stage()
        except ProtocolAbort as exc:
            self.state = RoundState.ABORTED
            self.abort_reason = str(exc)
            out = None
        except CohortError as exc:  # a host that refuses to go on has ended the round
            self.state = RoundState.ABORTED
            self.abort_reason = f"{type(exc).__name__}: {exc}"
            out = None
        if out is not None:
            if not out:
                self.state = RoundState.DONE
            else:
                self.step += 1
                self.stage = stage_name(self.host.stage)
                self._step_stages[self.step] = self.host.stage
                self._outbox = dict(out)
                self._answered = set()
                self.deadline = self.clock() + self.stage_timeout
        self.on_change()

    # -- for status and tests -------------------------------------------------------------------
    def snapshot(self) -> dict:
        with self._lock:
            return {
                "round": self.round_id.hex(),
                "state": self.state.value,
                "step": self.step,
                "stage": self.stage,
                "answered": sorted(self._answered),
                "pending": sorted(self.host.pending()) if self.state is RoundState.OPEN else [],
                "dropouts": sorted(self.dropouts),
                "messages": self.inbox.count(self.round_id),
                "deadline_in": (max(0.0, self.deadline - self.clock())
                                if self.state is RoundState.OPEN else None),
                "abort_reason": self.abort_reason,
            }

