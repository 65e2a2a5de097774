"""The site agent's HTTPS connection (clients/connection.py) against a scripted TLS peer.

The peer is a real TLS 1.3 server on 127.0.0.1 (the consortium's server certificate, client
certificates required) whose every connection follows a script: answer normally, close without
answering, close after answering without saying so, answer garbage, or say nothing at all. What
must hold: one connection serves many requests; a connection the peer closed is replaced before a
request is written to it; every failure is one TransportError within the request's timeout and
the next request works on a fresh connection; a body sent in parts arrives as their
concatenation with the right Content-Length.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.agent import site_tls_context
from clients.connection import CoordinatorConnection, TransportError
from coordinator.service import server_context
from net_pki import make_consortium


class ScriptedPeer:
    """A TLS server whose n-th accepted connection behaves as ``script[n]`` (the last entry
    repeats): ``ok`` answers every request on it (keep-alive), ``once`` answers one request then
    closes without ``Connection: close``, ``drop`` closes before answering, ``garbage`` answers
    a line that is not HTTP, ``mute`` reads the request and never answers."""

    def __init__(self, context: ssl.SSLContext, script: list[str]) -> None:
        self.script = script
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.bodies: list[bytes] = []
        self.lengths: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            kind = self.script[min(self.connections, len(self.script) - 1)]
            self.connections += 1
            threading.Thread(target=self._one, args=(raw, kind), daemon=True).start()

    def _read_request(self, conn, buf: bytes) -> tuple[bytes, bytes] | None:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = conn.recv(65536)
            if not data:
                return None
            rest += data
        self.lengths.append(length)
        self.bodies.append(rest[:length])
        return rest[:length], rest[length:]

    def _one(self, raw: socket.socket, kind: str) -> None:
        raw.settimeout(5)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        buf = b""
        try:
            while True:
                got = self._read_request(conn, buf)
                if got is None:
                    return
                body, buf = got
                if kind == "drop":
                    return
                if kind == "mute":
                    time.sleep(3)
                    return
                if kind == "garbage":
                    conn.sendall(b"this is not http\r\n\r\n")
                    return
                answer = b"%d" % len(body)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Seen: yes\r\n\r\n%s"
                             % (len(answer), answer))
                if kind == "once":
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_consortium(Path(tmp_path_factory.mktemp("pki")), 2)


def _server_ctx(pki) -> ssl.SSLContext:
    return server_context(certfile=pki.server.cert, keyfile=pki.server.key, cafile=pki.ca)


def _client(pki, port: int, timeout: float = 5.0) -> CoordinatorConnection:
    kit = pki.sites[1]
    tls = site_tls_context(certfile=kit.tls.cert, keyfile=kit.tls.key, cafile=pki.ca)
    return CoordinatorConnection(f"https://127.0.0.1:{port}", tls, timeout=timeout,
                                 connect_timeout=5.0)


def test_one_connection_serves_many_requests(pki):
    peer = ScriptedPeer(_server_ctx(pki), ["ok"])
    try:
        with _client(pki, peer.port) as conn:
            for i in range(20):
                r = conn.request("POST", "/x", content=b"a" * i)
                assert (r.status_code, r.content, r.headers["x-seen"]) == (200, b"%d" % i, "yes")
                assert "X-SEEN" in r.headers and "nope" not in r.headers
        assert peer.connections == 1
    finally:
        peer.close()


def test_a_connection_the_peer_closed_is_replaced_before_the_next_request(pki):
    peer = ScriptedPeer(_server_ctx(pki), ["once"])
    try:
        with _client(pki, peer.port) as conn:
            for _ in range(5):
                assert conn.request("GET", "/x").status_code == 200
                time.sleep(0.05)  # the peer's close reaches us while the connection is idle
        assert peer.connections == 5
        assert peer.lengths == [0] * 5  # every request was written once, to a live connection
    finally:
        peer.close()


def test_planted_a_connection_that_never_notices_the_peer_closed_it_fails(pki, monkeypatch):
    """The defect the test above guards against: without the idle-close check, a request is
    written to a connection the peer already closed and fails."""
    import clients.connection as connection

    monkeypatch.setattr(connection, "_closed_by_peer", lambda sock: False)
    peer = ScriptedPeer(_server_ctx(pki), ["once"])
    try:
        with _client(pki, peer.port) as conn, pytest.raises(TransportError):
            for _ in range(5):
                assert conn.request("GET", "/x").status_code == 200
                time.sleep(0.05)
    finally:
        peer.close()


@pytest.mark.parametrize("kind", ["drop", "garbage", "mute"])
def test_a_failed_request_is_one_transport_error_and_the_next_one_works(pki, kind):
    peer = ScriptedPeer(_server_ctx(pki), [kind, "ok"])
    try:
        with _client(pki, peer.port, timeout=1.0) as conn:
            t0 = time.monotonic()
            with pytest.raises(TransportError):
                conn.request("POST", "/x", content=b"body")
            assert time.monotonic() - t0 < 10  # bounded by the timeout, not by the peer
            r = conn.request("POST", "/x", content=b"again")
            assert (r.status_code, r.content) == (200, b"5")
        assert peer.connections == 2
    finally:
        peer.close()


def test_nobody_listening_is_a_transport_error(pki):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on it now
    with _client(pki, port) as conn, pytest.raises(TransportError):
        conn.request("GET", "/x")


def test_a_coordinator_with_another_ca_is_refused(pki, tmp_path):
    other = make_consortium(tmp_path, 1)  # a server certificate the site's CA did not sign
    peer = ScriptedPeer(_server_ctx(other), ["ok"])
    try:
        with _client(pki, peer.port) as conn, pytest.raises(TransportError):
            conn.request("GET", "/x")
    finally:
        peer.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "https://127.0.0.1:1/v1",
                                 "https://127.0.0.1:1?x=1", "127.0.0.1:1"])
def test_a_base_url_that_is_not_https_host_port_is_refused(pki, url):
    with pytest.raises(ValueError):
        CoordinatorConnection(url, ssl.create_default_context(), timeout=1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.binary(max_size=70_000), max_size=5))
def test_a_body_in_parts_arrives_as_their_concatenation(pki, parts):
    peer = ScriptedPeer(_server_ctx(pki), ["ok"])
    try:
        with _client(pki, peer.port) as conn:
            r = conn.request("POST", "/x", content=[memoryview(p) for p in parts])
        whole = b"".join(parts)
        assert r.content == b"%d" % len(whole)
        assert peer.bodies == [whole] and peer.lengths == [len(whole)]
    finally:
        peer.close()
