"""The site ledger: a persistent, append-only record of a site's privacy releases and budget.

Each site keeps one SQLite file (several sites and tracks may share it). A release is charged in
two phases, so that no release can escape the ledger (DESIGN section 2a):

1. :meth:`SiteLedger.reserve` durably records the *worst-case* event of a release, keyed by the
   release's unique 32-byte id, before the site sends anything that could be released (its
   masked input). Reservations count against the budget: the composition of every settled
   event, every open reservation and the new one must fit, else ``BudgetExceeded`` and nothing
   is written. A release id already on the ledger is refused (``ReleaseRepeated``): a site
   never releases twice for one round.
2. :meth:`SiteLedger.settle` replaces the reservation by the event that really happened, or by
   nothing (``None``: the round released nothing, e.g. it aborted or the site was not summed;
   the row stays, marked void). A settle is never refused for budget reasons: the release has
   happened, so it is recorded and the overrun is flagged. A reservation never settled (the
   outcome is unknown, e.g. the process died) stays charged at its worst case forever.

:meth:`SiteLedger.charge` is both phases in one transaction, for callers that release at once.

Every read-compose-write runs inside one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock
taken before reading), so handles in other threads or processes are serialised and none can slip
past the budget; a crash mid-transaction leaves the previous state. Rows are append-only:
triggers forbid DELETE and allow an UPDATE only from 'reserved' to 'settled' or 'void', with the
release's identity and worst case unchanged.

Tracks: each (site, :class:`LedgerTrack`) pair has its own budget and its own releases, and
events on different tracks are never composed (a site-level event protects a whole site's
data, an example-level one a single record: different neighbouring relations).

The schema is versioned with ``PRAGMA user_version``; a version-1 file (one table of events
keyed by a round label) is migrated on open, and a file of an unknown version is refused with
``LedgerVersionError``.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import sqlite3
import warnings
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from . import _validate as v
from .accountants import Accountant, compute_epsilon
from .errors import (
    BudgetExceeded,
    ConfigurationError,
    LedgerError,
    LedgerVersionError,
    ReleaseRepeated,
    UnsupportedEvent,
)
from .events import GaussianEvent, PrivacyEvent, event_from_json, event_to_json

__all__ = ["Budget", "LedgerEntry", "LedgerTrack", "ReleaseStatus", "SiteLedger"]

SCHEMA_VERSION = 2
RELEASE_ID_BYTES = 32

# Test-only knob (CONVENTIONS 12): True plants finding 9's defect, a site that charges only after
# it released (no reservation: reserve writes nothing, settle charges then and may be refused).
# The ledger's crash, concurrency and Hypothesis tests prove that they catch it.
_PLANT_CHARGE_AFTER_RELEASE = False


class LedgerTrack(enum.Enum):
    """Which neighbouring relation a ledger's events protect: one whole site, or one example."""

    SITE = "site"
    EXAMPLE = "example"


class ReleaseStatus(enum.Enum):
    """A release's row moves only forward: RESERVED -> SETTLED or RESERVED -> VOID."""

    RESERVED = "reserved"
    SETTLED = "settled"
    VOID = "void"


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ledger_sites (
        site_id TEXT NOT NULL,
        track TEXT NOT NULL CHECK (track IN ('site', 'example')),
        epsilon REAL NOT NULL,
        delta REAL NOT NULL,
        accountant TEXT NOT NULL,
        PRIMARY KEY (site_id, track))""",
    """CREATE TABLE IF NOT EXISTS releases (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        site_id TEXT NOT NULL,
        track TEXT NOT NULL,
        release_id TEXT NOT NULL CHECK (length(release_id) = 64),
        label TEXT NOT NULL DEFAULT '',
        worst TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('reserved', 'settled', 'void')),
        event TEXT CHECK ((status = 'settled') = (event IS NOT NULL)),
        epsilon_after REAL NOT NULL,
        overrun INTEGER NOT NULL DEFAULT 0 CHECK (overrun IN (0, 1)),
        UNIQUE (site_id, track, release_id),
        FOREIGN KEY (site_id, track) REFERENCES ledger_sites (site_id, track))""",
    """CREATE TRIGGER IF NOT EXISTS releases_no_delete BEFORE DELETE ON releases
        BEGIN SELECT RAISE(ABORT, 'privacy releases are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS releases_forward_only BEFORE UPDATE ON releases
        WHEN OLD.status <> 'reserved' OR NEW.status NOT IN ('settled', 'void')
          OR NEW.seq IS NOT OLD.seq OR NEW.site_id IS NOT OLD.site_id
          OR NEW.track IS NOT OLD.track OR NEW.release_id IS NOT OLD.release_id
          OR NEW.label IS NOT OLD.label OR NEW.worst IS NOT OLD.worst
        BEGIN SELECT RAISE(ABORT, 'a release only moves from reserved to settled or void'); END""",
    """CREATE TRIGGER IF NOT EXISTS ledger_sites_immutable BEFORE UPDATE ON ledger_sites
        BEGIN SELECT RAISE(ABORT, 'a budget on record never changes'); END""",
    """CREATE TRIGGER IF NOT EXISTS ledger_sites_no_delete BEFORE DELETE ON ledger_sites
        BEGIN SELECT RAISE(ABORT, 'a budget on record never changes'); END""",
)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A site's total privacy budget: (epsilon, delta)-DP over everything it ever releases.

    ``epsilon`` may be ``math.inf``: no cap, the ledger records every release and its epsilon
    (a simulation without a target keeps its sites' ledgers this way, for the audit)."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", v.positive(self.epsilon, "epsilon", allow_inf=True))
        object.__setattr__(self, "delta", v.probability(self.delta, "delta"))


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One release on the ledger.

    ``worst`` is the reserved worst-case event; ``event`` the settled one (None while reserved,
    or when void); ``epsilon_after`` the epsilon spent once this row was last written;
    ``overrun`` whether that went over the budget (only a settle can do that).
    """

    release_id: bytes
    status: ReleaseStatus
    worst: PrivacyEvent
    event: PrivacyEvent | None
    epsilon_after: float
    overrun: bool = False
    label: str = ""

    @property
    def charged(self) -> PrivacyEvent | None:
        """The event this release counts as: the worst case while the outcome is open."""
        if self.status is ReleaseStatus.RESERVED:
            return self.worst
        return self.event

    @property
    def round_id(self) -> str:
        """A human name for the release: its label, else its id in hex."""
        return self.label or self.release_id.hex()


def _release_key(release_id: object) -> str:
    if not isinstance(release_id, (bytes, bytearray)) or len(release_id) != RELEASE_ID_BYTES:
        raise ConfigurationError(f"release_id must be {RELEASE_ID_BYTES} bytes, got {release_id!r}")
    return bytes(release_id).hex()


def _label_release_id(label: str) -> bytes:
    """The release id of a charge named only by a label (version-1 files, ``round_id=``)."""
    return hashlib.sha256(b"cohort/privacy/ledger/label/v1\x00" + label.encode()).digest()


def _check_label(label: object) -> str:
    if not isinstance(label, str):
        raise ConfigurationError(f"label must be a string, got {label!r}")
    return label


class SiteLedger:
    """One site's ledger on one track, in the SQLite file at ``path`` (created on first use).

    ``budget`` is required when the (site, track) pair is new; for an existing one it may be
    omitted, and if given it must equal the budget on record (changing a budget is not a side
    effect of opening a file).
    """

    def __init__(self, path: str | os.PathLike[str], *, site_id: str,
                 budget: Budget | None = None, track: LedgerTrack = LedgerTrack.SITE,
                 accountant: Accountant = Accountant.RDP, timeout: float = 60.0) -> None:
        if not isinstance(site_id, str) or not site_id:
            raise ConfigurationError("site_id must be a non-empty string")
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigurationError("budget must be a Budget")
        if not isinstance(track, LedgerTrack):
            raise ConfigurationError(f"track must be a LedgerTrack, got {track!r}")
        if not isinstance(accountant, Accountant):
            raise ConfigurationError("accountant must be an Accountant")
        self._path = os.fspath(path)
        self._site_id = site_id
        self._track = track
        self._accountant = accountant
        self._timeout = v.positive(timeout, "timeout")
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            with _transaction(conn):
                _prepare_schema(conn)
                row = conn.execute(
                    "SELECT epsilon, delta, accountant FROM ledger_sites "
                    "WHERE site_id = ? AND track = ?", (site_id, track.value)).fetchone()
                if row is None:
                    if budget is None:
                        raise ConfigurationError(
                            f"site {site_id!r} ({track.value} track) is new: a budget is required")
                    conn.execute("INSERT INTO ledger_sites (site_id, track, epsilon, delta, "
                                 "accountant) VALUES (?, ?, ?, ?, ?)",
                                 (site_id, track.value, budget.epsilon, budget.delta,
                                  accountant.value))
                    row = (budget.epsilon, budget.delta, accountant.value)
                stored = Budget(epsilon=row[0], delta=row[1])
                if budget is not None and budget != stored:
                    raise LedgerError(f"site {site_id!r} has budget {stored}, not {budget}")
                if accountant.value != row[2]:
                    raise LedgerError(f"site {site_id!r} is accounted with {row[2]!r}")
        self._budget = stored

    # -- plumbing ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _before_commit(self, operation: str) -> None:
        """Called inside the write transaction just before it commits (a hook for crash tests)."""

    def _load(self, conn: sqlite3.Connection) -> list[LedgerEntry]:
        rows = conn.execute(
            "SELECT release_id, status, worst, event, epsilon_after, overrun, label FROM releases "
            "WHERE site_id = ? AND track = ? ORDER BY seq",
            (self._site_id, self._track.value)).fetchall()
        return [LedgerEntry(release_id=bytes.fromhex(r[0]), status=ReleaseStatus(r[1]),
                            worst=event_from_json(r[2]),
                            event=None if r[3] is None else event_from_json(r[3]),
                            epsilon_after=float(r[4]), overrun=bool(r[5]), label=r[6])
                for r in rows]

    def _epsilon(self, events: list[PrivacyEvent]) -> float:
        return compute_epsilon(events, delta=self._budget.delta, accountant=self._accountant)

    @staticmethod
    def _charged(entries: list[LedgerEntry]) -> list[PrivacyEvent]:
        return [e.charged for e in entries if e.charged is not None]

    def _validated(self, event: PrivacyEvent) -> PrivacyEvent:
        checked = event_from_json(event_to_json(event))
        if self._accountant is Accountant.PRV and not isinstance(checked, GaussianEvent):
            raise UnsupportedEvent("this ledger uses the PRV accountant: Gaussian events only")
        return checked

    def _refuse_if_over(self, current: list[PrivacyEvent], event: PrivacyEvent) -> float:
        """epsilon after ``event``; BudgetExceeded (and the caller writes nothing) if over."""
        after = self._epsilon(current + [event])
        if not (math.isfinite(after) and after <= self._budget.epsilon):
            raise BudgetExceeded(
                f"site {self._site_id!r} ({self._track.value} track): epsilon would be "
                f"{after:.6g} > budget {self._budget.epsilon:.6g}; nothing charged",
                spent=self._epsilon(current), requested=after, budget=self._budget.epsilon)
        return after

    def _refuse_repeat(self, conn: sqlite3.Connection, key: str) -> None:
        row = conn.execute("SELECT status FROM releases WHERE site_id = ? AND track = ? "
                           "AND release_id = ?", (self._site_id, self._track.value, key)).fetchone()
        if row is not None:
            raise ReleaseRepeated(f"release {key} is already on the ledger ({row[0]}): a site "
                                  "releases at most once per round")

    def _insert(self, conn: sqlite3.Connection, key: str, label: str, worst: str,
                status: ReleaseStatus, event: str | None, after: float) -> None:
        conn.execute("INSERT INTO releases (site_id, track, release_id, label, worst, status, "
                     "event, epsilon_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (self._site_id, self._track.value, key, label, worst, status.value, event,
                      after))

    # -- public ------------------------------------------------------------------------
    @property
    def site_id(self) -> str:
        return self._site_id

    @property
    def track(self) -> LedgerTrack:
        return self._track

    @property
    def budget(self) -> Budget:
        return self._budget

    @property
    def accountant(self) -> Accountant:
        return self._accountant

    @property
    def path(self) -> str:
        return self._path

    def entries(self) -> list[LedgerEntry]:
        """Every release on this track, in the order reserved (void ones included)."""
        with closing(self._connect()) as conn:
            return self._load(conn)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.entries())

    def spent(self) -> float:
        """Epsilon (at the budget's delta) of everything settled plus every open reservation."""
        return self._epsilon(self._charged(self.entries()))

    def remaining(self) -> float:
        return max(0.0, self._budget.epsilon - self.spent())

    @property
    def overrun(self) -> bool:
        """True when settled releases took the track over its budget (never by a reservation)."""
        return self.spent() > self._budget.epsilon

    def check(self, event: PrivacyEvent) -> float:
        """The epsilon spent after reserving ``event`` now; raises ``BudgetExceeded`` if that is
        over budget. Changes nothing."""
        event = self._validated(event)
        return self._refuse_if_over(self._charged(self.entries()), event)

    def reserve(self, release_id: bytes, worst: PrivacyEvent, *, label: str = "") -> float:
        """Durably reserve the worst case ``worst`` of release ``release_id`` (32 bytes); return
        the epsilon spent with it. Call before sending anything releasable.

        Raises ``ReleaseRepeated`` if the id is already on this track, ``BudgetExceeded`` if
        the reservation does not fit; either way nothing is written.
        """
        key = _release_key(release_id)
        worst = self._validated(worst)
        label = _check_label(label)
        if _PLANT_CHARGE_AFTER_RELEASE:
            return self.spent()
        text = event_to_json(worst)
        with closing(self._connect()) as conn, _transaction(conn):
            self._refuse_repeat(conn, key)
            after = self._refuse_if_over(self._charged(self._load(conn)), worst)
            self._insert(conn, key, label, text, ReleaseStatus.RESERVED, None, after)
            self._before_commit("reserve")
        return after

    def settle(self, release_id: bytes, event: PrivacyEvent | None) -> float:
        """Replace the reservation of ``release_id`` by what was released: ``event``, or None
        for nothing (the row is kept, void). Return the epsilon spent after it.

        Never refused for budget reasons: if the true event takes the track over its budget,
        it is recorded and flagged (``LedgerEntry.overrun``, :attr:`overrun`). Settling a
        release again with the same outcome returns the recorded figure (a restarted site may
        repeat it); with another outcome, or for a release never reserved, ``LedgerError``.
        """
        key = _release_key(release_id)
        checked = None if event is None else self._validated(event)
        text = None if checked is None else event_to_json(checked)
        status = ReleaseStatus.VOID if checked is None else ReleaseStatus.SETTLED
        with closing(self._connect()) as conn, _transaction(conn):
            row = conn.execute(
                "SELECT status, event, epsilon_after FROM releases WHERE site_id = ? "
                "AND track = ? AND release_id = ?",
                (self._site_id, self._track.value, key)).fetchone()
            if row is not None and row[0] == ReleaseStatus.RESERVED.value:
                others = self._charged([e for e in self._load(conn) if e.release_id.hex() != key])
                after = self._epsilon(others + ([checked] if checked is not None else []))
                overrun = not (math.isfinite(after) and after <= self._budget.epsilon)
                conn.execute("UPDATE releases SET status = ?, event = ?, epsilon_after = ?, "
                             "overrun = ? WHERE site_id = ? AND track = ? AND release_id = ?",
                             (status.value, text, after, int(overrun), self._site_id,
                              self._track.value, key))
                self._before_commit("settle")
                return after
        if row is None and _PLANT_CHARGE_AFTER_RELEASE:
            # The planted defect: the charge comes only now, after the release, and may fail.
            return self.spent() if checked is None else self.charge(checked, release_id=release_id)
        if row is None:
            raise LedgerError(f"release {key} was never reserved on this track")
        if row[0] == status.value and row[1] == text:
            return float(row[2])
        raise LedgerError(f"release {key} was already {row[0]} with another outcome")

    def charge(self, event: PrivacyEvent, *, release_id: bytes | None = None, label: str = "",
               round_id: str | None = None) -> float:
        """Reserve and settle ``event`` for ``release_id`` in one transaction (for a caller that
        releases at once); return the epsilon spent after it. ``ReleaseRepeated`` if the id is
        already on the ledger, ``BudgetExceeded`` if it does not fit; nothing written then.

        ``round_id`` (a string label) is deprecated: it names the release by its label, so a
        label charged twice is refused, never charged once.
        """
        if round_id is not None:
            if release_id is not None:
                raise ConfigurationError("give release_id or the deprecated round_id, not both")
            if not isinstance(round_id, str) or not round_id:
                raise ConfigurationError("round_id must be a non-empty string")
            warnings.warn("SiteLedger.charge(round_id=...) is deprecated: pass the release's "
                          "32-byte release_id", DeprecationWarning, stacklevel=2)
            release_id, label = _label_release_id(round_id), round_id
        if release_id is None:
            raise ConfigurationError("charge needs the release's release_id")
        key = _release_key(release_id)
        event = self._validated(event)
        label = _check_label(label)
        text = event_to_json(event)
        with closing(self._connect()) as conn, _transaction(conn):
            self._refuse_repeat(conn, key)
            after = self._refuse_if_over(self._charged(self._load(conn)), event)
            self._insert(conn, key, label, text, ReleaseStatus.SETTLED, text, after)
            self._before_commit("charge")
        return after

    def state_dict(self) -> dict[str, Any]:
        """A snapshot: site, track, budget, accountant and every release."""
        from .events import event_to_dict

        return {"version": SCHEMA_VERSION, "site_id": self._site_id, "track": self._track.value,
                "epsilon": self._budget.epsilon, "delta": self._budget.delta,
                "accountant": self._accountant.value,
                "entries": [{"release_id": e.release_id.hex(), "label": e.label,
                             "status": e.status.value, "worst": event_to_dict(e.worst),
                             "event": None if e.event is None else event_to_dict(e.event)}
                            for e in self.entries()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot into this ledger. Fails closed: the snapshot must be for this
        site, track, budget and accountant, and this ledger's releases must be a prefix of the
        snapshot's (a restore never forgets a charge). The missing releases are written as they
        were, in one transaction; like settles, they are past releases, so an overrun is flagged,
        never refused."""
        from .events import event_from_dict

        try:
            if state["version"] != SCHEMA_VERSION:
                raise ConfigurationError(f"unknown ledger state version {state['version']!r}")
            site, track = state["site_id"], LedgerTrack(state["track"])
            budget = Budget(epsilon=state["epsilon"], delta=state["delta"])
            accountant = Accountant(state["accountant"])
            rows = [(bytes.fromhex(e["release_id"]), _check_label(e["label"]),
                     ReleaseStatus(e["status"]), event_from_dict(e["worst"]),
                     None if e["event"] is None else event_from_dict(e["event"]))
                    for e in state["entries"]]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"not a ledger state: {exc}") from exc
        if site != self._site_id or track is not self._track or budget != self._budget \
                or accountant is not self._accountant:
            raise LedgerError("the snapshot is for another site, track, budget or accountant")
        for rid, _, status, worst, event in rows:
            _release_key(rid)
            self._validated(worst)
            if (status is ReleaseStatus.SETTLED) != (event is not None):
                raise ConfigurationError("a settled release, and only one, carries an event")
        with closing(self._connect()) as conn, _transaction(conn):
            mine = [(e.release_id, e.label, e.status, e.worst, e.event) for e in self._load(conn)]
            if rows[: len(mine)] != mine:
                raise LedgerError("this ledger holds releases the snapshot does not")
            charged = self._charged(self._load(conn))
            for rid, label, status, worst, event in rows[len(mine):]:
                counted = worst if status is ReleaseStatus.RESERVED else event
                if counted is not None:
                    charged.append(counted)
                after = self._epsilon(charged)
                self._insert(conn, rid.hex(), label, event_to_json(worst), status,
                             None if event is None else event_to_json(event), after)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (and by SQLite after a crash)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _prepare_schema(conn: sqlite3.Connection) -> None:
    """Inside the caller's write transaction: create, migrate or refuse the file's schema."""
    version, = conn.execute("PRAGMA user_version").fetchone()
    tables = _table_names(conn)
    if version == SCHEMA_VERSION:
        return
    if version == 0 and "ledger_sites" not in tables:
        for statement in _SCHEMA:
            conn.execute(statement)
        if {"sites", "events"} <= tables:
            _migrate_v1(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    raise LedgerVersionError(f"ledger schema version {version} is not {SCHEMA_VERSION}; "
                             "this Cohort cannot read it")


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Version 1 kept settled events keyed by a round label: each becomes a settled release
    whose id is derived from its label (so the same label can never be charged again). The old
    tables are kept, renamed, as the migration's audit trail."""
    for site_id, eps, delta, accountant in conn.execute(
            "SELECT site_id, epsilon, delta, accountant FROM sites").fetchall():
        conn.execute("INSERT INTO ledger_sites (site_id, track, epsilon, delta, accountant) "
                     "VALUES (?, 'site', ?, ?, ?)", (site_id, eps, delta, accountant))
    for site_id, label, event, after in conn.execute(
            "SELECT site_id, round_id, event, epsilon_after FROM events ORDER BY seq").fetchall():
        conn.execute("INSERT INTO releases (site_id, track, release_id, label, worst, status, "
                     "event, epsilon_after) VALUES (?, 'site', ?, ?, ?, 'settled', ?, ?)",
                     (site_id, _label_release_id(label).hex(), label, event, event, after))
    conn.execute("ALTER TABLE events RENAME TO v1_events")
    conn.execute("ALTER TABLE sites RENAME TO v1_sites")
