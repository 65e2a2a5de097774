"""The service's OpenAPI fuzzed over real mutual TLS (schemathesis cases, steered by Hypothesis
toward the open round), with the oracle: no 5xx ever, and no refused request changes anything.

The target is a real service on 127.0.0.1 (uvicorn, TLS 1.3, client certificates) running a
real secagg round over four of five enrolled sites, its inbox the SQLite store. Each request is
one schemathesis case of the service's own OpenAPI (``app.openapi()``), sent with a real
client certificate, after Hypothesis has steered some of its fields toward what the round
holds: the open round's id, the step under way and its neighbours, and bodies that are signed
envelopes around an honest message, a mutated one, another site's, or under the wrong key,
round, step or stage. Some requests come from a site enrolled but outside the round, and some
with a foreign certificate or none (refused at the handshake: no request reaches the app).

The state compared around each request: every row of every table of the store, the round
session's observable state (step, stage, answered, pending, dropouts, message count), the
secagg server's stage and pending set, and the service's open and past rounds.
A GET never changes it; a refused POST (4xx) never changes it. Presence (``last_seen``) is
not part of it: it records that an enrolled site was heard from, which a refused request also
shows. Between bursts the test posts every site's honest message, so the fuzz meets every
stage of the round, the ended round, and the next round's first step.

Default run: a few hundred requests; ``-m slow``: over 2,000. The count is printed and recorded
(``record_property("fuzz_requests")``). Planted defects (CONVENTIONS 12): a session that stores
a message before checking it, and a route that lets a bad round id escape as a 500, are each
found within ``PLANTED_BUDGET`` requests (usually within a few dozen).

What the fuzz found and what was fixed: a malformed message from an authenticated site was
refused (400) but got the site excluded from the round by the secagg server, a state change no
stored message accounts for (a restart would have replayed a different server); the server now
refuses such a message and changes nothing, the sender's standing included.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass, field

import httpx
import pytest
import requests
import schemathesis
from schemathesis.generation.modes import GenerationMode
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from coordinator.service import create_app, rounds as rounds_module, serve_in_thread
from coordinator.service import CoordinatorService, MemoryRoster, secagg_limits, server_context
from coordinator.service.store import CoordinatorStore
from net_pki import make_consortium
from net_round import SecAggHost, SecAggParticipant, inputs_for, round_config
from secagg import SecAggClient, SecAggServer, envelope
from secagg.errors import CohortError

COHORT = (1, 2, 3, 4)  # site 5 is enrolled but outside the round
PLANTED_BUDGET = 1000  # requests the search may spend on a planted defect (it stops at the first)
STAGES = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask")


class Refuted(AssertionError):
    """The oracle failed: a 5xx, or a refused request that changed the state."""


@dataclass
class Target:
    pki: object
    service: CoordinatorService
    handle: object
    store: CoordinatorStore
    sessions: dict[str, requests.Session]
    honest_http: dict[int, httpx.Client]
    rounds: list = field(default_factory=list)  # (config, server, session, participants)
    honest: dict[int, bytes] = field(default_factory=dict)  # this step's honest envelopes
    requests_sent: int = 0
    diverged: set = field(default_factory=set)  # sites of this round the fuzz spoke for
    first_diverged: set = field(default_factory=set)
    failures: list = field(default_factory=list)  # (request number, what the oracle saw)
    refused: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def current(self):
        return self.rounds[-1]

    # -- the state the oracle compares ----------------------------------------------------------
    def digest(self) -> bytes:
        h = hashlib.sha256()
        with self.store._lock:
            tables = [r[0] for r in self.store._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for table in tables:
                rows = self.store._conn.execute(f"SELECT * FROM {table}").fetchall()
                h.update(table.encode() + repr(sorted(map(repr, rows))).encode())
        for _, server, session, _ in self.rounds:
            snap = session.snapshot()
            snap.pop("deadline_in")
            h.update(repr((sorted(snap.items()), server.stage,
                           sorted(server.pending()))).encode())
        service = self.service
        h.update(repr((None if service.session is None else service.session.round_id,
                       service.finished, sorted(service._past))).encode())
        return h.digest()

    # -- the honest sites, between bursts -------------------------------------------------------
    def open_round(self, dim: int = 16) -> None:
        config = round_config(len(COHORT), dim)
        inputs = inputs_for(config)
        server = SecAggServer(config)
        self.store.open_round(config.round_id, len(self.rounds) + 1, b"",
                              sites={c: f"site-{c}" for c in COHORT})
        session = self.service.open_round(config.round_id, SecAggHost(server),
                                          cohort=frozenset(COHORT),
                                          limits=secagg_limits(config), stage_timeout=3600.0,
                                          inbox=self.store)
        parts = {c: SecAggParticipant(SecAggClient(c, config), inputs[c]) for c in COHORT}
        self.rounds.append((config, server, session, parts))
        self.diverged = set()
        self.honest = {c: self._seal(c, 0, session.stage, parts[c].start()) for c in COHORT}

    def _seal(self, c: int, step: int, stage: str, body: bytes) -> bytes:
        config = self.current[0]
        return envelope.seal(self.pki.sites[c].identity, round_id=config.round_id, client=c,
                             step=step, stage=stage, body=body)

    def advance(self) -> bool:
        """Every site posts its honest message for the open step; then each computes its next
        one. False once the round is over.

        The fuzz speaks as sites 1 and 2 with their real keys, so now and then one of its
        messages is a valid one (a flipped bit in a public key or a masked vector is still a
        well-formed message the site signed) and is accepted in the site's place: that is the
        site's message, the service was right to take it, and from then on the site is the
        fuzzer's (``diverged``): its honest half stops, and the step it no longer answers is
        closed by its deadline (made due now), so it becomes a dropout like any silent site."""
        config, _, session, parts = self.current
        step = session.step
        rid = config.round_id.hex()
        for c in sorted(self.honest):
            prior = self.store.digest(config.round_id, step, c)
            if prior is not None and prior != envelope.parse(self.honest[c]).digest:
                self.diverged.add(c)
                continue
            r = self.honest_http[c].post(f"/v1/rounds/{rid}/steps/{step}",
                                         content=self.honest[c])
            assert r.status_code == 200, (c, step, r.status_code, r.text)
        if session.snapshot()["state"] == "open" and session.step == step:
            session.deadline = session.clock()  # the diverged sites are silent: close it
            session.tick()
        if session.snapshot()["state"] != "open":
            self.honest = {}
            return False
        assert session.step == step + 1
        nxt = {}
        for c in sorted(set(self.honest) - self.diverged):
            r = self.honest_http[c].get(f"/v1/work?after={step + 1}&wait=5")
            if r.status_code != 200:  # dropped (its step closed without it)
                self.diverged.add(c)
                continue
            try:
                reply = parts[c].on_message(r.content)
            except CohortError:  # what the fuzzer's messages did to the round reached it
                self.diverged.add(c)
                continue
            assert reply is not None
            nxt[c] = self._seal(c, step + 1, r.headers["cohort-stage"], reply)
        self.honest = nxt
        return True


def _requests_session(pki, cert) -> requests.Session:
    s = requests.Session()
    s.verify = str(pki.ca)
    if cert is not None:
        s.cert = (str(cert.cert), str(cert.key))
    return s


def _httpx(pki, url: str, c: int) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    kit = pki.sites[c].tls
    ctx.load_cert_chain(str(kit.cert), str(kit.key))
    return httpx.Client(base_url=url, verify=ctx, timeout=10.0,
                        headers={"content-type": "application/octet-stream"})


@pytest.fixture
def target(tmp_path_factory):
    pki = make_consortium(tmp_path_factory.mktemp("fuzz-pki"), 5)
    store = CoordinatorStore(tmp_path_factory.mktemp("fuzz-state") / "state.sqlite")
    store.begin_job("fuzz")
    service = CoordinatorService(pki.roster, poll_hold=0.02, body_timeout=2.0)
    context = server_context(certfile=pki.server.cert, keyfile=pki.server.key, cafile=pki.ca)
    handle = serve_in_thread(create_app(service), context)
    sessions = {"site1": _requests_session(pki, pki.sites[1].tls),
                "site2": _requests_session(pki, pki.sites[2].tls),
                "outsider": _requests_session(pki, pki.sites[5].tls),
                "foreign": _requests_session(pki, pki.foreign),
                "nocert": _requests_session(pki, None)}
    honest = {c: _httpx(pki, handle.url, c) for c in COHORT}
    t = Target(pki, service, handle, store, sessions, honest)
    t.open_round()
    try:
        yield t
    finally:
        for s in sessions.values():
            s.close()
        for h in honest.values():
            h.close()
        handle.stop()
        store.close()


# -- what a fuzzed request is made of --------------------------------------------------------------
_SCHEMA_CACHE: dict[str, object] = {}


def _operations():
    if "ops" not in _SCHEMA_CACHE:
        app = create_app(CoordinatorService(MemoryRoster([])))
        schema = schemathesis.openapi.from_dict(app.openapi())
        _SCHEMA_CACHE["ops"] = [r.ok() for r in schema.get_all_operations()]
    return _SCHEMA_CACHE["ops"]


def _cases():
    """Every operation's cases: schema-conforming, and (where it has parameters) violating."""
    if "cases" not in _SCHEMA_CACHE:
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        _SCHEMA_CACHE["cases"] = st.one_of([
            op.as_strategy(mode) for op in _operations() for mode in modes
            if mode is GenerationMode.POSITIVE or op.definition.raw.get("parameters")])
    return _SCHEMA_CACHE["cases"]


def _mutated(draw, body: bytes) -> bytes:
    """``body`` with one fault: a flipped bit, cut short, grown, replaced or emptied."""
    how = draw(st.sampled_from(["flip", "truncate", "extend", "random", "empty"]))
    if how == "flip" and body:
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([body[i] ^ (1 << draw(st.integers(0, 7)))]) + body[i + 1:]
    if how == "truncate" and body:
        return body[:draw(st.integers(0, len(body) - 1))]
    if how == "extend":
        return body + draw(st.binary(min_size=1, max_size=64))
    if how == "random":
        return draw(st.binary(max_size=512))
    return b""


def _steer(draw, t: Target, case) -> str:
    """Point parts of a schemathesis case at the round; returns which session sends it."""
    config, _, session, _ = t.current
    rid = config.round_id
    step = session.step
    past = [r[0].round_id.hex() for r in t.rounds[:-1]]
    hexes = st.sampled_from([rid.hex(), rid.hex().upper(), os.urandom(16).hex(), "", "zz",
                             rid.hex()[:-1]] + past)
    steps = st.sampled_from([step, step - 1, step + 1, 0, 2 ** 32, -1])
    often = st.integers(0, 9).map(lambda x: x < 9)  # most cases reach past the routing
    if "round_hex" in (case.path_parameters or {}) and draw(often):
        case.path_parameters["round_hex"] = draw(
            st.one_of(st.just(rid.hex()), st.just(rid.hex()), hexes))
    if "step" in (case.path_parameters or {}) and draw(often):
        case.path_parameters["step"] = draw(st.one_of(st.just(step), st.just(step), steps))
    query = dict(case.query or {})
    if case.path == "/v1/work" and draw(st.booleans()):
        query["after"] = draw(steps)
        for key in ("done", "current"):
            if draw(st.booleans()):
                query[key] = draw(hexes)
    if "wait" in query and isinstance(query["wait"], (int, float)):
        query["wait"] = min(query["wait"], 0.05)  # the service caps it at poll_hold anyway
    case.query = query
    who = draw(st.sampled_from(["site1"] * 6 + ["site2"] * 6 + ["outsider"] * 2
                               + ["foreign", "nocert"]))
    if case.method.upper() == "POST" and draw(st.integers(0, 3)) > 0:
        case.body = _body(draw, t, 2 if who == "site2" else 1)
    return who


def _body(draw, t: Target, me: int) -> bytes:
    """An envelope with one fault (or none, rarely: then it is the site's honest message)."""
    config, _, session, _ = t.current
    honest = t.honest.get(me)
    fault = draw(st.sampled_from(["body"] * 4 + ["other_body", "signer", "client", "step",
                                                 "stage", "round", "bytes", "honest"]))
    if honest is None or fault == "honest":
        return honest if honest is not None else draw(st.binary(max_size=256))
    if fault == "bytes":
        return _mutated(draw, honest)
    mine = bytes(envelope.parse(honest).body)
    fields = dict(signer=me, client=me, step=session.step, stage=session.stage,
                  round_id=config.round_id, body=mine)
    if fault == "body":
        fields["body"] = _mutated(draw, mine)
    elif fault == "other_body":
        other = draw(st.sampled_from(sorted(c for c in t.honest if c != me)))
        fields["body"] = bytes(envelope.parse(t.honest[other]).body)
    elif fault == "signer":
        fields["signer"] = draw(st.sampled_from([c for c in (1, 2, 3, 5) if c != me]))
    elif fault == "client":
        fields["client"] = draw(st.sampled_from([c for c in (0, 1, 2, 5, 2 ** 32 - 1)
                                                 if c != me]))
    elif fault == "step":
        fields["step"] = draw(st.sampled_from([session.step + 1, max(0, session.step - 1),
                                               2 ** 32 - 1]))
    elif fault == "stage":
        fields["stage"] = draw(st.sampled_from([x for x in STAGES if x != session.stage]
                                               + ["x" * 32]))
    else:
        fields["round_id"] = draw(st.sampled_from([os.urandom(16), b"\x00", b"\xff" * 32]))
    signer = fields.pop("signer")
    return envelope.seal(t.pki.sites[signer].identity, **fields)


def fuzz(t: Target, n: int) -> None:
    """``n`` fuzzed requests against the round's current step; Refuted at the first request
    the oracle refutes (the state it changed makes Hypothesis's replay of it meaningless, so
    the first finding is what is reported)."""
    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate])
    @given(st.data())
    def one(data) -> None:
        try:
            check(data)
        except Refuted as exc:
            t.failures.append((t.requests_sent, str(exc)))
            raise

    def check(data) -> None:
        case = data.draw(_cases())
        who = _steer(data.draw, t, case)
        before, seen = t.digest(), t.service.requests
        t.requests_sent += 1
        try:
            session = t.sessions[who]
            response = case.call(base_url=t.url, session=session, timeout=10,
                                 verify=session.verify, cert=session.cert)
        except requests.exceptions.ConnectionError:  # SSLError too: the handshake refused it
            if who not in ("foreign", "nocert"):
                raise
            if t.service.requests != seen or t.digest() != before:
                raise Refuted(f"a handshake refused ({who}) still reached the app") from None
            t.refused += 1
            return
        status = response.status_code
        t.statuses[status] = t.statuses.get(status, 0) + 1
        if who in ("foreign", "nocert"):
            raise Refuted(f"{who}: a request without a consortium certificate got {status}")
        if status >= 500:
            raise Refuted(f"{status} from {case.method} {case.formatted_path} "
                          f"{case.query}: {response.text[:200]}")
        if case.method.upper() != "POST" or status >= 400:
            if t.digest() != before:
                raise Refuted(f"{case.method} {case.formatted_path} {case.query} answered "
                              f"{status} and changed the state")
        if status >= 400:
            t.refused += 1

    try:
        one()
    except Exception as exc:
        if t.failures:
            raise Refuted(t.failures[0][1]) from exc
        raise


def _campaign(t: Target, per_step: int, total: int) -> None:
    """Bursts of ``per_step`` requests at every step of round after round (each ended round
    fuzzed too, then the next opened) until ``total`` requests and the first round has ended."""
    first = True
    while first or t.requests_sent < total:
        fuzz(t, per_step)
        if not t.advance():
            fuzz(t, per_step)  # the ended round, with the next one not open yet
            if first:
                t.first_diverged, first = set(t.diverged), False
            t.open_round()


def _report(t: Target, record_property) -> None:
    record_property("fuzz_requests", t.requests_sent)
    record_property("fuzz_refused", t.refused)
    print(f"\nfuzz: {t.requests_sent} requests, {t.refused} refused, statuses "
          f"{dict(sorted(t.statuses.items()))}, sites the fuzz spoke for in round 1: "
          f"{sorted(t.first_diverged)}")


def test_the_fuzz_finds_no_500_and_no_state_change(target, record_property) -> None:
    _campaign(target, 45, 300)  # 5 steps, the ended round, the next round's first
    _report(target, record_property)
    assert target.requests_sent >= 300
    _honest_sites_unhurt(target)


def _honest_sites_unhurt(t: Target) -> None:
    """The first round ended; every site the fuzz never spoke for is in its sum."""
    config, server, session, _ = t.rounds[0]
    assert session.snapshot()["state"] in ("done", "aborted")
    if session.snapshot()["state"] == "done":
        assert set(COHORT) - t.first_diverged <= server.result.included


@pytest.mark.slow
def test_the_long_fuzz_finds_no_500_and_no_state_change(target, record_property) -> None:
    _campaign(target, 250, 2000)
    _report(target, record_property)
    assert target.requests_sent >= 2000
    _honest_sites_unhurt(target)


# -- the oracle can fail -------------------------------------------------------------------------
def test_the_fuzz_catches_a_session_that_stores_a_message_before_checking_it(
        target, monkeypatch) -> None:
    monkeypatch.setattr(rounds_module, "_PLANT_STORE_BEFORE_CHECK", True)
    assert target.advance()  # step 1: a message that parses, verifies and is refused by secagg
    with pytest.raises(Refuted, match="changed the state"):
        fuzz(target, PLANTED_BUDGET)
    assert target.failures[0][0] <= PLANTED_BUDGET
    print(f"\nplanted defect found at request {target.failures[0][0]}")


def test_the_fuzz_catches_a_route_that_lets_a_bad_round_id_escape(target, monkeypatch) -> None:
    def careless_find(self, round_hex: str):
        round_id = bytes.fromhex(round_hex)  # ValueError on a bad id: a 500
        session = self.session
        if session is not None and session.round_id == round_id:
            return session
        return self._past[round_id]

    monkeypatch.setattr(CoordinatorService, "find", careless_find)
    with pytest.raises(Refuted, match="^500"):
        fuzz(target, PLANTED_BUDGET)
    assert target.failures[0][0] <= PLANTED_BUDGET
    print(f"\nplanted defect found at request {target.failures[0][0]}")


def test_every_operation_of_the_schema_is_fuzzed() -> None:
    ops = {(op.method.upper(), op.path) for op in _operations()}
    assert ops == {("GET", "/v1/work"), ("POST", "/v1/rounds/{round_hex}/steps/{step}"),
                   ("GET", "/v1/rounds/{round_hex}/outcome"), ("GET", "/v1/status")}
    post = next(op for op in _operations() if op.method.upper() == "POST")
    assert "application/octet-stream" in post.definition.raw["requestBody"]["content"]

