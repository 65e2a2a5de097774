"""The site ledger: budgets fail closed, charges are atomic under threads, processes and crashes."""

from __future__ import annotations

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
from privacy.errors import BudgetExceeded, ConfigurationError, LedgerError, UnsupportedEvent
from privacy.events import GaussianEvent, SkellamEvent
from privacy.ledger import Budget, SiteLedger

EVENT = GaussianEvent(noise_multiplier=5.0, sample_rate=1.0, steps=1)
BUDGET = Budget(epsilon=3.0, delta=1e-5)


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
        ledger.charge(EVENT, round_id=f"r{i}")
    before = ledger.entries()
    with pytest.raises(BudgetExceeded) as info:
        ledger.check(EVENT)
    with pytest.raises(BudgetExceeded):
        ledger.charge(EVENT, round_id="one-too-many")
    assert info.value.requested > BUDGET.epsilon >= info.value.spent
    assert ledger.entries() == before  # nothing charged
    assert ledger.spent() <= BUDGET.epsilon
    assert ledger.remaining() == pytest.approx(BUDGET.epsilon - ledger.spent())


def test_survives_restart_and_keeps_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    a = SiteLedger(path, site_id="h1", budget=BUDGET)
    a.charge(EVENT, round_id="r1")
    b = SiteLedger(path, site_id="h1")  # budget read back from the file
    assert b.budget == BUDGET and [e.round_id for e in b.entries()] == ["r1"]
    assert b.spent() == pytest.approx(a.spent())
    with pytest.raises(LedgerError):
        SiteLedger(path, site_id="h1", budget=Budget(epsilon=100.0, delta=1e-5))
    with pytest.raises(ConfigurationError):
        SiteLedger(path, site_id="new-site")  # a new site needs a budget
    other = SiteLedger(path, site_id="h2", budget=BUDGET)  # sites are independent
    assert other.spent() == 0.0


def test_repeated_round_is_idempotent_but_a_different_event_conflicts(tmp_path: Path) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET)
    first = ledger.charge(EVENT, round_id="r1")
    assert ledger.charge(EVENT, round_id="r1") == first
    assert len(ledger.entries()) == 1
    with pytest.raises(LedgerError):
        ledger.charge(GaussianEvent(noise_multiplier=3.0), round_id="r1")


def test_written_events_are_immutable(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = SiteLedger(path, site_id="h1", budget=BUDGET)
    ledger.charge(EVENT, round_id="r1")
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("UPDATE events SET event = 'x'")
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("DELETE FROM events")
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
                ledger.charge(EVENT, round_id=f"t{t}-r{i}")
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
            ledger.charge(EVENT, round_id=f"p{tag}-r{i}")
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
        # The event row is written, the totals are not, the transaction is open: die now.
        os.kill(os.getpid(), signal.SIGKILL)

    ledger._record_totals = killed  # type: ignore[method-assign]
    ledger.charge(EVENT, round_id="doomed")


def test_crash_mid_write_leaves_the_previous_state(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    ledger = SiteLedger(path, site_id="h1", budget=BUDGET)
    ledger.charge(EVENT, round_id="r1")
    before = ledger.entries()
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_die_mid_transaction, args=(path,))
    p.start()
    p.join(timeout=120)
    assert p.exitcode == -signal.SIGKILL
    reopened = SiteLedger(path, site_id="h1")  # verifies totals == events on open
    assert reopened.entries() == before
    reopened.charge(EVENT, round_id="r2")  # and the ledger still works
    assert [e.round_id for e in reopened.entries()] == ["r1", "r2"]


def test_exception_inside_the_transaction_rolls_back(tmp_path: Path, monkeypatch) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET)

    def boom(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ledger, "_record_totals", boom)
    with pytest.raises(RuntimeError):
        ledger.charge(EVENT, round_id="r1")
    monkeypatch.undo()
    assert ledger.entries() == []
    ledger.charge(EVENT, round_id="r1")
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
                ledger.charge(ev, round_id=str(i))
                recorded.append(ev)
                assert fits
            except BudgetExceeded:
                assert not fits
            assert ledger.spent() <= eps_budget
        assert [e.event for e in ledger.entries()] == recorded


def test_state_dict_round_trip_and_fail_closed(tmp_path: Path) -> None:
    a = SiteLedger(tmp_path / "a.db", site_id="h1", budget=BUDGET)
    a.charge(EVENT, round_id="r1")
    a.charge(SkellamEvent(variance=1e6, l2_sensitivity=300.0, l1_sensitivity=3000.0), round_id="r2")
    b = SiteLedger(tmp_path / "b.db", site_id="h1", budget=BUDGET)
    b.load_state_dict(a.state_dict())
    assert b.entries() == a.entries()
    c = SiteLedger(tmp_path / "c.db", site_id="h1", budget=BUDGET)
    c.charge(GaussianEvent(noise_multiplier=5.0), round_id="other")
    with pytest.raises(LedgerError):
        c.load_state_dict(a.state_dict())  # would forget a charge
    with pytest.raises(LedgerError):
        SiteLedger(tmp_path / "d.db", site_id="h9", budget=BUDGET).load_state_dict(a.state_dict())


def test_prv_ledger_refuses_skellam(tmp_path: Path) -> None:
    ledger = SiteLedger(tmp_path / "l.db", site_id="h1", budget=BUDGET, accountant=Accountant.PRV)
    with pytest.raises(UnsupportedEvent):
        ledger.charge(SkellamEvent(variance=1e4, l2_sensitivity=3.0, l1_sensitivity=9.0), round_id="r")
    ledger.charge(EVENT, round_id="r")
    assert ledger.spent() <= BUDGET.epsilon
