"""The site ledger: budgets fail closed, charges are atomic under threads, processes and crashes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.accountants import Accountant, compute_epsilon
from privacy.errors import (
    BudgetExceeded,
    ConfigurationError,
    LedgerError,
    LedgerVersionError,
    ReleaseRepeated,
    UnsupportedEvent,
)
from privacy.events import GaussianEvent, SkellamEvent
from privacy.ledger import Budget, LedgerTrack, ReleaseStatus, SiteLedger

EVENT = GaussianEvent(noise_multiplier=5.0, sample_rate=1.0, steps=1)
BUDGET = Budget(epsilon=3.0, delta=1e-5)


def _rid(label: str) -> bytes:
    """A 32-byte release id named by a test label."""
    return hashlib.sha256(label.encode()).digest()


def _max_charges(event, budget: Budget) -> int:
    k = 0
    while compute_epsilon([event] * (k + 1), delta=budget.delta) <= budget.epsilon:
        k += 1
    return k


def test_charges_until_the_budget_then_refuses(tmp_path: Path) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET)
    k = _max_charges(EVENT, BUDGET)
    assert k >= 2
    for i in range(k):
        assert ledger.check(EVENT) <= BUDGET.epsilon
        ledger.charge(EVENT, release_id=_rid(f"r{i}"))
    before = ledger.entries()
    with pytest.raises(BudgetExceeded) as info:
        ledger.check(EVENT)
    with pytest.raises(BudgetExceeded):
        ledger.charge(EVENT, release_id=_rid("one-too-many"))
    assert info.value.requested > BUDGET.epsilon >= info.value.spent
    assert ledger.entries() == before  # nothing charged
    assert ledger.spent() <= BUDGET.epsilon
    assert ledger.remaining() == pytest.approx(BUDGET.epsilon - ledger.spent())


def test_survives_restart_and_keeps_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    a = SiteLedger(path, site_id="h1", budget=BUDGET)
    a.charge(EVENT, release_id=_rid("r1"))
    b = SiteLedger(path, site_id="h1")  # budget read back from the file
    assert b.budget == BUDGET and [e.release_id for e in b.entries()] == [_rid("r1")]
    assert b.spent() == pytest.approx(a.spent())
    with pytest.raises(LedgerError):
        SiteLedger(path, site_id="h1", budget=Budget(epsilon=100.0, delta=1e-5))
    with pytest.raises(ConfigurationError):
        SiteLedger(path, site_id="new-site")  # a new site needs a budget
    other = SiteLedger(path, site_id="h2", budget=BUDGET)  # sites are independent
    assert other.spent() == 0.0


def test_a_release_id_is_charged_once_and_a_repeat_is_refused(tmp_path: Path) -> None:
    """Finding 9a: a repeated round used to be charged once. Now a second release for a round
    the site has released is refused, whatever its event, and nothing is written."""
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET)
    ledger.charge(EVENT, release_id=_rid("r1"))
    for attempt in (lambda: ledger.charge(EVENT, release_id=_rid("r1")),
                    lambda: ledger.charge(GaussianEvent(noise_multiplier=3.0), release_id=_rid("r1")),
                    lambda: ledger.reserve(_rid("r1"), EVENT)):
        with pytest.raises(ReleaseRepeated):
            attempt()
    ledger.reserve(_rid("r2"), EVENT)
    with pytest.raises(ReleaseRepeated):
        ledger.reserve(_rid("r2"), EVENT)
    ledger.settle(_rid("r2"), None)
    with pytest.raises(ReleaseRepeated):  # a void release id is spent too
        ledger.reserve(_rid("r2"), EVENT)
    assert len(ledger.entries()) == 2
    with pytest.warns(DeprecationWarning):  # the old label keyword: a repeat is refused too
        ledger.charge(EVENT, round_id="round-1")
    with pytest.raises(ReleaseRepeated), pytest.warns(DeprecationWarning):
        ledger.charge(EVENT, round_id="round-1")
    with pytest.raises(ConfigurationError):
        ledger.charge(EVENT, release_id=b"short")


def test_written_events_are_immutable(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = SiteLedger(path, site_id="h1", budget=BUDGET)
    ledger.charge(EVENT, release_id=_rid("r1"))
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("UPDATE releases SET event = 'x'")
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("DELETE FROM releases")
    conn.close()
    assert ledger.entries()[0].event == EVENT


def test_concurrent_threads_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    SiteLedger(path, site_id="h1", budget=BUDGET)
    k = _max_charges(EVENT, BUDGET)
    accepted, refused = [], []
    lock = threading.Lock()

    def worker(t: int) -> None:
        ledger = SiteLedger(path, site_id="h1")
        for i in range(k):
            try:
                ledger.charge(EVENT, release_id=_rid(f"t{t}-r{i}"))
                with lock:
                    accepted.append((t, i))
            except BudgetExceeded:
                with lock:
                    refused.append((t, i))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ledger = SiteLedger(path, site_id="h1")
    assert len(accepted) == k == len(ledger.entries())
    assert len(refused) == 6 * k - k
    assert ledger.spent() <= BUDGET.epsilon


def _process_worker(path: str, tag: int, attempts: int) -> None:
    ledger = SiteLedger(path, site_id="h1")
    for i in range(attempts):
        try:
            ledger.charge(EVENT, release_id=_rid(f"p{tag}-r{i}"))
        except BudgetExceeded:
            pass


def test_concurrent_processes_never_overspend(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    SiteLedger(path, site_id="h1", budget=BUDGET)
    k = _max_charges(EVENT, BUDGET)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_worker, args=(path, t, k)) for t in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    ledger = SiteLedger(path, site_id="h1")
    assert len(ledger.entries()) == k
    assert ledger.spent() <= BUDGET.epsilon


def _die_mid_transaction(path: str) -> None:
    ledger = SiteLedger(path, site_id="h1")

    def killed(*_args: object) -> None:
        # The release row is written, the transaction is still open: die now.
        os.kill(os.getpid(), signal.SIGKILL)

    ledger._before_commit = killed  # type: ignore[method-assign]
    ledger.charge(EVENT, release_id=_rid("doomed"))


def test_crash_mid_write_leaves_the_previous_state(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    ledger = SiteLedger(path, site_id="h1", budget=BUDGET)
    ledger.charge(EVENT, release_id=_rid("r1"))
    before = ledger.entries()
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_die_mid_transaction, args=(path,))
    p.start()
    p.join(timeout=120)
    assert p.exitcode == -signal.SIGKILL
    reopened = SiteLedger(path, site_id="h1")  # verifies totals == events on open
    assert reopened.entries() == before
    reopened.charge(EVENT, release_id=_rid("r2"))  # and the ledger still works
    assert [e.release_id for e in reopened.entries()] == [_rid("r1"), _rid("r2")]


def test_exception_inside_the_transaction_rolls_back(tmp_path: Path, monkeypatch) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET)

    def boom(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ledger, "_before_commit", boom)
    with pytest.raises(RuntimeError):
        ledger.charge(EVENT, release_id=_rid("r1"))
    monkeypatch.undo()
    assert ledger.entries() == []
    ledger.charge(EVENT, release_id=_rid("r1"))
    assert len(SiteLedger(tmp_path / "l.db", site_id="h1").entries()) == 1


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.floats(0.8, 6.0), st.integers(1, 5)), min_size=1, max_size=12),
       st.floats(0.5, 8.0))
def test_ledger_never_goes_over_budget(charges: list[tuple[float, int]], eps_budget: float) -> None:
    budget = Budget(epsilon=eps_budget, delta=1e-5)
    with tempfile.TemporaryDirectory() as d:
        ledger = SiteLedger(Path(d) / "l.db", site_id="s", budget=budget)
        recorded = []
        for i, (z, steps) in enumerate(charges):
            ev = GaussianEvent(noise_multiplier=z, steps=steps)
            fits = compute_epsilon(recorded + [ev], delta=1e-5) <= eps_budget
            try:
                ledger.charge(ev, release_id=_rid(str(i)))
                recorded.append(ev)
                assert fits
            except BudgetExceeded:
                assert not fits
            assert ledger.spent() <= eps_budget
        assert [e.event for e in ledger.entries()] == recorded


def test_state_dict_round_trip_and_fail_closed(tmp_path: Path) -> None:
    a = SiteLedger(tmp_path / "a.db", site_id="h1", budget=BUDGET)
    a.charge(EVENT, release_id=_rid("r1"))
    a.charge(SkellamEvent(variance=1e6, l2_sensitivity=300.0, l1_sensitivity=3000.0), release_id=_rid("r2"))
    b = SiteLedger(tmp_path / "b.db", site_id="h1", budget=BUDGET)
    b.load_state_dict(a.state_dict())
    assert b.entries() == a.entries()
    c = SiteLedger(tmp_path / "c.db", site_id="h1", budget=BUDGET)
    c.charge(GaussianEvent(noise_multiplier=5.0), release_id=_rid("other"))
    with pytest.raises(LedgerError):
        c.load_state_dict(a.state_dict())  # would forget a charge
    with pytest.raises(LedgerError):
        SiteLedger(tmp_path / "d.db", site_id="h9", budget=BUDGET).load_state_dict(a.state_dict())


def test_prv_ledger_refuses_skellam(tmp_path: Path) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET, accountant=Accountant.PRV)
    with pytest.raises(UnsupportedEvent):
        ledger.charge(SkellamEvent(variance=1e4, l2_sensitivity=3.0, l1_sensitivity=9.0), release_id=_rid("r"))
    ledger.charge(EVENT, release_id=_rid("r"))
    assert ledger.spent() <= BUDGET.epsilon


def test_reservations_count_against_the_budget_until_settled(tmp_path: Path) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET)
    k = _max_charges(EVENT, BUDGET)
    for i in range(k):
        ledger.reserve(_rid(f"r{i}"), EVENT)
    assert ledger.spent() == pytest.approx(compute_epsilon([EVENT] * k, delta=BUDGET.delta))
    with pytest.raises(BudgetExceeded):  # open reservations fill the budget
        ledger.reserve(_rid("extra"), EVENT)
    with pytest.raises(BudgetExceeded):
        ledger.check(EVENT)
    assert len(ledger.entries()) == k  # nothing written by the refusal
    ledger.settle(_rid("r0"), None)  # nothing was released: the room comes back
    assert ledger.entries()[0].status is ReleaseStatus.VOID
    assert ledger.entries()[0].charged is None
    ledger.reserve(_rid("extra"), EVENT)


def test_a_settle_is_never_refused_and_an_overrun_is_flagged(tmp_path: Path) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET)
    k = _max_charges(EVENT, BUDGET)
    for i in range(k):
        ledger.reserve(_rid(f"r{i}"), EVENT)
    # The true event is worse than the worst case reserved (a caller's mistake): the release has
    # happened, so the ledger records it and says it is over budget.
    worse = GaussianEvent(noise_multiplier=1.0)
    after = ledger.settle(_rid("r0"), worse)
    assert after > BUDGET.epsilon and ledger.overrun
    entry = ledger.entries()[0]
    assert entry.status is ReleaseStatus.SETTLED and entry.event == worse and entry.overrun
    assert ledger.spent() == pytest.approx(after)
    assert ledger.settle(_rid("r0"), worse) == after  # repeating the same settle is harmless
    with pytest.raises(LedgerError):
        ledger.settle(_rid("r0"), EVENT)  # but a settled release never changes
    with pytest.raises(LedgerError):
        ledger.settle(_rid("r0"), None)
    with pytest.raises(LedgerError):
        ledger.settle(_rid("never-reserved"), EVENT)


def test_rows_only_move_forward(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = SiteLedger(path, site_id="h1", budget=BUDGET)
    ledger.reserve(_rid("open"), EVENT)
    ledger.charge(EVENT, release_id=_rid("done"))
    conn = sqlite3.connect(path)
    for sql in ("UPDATE releases SET status = 'reserved', event = NULL WHERE label = ''",
                "UPDATE releases SET worst = 'x' WHERE status = 'reserved'",
                "UPDATE releases SET status = 'reserved' WHERE status = 'reserved'",
                "UPDATE releases SET release_id = release_id || '' , track = 'example'",
                "DELETE FROM releases WHERE status = 'reserved'",
                "UPDATE ledger_sites SET epsilon = 100.0",
                "DELETE FROM ledger_sites"):
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(sql)
    conn.close()
    assert [e.status for e in ledger.entries()] == [ReleaseStatus.RESERVED, ReleaseStatus.SETTLED]


def test_tracks_have_their_own_budgets_and_are_never_composed(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    site = SiteLedger(path, site_id="h1", budget=BUDGET)
    example = SiteLedger(path, site_id="h1", budget=Budget(epsilon=8.0, delta=1e-6),
                         track=LedgerTrack.EXAMPLE)
    dpsgd = GaussianEvent(noise_multiplier=1.1, sample_rate=0.01, steps=500)
    example.charge(dpsgd, release_id=_rid("e1"))
    site.charge(EVENT, release_id=_rid("e1"))  # the same id on the other track is not a repeat
    assert site.spent() == pytest.approx(compute_epsilon([EVENT], delta=1e-5))
    assert example.spent() == pytest.approx(compute_epsilon([dpsgd], delta=1e-6))
    assert [e.event for e in site.entries()] == [EVENT]
    assert [e.event for e in example.entries()] == [dpsgd]
    reopened = SiteLedger(path, site_id="h1", track=LedgerTrack.EXAMPLE)
    assert reopened.budget == Budget(epsilon=8.0, delta=1e-6) and reopened.track is LedgerTrack.EXAMPLE
    with pytest.raises(ConfigurationError):
        SiteLedger(path, site_id="h2", track=LedgerTrack.EXAMPLE)  # new pair: budget required
    with pytest.raises(ConfigurationError):
        SiteLedger(path, site_id="h1", track="example")  # type: ignore[arg-type]


_V1_SCHEMA = """
CREATE TABLE sites (site_id TEXT PRIMARY KEY, epsilon REAL NOT NULL, delta REAL NOT NULL,
    accountant TEXT NOT NULL, n_events INTEGER NOT NULL DEFAULT 0,
    spent_epsilon REAL NOT NULL DEFAULT 0.0);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, site_id TEXT NOT NULL,
    round_id TEXT NOT NULL, event TEXT NOT NULL, epsilon_after REAL NOT NULL,
    UNIQUE (site_id, round_id));
CREATE TRIGGER events_immutable_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'privacy events are immutable'); END;
"""


def test_a_version_one_file_is_migrated_and_an_unknown_version_refused(tmp_path: Path) -> None:
    from privacy.events import event_to_json

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    conn.execute("INSERT INTO sites VALUES ('h1', 3.0, 1e-5, 'rdp', 1, 0.79)")
    conn.execute("INSERT INTO events (site_id, round_id, event, epsilon_after) "
                 "VALUES ('h1', 'round-1', ?, 0.79)", (event_to_json(EVENT),))
    conn.commit()
    conn.close()
    ledger = SiteLedger(path, site_id="h1")
    assert ledger.budget == BUDGET
    [entry] = ledger.entries()
    assert entry.label == "round-1" and entry.status is ReleaseStatus.SETTLED
    assert entry.event == EVENT
    with pytest.raises(ReleaseRepeated), pytest.warns(DeprecationWarning):
        ledger.charge(EVENT, round_id="round-1")  # the migrated round is still charged once
    assert SiteLedger(path, site_id="h1").entries() == [entry]  # migrating is done once

    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(LedgerVersionError):
        SiteLedger(newer, site_id="h1", budget=BUDGET)
