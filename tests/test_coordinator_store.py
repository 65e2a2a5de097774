"""The coordinator's durable state (issue 10, DESIGN section 5): the SQLite inbox, committed
before a message is acknowledged, and a round rebuilt from it.

The attack on "nothing lost": a search (Hypothesis) over where the coordinator dies — which step,
how many of that step's messages were in, which site fell silent and when — and a real SIGKILL of
a process in the middle of writing. After the restart the round must finish with the same sum as
a round that never stopped, no accepted message may be missing or applied twice, and a step that
had closed must close the same way again (the same dropouts; otherwise two different survivor
lists could leave the coordinator, and an honest server must never send two). The planted
defect ``rounds._PLANT_FORGET_DEADLINE_CLOSE`` does not record a step closed on its deadline:
the site that was late then gets in after the restart, and the test sees the survivor list
change."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.service import secagg_limits
from coordinator.service.rounds import RoundSession, RoundState
from coordinator.service.store import CoordinatorStore, StoreError, StoreVersionError
from net_round import SecAggHost, SecAggParticipant, inputs_for, round_config
from secagg import SecAggClient, SecAggServer, envelope
from secagg.errors import StageError

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _session(config, store, clock, *, first=None, excluded=frozenset):
    store.open_round(config.round_id, 1, b"")  # idempotent: a restart finds it recorded
    return RoundSession(config.round_id, SecAggHost(SecAggServer(config)),
                        frozenset(config.clients), secagg_limits(config), stage_timeout=10.0,
                        inbox=store, clock=clock, first=first, excluded=excluded)


class Sites:
    """Every site of the round, answering the session's work as an agent would."""

    def __init__(self, config, inputs) -> None:
        self.config = config
        self.keys = {c: Ed25519PrivateKey.generate() for c in config.clients}
        self.parts = {c: SecAggParticipant(SecAggClient(c, config), inputs[c])
                      for c in config.clients}
        self.after = {c: 0 for c in config.clients}
        self.pending: dict[int, tuple[int, str, bytes]] = {}

    def compute(self, session, silent=frozenset()) -> None:
        """Each site not in ``silent`` computes its reply to its current work (not yet sent)."""
        for c in self.config.clients:
            if c in silent or c in self.pending:
                continue
            item = session.work_for(c, self.after[c])
            if item is None or not hasattr(item, "body"):
                continue
            reply = (self.parts[c].start() if item.step == 0
                     else self.parts[c].on_message(item.body))
            if reply is not None:
                sealed = envelope.seal(self.keys[c], round_id=self.config.round_id, client=c,
                                       step=item.step, stage=item.stage, body=reply)
                self.pending[c] = (item.step, item.stage, sealed)

    def send(self, session, c) -> None:
        step, stage, sealed = self.pending.pop(c)
        e = envelope.parse(sealed)
        try:
            session.accept(c, self.config.round_id, step, stage, e.body, sealed,
                           digest=e.digest)
        except StageError:
            pass  # too late: the step closed without it
        self.after[c] = step + 1


def _body(sealed: bytes) -> bytes:
    return bytes(envelope.parse(sealed).body)


def _run(config, inputs, store_path, *, crash_at=None, silent_site=None, silent_step=None,
         revoke=False):
    """Run the round; at ``crash_at`` = (step, k) drop the session after k of that step's
    messages and rebuild it from the store. A step left waiting for the silent site closes on
    its deadline, or, with ``revoke``, once the site is revoked (no clock moves). Returns the
    server's result."""
    clock = Clock()
    revoked: set[int] = set()
    excluded = lambda: frozenset(revoked)  # noqa: E731
    store = CoordinatorStore(store_path)
    session = _session(config, store, clock, excluded=excluded)
    sites = Sites(config, inputs)
    crashed = False
    for _ in range(40):
        if session.state is not RoundState.OPEN:
            break
        step = session.step
        silent = {silent_site} if silent_step is not None and step >= silent_step else set()
        sites.compute(session, silent)
        for i, c in enumerate(sorted(sites.pending)):
            if not crashed and crash_at is not None and crash_at == (step, i):
                crashed = True
                store.close()
                store = CoordinatorStore(store_path)
                session = _session(config, store, clock, excluded=excluded)
                session.replay(_body)
                if session.step != step or session.state is not RoundState.OPEN:
                    break
            sites.send(session, c)
        if session.state is RoundState.OPEN and session.step == step:
            if revoke:
                revoked |= silent  # the consortium revokes the silent site
            else:
                clock.now += 11.0  # the silent site's deadline passes
            session.tick()
    snapshot = session.snapshot()
    store.close()
    assert session.state is RoundState.DONE, snapshot
    return session.host.server.result, session


def _expected(inputs, included):
    return sum(inputs[c].astype(np.uint64) for c in included).astype(np.uint32)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(step=st.integers(0, 5), k=st.integers(0, 4), silent=st.sampled_from([None, 2, 5]),
       silent_step=st.integers(2, 4),  # a silent reveal (step 1) aborts, by design
       revoke=st.booleans())
def test_a_round_rebuilt_from_its_inbox_anywhere_finishes_with_the_same_sum(
        tmp_path_factory, step, k, silent, silent_step, revoke) -> None:
    """A crash anywhere, with or without a site that falls silent; its step closes on the
    deadline or, when the site is revoked, at once: the rebuilt round finishes with the same
    sum, and a revoked site never makes the round wait for a deadline."""
    config = round_config(5, 16)
    inputs = inputs_for(config, 3)
    path = tmp_path_factory.mktemp("s") / "state.sqlite"
    result, session = _run(config, inputs, path, crash_at=(step, k), silent_site=silent,
                           silent_step=silent_step if silent else None, revoke=revoke)
    assert np.array_equal(result.aggregate, _expected(inputs, result.included))
    if revoke:
        assert session.clock.now == 0.0  # no deadline was ever reached
    if silent is not None and silent_step <= 3:  # silent before its masked input
        assert silent not in result.included
    with CoordinatorStore(path) as store:
        env = store.envelopes(config.round_id)
        keys = [(s, c) for s, c, _, _ in env]
        assert len(keys) == len(set(keys))  # nothing applied twice
        assert [c.step for c in store.steps(config.round_id)] == list(range(len(
            store.steps(config.round_id))))


def test_the_store_keeps_what_it_acknowledged_and_refuses_what_it_cannot_read(tmp_path) -> None:
    path = tmp_path / "state.sqlite"
    with CoordinatorStore(path) as store:
        assert store.begin_job("[job]\nname = 'a'\n") is True
        store.open_round(b"r" * 16, 1, b"work")
        store.put(b"r" * 16, 0, "advertise_keys", 3, b"env", b"d" * 32)
        with pytest.raises(sqlite3.IntegrityError):  # one message per (round, step, site)
            store.put(b"r" * 16, 0, "advertise_keys", 3, b"other", b"e" * 32)
        assert store.release(b"r" * 16, b"sum-1", {"n": 1}) == (b"sum-1", {"n": 1})
        # never released twice
        assert store.release(b"r" * 16, b"sum-2", {"n": 2}) == (b"sum-1", {"n": 1})
        store.checkpoint(1, b"params-1", {"accuracy": 0.5})
        store.checkpoint(2, b"params-2", {"accuracy": 0.6})
    with CoordinatorStore(path) as store:
        assert store.begin_job("[job]\nname = 'a'\n") is False
        with pytest.raises(StoreError, match="another job"):
            store.begin_job("[job]\nname = 'b'\n")
        assert store.digest(b"r" * 16, 0, 3) == b"d" * 32
        assert store.released(b"r" * 16) == (b"sum-1", {"n": 1})
        assert store.last_checkpoint().number == 2
        store._conn.execute("UPDATE checkpoints SET params = ? WHERE number = 2", (b"torn",))
        assert store.last_checkpoint().number == 1  # a corrupt checkpoint is passed over
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreVersionError, match="newer"):
        CoordinatorStore(path)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreVersionError, match="not a Cohort"):
        CoordinatorStore(other)


def test_a_replay_that_does_not_reproduce_a_closed_step_is_refused(tmp_path) -> None:
    """Fail closed: a stored step whose dropouts the replay does not reproduce (a state file
    edited, or a code change that reads the inbox differently) stops the round."""
    config = round_config(4, 8)
    inputs = inputs_for(config, 1)
    path = tmp_path / "state.sqlite"
    clock = Clock()
    store = CoordinatorStore(path)
    session = _session(config, store, clock)
    sites = Sites(config, inputs)
    sites.compute(session)
    for c in sorted(sites.pending):
        sites.send(session, c)
    assert session.step == 1
    store._conn.execute("UPDATE steps SET silent = '[4]' WHERE step = 0")
    store.close()
    with CoordinatorStore(path) as store:
        with pytest.raises(StageError, match="does not reproduce"):
            _session(config, store, clock).replay(_body)


_WRITER = textwrap.dedent("""
    import sys, hashlib
    sys.path.insert(0, {root!r})
    from coordinator.service.store import CoordinatorStore
    store = CoordinatorStore(sys.argv[1])
    store.open_round(b"r" * 16, 1, b"work")
    i = 0
    while True:
        body = hashlib.sha256(str(i).encode()).digest() * 2000
        store.put(b"r" * 16, i, "masked_input", 1, body, hashlib.sha256(body).digest())
        print(i, flush=True)  # acknowledged only once put() returned
        i += 1
""")


def _sigkill_after(script: str, path: Path, after: int, delay: float = 0.0,
                   extra: tuple[str, ...] = ()) -> int:
    """Run ``script`` (which prints the number of each write once it is committed) on
    ``path``, SIGKILL it ``delay`` seconds after its ``after``-th acknowledgement, and return
    the last number it acknowledged."""
    proc = subprocess.Popen([sys.executable, "-c", script.format(root=str(ROOT)), str(path),
                             *extra], stdout=subprocess.PIPE, text=True)
    acked = -1
    until = time.monotonic() + 60
    while acked < after and time.monotonic() < until:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # What the process printed before it died and this loop did not read yet was acknowledged
    # too: every one of those writes must be there as well.
    for line in proc.stdout.read().splitlines():
        acked = int(line)
    proc.stdout.close()
    assert acked >= after
    return acked


@pytest.mark.parametrize("after", [5, 40])
def test_sigkill_mid_write_loses_no_acknowledged_message(tmp_path, after) -> None:
    path = tmp_path / "state.sqlite"
    acked = _sigkill_after(_WRITER, path, after)
    with CoordinatorStore(path) as store:
        stored = {step: env for step, _, _, env in store.envelopes(b"r" * 16)}
        for i in range(acked + 1):
            assert i in stored  # every acknowledged message is there
        import hashlib
        for i, env in stored.items():  # and nothing is torn
            assert store.digest(b"r" * 16, i, 1) == hashlib.sha256(env).digest()


@pytest.mark.parametrize("planted", [False, True])
def test_a_step_closed_on_its_deadline_stays_closed_after_a_restart(tmp_path, monkeypatch,
                                                                    planted) -> None:
    """Site 5 misses the masked-input step; the step closes on its deadline and the unmask
    requests (survivors 1-4) are ready. The coordinator dies; site 5's late masked input comes
    in after the restart. It must be refused: the survivors stay 1-4."""
    import coordinator.service.rounds as rounds_module

    monkeypatch.setattr(rounds_module, "_PLANT_FORGET_DEADLINE_CLOSE", planted)
    config = round_config(5, 16)
    inputs = inputs_for(config, 2)
    path = tmp_path / "state.sqlite"
    clock = Clock()
    store = CoordinatorStore(path)
    session = _session(config, store, clock)
    sites = Sites(config, inputs)
    while session.step < 3:  # to the masked-input step
        sites.compute(session)
        for c in sorted(sites.pending):
            sites.send(session, c)
    assert session.stage == "masked_input"
    sites.compute(session)
    late = sites.pending.pop(5)
    for c in sorted(sites.pending):
        sites.send(session, c)
    clock.now += 11.0
    session.tick()
    assert session.stage == "unmask" and 5 in session.dropouts
    store.close()  # the coordinator dies here
    store = CoordinatorStore(path)
    session = _session(config, store, clock)
    session.replay(_body)
    sites.pending[5] = late
    sites.send(session, 5)  # the late site comes back
    store.close()
    assert session.stage == "unmask"
    if planted:
        # the forgotten close let the late site in: another survivor list than the one made
        assert 5 not in session.dropouts
    else:
        assert 5 in session.dropouts


def test_a_version_1_state_file_is_migrated_in_place(tmp_path) -> None:
    import coordinator.service.store as store_module

    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    for statement in store_module.MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO job (id, spec, started) VALUES (1, 'x', 0)")
    conn.commit()
    conn.close()
    with CoordinatorStore(path) as store:
        assert store.job_spec() == "x"  # kept
        store.open_round(b"r" * 16, 1, b"w", sites={3: "site-3"})
        assert store._read("SELECT client, site FROM round_sites") == [(3, "site-3")]
        assert store._read("PRAGMA user_version") == [(store_module.SCHEMA_VERSION,)]


_CHECKPOINTER = textwrap.dedent("""
    import sys, hashlib
    sys.path.insert(0, {root!r})
    from coordinator.service.store import CoordinatorStore
    if sys.argv[2:] == ["plant"]:
        # A planted defect: checkpoints handed to a background writer so that a round need
        # not wait for its checkpoint, acknowledged once queued (not once committed).
        import queue, threading

        class Store(CoordinatorStore):
            def __init__(self, path):
                super().__init__(path)
                self._queue = queue.Queue()
                threading.Thread(target=self._drain, daemon=True).start()

            def _drain(self):
                while True:
                    super().checkpoint(*self._queue.get())

            def checkpoint(self, number, params, metrics):
                self._queue.put((number, params, metrics))
    else:
        Store = CoordinatorStore
    store = Store(sys.argv[1])
    i = 0
    while True:
        # model-sized parameters (2 MB), so a kill is likely to land inside a write
        params = hashlib.sha256(str(i).encode()).digest() * (1 << 16)
        store.checkpoint(i, params, {{"round": i}})
        print(i, flush=True)  # the round is over only once its checkpoint is committed
        i += 1
""")


def _params(i: int) -> bytes:
    import hashlib
    return hashlib.sha256(str(i).encode()).digest() * (1 << 16)


@pytest.mark.parametrize("after,delay_ms", [(1, 0), (3, 2), pytest.param(
    5, 7, marks=pytest.mark.slow)])
def test_sigkill_during_a_checkpoint_write_leaves_the_last_good_one_usable(
        tmp_path, after, delay_ms) -> None:
    """A real process writing checkpoints is killed with SIGKILL at an arbitrary instant (after
    some commits, a few milliseconds into the next write): on reopening, the newest usable
    checkpoint is at least the last one acknowledged, its parameters are exactly what was
    written for it, and the file passes SQLite's integrity check."""
    path = tmp_path / "state.sqlite"
    acked = _sigkill_after(_CHECKPOINTER, path, after, delay_ms / 1000)
    assert _checkpoint_losses(path, acked) == []


def _checkpoint_losses(path: Path, acked: int) -> list[str]:
    """What a reopened state file lost or tore of checkpoints 0..``acked`` (all acknowledged):
    the newest usable checkpoint must be at least ``acked`` and exactly what was written for it,
    every acknowledged one there and intact, and the file must pass SQLite's integrity check."""
    losses = []
    with CoordinatorStore(path) as store:
        last = store.last_checkpoint()
        if last is None or last.number < acked:
            losses.append(f"newest usable checkpoint {last and last.number}, {acked} acknowledged")
        elif last.params != _params(last.number) or last.metrics != {"round": last.number}:
            losses.append(f"checkpoint {last.number} is not what was written")
        losses += [f"acknowledged checkpoint {i} is missing or torn" for i in range(acked + 1)
                   if (got := store.checkpoint_at(i)) is None or got.params != _params(i)]
    conn = sqlite3.connect(path)
    try:
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            losses.append("the file fails SQLite's integrity check")
    finally:
        conn.close()
    return losses


def test_the_kill_test_catches_a_store_that_acknowledges_before_it_commits(tmp_path) -> None:
    """The planted defect: checkpoints queued for a background writer and acknowledged at once.
    The same kill and the same oracle must find acknowledged checkpoints missing."""
    path = tmp_path / "state.sqlite"
    acked = _sigkill_after(_CHECKPOINTER, path, 3, 0.005, extra=("plant",))
    assert _checkpoint_losses(path, acked), "the planted store lost nothing: the oracle is blind"


def test_a_step_left_waiting_only_for_revoked_sites_closes_at_once_and_replays_so(
        tmp_path) -> None:
    """Sites 4 and 5 stop answering at the masked-input step. With only site 5 revoked the step
    still waits (site 4 might yet answer); once site 4 is revoked too, the next tick closes it,
    long before its deadline, with both as dropouts, recorded so that a restart replays the
    same survivors and the round ends with the sum of sites 1-3."""
    config = round_config(5, 16)
    inputs = inputs_for(config, 3)
    path = tmp_path / "state.sqlite"
    clock = Clock()
    revoked: set[int] = set()
    store = CoordinatorStore(path)
    session = _session(config, store, clock, excluded=lambda: frozenset(revoked))
    sites = Sites(config, inputs)
    while session.stage != "masked_input":
        sites.compute(session)
        for c in sorted(sites.pending):
            sites.send(session, c)
    sites.compute(session, silent={4, 5})
    for c in sorted(sites.pending):
        sites.send(session, c)
    revoked.add(5)
    session.tick()
    assert session.stage == "masked_input" and session.dropouts == set()
    revoked.add(4)
    session.tick()  # no clock change: the deadline is 10 s away
    assert session.stage == "unmask" and session.dropouts == {4, 5}
    assert session.history[-1].reason == "revoked"
    store.close()  # the coordinator dies here
    with CoordinatorStore(path) as store:
        again = _session(config, store, clock, excluded=lambda: frozenset(revoked))
        again.replay(_body)
        assert again.stage == "unmask" and again.dropouts == {4, 5}
        sites.compute(again, silent={4, 5})
        for c in sorted(sites.pending):
            sites.send(again, c)
        assert again.state.value == "done"
        result = again.host.server.result
        assert result.included == frozenset({1, 2, 3})
        expected = sum(inputs[c].astype(np.uint64) for c in (1, 2, 3)).astype(np.uint32)
        assert np.array_equal(result.aggregate, expected)
