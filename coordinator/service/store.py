"""The coordinator's durable state: one SQLite file, the inbox every round is replayed from.

DESIGN section 5: the coordinator's protocol state is its inbox. :class:`CoordinatorStore`
keeps, in one file (WAL, ``synchronous=FULL``):

- ``job``: the declared job (its TOML text) and when it started;
- ``rounds``: each round's id, number, configuration bytes (the round's work as every site got
  it), state, and its outcome once known;
- ``messages``: every accepted protocol message (the signed envelope, its stage and body
  digest), keyed by (round, step, site) and committed before the site is told it was accepted;
- ``steps``: each closed step, with who answered and who fell silent (the dropouts), so a
  replay closes the same steps the same way;
- ``releases``: every released aggregate (once released, a replay must not draw new noise: a
  second draw would be a second release);
- ``checkpoints``: the global model after each round and its metrics, with the parameters'
  SHA-256 so a torn or corrupt checkpoint is detected and the last good one used.

It implements :class:`.rounds.InboxStore`. The schema is versioned with ``PRAGMA user_version``;
:data:`MIGRATIONS` maps a version to the statements that bring it to the next, and a file from a
newer Cohort is refused, never guessed at. One connection serves every thread (the service's
event loop, the job's thread), behind a lock; every write is its own transaction.

Why hand-written SQL and not an ORM: six small tables, written on the hot path of every message,
whose durability rule (committed before acknowledged) must be visible at the call site.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from secagg.errors import CohortError

from .rounds import StoredMessage, StoredStep

__all__ = ["CoordinatorStore", "StoreError", "StoreVersionError", "SCHEMA_VERSION",
           "StoredMessage", "StoredStep", "Checkpoint"]

SCHEMA_VERSION = 2

_SCHEMA_V1 = (
    "CREATE TABLE job (id INTEGER PRIMARY KEY CHECK (id = 1), spec TEXT NOT NULL, "
    "started REAL NOT NULL)",
    "CREATE TABLE rounds (round_id BLOB PRIMARY KEY, number INTEGER NOT NULL UNIQUE, "
    "work BLOB NOT NULL, state TEXT NOT NULL DEFAULT 'open', outcome BLOB, "
    "opened REAL NOT NULL, ended REAL)",
    "CREATE TABLE messages (round_id BLOB NOT NULL REFERENCES rounds(round_id), "
    "step INTEGER NOT NULL, site INTEGER NOT NULL, stage TEXT NOT NULL, envelope BLOB NOT NULL, "
    "digest BLOB NOT NULL, received REAL NOT NULL, PRIMARY KEY (round_id, step, site))",
    "CREATE TABLE steps (round_id BLOB NOT NULL REFERENCES rounds(round_id), "
    "step INTEGER NOT NULL, stage TEXT NOT NULL, answered TEXT NOT NULL, silent TEXT NOT NULL, "
    "closed REAL NOT NULL, PRIMARY KEY (round_id, step))",
    "CREATE TABLE releases (round_id BLOB PRIMARY KEY REFERENCES rounds(round_id), "
    "aggregate BLOB NOT NULL, meta TEXT NOT NULL, sha256 BLOB NOT NULL, released REAL NOT NULL)",
    "CREATE TABLE checkpoints (number INTEGER PRIMARY KEY, params BLOB NOT NULL, "
    "sha256 BLOB NOT NULL, metrics TEXT NOT NULL, written REAL NOT NULL)",
)

# Version 2: which roster client id each site of a round has (the session speaks client ids,
# the announcement site names), so a status page or an audit can name who answered.
_V1_TO_V2 = (
    "CREATE TABLE round_sites (round_id BLOB NOT NULL REFERENCES rounds(round_id), "
    "client INTEGER NOT NULL, site TEXT NOT NULL, PRIMARY KEY (round_id, client))",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {0: _SCHEMA_V1, 1: _V1_TO_V2}
"""``MIGRATIONS[v]``: the statements that take a version-``v`` file to version ``v + 1``."""


class StoreError(CohortError):
    """The state file cannot be used as asked."""


class StoreVersionError(StoreError):
    """The state file's schema is not one this Cohort can read or migrate."""


@dataclass(frozen=True)
class Checkpoint:
    number: int
    params: bytes
    metrics: dict


class CoordinatorStore:
    """The coordinator's state file at ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(os.fspath(self.path), timeout=timeout,
                                     isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._write():
            self._migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "CoordinatorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _write(self):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._before_commit()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _before_commit(self) -> None:
        """Called inside every write transaction just before it commits (crash tests)."""

    def _migrate(self) -> None:
        version, = self._conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreVersionError(f"{self.path}: state schema version {version} is newer "
                                    f"than this Cohort's {SCHEMA_VERSION}")
        if version == 0 and self._tables() - {"sqlite_sequence"}:
            raise StoreVersionError(f"{self.path}: not a Cohort coordinator state file")
        while version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version]:
                self._conn.execute(statement)
            version += 1
            self._conn.execute(f"PRAGMA user_version = {version}")

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # -- the job --------------------------------------------------------------------------------
    def begin_job(self, spec: str) -> bool:
        """Record the job (its job.toml text) once. True if this file is new; False if it holds
        this same job (a restart); StoreError if it holds another job."""
        with self._write() as conn:
            row = conn.execute("SELECT spec FROM job").fetchone()
            if row is None:
                conn.execute("INSERT INTO job (id, spec, started) VALUES (1, ?, ?)",
                             (spec, time.time()))
                return True
        if row[0] != spec:
            raise StoreError(f"{self.path} holds another job; give a new state file or the "
                             "same job.toml")
        return False

    def job_spec(self) -> str | None:
        rows = self._read("SELECT spec FROM job")
        return rows[0][0] if rows else None

    # -- rounds ---------------------------------------------------------------------------------
    def open_round(self, round_id: bytes, number: int, work: bytes,
                   sites: dict[int, str] | None = None) -> None:
        """Record a round (and its sites' client ids) before any site hears of it; idempotent
        for the same round."""
        with self._write() as conn:
            row = conn.execute("SELECT number, work FROM rounds WHERE round_id = ?",
                               (round_id,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO rounds (round_id, number, work, opened) "
                             "VALUES (?, ?, ?, ?)", (round_id, number, work, time.time()))
                conn.executemany("INSERT INTO round_sites (round_id, client, site) "
                                 "VALUES (?, ?, ?)",
                                 [(round_id, c, name) for c, name in (sites or {}).items()])
            elif row != (number, work):
                raise StoreError("another round with this id is already recorded")

    def end_round(self, round_id: bytes, state: str, outcome: bytes | None) -> None:
        with self._write() as conn:
            conn.execute("UPDATE rounds SET state = ?, outcome = ?, ended = ? "
                         "WHERE round_id = ?", (state, outcome, time.time(), round_id))

    def rounds(self) -> list[tuple[bytes, int, str, bytes | None]]:
        """(round id, number, state, outcome) of every recorded round, in order."""
        return [(bytes(r), n, s, None if o is None else bytes(o)) for r, n, s, o in self._read(
            "SELECT round_id, number, state, outcome FROM rounds ORDER BY number")]

    def round_work(self, round_id: bytes) -> bytes:
        rows = self._read("SELECT work FROM rounds WHERE round_id = ?", (round_id,))
        if not rows:
            raise StoreError("no such round")
        return bytes(rows[0][0])

    # -- the inbox (rounds.InboxStore) ------------------------------------------------------------
    def digest(self, round_id: bytes, step: int, site: int) -> bytes | None:
        rows = self._read("SELECT digest FROM messages WHERE round_id = ? AND step = ? AND "
                          "site = ?", (round_id, step, site))
        return bytes(rows[0][0]) if rows else None

    def put(self, round_id: bytes, step: int, stage: str, site: int, envelope: bytes,
            digest: bytes) -> None:
        """Store one accepted message; it is on disk when this returns (then the site may be
        told it was accepted)."""
        with self._write() as conn:
            conn.execute("INSERT INTO messages (round_id, step, site, stage, envelope, digest, "
                         "received) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (round_id, step, site, stage, envelope, digest, time.time()))

    def count(self, round_id: bytes) -> int:
        return self._read("SELECT COUNT(*) FROM messages WHERE round_id = ?", (round_id,))[0][0]

    def envelopes(self, round_id: bytes) -> list[tuple[int, int, str, bytes]]:
        """(step, site, stage, envelope) for a round, in order: the verifiable transcript."""
        return [(step, site, stage, bytes(env)) for step, site, stage, env in self._read(
            "SELECT step, site, stage, envelope FROM messages WHERE round_id = ? "
            "ORDER BY step, site", (round_id,))]

    def messages(self, round_id: bytes, step: int) -> list[StoredMessage]:
        return [StoredMessage(round_id, step, site, stage, bytes(env), bytes(d))
                for site, stage, env, d in self._read(
                    "SELECT site, stage, envelope, digest FROM messages WHERE round_id = ? AND "
                    "step = ? ORDER BY site", (round_id, step))]

    def close_step(self, round_id: bytes, step: int, stage: str, answered: Iterable[int],
                   silent: Iterable[int]) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO steps (round_id, step, stage, answered, silent, "
                         "closed) VALUES (?, ?, ?, ?, ?, ?)",
                         (round_id, step, stage, json.dumps(sorted(answered)),
                          json.dumps(sorted(silent)), time.time()))

    def steps(self, round_id: bytes) -> list[StoredStep]:
        return [StoredStep(round_id, step, stage, frozenset(json.loads(a)),
                           frozenset(json.loads(s)))
                for step, stage, a, s in self._read(
                    "SELECT step, stage, answered, silent FROM steps WHERE round_id = ? "
                    "ORDER BY step", (round_id,))]

    # -- releases and checkpoints ---------------------------------------------------------------
    def release(self, round_id: bytes, aggregate: bytes, meta: dict) -> tuple[bytes, dict]:
        """Record a round's released aggregate (and what goes with it: the total weight, who is
        in it, its privacy event) once; a second call returns the first (a replay never
        releases twice, and never draws new noise)."""
        text = json.dumps(meta, sort_keys=True)
        with self._write() as conn:
            row = conn.execute("SELECT aggregate, meta FROM releases WHERE round_id = ?",
                               (round_id,)).fetchone()
            if row is not None:
                return bytes(row[0]), json.loads(row[1])
            conn.execute("INSERT INTO releases (round_id, aggregate, meta, sha256, released) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (round_id, aggregate, text,
                          hashlib.sha256(aggregate + text.encode()).digest(), time.time()))
        return aggregate, json.loads(text)

    def released(self, round_id: bytes) -> tuple[bytes, dict] | None:
        rows = self._read("SELECT aggregate, meta, sha256 FROM releases WHERE round_id = ?",
                          (round_id,))
        if not rows:
            return None
        aggregate, text, digest = bytes(rows[0][0]), rows[0][1], bytes(rows[0][2])
        if hashlib.sha256(aggregate + text.encode()).digest() != digest:
            raise StoreError("a stored release does not match its digest")
        return aggregate, json.loads(text)

    def checkpoint(self, number: int, params: bytes, metrics: dict) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO checkpoints (number, params, sha256, metrics, "
                         "written) VALUES (?, ?, ?, ?, ?)",
                         (number, params, hashlib.sha256(params).digest(),
                          json.dumps(metrics, sort_keys=True), time.time()))

    def checkpoint_at(self, number: int) -> Checkpoint | None:
        """Round ``number``'s checkpoint, or None if it is missing or corrupt."""
        rows = self._read("SELECT params, sha256, metrics FROM checkpoints WHERE number = ?",
                          (number,))
        if not rows or hashlib.sha256(bytes(rows[0][0])).digest() != bytes(rows[0][1]):
            return None
        return Checkpoint(number, bytes(rows[0][0]), json.loads(rows[0][2]))

    def last_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint whose parameters match their digest (a corrupt one is passed
        over, never used)."""
        for number, params, digest, metrics in self._read(
                "SELECT number, params, sha256, metrics FROM checkpoints ORDER BY number DESC"):
            params = bytes(params)
            if hashlib.sha256(params).digest() == bytes(digest):
                return Checkpoint(number, params, json.loads(metrics))
        return None
