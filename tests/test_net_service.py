"""The coordinator service and the site agent over real TLS on loopback: a whole secure round,
refusals at the handshake, forged senders, replays, oversized bodies, dropouts, revocation.

Each service runs uvicorn in a thread on 127.0.0.1 with an ephemeral port; every loop is bounded.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from clients.agent import SiteAgent, backoff_delay, site_tls_context
from coordinator.service import create_app, serve_in_thread, server_context
from coordinator.service.rounds import MemoryInbox
from net_pki import make_consortium
from net_round import (SecAggParticipant, inputs_for, make_agent, open_secagg_round,
                       round_config, run_agents, start_service)
from secagg import SecAggClient, envelope

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("pki"), 5)


@pytest.fixture
def running(pki):
    run = start_service(pki, poll_hold=1.0)
    yield run
    run.stop()


def _http(pki, url: str, cert=None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return httpx.Client(base_url=url, verify=ctx, timeout=10.0)


def _site_http(pki, url, c):
    return _http(pki, url, pki.sites[c].tls)


def _post(http, session, *, step, stage, body, signer, client, round_id=None):
    rid = round_id or session.round_id
    sealed = envelope.seal(signer, round_id=rid, client=client, step=step, stage=stage,
                           body=body)
    return http.post(f"/v1/rounds/{rid.hex()}/steps/{step}", content=sealed,
                     headers={"content-type": "application/octet-stream"})


def _state(server, session):
    """Everything a refused request must leave as it was."""
    snap = session.snapshot()
    snap.pop("deadline_in")
    return snap, server.state, server.pending()


def _expected(inputs, included):
    return sum(inputs[c].astype(np.uint64) for c in included).astype(np.uint32)


# -- a whole round ---------------------------------------------------------------------------------
def test_full_round_over_mutual_tls_gives_the_exact_sum(pki, running) -> None:
    config = round_config(5, 2000)
    inputs = inputs_for(config)
    server, session = open_secagg_round(running, config)
    agents = {c: make_agent(pki, running.url, c,
                            SecAggParticipant(SecAggClient(c, config), inputs[c]))
              for c in config.clients}
    reports = run_agents(agents)
    assert {c: r.outcome for c, r in reports.items()} == {c: "done" for c in config.clients}
    assert server.result.included == frozenset(config.clients)
    assert np.array_equal(server.result.aggregate, _expected(inputs, config.clients))
    assert session.snapshot()["state"] == "done" and session.dropouts == set()
    # The stored transcript is verifiable later: every envelope under its site's identity key.
    stored = session.inbox.envelopes(config.round_id)
    assert len(stored) == 5 * 5
    for step, site, stage, raw in stored:
        sealed = envelope.parse(raw)
        assert (sealed.client, sealed.step, sealed.stage) == (site, step, stage)
        sealed.verify(pki.sites[site].identity.public_key())


# -- the handshake ---------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["foreign", "expired", "missing"])
def test_bad_client_certificates_are_refused_at_the_handshake(pki, running, which) -> None:
    cert = {"foreign": pki.foreign, "expired": pki.expired, "missing": None}[which]
    before = running.service.requests
    with _http(pki, running.url, cert) as http, pytest.raises(httpx.TransportError):
        http.get("/v1/status")
    assert running.service.requests == before  # no request reached the app
    with _site_http(pki, running.url, 1) as http:  # while a good certificate gets through
        assert http.get("/v1/status").status_code == 200


def test_without_client_certificate_checks_the_app_still_fails_closed(pki) -> None:
    """Planted defect: a server context that does not require client certificates. The missing
    certificate now reaches the app, which refuses it (no TLS extension, no identity)."""
    service_ctx = server_context(certfile=pki.server.cert, keyfile=pki.server.key,
                                 cafile=pki.ca)
    service_ctx.verify_mode = ssl.CERT_OPTIONAL
    from coordinator.service import CoordinatorService
    service = CoordinatorService(pki.roster, poll_hold=0.5)
    handle = serve_in_thread(create_app(service), service_ctx)
    try:
        with _http(pki, handle.url, None) as http:
            r = http.get("/v1/status")
        assert r.status_code == 403 and r.json()["error"] == "NotEnrolled"
        assert service.requests == 1
    finally:
        handle.stop()


def test_tls_below_1_3_is_refused(pki, running) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    kit = pki.sites[1].tls
    ctx.load_cert_chain(str(kit.cert), str(kit.key))
    with httpx.Client(base_url=running.url, verify=ctx) as http, \
            pytest.raises(httpx.TransportError):
        http.get("/v1/status")


# -- who may speak ---------------------------------------------------------------------------------
def test_one_sites_certificate_cannot_speak_for_another(pki, running) -> None:
    config = round_config(5, 64)
    inputs = inputs_for(config)
    server, session = open_secagg_round(running, config)
    parts = {c: SecAggParticipant(SecAggClient(c, config), inputs[c]) for c in config.clients}
    adv = {c: p.start() for c, p in parts.items()}
    ident = {c: pki.sites[c].identity for c in config.clients}
    before = _state(server, session)
    with _site_http(pki, running.url, 1) as http:
        # Site 1's connection, site 2's envelope and signature: a stolen message.
        r = _post(http, session, step=0, stage="advertise_keys", body=adv[2], signer=ident[2],
                  client=2)
        assert (r.status_code, r.json()["error"]) == (403, "WrongSender")
        # Site 1's envelope, signed with site 2's key.
        r = _post(http, session, step=0, stage="advertise_keys", body=adv[1], signer=ident[2],
                  client=1)
        assert (r.status_code, r.json()["error"]) == (401, "InvalidSignature")
        # Site 1's own envelope around a protocol message whose header names site 2.
        r = _post(http, session, step=0, stage="advertise_keys", body=adv[2], signer=ident[1],
                  client=1)
        assert r.status_code == 400
    assert _state(server, session) == before
    # Nobody lost standing: the round completes with everyone.
    for c in config.clients:
        with _site_http(pki, running.url, c) as h:
            assert _post(h, session, step=0, stage="advertise_keys", body=adv[c],
                         signer=ident[c], client=c).status_code == 200
    agents = {c: make_agent(pki, running.url, c, parts[c]) for c in config.clients}
    reports = run_agents(agents)
    assert all(r.outcome == "done" for r in reports.values())
    assert server.result.included == frozenset(config.clients)
    assert np.array_equal(server.result.aggregate, _expected(inputs, config.clients))


def test_replays_and_out_of_round_messages_are_refused_with_state_unchanged(pki,
                                                                            running) -> None:
    config = round_config(4, 64)
    inputs = inputs_for(config)
    server, session = open_secagg_round(running, config)
    parts = {c: SecAggParticipant(SecAggClient(c, config), inputs[c]) for c in config.clients}
    ident = {c: pki.sites[c].identity for c in config.clients}
    adv = {c: p.start() for c, p in parts.items()}
    https = {c: _site_http(pki, running.url, c) for c in config.clients}
    try:
        for c in config.clients:
            r = _post(https[c], session, step=0, stage="advertise_keys", body=adv[c],
                      signer=ident[c], client=c)
            assert r.json()["outcome"] == "accepted"
        assert session.step == 1
        h1 = https[1]
        before = _state(server, session)
        # The same bytes again: idempotent, no second effect.
        r = _post(h1, session, step=0, stage="advertise_keys", body=adv[1], signer=ident[1],
                  client=1)
        assert (r.status_code, r.json()["outcome"]) == (200, "duplicate")
        # The step-0 message replayed into step 1 (protocol refuses the kind).
        r = _post(h1, session, step=1, stage="advertise_keys", body=adv[1], signer=ident[1],
                  client=1)
        assert r.status_code == 409
        # Other bytes for a step already answered.
        fresh = SecAggClient(1, config).advertise_keys()
        r = _post(h1, session, step=0, stage="advertise_keys", body=fresh, signer=ident[1],
                  client=1)
        assert r.status_code == 409
        # Another round's id, and a step that does not exist yet.
        r = _post(h1, session, step=1, stage="advertise_keys", body=adv[1], signer=ident[1],
                  client=1, round_id=os.urandom(16))
        assert r.status_code == 409
        r = _post(h1, session, step=7, stage="unmask", body=adv[1], signer=ident[1], client=1)
        assert r.status_code == 409
        # A message of another round's protocol under this round's envelope.
        other = round_config(4, 64)
        stale = SecAggClient(1, other).advertise_keys()
        r = _post(h1, session, step=1, stage="advertise_keys", body=stale, signer=ident[1],
                  client=1)
        assert r.status_code == 409
        # The stage name must match the step's.
        roster = h1.get("/v1/work?after=1&wait=1")
        reveal = parts[1].on_message(roster.content)
        r = _post(h1, session, step=1, stage="share_keys", body=reveal, signer=ident[1],
                  client=1)
        assert r.status_code == 409
        assert _state(server, session) == before
    finally:
        for h in https.values():
            h.close()
    # Site 1 already consumed its roster above; the agents take over from where each stands.
    agents = {c: make_agent(pki, running.url, c, parts[c]) for c in config.clients if c != 1}
    with _site_http(pki, running.url, 1) as h:
        assert _post(h, session, step=1, stage="advertise_keys", body=reveal, signer=ident[1],
                     client=1).json()["outcome"] == "accepted"
    agents[1] = make_agent(pki, running.url, 1, parts[1], start_after=2)
    reports = run_agents(agents)
    assert all(r.outcome == "done" for r in reports.values()), reports
    assert np.array_equal(server.result.aggregate, _expected(inputs, config.clients))


# -- size limits -----------------------------------------------------------------------------------
def test_oversized_bodies_are_refused_with_413(pki, running) -> None:
    config = round_config(3, 64)
    server, session = open_secagg_round(running, config)
    before = _state(server, session)
    with _site_http(pki, running.url, 1) as http:
        url = f"/v1/rounds/{config.round_id.hex()}/steps/0"
        r = http.post(url, content=b"\x00" * 20_000)
        assert (r.status_code, r.json()["error"]) == (413, "MessageTooLarge")

        def chunks():  # no Content-Length: the body is cut off while it streams
            for _ in range(40):
                yield b"\x00" * 1000

        r = http.post(url, content=chunks())
        assert (r.status_code, r.json()["error"]) == (413, "MessageTooLarge")
    assert _state(server, session) == before


def test_honest_messages_fit_their_stage_limits() -> None:
    from coordinator.service import secagg_limits
    from secagg import Stage
    config = round_config(5, 1000, bits=24)
    limit = secagg_limits(config)
    assert limit(Stage.MASKED_INPUT) == 48 + 3000
    assert limit(Stage.ADVERTISE_KEYS) < 400 and limit(Stage.UNMASK) < 1000


# -- dropouts --------------------------------------------------------------------------------------
class _Stalls(SecAggParticipant):
    """A site that stops answering when asked for its masked input (until released)."""

    def __init__(self, client, values, release: threading.Event) -> None:
        super().__init__(client, values)
        self.release = release

    def on_message(self, data: bytes):
        from secagg.client import ClientState
        if self.client.state is ClientState.AWAIT_DELIVERY:
            self.release.wait(20)
        return super().on_message(data)


def test_a_site_that_stops_answering_becomes_a_dropout(pki) -> None:
    run = start_service(pki, poll_hold=1.0)
    try:
        config = round_config(5, 500)
        inputs = inputs_for(config)
        server, session = open_secagg_round(run, config, stage_timeout=1.5)
        release = threading.Event()
        parts = {c: SecAggParticipant(SecAggClient(c, config), inputs[c]) for c in config.clients}
        parts[3] = _Stalls(SecAggClient(3, config), inputs[3], release)
        agents = {c: make_agent(pki, run.url, c, parts[c]) for c in config.clients}
        threading.Thread(target=lambda: (time.sleep(0.2), _wait_done(session, 15),
                                         release.set()), daemon=True).start()
        reports = run_agents(agents)
        survivors = frozenset({1, 2, 4, 5})
        assert session.dropouts == {3}
        assert server.result.included == survivors
        assert np.array_equal(server.result.aggregate, _expected(inputs, survivors))
        assert reports[3].outcome == "dropped"  # its late post was refused: the round had ended
        assert [s.stage for s in reports[3].steps][-1] == "share_keys"
    finally:
        release.set()
        run.stop()


def _wait_done(session, timeout: float) -> None:
    until = time.monotonic() + timeout
    while session.snapshot()["state"] == "open" and time.monotonic() < until:
        time.sleep(0.05)


def test_a_site_killed_mid_round_becomes_a_dropout(pki, tmp_path) -> None:
    run = start_service(pki, poll_hold=1.0)
    proc = None
    try:
        config = round_config(5, 500)
        inputs = inputs_for(config, 11)
        victim = 2
        kit = pki.sites[victim]
        identity_pem = tmp_path / "identity.pem"
        identity_pem.write_bytes(kit.identity.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        identity_pem.chmod(0o600)
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "net_site.py"), run.url, str(pki.ca),
             str(kit.tls.cert), str(kit.tls.key), str(identity_pem), str(victim),
             config.round_id.hex(), "5", "500", "11", "masked_input"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        # Open the round once the subprocess site is polling (its imports take a moment).
        until = time.monotonic() + 30
        while victim not in run.service.last_seen and time.monotonic() < until:
            time.sleep(0.05)
        assert victim in run.service.last_seen, "the site process never polled"
        server, session = open_secagg_round(run, config, stage_timeout=2.0)
        agents = {c: make_agent(pki, run.url, c,
                                SecAggParticipant(SecAggClient(c, config), inputs[c]))
                  for c in config.clients if c != victim}
        killer = threading.Thread(target=_kill_at_masked_input, args=(session, proc),
                                  daemon=True)
        killer.start()
        reports = run_agents(agents)
        killer.join(5)
        assert proc.poll() == -signal.SIGKILL
        survivors = frozenset(config.clients) - {victim}
        assert all(r.outcome == "done" for r in reports.values())
        assert session.dropouts == {victim}
        assert server.result.included == survivors
        assert np.array_equal(server.result.aggregate, _expected(inputs, survivors))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(5)
            proc.stdout.close()
        run.stop()


def _kill_at_masked_input(session, proc) -> None:
    until = time.monotonic() + 20
    while session.snapshot()["stage"] != "masked_input" and time.monotonic() < until:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)


# -- revocation ------------------------------------------------------------------------------------
def test_a_revoked_certificate_is_refused_from_the_next_request_on(tmp_path) -> None:
    pki = make_consortium(tmp_path, 4)
    run = start_service(pki, poll_hold=1.0)
    try:
        config = round_config(4, 100)
        inputs = inputs_for(config)
        with _site_http(pki, run.url, 4) as http:
            assert http.get("/v1/status").status_code == 200
            pki.roster.revoke(pki.sites[4].tls.fingerprint)  # the same connection, next request
            r = http.get("/v1/status")
            assert (r.status_code, r.json()["error"]) == (403, "NotEnrolled")
        server, session = open_secagg_round(run, config, stage_timeout=1.0)
        agents = {c: make_agent(pki, run.url, c,
                                SecAggParticipant(SecAggClient(c, config), inputs[c]))
                  for c in config.clients}
        reports = run_agents(agents)
        assert reports[4].outcome == "refused" and "403" in reports[4].detail
        assert session.dropouts == {4}
        assert np.array_equal(server.result.aggregate, _expected(inputs, {1, 2, 3}))
    finally:
        run.stop()


# -- the agent's own bounds ------------------------------------------------------------------------
def test_backoff_is_exponential_jittered_and_capped() -> None:
    lows = [backoff_delay(a, base=0.1, cap=2.0, rng=lambda: 0.0) for a in range(8)]
    highs = [backoff_delay(a, base=0.1, cap=2.0, rng=lambda: 1.0) for a in range(8)]
    assert highs[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert lows[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert max(highs) == 2.0


def test_the_agent_gives_up_by_itself_when_nobody_answers(pki) -> None:
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    kit = pki.sites[1]
    slept: list[float] = []
    agent = SiteAgent(base_url=f"https://127.0.0.1:{port}",
                      tls=site_tls_context(certfile=kit.tls.cert, keyfile=kit.tls.key,
                                           cafile=pki.ca),
                      identity=kit.identity, client_id=1, participant=None, max_attempts=4,
                      backoff_base=0.01, max_outage=0.1, sleep=slept.append)
    report = agent.run()
    agent.close()
    # unreachable: it backs off (doubling, jittered) until its outage budget is spent, then stops
    assert report.outcome == "gave_up" and report.retries == len(slept) >= 3
    assert sum(slept) <= 0.1 and 0.005 <= slept[0] <= 0.01
    assert slept == sorted(slept)  # uniform in [d/2, d] with d doubling: never shorter


def test_the_agent_rides_out_a_coordinator_that_is_down_and_comes_back(pki) -> None:
    """Nothing listens on the coordinator's address for a while (a restart); the agent keeps
    backing off and finishes its round once the service is there again."""
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = round_config(3, 8)
    agents = {c: make_agent(pki, f"https://127.0.0.1:{port}", c,
                            SecAggParticipant(SecAggClient(c, config), inputs_for(config)[c]),
                            backoff_base=0.05, backoff_cap=0.5, max_outage=30.0)
              for c in config.clients}
    done = {}
    threads = [threading.Thread(target=lambda c=c: done.__setitem__(c, agents[c].run()),
                                daemon=True) for c in agents]
    for t in threads:
        t.start()
    time.sleep(1.5)  # the agents find nobody, and back off
    from coordinator.service import bind_socket
    running = start_service(pki, sock=bind_socket("127.0.0.1", port), poll_hold=1.0)
    try:
        server, _ = open_secagg_round(running, config)
        for t in threads:
            t.join(30)
        assert {c: r.outcome for c, r in done.items()} == {c: "done" for c in config.clients}
        assert all(r.retries > 0 for r in done.values())
        expected = sum(v.astype(np.uint64) for v in inputs_for(config).values())
        assert np.array_equal(server.result.aggregate, expected.astype(np.uint32))
    finally:
        running.stop()
        for a in agents.values():
            a.close()


def test_memory_inbox_is_keyed_by_round_step_and_site() -> None:
    inbox = MemoryInbox()
    inbox.put(b"r" * 16, 0, "advertise_keys", 1, b"env", b"d" * 32)
    assert inbox.digest(b"r" * 16, 0, 1) == b"d" * 32
    assert inbox.digest(b"r" * 16, 1, 1) is None and inbox.count(b"r" * 16) == 1


def _raw(pki, url: str, request: bytes, *, read_for: float = 3.0) -> bytes:
    """Send raw bytes over a mutual-TLS connection as site 1; return what came back."""
    import socket
    host, port = url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    kit = pki.sites[1].tls
    ctx.load_cert_chain(str(kit.cert), str(kit.key))
    with socket.create_connection((host, int(port)), timeout=read_for) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(request)
        out = b""
        try:
            while chunk := tls.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out:
                    break
        except (TimeoutError, OSError):
            pass
    return out


def test_a_lying_content_length_is_bounded(pki) -> None:
    run = start_service(pki, poll_hold=0.5, body_timeout=0.5)
    try:
        config = round_config(3, 64)
        server, session = open_secagg_round(run, config, stage_timeout=60)
        before = _state(server, session)
        path = f"/v1/rounds/{config.round_id.hex()}/steps/0"
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/octet-stream\r\n")
        # Claims 100 bytes, sends 20,000: only the 100 are read as the body; the rest is junk.
        out = _raw(pki, run.url,
                   (head + "Content-Length: 100\r\n\r\n").encode() + b"\x00" * 20_000)
        assert out.startswith(b"HTTP/1.1 400")
        # Claims 300 (within the limit), sends 10 and stalls: the read deadline ends it.
        t0 = time.monotonic()
        out = _raw(pki, run.url, (head + "Content-Length: 300\r\n\r\n").encode() + b"\x00" * 10)
        assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3.0
        assert _state(server, session) == before
    finally:
        run.stop()
