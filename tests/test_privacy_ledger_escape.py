"""No release escapes the ledger (finding 9): kills at every point after the reservation, a
second handle charging concurrently, and a Hypothesis search over reserve/settle/charge/crash
sequences. Oracle: every release that left a site is on its ledger, reserved at its worst case
or settled, and the epsilon spent is at least that of everything released.

The defect each test catches is planted with ``privacy.ledger._PLANT_CHARGE_AFTER_RELEASE``
(the old path: no reservation, a charge only after the release) and shown caught."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import privacy.ledger as ledger_module
from privacy.accountants import compute_epsilon
from privacy.errors import BudgetExceeded, ReleaseRepeated
from privacy.events import GaussianEvent, event_from_dict, event_to_dict
from privacy.ledger import Budget, ReleaseStatus, SiteLedger

BUDGET = Budget(epsilon=3.0, delta=1e-5)
WORST = GaussianEvent(noise_multiplier=4.0)  # the fewest survivors
TRUE = GaussianEvent(noise_multiplier=5.0)   # what the round really cost


def _rid(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _assert_no_release_escaped(ledger: SiteLedger, released: dict[bytes, object]) -> None:
    """The oracle: each released id is on the ledger and still charged; spent covers them."""
    rows = {e.release_id: e for e in ledger.entries()}
    for rid in released:
        assert rid in rows, f"release {rid.hex()[:8]} is on no ledger"
        assert rows[rid].status is not ReleaseStatus.VOID, "a released round was voided"
    floor = compute_epsilon(list(released.values()), delta=ledger.budget.delta)
    assert ledger.spent() >= floor * (1 - 1e-9)


# -- a site's round in a real process, killed with SIGKILL at every point ---------------------
POINTS = ("after-reserve", "after-release", "inside-settle", "after-settle")


def _site_round(path: str, outbox: str, kill_at: str, plant: bool) -> None:
    ledger_module._PLANT_CHARGE_AFTER_RELEASE = plant
    ledger = SiteLedger(path, site_id="h1")
    rid = _rid("round-1")

    def die(point: str) -> None:
        if point == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    ledger.reserve(rid, WORST)
    die("after-reserve")
    with open(outbox, "a") as f:  # the masked input leaves the site: the release
        f.write(json.dumps({"release_id": rid.hex(), "event": event_to_dict(TRUE)}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    die("after-release")
    ledger._before_commit = lambda _op: die("inside-settle")  # type: ignore[method-assign]
    ledger.settle(rid, TRUE)
    die("after-settle")


def _killed_round(tmp: Path, kill_at: str, *, plant: bool) -> tuple[SiteLedger, dict]:
    path, outbox = str(tmp / f"{kill_at}.db"), str(tmp / f"{kill_at}.out")
    SiteLedger(path, site_id="h1", budget=BUDGET)
    proc = multiprocessing.get_context("fork").Process(
        target=_site_round, args=(path, outbox, kill_at, plant))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL
    released = {}
    if os.path.exists(outbox):
        for line in Path(outbox).read_text().splitlines():
            row = json.loads(line)
            released[bytes.fromhex(row["release_id"])] = event_from_dict(row["event"])
    return SiteLedger(path, site_id="h1"), released


@pytest.mark.parametrize("kill_at", POINTS)
def test_a_kill_at_any_point_after_the_reservation_leaves_the_release_charged(
        tmp_path: Path, kill_at: str) -> None:
    ledger, released = _killed_round(tmp_path, kill_at, plant=False)
    _assert_no_release_escaped(ledger, released)
    [row] = ledger.entries()
    if kill_at in ("after-settle",):
        assert row.status is ReleaseStatus.SETTLED and row.event == TRUE
    else:  # the outcome is unknown to the ledger: the worst case stays charged
        assert row.status is ReleaseStatus.RESERVED and row.charged == WORST


def test_planted_charge_after_release_loses_a_killed_release(tmp_path: Path) -> None:
    ledger, released = _killed_round(tmp_path, "after-release", plant=True)
    assert released  # the round did leave the site ...
    with pytest.raises(AssertionError, match="on no ledger"):
        _assert_no_release_escaped(ledger, released)  # ... and the oracle sees it escaped


# -- a second handle charging while a release is in flight ------------------------------------
def _interleaved(path: Path) -> tuple[SiteLedger, dict]:
    site = SiteLedger(path, site_id="h1", budget=BUDGET)
    other = SiteLedger(path, site_id="h1")
    site.reserve(_rid("mine"), WORST)
    released = {_rid("mine"): TRUE}  # the masked input has left
    i = 0
    while True:  # another handle spends everything left in the meantime
        try:
            other.charge(TRUE, release_id=_rid(f"other-{i}"))
            released[_rid(f"other-{i}")] = TRUE
            i += 1
        except BudgetExceeded:
            break
    try:
        site.settle(_rid("mine"), TRUE)
    except BudgetExceeded:
        pass  # (only the planted defect refuses here) the oracle decides
    return site, released


def test_a_second_handle_cannot_make_a_release_escape(tmp_path: Path, monkeypatch) -> None:
    site, released = _interleaved(tmp_path / "l.db")
    _assert_no_release_escaped(site, released)
    assert not site.overrun  # the reservation kept the other handle within the budget
    monkeypatch.setattr(ledger_module, "_PLANT_CHARGE_AFTER_RELEASE", True)
    site, released = _interleaved(tmp_path / "planted.db")
    with pytest.raises(AssertionError):
        _assert_no_release_escaped(site, released)


def test_threads_reserving_and_settling_never_lose_a_release(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    SiteLedger(path, site_id="h1", budget=BUDGET)
    released: dict[bytes, object] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        ledger = SiteLedger(path, site_id="h1")
        for i in range(4):
            rid = _rid(f"t{t}-{i}")
            try:
                ledger.reserve(rid, WORST)
            except BudgetExceeded:
                continue  # the site refuses the round: nothing leaves
            with lock:
                released[rid] = TRUE
            ledger.settle(rid, TRUE)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ledger = SiteLedger(path, site_id="h1")
    _assert_no_release_escaped(ledger, released)
    assert released and ledger.spent() <= BUDGET.epsilon


def _process_rounds(path: str, outbox: str, tag: int) -> None:
    ledger = SiteLedger(path, site_id="h1")
    for i in range(4):
        rid = _rid(f"p{tag}-{i}")
        try:
            ledger.reserve(rid, WORST)
        except BudgetExceeded:
            continue
        with open(outbox, "a") as f:
            f.write(rid.hex() + "\n")
        ledger.settle(rid, TRUE)


def test_two_processes_reserving_never_lose_a_release(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    SiteLedger(path, site_id="h1", budget=BUDGET)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_rounds, args=(path, str(tmp_path / f"{t}.out"), t))
             for t in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    released = {bytes.fromhex(x): TRUE for t in range(2) if (tmp_path / f"{t}.out").exists()
                for x in (tmp_path / f"{t}.out").read_text().split()}
    ledger = SiteLedger(path, site_id="h1")
    _assert_no_release_escaped(ledger, released)
    assert released and ledger.spent() <= BUDGET.epsilon


# -- Hypothesis: sequences of reserve / settle / charge / crash -------------------------------
class _Crash(Exception):
    """A process death inside a write transaction (SQLite rolls the transaction back)."""


OUTCOMES = ("settle", "void", "crash-before-release", "crash-after-release", "crash-in-settle",
            "worse-than-reserved")
OPS = st.one_of(
    st.tuples(st.just("round"), st.floats(2.0, 8.0), st.floats(1.0, 2.0), st.sampled_from(OUTCOMES)),
    st.tuples(st.just("charge"), st.floats(2.0, 8.0), st.just(1.0), st.just("")),
    st.tuples(st.just("repeat"), st.just(0.0), st.just(1.0), st.just("")),
    st.tuples(st.just("reopen"), st.just(0.0), st.just(1.0), st.just("")),
)


def _run_sequence(ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.db"
        ledger = SiteLedger(path, site_id="s", budget=BUDGET)
        released: dict[bytes, object] = {}
        used: list[bytes] = []
        for i, (kind, z, factor, outcome) in enumerate(ops):
            rid = _rid(str(i))
            if kind == "reopen":
                ledger = SiteLedger(path, site_id="s")
            elif kind == "repeat" and used:
                before = ledger.entries()
                with pytest.raises(ReleaseRepeated):
                    ledger.reserve(used[-1], GaussianEvent(noise_multiplier=3.0))
                assert ledger.entries() == before
            elif kind == "charge":
                try:
                    ledger.charge(GaussianEvent(noise_multiplier=z), release_id=rid)
                    released[rid] = GaussianEvent(noise_multiplier=z)
                    used.append(rid)
                except BudgetExceeded:
                    pass
            elif kind == "round":
                worst = GaussianEvent(noise_multiplier=z)
                true = GaussianEvent(noise_multiplier=z * (0.5 if outcome.startswith("worse")
                                                           else factor))
                try:
                    ledger.reserve(rid, worst)
                except BudgetExceeded:
                    continue  # refused before anything left
                used.append(rid)
                if outcome == "crash-before-release":
                    ledger = SiteLedger(path, site_id="s")
                    continue
                if outcome == "void":  # not summed: its input is in no released sum
                    ledger.settle(rid, None)
                    continue
                released[rid] = true
                if outcome == "crash-after-release":
                    ledger = SiteLedger(path, site_id="s")
                    continue
                if outcome == "crash-in-settle":
                    def crash(_op: str) -> None:
                        raise _Crash()
                    ledger._before_commit = crash  # type: ignore[method-assign]
                    with pytest.raises(_Crash):
                        ledger.settle(rid, true)
                    ledger = SiteLedger(path, site_id="s")
                    continue
                try:
                    ledger.settle(rid, true)
                except BudgetExceeded:
                    pass  # only the planted defect refuses a settle; the oracle decides
            _assert_no_release_escaped(ledger, released)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(OPS, min_size=1, max_size=8))
def test_no_sequence_of_reserve_settle_charge_crash_lets_a_release_escape(ops: list) -> None:
    _run_sequence(ops)


def test_planted_charge_after_release_is_found_by_the_search(monkeypatch) -> None:
    monkeypatch.setattr(ledger_module, "_PLANT_CHARGE_AFTER_RELEASE", True)

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], report_multiple_bugs=False)
    @given(st.lists(OPS, min_size=1, max_size=8))
    def search(ops: list) -> None:
        _run_sequence(ops)

    # Within the same budget of examples as the real test: a release on no ledger (or a repeat
    # that the missing reservation no longer refuses).
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        search()
