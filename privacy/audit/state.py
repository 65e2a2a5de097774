"""A coordinator's state file (``cohort serve``'s SQLite database) as the records of a run:
:class:`StateFile`, the second :class:`~.records.RunRecords`.

The file holds what the coordinator received, never what it sent: the job's declaration, each
round's work as the sites got it (the announcement), every accepted message in the signed
envelope a site sealed it in, each closed step with who answered and who fell silent, each
release with its privacy event, and a checkpoint with the metrics it printed per round. The
audit needs the server's side too (the survivor lists it asked the sites to unmask against), so
it *regenerates* it: the coordinator's protocol state is a pure function of its inbox (DESIGN
section 5), so each round's stored messages are replayed, step by step, into a fresh
``secagg.SecAggServer``, whose outgoing messages are the ones an honest coordinator sent. The
replay is itself a check (``inbox replays as recorded``): the honest server must accept every
stored message, close every step with the recorded answers and dropouts, and sum exactly the
sites the stored outcome names. A coordinator that showed a site another view than the replay's
is caught by what that site sent back (its signed shares and view signature answer the view it
was shown). The replayed sum is then decoded as the coordinator decodes it, from the round's
announcement, and the stored release held to it (``the release is the secure sum``, see
:mod:`.release`): equal to it, bit for bit, when the coordinator adds no noise (modes none,
distributed, local), and within the declared noise of it in central DP (a two-sided chi-square
test; it cannot tell a fair noise draw from a chosen one of the same size). A coordinator that
applied to its model, and stored, anything else than the sites' secure sum is caught there, and
so is a release whose privacy event is not the one its announcement and its number of summed
sites determine (an event claiming more noise than was announced would understate epsilon).

With a roster (``--kit`` / ``--roster``, checked against the CA by :mod:`.roster`), every
stored envelope is verified under its site's identity key, and in malicious-server rounds the
replay also checks every advertised key's and every view's signature; without one that check is
reported as not made. Site ledgers live at the sites: given as files, or found beside the state
file where a deployment keeps them (``OUT/kits/SITE/ledger.sqlite``, as
``examples/three_hospitals`` lays them out); without any, the ledger checks are not made.
``metrics.jsonl`` and ``summary.json`` beside the file (``cohort serve --out``) are audited too.

The file is opened read-only (:func:`~.records.connect_read_only`): nothing is ever written
to it. A file that is not a state file, or of a schema version this audit does not know, is
refused with one :class:`~privacy.errors.AuditError`; anything unreadable inside it is a
problem, which fails the audit (CONVENTIONS 14).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from secagg import SecAggServer, Stage, envelope
from secagg.errors import CohortError, InvalidMessage, ProtocolAbort
from secagg.transcript import Direction, Transcript

from ..errors import AuditError, ReleaseMismatch
from ..events import event_to_dict
from ._wire import OUTCOME_ACK, Announcement, read_outcome, read_work
from .records import LedgerBook, RoundFacts, connect_read_only, read_ledgers
from .release import NOISE_FALSE_ALARM, RELEASE_TOLERANCE, ReleaseComparison, compare_release
from .report import Check
from .roster import RosterKeys

__all__ = ["STATE_SCHEMA", "StateFile", "ledger_files", "SIGNED", "REPLAYED", "RELEASED"]

STATE_SCHEMA = 2
"""The coordinator store's schema version this reader knows (``PRAGMA user_version``; it is
``coordinator.service.store.SCHEMA_VERSION``, which a test keeps equal)."""

_CORE = frozenset({"job", "rounds", "messages", "steps"})
_TABLES = _CORE | {"releases", "checkpoints", "round_sites"}
# The job file's defaults for what the audit reads of it (cohort.contract.Job; a test keeps
# them equal).
_DEFAULT_MODE, _DEFAULT_DELTA, _DEFAULT_NAME = "none", 1e-5, "job"

SIGNED = "every stored message signed by its site"
REPLAYED = "inbox replays as recorded"
RELEASED = "the release is the secure sum"
_LEDGER_CHECKS = ("every release charged", "no site over its budget")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _is_ledger(path: Path) -> bool:
    try:
        conn = connect_read_only(path)
        try:
            return {"ledger_sites", "releases"} <= _tables(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def ledger_files(folder: str | Path) -> list[Path]:
    """The site ledger databases in ``folder``: each ``SITE/ledger.sqlite`` (a kits folder, as
    ``cohort join`` keeps them) and each ``*.sqlite`` directly in it that is a ledger."""
    folder = Path(folder)
    found = set(folder.glob("*/ledger.sqlite")) | set(folder.glob("*.sqlite"))
    return sorted(p for p in found if p.is_file() and _is_ledger(p))


@dataclass(frozen=True)
class _Row:
    step: int
    site: int
    stage: str
    blob: bytes
    digest: bytes


@dataclass
class _Round:
    round_id: bytes
    announcement: Announcement
    names: dict[int, str]  # the service's client id -> site name
    steps: dict[int, tuple[str, frozenset[int], frozenset[int]]]  # step -> stage, answered, silent
    release: tuple[bytes, dict[str, Any] | None] | None  # stored bytes and meta (None: unread)


@dataclass
class _Analysis:
    transcript: Transcript | None
    problems: list[str] = field(default_factory=list)
    unsigned: list[str] = field(default_factory=list)
    replay: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    compared: list[ReleaseComparison] = field(default_factory=list)
    reached: bool = False  # the replay reached a sum to hold the stored release to
    messages: int = 0
    verified: int = 0


class StateFile:
    """The records of a coordinator's state file at ``path``. ``ledgers``: site ledger files
    (None: those beside the file, ``kits/*/ledger.sqlite``, if any); ``roster``: the verified
    roster the envelopes are checked against (None: they are not)."""

    kind = "coordinator state file"

    def __init__(self, path: str | Path, *, ledgers: Sequence[str | Path] | None = None,
                 roster: RosterKeys | None = None) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        self._roster = roster
        self._problems: list[str] = []
        self._rounds: list[RoundFacts] = []
        self._meta: dict[int, _Round] = {}
        self._analyses: dict[int, _Analysis] = {}
        try:
            self._conn = connect_read_only(self.path)
            version, = self._conn.execute("PRAGMA user_version").fetchone()
            tables = _tables(self._conn)
        except sqlite3.DatabaseError as exc:
            raise AuditError(f"{self.path} is not a coordinator state file ({exc})") from None
        if not _CORE <= tables:
            self._conn.close()
            raise AuditError(f"{self.path} is an SQLite database but not a coordinator state "
                             f"file (it lacks the table(s) {', '.join(sorted(_CORE - tables))})")
        if version != STATE_SCHEMA or not _TABLES <= tables:
            self._conn.close()
            raise AuditError(f"{self.path}: state schema version {version} is not one this "
                             f"audit reads (it reads version {STATE_SCHEMA})")
        try:
            self._read_job()
            self._read_rounds()
            self._metrics = self._read_checkpoints()
        except sqlite3.DatabaseError as exc:
            self._problems.append(f"{self.path.name} cannot be read: {exc}")
            self._metrics = []
        self._beside_metrics = self._beside_jsonl("metrics.jsonl")
        self._beside_summary = self._beside_json("summary.json")
        self._ledger_paths = ([Path(p) for p in ledgers] if ledgers is not None
                              else sorted((self.path.parent / "kits").glob("*/ledger.sqlite")))
        self._ledgers = self._read_ledgers() if self._ledger_paths else None

    # -- reading --------------------------------------------------------------------------------
    def _read_job(self) -> None:
        row = self._conn.execute("SELECT spec FROM job").fetchone()
        self.job_name, self.mode, self.delta = _DEFAULT_NAME, _DEFAULT_MODE, _DEFAULT_DELTA
        if row is None:
            self._problems.append("the state file records no job")
            return
        try:
            spec = tomllib.loads(row[0])
            self.job_name = str(spec.get("job", {}).get("name", _DEFAULT_NAME))
            privacy = spec.get("privacy", {})
            self.mode = str(privacy.get("mode", _DEFAULT_MODE))
            self.delta = float(privacy.get("delta", _DEFAULT_DELTA))
        except (tomllib.TOMLDecodeError, AttributeError, TypeError, ValueError) as exc:
            self._problems.append(f"the job's declaration cannot be read: {exc}")

    def _read_rounds(self) -> None:
        conn = self._conn
        for round_id, number, work, state, outcome in conn.execute(
                "SELECT round_id, number, work, state, outcome FROM rounds ORDER BY number"
        ).fetchall():
            round_id, label = bytes(round_id), f"round {number}"
            try:
                ann = read_work(bytes(work))
            except AuditError as exc:
                self._problems.append(f"{label}: its work cannot be read ({exc})")
                continue
            problems = self._problems
            if ann.release_id != round_id or ann.round_number != number:
                problems.append(f"{label}: its work announces round {ann.round_number} with "
                                "another id")
            names = {int(c): str(s) for c, s in conn.execute(
                "SELECT client, site FROM round_sites WHERE round_id = ?", (round_id,))}
            if sorted(names.values()) != sorted(ann.cohort):
                problems.append(f"{label}: the sites recorded for the round "
                                f"{sorted(names.values())} are not its announced cohort "
                                f"{sorted(ann.cohort)}")
            if state not in ("open", "done", "aborted"):
                problems.append(f"{label}: unknown round state {state!r}")
            told = None
            parsed = None
            if outcome is not None:
                try:
                    parsed = read_outcome(bytes(outcome))
                except AuditError as exc:
                    problems.append(f"{label}: its outcome cannot be read ({exc})")
                else:
                    if parsed.release_id != round_id:
                        problems.append(f"{label}: its outcome names another round")
            aborted = state == "aborted" or (parsed is not None and parsed.aborted)
            ended = state != "open"
            if ended and parsed is None and state != "aborted":
                problems.append(f"{label}: ended without a recorded outcome")
            included = tuple(sorted(parsed.included, key=lambda s: (
                ann.cohort.index(s) if s in ann.cohort else len(ann.cohort)))
                if parsed is not None and not aborted else ())
            if not set(included) <= set(ann.cohort):
                problems.append(f"{label}: the outcome names sites outside the cohort")
            event, release = self._release(round_id, label, included, aborted, ended)
            if ended:
                told = tuple(names.get(int(c), f"client {c}") for c, in conn.execute(
                    "SELECT site FROM messages WHERE round_id = ? AND stage = 'outcome' "
                    "ORDER BY site", (round_id,)))
            steps = {int(s): (str(st), frozenset(json.loads(a)), frozenset(json.loads(q)))
                     for s, st, a, q in conn.execute(
                         "SELECT step, stage, answered, silent FROM steps WHERE round_id = ?",
                         (round_id,))}
            self._meta[number] = _Round(round_id, ann, names, steps, release)
            enc = ann.encoding
            self._rounds.append(RoundFacts(
                round=number, task=ann.task, release_id=round_id.hex(), config=ann.config,
                sites=ann.cohort, mechanism=ann.privacy.mechanism.value, noise=enc.noise.value,
                local_variance=enc.local_variance, planned_clients=enc.expected_clients,
                aborted=aborted, included=included, event=event,
                transcript_file=f"{self.path.name}, round {number}", transcript_sha256="",
                ended=ended, told=told))

    def _release(self, round_id: bytes, label: str, included: tuple[str, ...], aborted: bool,
                 ended: bool) -> tuple[dict[str, Any] | None,
                                   tuple[bytes, dict[str, Any] | None] | None]:
        """The stored release's event, checked against its digest and the outcome, and the
        release itself (its bytes and meta, None for meta that cannot be read) for the
        replay to be held to."""
        row = self._conn.execute("SELECT aggregate, meta, sha256 FROM releases WHERE "
                                 "round_id = ?", (round_id,)).fetchone()
        if row is None:
            if ended and not aborted:
                self._problems.append(f"{label}: a sum was announced but no release is stored")
            return None, None
        aggregate, text, digest = bytes(row[0]), row[1], bytes(row[2])
        if hashlib.sha256(aggregate + text.encode()).digest() != digest:
            self._problems.append(f"{label}: the stored release does not match its digest")
        try:
            meta = json.loads(text)
            event = None if meta["event"] is None else json.loads(meta["event"])
            summed = tuple(meta["included"])
        except (KeyError, TypeError, ValueError) as exc:
            self._problems.append(f"{label}: the stored release cannot be read ({exc})")
            return None, (aggregate, None)
        if aborted:
            self._problems.append(f"{label}: a release is stored for a round that aborted")
        elif set(summed) != set(included):
            self._problems.append(f"{label}: the release sums {sorted(summed)}, the outcome "
                                  f"names {sorted(included)}")
        return event, (aggregate, meta if isinstance(meta, dict) else None)

    def _read_checkpoints(self) -> list[dict[str, Any]]:
        out = []
        for number, params, digest, metrics in self._conn.execute(
                "SELECT number, params, sha256, metrics FROM checkpoints ORDER BY number"):
            if hashlib.sha256(bytes(params)).digest() != bytes(digest):
                self._problems.append(f"round {number}: its checkpoint does not match its "
                                      "digest")
            try:
                m = json.loads(metrics)
                if int(m["round"]) != int(number):
                    raise ValueError(f"it is labelled round {m['round']}")
                out.append(m)
            except (KeyError, TypeError, ValueError) as exc:
                self._problems.append(f"round {number}: its checkpoint's metrics cannot be "
                                      f"read ({exc})")
        return out

    def _beside_jsonl(self, name: str) -> list[dict[str, Any]] | None:
        path = self.path.parent / name
        if not path.is_file():
            return None
        out = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as exc:
                    self._problems.append(f"{name} line {i + 1} is not JSON: {exc}")
        return out

    def _beside_json(self, name: str) -> dict[str, Any] | None:
        path = self.path.parent / name
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self._problems.append(f"{name} cannot be read: {exc}")
            return None
        if not isinstance(data, dict) or data.get("job") != self.job_name:
            self._problems.append(f"{name} beside the state file is not the summary of job "
                                  f"{self.job_name!r}")
            return None
        return data

    def _read_ledgers(self) -> list[LedgerBook]:
        books: dict[tuple[str, str], LedgerBook] = {}
        for path in self._ledger_paths:
            try:
                found = read_ledgers(path)
            except (OSError, sqlite3.DatabaseError, KeyError, TypeError, ValueError) as exc:
                self._problems.append(f"ledger {path} cannot be read: {exc}")
                continue
            for book in found:
                key = (book.site_id, book.track)
                if key in books:
                    self._problems.append(f"two ledgers given for {book.site_id} "
                                          f"({book.track} track)")
                books[key] = book
        return list(books.values())

    # -- one round: envelopes, signatures and the replay --------------------------------------
    def _rows(self, round_id: bytes) -> list[_Row]:
        return [_Row(int(s), int(c), str(st), bytes(e), bytes(d))
                for s, c, st, e, d in self._conn.execute(
                    "SELECT step, site, stage, envelope, digest FROM messages WHERE round_id = ? "
                    "ORDER BY step, site", (round_id,))]

    def _analyse(self, facts: RoundFacts, *, keep: bool) -> _Analysis:
        cached = self._analyses.get(facts.round)
        if cached is not None and (cached.transcript is not None or not keep):
            return cached
        for other in self._analyses.values():  # one round's transcript in memory at a time
            other.transcript = None
        meta = self._meta[facts.round]
        out = _Analysis(Transcript(facts.config))
        label = facts.label
        bodies: dict[int, list[tuple[_Row, bytes]]] = {}
        roster = self._roster
        for row in self._rows(meta.round_id):
            out.messages += 1
            where = f"{label} step {row.step}, {meta.names.get(row.site, f'client {row.site}')}"
            try:
                sealed = envelope.parse(row.blob)
            except InvalidMessage as exc:
                out.problems.append(f"{where}: the stored envelope does not parse ({exc})")
                if roster is not None:
                    out.unsigned.append(f"{where}: the stored envelope does not parse, so no "
                                        "signature on it can be verified")
                continue
            body = bytes(sealed.body)
            if (sealed.round_id != meta.round_id or sealed.client != row.site
                    or sealed.step != row.step or sealed.stage != row.stage
                    or sealed.digest != row.digest
                    or hashlib.sha256(body).digest() != sealed.digest):
                out.problems.append(f"{where}: the stored envelope does not match its row "
                                    "(round, site, step, stage or body digest)")
            if roster is not None:
                site = roster.sites.get(row.site)
                if site is None:
                    out.unsigned.append(f"{where}: client {row.site} is not in the "
                                        f"{roster.describe()}")
                else:
                    if site.name != meta.names.get(row.site):
                        out.unsigned.append(f"{where}: client {row.site} is "
                                            f"{site.name} in the roster")
                    try:
                        sealed.verify(site.identity)
                        out.verified += 1
                    except InvalidMessage:
                        out.unsigned.append(f"{where}: the envelope does not verify under "
                                            f"{site.name}'s identity key")
            bodies.setdefault(row.step, []).append((row, body))
        self._replay(facts, meta, bodies, out)
        if meta.release is not None and not out.reached:
            out.released.append(f"{label}: a release is stored, but the replayed inbox "
                                "reaches no secure sum it could be the release of")
        if not keep:
            out.transcript = None
        self._analyses[facts.round] = out
        return out

    def _directory(self, meta: _Round):
        """secagg client id -> identity key, for the replay of a malicious-server round."""
        if self._roster is None or not meta.announcement.config.malicious:
            return None
        index = {name: i for i, name in enumerate(meta.announcement.cohort)}
        keys = {index[name]: self._roster.sites[c].identity for c, name in meta.names.items()
                if c in self._roster.sites and name in index}
        return keys if len(keys) == len(index) else None

    def _replay(self, facts: RoundFacts, meta: _Round,
                bodies: dict[int, list[tuple[_Row, bytes]]], out: _Analysis) -> None:
        """The stored inbox into a fresh secagg server, step by step (see the module
        docstring); the server's messages go into the transcript, every disagreement into
        ``out.replay``."""
        ann, label, bad = meta.announcement, facts.label, out.replay
        cohort = ann.cohort
        index = {c: cohort.index(n) for c, n in meta.names.items() if n in cohort}
        site_of = {i: c for c, i in index.items()}
        name = lambda c: meta.names.get(c, f"client {c}")  # noqa: E731
        server = SecAggServer(ann.config, directory=self._directory(meta))
        transcript = out.transcript
        phase, told, step = "secagg", frozenset(), 0
        while True:
            rows = bodies.pop(step, [])
            where = f"{label} step {step}"
            stage = server.stage if phase == "secagg" else None
            for row, body in rows:
                if phase != "secagg":
                    if row.stage != "outcome" or body != OUTCOME_ACK or row.site not in told:
                        bad.append(f"{where}: {name(row.site)}'s message is not an "
                                   "acknowledgement of the outcome it was told")
                    continue
                if row.stage != stage.value:
                    bad.append(f"{where}: {name(row.site)}'s message is stored as stage "
                               f"{row.stage!r}; the replayed server is at {stage.value}")
                party = index.get(row.site)
                if party is None:
                    bad.append(f"{where}: a message from {name(row.site)}, who is not in the "
                               "round")
                    continue
                transcript.record(stage, Direction.TO_SERVER, party, body)
                try:
                    server.receive(body, sender=party)
                except InvalidMessage as exc:
                    bad.append(f"{where}: the replayed server refuses {name(row.site)}'s "
                               f"{stage.value} message ({exc})")
            record = meta.steps.get(step)
            if record is None:
                if facts.ended and phase != "over":
                    bad.append(f"{where}: never recorded closed, yet the round ended")
                break
            answered = frozenset(row.site for row, _ in rows)
            silent = (frozenset(site_of[c] for c in server.pending() if c in site_of)
                      if phase == "secagg" else told - answered)
            if (record[1], record[2]) != (answered, silent):
                bad.append(f"{where}: stored as answered {sorted(map(name, record[1]))}, "
                           f"silent {sorted(map(name, record[2]))}; the replay has answered "
                           f"{sorted(map(name, answered))}, silent {sorted(map(name, silent))}")
            step += 1
            if phase == "outcome":
                phase = "over"
                break
            try:
                sent = server.close_stage()
            except ProtocolAbort as exc:
                if not facts.aborted:
                    bad.append(f"{where}: the replayed round aborts ({exc}); the stored round "
                               "released a sum")
                phase, told = "outcome", answered
            except CohortError as exc:  # the service ends the round without an outcome
                bad.append(f"{where}: the replayed server stops ({type(exc).__name__}: {exc})")
                phase = "over"
                break
            else:
                if sent:
                    following = server.stage
                    for party, data in sorted(sent.items()):
                        transcript.record(following, Direction.FROM_SERVER, party, data)
                    continue
                self._compare(facts, meta, server.result.aggregate, out)
                summed = sorted(cohort[c] for c in server.result.included)
                if facts.aborted or summed != sorted(facts.included):
                    stored = "an abort" if facts.aborted else sorted(facts.included)
                    bad.append(f"{label}: the replayed server sums {summed}; the stored "
                               f"outcome names {stored}")
                phase, told = "outcome", answered
            if not told:
                phase = "over"
                break
        if bodies:
            bad.append(f"{label}: messages stored at step(s) {sorted(bodies)}, past where the "
                       "round's replay ends")

    def _compare(self, facts: RoundFacts, meta: _Round, aggregate: np.ndarray,
                 out: _Analysis) -> None:
        """The stored release held to the replayed server's sum (``.release``): decoded as the
        coordinator decodes it, equal to it, or within the declared central noise of it."""
        out.reached = True
        if meta.release is None:
            return  # nothing released: a missing release is reported with the records
        blob, info = meta.release
        try:
            if info is None:
                raise ReleaseMismatch("the stored release cannot be read, so it cannot be held "
                                      "to the replayed secure sum")
            if len(blob) % 8:
                raise ReleaseMismatch(f"the stored release is {len(blob)} bytes, not a vector "
                                      "of float64s")
            total = float(info["total_weight"])
            out.compared.append(compare_release(meta.announcement, aggregate,
                                                np.frombuffer(blob, dtype="<f8"), total))
            # The event charged for the release is the one the announcement (which every site
            # checked before it took part) and the number summed determine: an event claiming
            # more noise than that would understate epsilon, with or without ledgers to hand.
            ann = meta.announcement
            try:
                owed = ann.privacy.event(ann.encoding, survivors=len(facts.included))
                owed = None if owed is None else event_to_dict(owed)
            except CohortError as exc:  # an announcement that makes no event at all
                raise ReleaseMismatch(
                    f"the stored release charges {facts.event}; its announcement and its "
                    f"{len(facts.included)} summed sites make no event ({exc})") from None
            if facts.event != owed:
                raise ReleaseMismatch(
                    f"the stored release charges {facts.event}; its announcement and its "
                    f"{len(facts.included)} summed sites make the event {owed}")
        except ReleaseMismatch as exc:
            out.released.append(f"{facts.label}: {exc}")
        except (KeyError, TypeError, ValueError, CohortError) as exc:  # fail closed
            out.released.append(f"{facts.label}: the stored release cannot be held to the "
                                f"replayed secure sum ({type(exc).__name__}: {exc})")

    # -- RunRecords ----------------------------------------------------------------------------
    @property
    def summary_name(self) -> str:
        return ("summary.json" if self._beside_summary is not None
                else "the state file's last checkpoint")

    def summary(self) -> dict[str, Any]:
        # Differential privacy if the job declared it or any round announced a mechanism
        # (fail closed: an epsilon is then owed).
        mode = self.mode if self.mode != "none" else next(
            (f.mechanism for f in self._rounds if f.mechanism != "none"), "none")
        if self._beside_summary is not None:
            claim = self._beside_summary.get("epsilon")
        else:
            claim = next((m.get("epsilon") for m in reversed(self._metrics)), None)
        return {"config": {"dp": mode, "secagg": True, "dp_sgd": None, "delta": self.delta},
                "delta": self.delta if mode != "none" else None, "epsilon": claim}

    def metrics(self) -> list[dict[str, Any]]:
        return list(self._metrics)

    def printed(self) -> list[tuple[str, list[dict[str, Any]]]]:
        out = [("the state file's checkpoints", list(self._metrics))]
        if self._beside_metrics is not None:
            out.append(("metrics.jsonl", self._beside_metrics))
        return out

    def rounds(self) -> list[RoundFacts]:
        return list(self._rounds)

    def transcript(self, facts: RoundFacts) -> Transcript:
        """The round's transcript: the stored inbox and the replayed server's messages."""
        t = self._analyse(facts, keep=True).transcript
        assert t is not None
        return t

    def uploads(self, facts: RoundFacts) -> list[tuple[int, bytes]]:
        return [(e.party, e.data) for e in
                self.transcript(facts).entries(Stage.MASKED_INPUT, Direction.TO_SERVER)]

    def ledgers(self) -> list[LedgerBook] | None:
        return self._ledgers

    def ledger_paths(self) -> list[Path]:
        return list(self._ledger_paths)

    def ledger_sites(self) -> frozenset[str] | None:
        return frozenset(b.site_id for b in self._ledgers or ())

    def not_made(self) -> dict[str, str]:
        if self._ledgers is not None:
            return {}
        why = ("no site ledger was given: the ledgers are kept at the sites, not in the "
               "coordinator's state (give --ledger FILE or --ledgers DIR, or keep them beside "
               "the state file as kits/SITE/ledger.sqlite)")
        return {name: why for name in _LEDGER_CHECKS}

    def _all(self) -> list[_Analysis]:
        return [self._analyse(f, keep=False) for f in self._rounds]

    def integrity(self) -> list[Check]:
        analyses = self._all()
        messages = sum(a.messages for a in analyses)
        replay = [d for a in analyses for d in a.replay]
        checks = []
        if self._roster is None:
            checks.append(Check(
                SIGNED, False, "no roster given: the stored envelopes were not checked "
                "against the sites' identity keys (give --kit DIR or --roster FILE, the "
                "consortium's CA-signed roster)", made=False,
                defect="a stored message that its site did not sign"))
        else:
            unsigned = [d for a in analyses for d in a.unsigned]
            verified = sum(a.verified for a in analyses)
            checks.append(Check(
                SIGNED, not unsigned and verified == messages and messages > 0,
                (f"{verified} stored envelopes each verify under their site's identity key in "
                 f"the {self._roster.describe()}; malicious-server rounds were replayed with "
                 "those keys, so every advertised key and view signature verified too")
                if not unsigned else unsigned[0], unsigned,
                defect="a stored message that its site did not sign"))
        checks.append(Check(
            REPLAYED, not replay and bool(analyses),
            (f"{len(analyses)} rounds, {messages} stored messages replayed into a fresh secagg "
             "server: each accepted, every step closed with its recorded answers and "
             "dropouts, every sum of exactly the sites its outcome names") if not replay
            else replay[0], replay,
            defect="a state file an honest server could not have produced: a message altered "
                   "or injected, a step or an outcome rewritten"))
        released = [d for a in analyses for d in a.released]
        compared = [c for a in analyses for c in a.compared]
        exact = [c for c in compared if not c.central]
        noisy = [c for c in compared if c.central]
        found = []
        if exact:
            found.append(f"{len(exact)} stored releases equal to the replayed secure sum's "
                         "decoding (largest difference "
                         f"{max(c.max_difference for c in exact):.3g}, tolerance "
                         f"{RELEASE_TOLERANCE:g})")
        if noisy:
            found.append(f"{len(noisy)} central-DP releases within the declared noise of the "
                         "replayed secure sum's decoding (two-sided chi-square, false alarm "
                         f"{NOISE_FALSE_ALARM:g} per round; it cannot tell a fair noise draw "
                         "from a chosen one of the same size)")
        checks.append(Check(
            RELEASED, not released and bool(analyses),
            ("; ".join(found) or "no round released a sum") if not released else released[0],
            released,
            defect="a release that is not the secure sum the sites' messages produce: altered, "
                   "scaled, the sum of other sites, or its central noise left out or "
                   "inflated"))
        return checks

    def problems(self) -> list[str]:
        return self._problems + [p for a in self._all() for p in a.problems]

    def notes(self) -> list[str]:
        """What a reader of the report needs to know about these records."""
        out = ["The coordinator stores only what it received. The server's messages (the "
               "survivor lists it asked the sites to unmask against) were regenerated by "
               "replaying each round's stored inbox into a fresh secagg server; what each site "
               "sent back answers the view it was really shown."]
        if self._ledger_paths:
            out.append("Site ledgers read: " + ", ".join(str(p) for p in self._ledger_paths))
        return out

    def close(self) -> None:
        self._conn.close()
