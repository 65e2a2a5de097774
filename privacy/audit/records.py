"""What an audit reads about a run, behind one small interface: :class:`RunRecords`.

A run's records are its secure rounds (public facts, the coordinator's transcript of each, the
masked uploads it received), the sites' ledgers and what the run printed (its summary and its
per-round metrics). :class:`SimulationFolder` reads them from a ``python -m coordinator
simulate --out DIR`` folder (``secagg_rounds.jsonl``, ``transcripts/``, ``ledgers.sqlite``,
``summary.json``, ``metrics.jsonl``) as files: the privacy package never imports the
coordinator. A coordinator's state database (``cohort serve``'s SQLite file) is read by
:class:`~.state.StateFile` behind the same protocol. :func:`open_records` picks the reader and
refuses, with one :class:`AuditError`, anything that is neither.

Fails closed: anything that cannot be read is kept as a *problem* (``RunRecords.problems``),
which the audit reports as a failed check, never skipped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from secagg import RoundConfig, Stage
from secagg.transcript import Direction, Transcript

from ..errors import AuditError

__all__ = ["LedgerRow", "LedgerBook", "RoundFacts", "RunRecords", "SimulationFolder",
           "connect_read_only", "open_records"]

STAGES = tuple(s.value for s in Stage)  # the transcript file's stage indices
TRANSCRIPT_MAGIC = b"CTR1"
_FRAME = struct.Struct(">BBII")


@dataclass(frozen=True)
class RoundFacts:
    """One secure release as the coordinator announced and ended it."""

    round: int
    task: str
    release_id: str
    config: RoundConfig
    sites: tuple[str, ...]
    mechanism: str
    noise: str
    local_variance: float
    planned_clients: int
    aborted: bool
    included: tuple[str, ...]
    event: dict[str, Any] | None
    transcript_file: str
    transcript_sha256: str
    ended: bool = True  # False: the round was still open when the records were taken
    told: tuple[str, ...] | None = None  # sites that acknowledged the outcome (None: all)

    @property
    def label(self) -> str:
        return f"round {self.round} ({self.task})"


@dataclass(frozen=True)
class LedgerRow:
    release_id: str
    label: str
    status: str
    worst: dict[str, Any]
    event: dict[str, Any] | None
    epsilon_after: float
    overrun: bool

    @property
    def charged(self) -> dict[str, Any] | None:
        return self.worst if self.status == "reserved" else self.event


@dataclass(frozen=True)
class LedgerBook:
    """One site's ledger on one track."""

    site_id: str
    track: str
    epsilon: float
    delta: float
    accountant: str
    rows: tuple[LedgerRow, ...] = field(default=())


class RunRecords(Protocol):
    """Everything ``audit run`` needs about one run, whatever stored it.

    ``summary_name`` names where the summary's epsilon was printed; :meth:`printed` is every
    per-round record that printed an epsilon, by where it was printed; :meth:`ledger_sites`
    is the sites whose ledgers these records hold (None: they claim to hold every site's);
    :meth:`not_made` says which checks these records cannot support at all, and why;
    :meth:`integrity` is the checks of the records' own authenticity that only this kind of
    record allows (a state file's signed envelopes and its replay); :meth:`notes` is what a
    reader of the report should know about these records."""

    source: str
    kind: str
    summary_name: str

    def summary(self) -> dict[str, Any] | None: ...

    def metrics(self) -> list[dict[str, Any]]: ...

    def printed(self) -> list[tuple[str, list[dict[str, Any]]]]: ...

    def ledger_sites(self) -> frozenset[str] | None: ...

    def not_made(self) -> dict[str, str]: ...

    def integrity(self) -> list[Any]: ...

    def notes(self) -> list[str]: ...

    def rounds(self) -> list[RoundFacts]: ...

    def transcript(self, facts: RoundFacts) -> Transcript: ...

    def uploads(self, facts: RoundFacts) -> list[tuple[int, bytes]]: ...

    def ledgers(self) -> list[LedgerBook] | None: ...

    def problems(self) -> list[str]: ...


def _config(raw: dict[str, Any]) -> RoundConfig:
    return RoundConfig(round_id=bytes.fromhex(raw["round_id"]), clients=tuple(raw["clients"]),
                       dim=int(raw["dim"]), modulus_bits=int(raw["modulus_bits"]),
                       neighbors=int(raw["neighbors"]), threshold=int(raw["threshold"]),
                       malicious=bool(raw["malicious"]),
                       corrupt_rate=float(raw["corrupt_rate"]),
                       dropout_rate=float(raw["dropout_rate"]))


def decode_transcript(blob: bytes, config: RoundConfig) -> Transcript:
    """The transcript file's frames as a ``secagg.Transcript``; AuditError if malformed."""
    if blob[:4] != TRANSCRIPT_MAGIC:
        raise AuditError("not a transcript file (bad magic)")
    out = Transcript(config)
    pos = 4
    while pos < len(blob):
        if pos + _FRAME.size > len(blob):
            raise AuditError("transcript truncated inside a frame header")
        stage, direction, party, length = _FRAME.unpack_from(blob, pos)
        pos += _FRAME.size
        if stage >= len(STAGES) or direction > 1 or pos + length > len(blob):
            raise AuditError(f"transcript frame at byte {pos - _FRAME.size} is malformed")
        out.record(Stage(STAGES[stage]),
                   Direction.TO_SERVER if direction == 0 else Direction.FROM_SERVER,
                   party, blob[pos:pos + length])
        pos += length
    return out


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """A connection that can only read ``path``. Without a write-ahead log beside the file
    (its writer closed it cleanly) it is opened ``immutable``, so that not even SQLite's shared
    memory file is created beside it; with one (a writer is running, or crashed), ``mode=ro``,
    so that the log's committed transactions are read too (SQLite may then create its ``-shm``
    index, as every reader of a live WAL database does; the database itself is never
    written)."""
    p = Path(path).resolve()
    live = Path(f"{p}-wal").exists()
    conn = sqlite3.connect(p.as_uri() + ("?mode=ro" if live else "?mode=ro&immutable=1"),
                           uri=True, timeout=5)
    conn.execute("PRAGMA query_only = ON")
    return conn


def read_ledgers(path: Path) -> list[LedgerBook]:
    """Every (site, track) ledger in a ledger database, read-only and raw (not through
    ``SiteLedger``, which would migrate or write)."""
    conn = connect_read_only(path)
    try:
        books = []
        for site, track, eps, delta, accountant in conn.execute(
                "SELECT site_id, track, epsilon, delta, accountant FROM ledger_sites "
                "ORDER BY site_id, track"):
            rows = tuple(LedgerRow(release_id=r[0], label=r[1], status=r[2],
                                   worst=json.loads(r[3]),
                                   event=None if r[4] is None else json.loads(r[4]),
                                   epsilon_after=float(r[5]), overrun=bool(r[6]))
                         for r in conn.execute(
                             "SELECT release_id, label, status, worst, event, epsilon_after, "
                             "overrun FROM releases WHERE site_id = ? AND track = ? "
                             "ORDER BY seq", (site, track)))
            books.append(LedgerBook(site_id=site, track=track, epsilon=float(eps),
                                    delta=float(delta), accountant=accountant, rows=rows))
        return books
    finally:
        conn.close()


class SimulationFolder:
    """The records of a simulation's output folder."""

    kind = "simulation output folder"
    summary_name = "summary.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        if not (self.path / "summary.json").is_file():
            raise AuditError(f"{self.path} holds no summary.json: not a run's output folder")
        self._problems: list[str] = []
        self._summary = self._json("summary.json")
        self._metrics = self._jsonl("metrics.jsonl")
        self._rounds: list[RoundFacts] = []
        for i, raw in enumerate(self._jsonl("secagg_rounds.jsonl", required=False)):
            try:
                self._rounds.append(RoundFacts(
                    round=int(raw["round"]), task=str(raw["task"]),
                    release_id=str(raw["release_id"]), config=_config(raw["secagg"]),
                    sites=tuple(raw["sites"]), mechanism=str(raw["mechanism"]),
                    noise=str(raw["noise"]), local_variance=float(raw["local_variance"]),
                    planned_clients=int(raw["planned_clients"]), aborted=bool(raw["aborted"]),
                    included=tuple(raw["included"]), event=raw["event"],
                    transcript_file=str(raw["transcript"]),
                    transcript_sha256=str(raw["transcript_sha256"])))
            except Exception as exc:  # noqa: BLE001 - kept as a problem: the audit fails
                self._problems.append(f"secagg_rounds.jsonl line {i + 1} cannot be read: "
                                      f"{type(exc).__name__}: {exc}")
        self._ledgers: list[LedgerBook] | None = None
        ledger_path = self.path / "ledgers.sqlite"
        if ledger_path.exists():
            try:
                self._ledgers = read_ledgers(ledger_path)
            except Exception as exc:  # noqa: BLE001 - kept as a problem: the audit fails
                self._problems.append(f"ledgers.sqlite cannot be read: {exc}")
                self._ledgers = []
        self._transcripts: dict[str, Transcript] = {}

    def _json(self, name: str) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError) as exc:
            self._problems.append(f"{name} cannot be read: {exc}")
            return None

    def _jsonl(self, name: str, *, required: bool = True) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.exists():
            if required:
                self._problems.append(f"{name} is missing")
            return []
        out = []
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                self._problems.append(f"{name} line {i + 1} is not JSON: {exc}")
        return out

    # -- RunRecords ----------------------------------------------------------------------
    def summary(self) -> dict[str, Any] | None:
        return self._summary

    def metrics(self) -> list[dict[str, Any]]:
        return self._metrics

    def printed(self) -> list[tuple[str, list[dict[str, Any]]]]:
        return [("metrics.jsonl", self._metrics)]

    def ledger_sites(self) -> frozenset[str] | None:
        return None  # a simulation keeps every site's ledger in ledgers.sqlite

    def not_made(self) -> dict[str, str]:
        return {}

    def integrity(self) -> list[Any]:
        return []  # the transcripts' SHA-256 is checked as each is read

    def notes(self) -> list[str]:
        return []

    def rounds(self) -> list[RoundFacts]:
        return list(self._rounds)

    def transcript(self, facts: RoundFacts) -> Transcript:
        """The round's transcript; AuditError if missing, altered or malformed."""
        if facts.transcript_file not in self._transcripts:
            path = self.path / facts.transcript_file
            try:
                blob = path.read_bytes()
            except OSError as exc:
                raise AuditError(f"{facts.transcript_file} cannot be read: {exc}") from exc
            if hashlib.sha256(blob).hexdigest() != facts.transcript_sha256:
                raise AuditError(f"{facts.transcript_file} does not match its recorded SHA-256")
            self._transcripts[facts.transcript_file] = decode_transcript(blob, facts.config)
        return self._transcripts[facts.transcript_file]

    def uploads(self, facts: RoundFacts) -> list[tuple[int, bytes]]:
        return [(e.party, e.data) for e in
                self.transcript(facts).entries(Stage.MASKED_INPUT, Direction.TO_SERVER)]

    def ledgers(self) -> list[LedgerBook] | None:
        return self._ledgers

    def problems(self) -> list[str]:
        return list(self._problems)


def open_records(path: str | Path, *, ledgers: list[Path] | None = None,
                 roster: Any = None) -> RunRecords:
    """The reader for ``path``: a simulation's output folder, a coordinator's state file
    (``cohort serve``'s SQLite database), or a folder holding ``state.sqlite`` and no
    simulation records (``cohort serve --out``). ``ledgers`` (site ledger files) and ``roster``
    (:class:`~.roster.RosterKeys`) apply to a state file only: a simulation keeps its own
    ledgers and signs nothing. AuditError for anything else."""
    from .state import StateFile

    p = Path(path)
    if p.is_dir():
        if (p / "state.sqlite").is_file() and not (p / "secagg_rounds.jsonl").exists():
            return StateFile(p / "state.sqlite", ledgers=ledgers, roster=roster)
        if ledgers is not None or roster is not None:
            raise AuditError(f"{p} is a simulation's output folder: it keeps its own ledgers "
                             "(ledgers.sqlite) and signs nothing; --ledger, --ledgers, --kit "
                             "and --roster apply to a coordinator's state file")
        return SimulationFolder(p)
    if p.is_file():
        with p.open("rb") as f:
            head = f.read(16)
        if head.startswith(b"SQLite format 3"):
            return StateFile(p, ledgers=ledgers, roster=roster)
        raise AuditError(f"{p} is neither a run's output folder nor a coordinator state file")
    raise AuditError(f"{p} does not exist")
