"""The site ledger: a persistent, append-only record of a site's privacy events and its budget.

Each site keeps one SQLite file. Events are frozen (``events.py``) and stored as canonical JSON;
triggers forbid UPDATE and DELETE on them, so a written event's meaning never changes. Before a
round, :meth:`SiteLedger.check` says whether the round's event fits the budget;
:meth:`SiteLedger.charge` records it atomically: one ``BEGIN IMMEDIATE`` transaction reads every
event, composes them with the new one, refuses with ``BudgetExceeded`` (nothing written) when
the composition would exceed the budget, and otherwise writes the event and the running totals.
``BEGIN IMMEDIATE`` takes SQLite's write lock before reading, so concurrent charges from threads
or processes are serialised and none can slip past the budget. A crash mid-transaction leaves
the previous state (SQLite's journal rolls it back on the next open); budgets fail closed.
"""

from __future__ import annotations

import math
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from . import _validate as v
from .accountants import Accountant, compute_epsilon
from .errors import BudgetExceeded, ConfigurationError, LedgerError, UnsupportedEvent
from .events import GaussianEvent, PrivacyEvent, event_from_json, event_to_json

__all__ = ["Budget", "LedgerEntry", "SiteLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sites (
    site_id TEXT PRIMARY KEY,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    accountant TEXT NOT NULL,
    n_events INTEGER NOT NULL DEFAULT 0,
    spent_epsilon REAL NOT NULL DEFAULT 0.0
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL REFERENCES sites(site_id),
    round_id TEXT NOT NULL,
    event TEXT NOT NULL,
    epsilon_after REAL NOT NULL,
    UNIQUE (site_id, round_id)
);
CREATE TRIGGER IF NOT EXISTS events_immutable_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'privacy events are immutable'); END;
CREATE TRIGGER IF NOT EXISTS events_immutable_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'privacy events are immutable'); END;
"""


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A site's total privacy budget: (epsilon, delta)-DP over everything it ever releases."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", v.positive(self.epsilon, "epsilon"))
        object.__setattr__(self, "delta", v.probability(self.delta, "delta"))


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded charge: the round it paid for, its event and the epsilon spent after it."""

    round_id: str
    event: PrivacyEvent
    epsilon_after: float


class SiteLedger:
    """One site's ledger in the SQLite file at ``path`` (created on first use).

    ``budget`` is required when the site is new; for an existing site it may be omitted, and if
    given it must equal the budget on record (changing a budget is not a side effect of
    opening a file).
    """

    def __init__(self, path: str | os.PathLike[str], *, site_id: str,
                 budget: Budget | None = None, accountant: Accountant = Accountant.RDP,
                 timeout: float = 60.0) -> None:
        if not isinstance(site_id, str) or not site_id:
            raise ConfigurationError("site_id must be a non-empty string")
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigurationError("budget must be a Budget")
        if not isinstance(accountant, Accountant):
            raise ConfigurationError("accountant must be an Accountant")
        self._path = os.fspath(path)
        self._site_id = site_id
        self._timeout = v.positive(timeout, "timeout")
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT epsilon, delta, accountant FROM sites WHERE site_id = ?",
                                   (site_id,)).fetchone()
                if row is None:
                    if budget is None:
                        raise ConfigurationError(f"site {site_id!r} is new: a budget is required")
                    conn.execute("INSERT INTO sites (site_id, epsilon, delta, accountant) VALUES (?, ?, ?, ?)",
                                 (site_id, budget.epsilon, budget.delta, accountant.value))
                    row = (budget.epsilon, budget.delta, accountant.value)
                stored = Budget(epsilon=row[0], delta=row[1])
                if budget is not None and budget != stored:
                    raise LedgerError(f"site {site_id!r} has budget {stored}, not {budget}")
                if accountant.value != row[2]:
                    raise LedgerError(f"site {site_id!r} is accounted with {row[2]!r}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._budget = stored
        self._accountant = accountant
        self._verify()

    # -- plumbing ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _load_events(self, conn: sqlite3.Connection) -> list[LedgerEntry]:
        rows = conn.execute("SELECT round_id, event, epsilon_after FROM events WHERE site_id = ? "
                            "ORDER BY seq", (self._site_id,)).fetchall()
        return [LedgerEntry(r[0], event_from_json(r[1]), r[2]) for r in rows]

    def _verify(self) -> None:
        with closing(self._connect()) as conn:
            entries = self._load_events(conn)
            n_events, = conn.execute("SELECT n_events FROM sites WHERE site_id = ?",
                                     (self._site_id,)).fetchone()
        if n_events != len(entries):
            raise LedgerError(f"ledger of {self._site_id!r} is inconsistent: "
                              f"{len(entries)} events, totals say {n_events}")

    def _epsilon(self, events: list[PrivacyEvent]) -> float:
        return compute_epsilon(events, delta=self._budget.delta, accountant=self._accountant)

    def _record_totals(self, conn: sqlite3.Connection, n_events: int, spent: float) -> None:
        conn.execute("UPDATE sites SET n_events = ?, spent_epsilon = ? WHERE site_id = ?",
                     (n_events, spent, self._site_id))

    def _validated(self, event: PrivacyEvent) -> PrivacyEvent:
        checked = event_from_json(event_to_json(event))
        if self._accountant is Accountant.PRV and not isinstance(checked, GaussianEvent):
            raise UnsupportedEvent("this ledger uses the PRV accountant: Gaussian events only")
        return checked

    # -- public ------------------------------------------------------------------------
    @property
    def site_id(self) -> str:
        return self._site_id

    @property
    def budget(self) -> Budget:
        return self._budget

    @property
    def path(self) -> str:
        return self._path

    def entries(self) -> list[LedgerEntry]:
        with closing(self._connect()) as conn:
            return self._load_events(conn)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.entries())

    def spent(self) -> float:
        """Epsilon (at the budget's delta) of everything charged so far."""
        return self._epsilon([e.event for e in self.entries()])

    def remaining(self) -> float:
        return max(0.0, self._budget.epsilon - self.spent())

    def check(self, event: PrivacyEvent) -> float:
        """The epsilon the site would have spent after ``event``; raises ``BudgetExceeded``
        if that is over budget. Changes nothing."""
        event = self._validated(event)
        current = [e.event for e in self.entries()]
        spent = self._epsilon(current)
        after = self._epsilon(current + [event])
        if not after <= self._budget.epsilon:
            raise BudgetExceeded(
                f"site {self._site_id!r}: epsilon would be {after:.6g} > budget {self._budget.epsilon:.6g}",
                spent=spent, requested=after, budget=self._budget.epsilon)
        return after

    def charge(self, event: PrivacyEvent, *, round_id: str) -> float:
        """Record ``event`` for ``round_id`` atomically and return the epsilon spent after it.

        Charging the same round again with the same event returns the recorded total (a site
        that restarts mid-round can repeat its charge); with a different event it raises
        ``LedgerError``. Over budget: ``BudgetExceeded``, nothing written.
        """
        if not isinstance(round_id, str) or not round_id:
            raise ConfigurationError("round_id must be a non-empty string")
        event = self._validated(event)
        text = event_to_json(event)
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                existing = conn.execute(
                    "SELECT event, epsilon_after FROM events WHERE site_id = ? AND round_id = ?",
                    (self._site_id, round_id)).fetchone()
                if existing is not None:
                    conn.execute("ROLLBACK")
                    if existing[0] != text:
                        raise LedgerError(f"round {round_id!r} was charged with another event")
                    return float(existing[1])
                current = [e.event for e in self._load_events(conn)]
                spent = self._epsilon(current)
                after = self._epsilon(current + [event])
                if not (math.isfinite(after) and after <= self._budget.epsilon):
                    conn.execute("ROLLBACK")
                    raise BudgetExceeded(
                        f"site {self._site_id!r}: epsilon would be {after:.6g} > budget "
                        f"{self._budget.epsilon:.6g}; nothing charged",
                        spent=spent, requested=after, budget=self._budget.epsilon)
                conn.execute("INSERT INTO events (site_id, round_id, event, epsilon_after) "
                             "VALUES (?, ?, ?, ?)", (self._site_id, round_id, text, after))
                self._record_totals(conn, len(current) + 1, after)
                conn.execute("COMMIT")
                return after
            except (BudgetExceeded, LedgerError):
                raise
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def state_dict(self) -> dict[str, Any]:
        """A snapshot: site, budget, accountant and every (round_id, event)."""
        from .events import event_to_dict

        return {"site_id": self._site_id, "epsilon": self._budget.epsilon,
                "delta": self._budget.delta, "accountant": self._accountant.value,
                "entries": [{"round_id": e.round_id, "event": event_to_dict(e.event)}
                            for e in self.entries()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot into this ledger. Fails closed: the snapshot must be for this site
        and budget, and this ledger's entries must be a prefix of the snapshot's (a restore never
        forgets a charge); the missing entries are charged in order, within the budget."""
        from .events import event_from_dict

        try:
            site, eps, delta = state["site_id"], state["epsilon"], state["delta"]
            accountant = Accountant(state["accountant"])
            entries = [(str(e["round_id"]), event_from_dict(e["event"])) for e in state["entries"]]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"not a ledger state: {exc}") from exc
        if site != self._site_id or Budget(epsilon=eps, delta=delta) != self._budget \
                or accountant is not self._accountant:
            raise LedgerError("the snapshot is for another site, budget or accountant")
        mine = [(e.round_id, e.event) for e in self.entries()]
        if entries[: len(mine)] != mine:
            raise LedgerError("this ledger holds charges the snapshot does not")
        if self._epsilon([e for _, e in entries]) > self._budget.epsilon:
            raise BudgetExceeded("the snapshot is over budget", spent=self.spent(),
                                 requested=self._epsilon([e for _, e in entries]),
                                 budget=self._budget.epsilon)
        for round_id, event in entries[len(mine):]:
            self.charge(event, round_id=round_id)
