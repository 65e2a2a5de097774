"""Structured, secret-free logs from both sides of a real deployed round.

A job's round runs over loopback TLS (the coordinator service and the job runner, three site
agents with their real sites), every log record of every logger captured as the JSON lines
``cohort serve --log-json`` and ``cohort join --log-json`` write. Every line must be one JSON
object with time, level, logger and event; the service's and the agents' events must name the
round, stage, step, site and status; and no line may hold, in hex, upper-case hex, base64 or
decimal, any secret the round handled: the sites' Ed25519 identity keys and TLS keys, every
Shamir share and every secret shared (self-mask seeds, mask keys), any update value, or any
signed envelope's bytes. A planted leak (a key's hex in a log field) is caught by the same scan.
"""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from cohort.logs import JsonFormatter, TextFormatter, configure_logging, event, safe_value
from net_pki import make_consortium


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("logs-pki"), 3)


def _encodings(blob: bytes) -> set[str]:
    """How a secret's bytes could show up in text: windows of it in hex and base64."""
    out = set()
    for start in range(0, max(1, len(blob) - 12), 9):
        window = blob[start:start + 12]
        if len(window) < 12:
            break
        out |= {window.hex(), window.hex().upper()}
        for shift in range(3):  # base64 depends on where the window falls
            w = blob[start + shift:start + shift + 12]
            if len(w) == 12:
                out |= {base64.b64encode(w).decode()[:12],
                        base64.urlsafe_b64encode(w).decode()[:12]}
    return out


def _integer(value: int) -> set[str]:
    text = str(value)
    return {text[:20], format(value, "x")[:20]} if len(text) >= 20 else set()


class Secrets:
    def __init__(self) -> None:
        self.needles: dict[str, str] = {}  # text -> what secret it is

    def add(self, what: str, texts: set[str]) -> None:
        for t in texts:
            self.needles.setdefault(t, what)

    def found_in(self, lines: list[str]) -> list[tuple[str, str]]:
        return [(what, line[:160]) for line in lines for needle, what in self.needles.items()
                if needle in line]


def _key_secrets(pki, secrets: Secrets) -> None:
    for c, kit in pki.sites.items():
        secrets.add(f"site {c} identity key", _encodings(kit.identity.private_bytes_raw()))
        tls = serialization.load_pem_private_key(kit.tls.key.read_bytes(), None)
        scalar = tls.private_numbers().private_value.to_bytes(32, "big")
        secrets.add(f"site {c} TLS key", _encodings(scalar) | _integer(
            tls.private_numbers().private_value))
        der = tls.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        secrets.add(f"site {c} TLS key file", _encodings(der))


def _capture() -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    return handler, stream


def test_a_real_rounds_logs_are_json_lines_without_secrets(pki, tmp_path, monkeypatch) -> None:
    from clients.site import Site
    from secagg import envelope
    from secagg.hazmat import shamir
    from test_net_job import _job, _run

    secrets = Secrets()
    _key_secrets(pki, secrets)
    split, seal, fit = shamir.split, envelope.seal, Site.fit

    def spy_split(secret, threshold, xs):
        shares = split(secret, threshold, xs)
        secrets.add("a shared secret (seed or mask key)", _integer(secret)
                    | _encodings(secret.to_bytes(66, "big").lstrip(b"\0")))
        for s in shares:
            secrets.add("a Shamir share", _integer(s) | _encodings(s.to_bytes(66, "big")
                                                                   .lstrip(b"\0")))
        return shares

    def spy_seal(identity, **kw):
        sealed = seal(identity, **kw)
        secrets.add("an envelope's bytes", _encodings(sealed[-min(len(sealed), 96):]))
        return sealed

    def spy_fit(self, *a, **kw):
        update = fit(self, *a, **kw)
        delta = np.asarray(update.delta, dtype=np.float64).ravel()
        secrets.add("an update value", {repr(float(v)) for v in delta[:64] if abs(v) > 1e-6}
                    | _encodings(delta[:8].tobytes()))
        return update

    monkeypatch.setattr(shamir, "split", spy_split)
    monkeypatch.setattr(envelope, "seal", spy_seal)
    monkeypatch.setattr(Site, "fit", spy_fit)
    handler, stream = _capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        result, workers, agents, reports, running = _run(pki, tmp_path, _job(rounds=1))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert [m.participants for m in result.rounds] == [3]
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line one JSON object
    assert all({"time", "level", "logger", "event", "message"} <= set(r) for r in records)
    by_event: dict[str, list[dict]] = {}
    for r in records:
        by_event.setdefault(r["event"], []).append(r)
    # Both sides, with the fields an operator filters on.
    received = by_event["step_received"]
    assert len(received) >= 3 * 5
    assert all({"round", "site", "step", "stage", "outcome", "bytes"} <= set(r)
               for r in received)
    assert {r["stage"] for r in received} >= {"advertise_keys", "share_keys", "masked_input",
                                              "unmask"}
    sent = by_event["step_sent"]
    assert {r["client"] for r in sent} == {1, 2, 3}
    assert all({"round", "step", "stage", "status", "bytes"} <= set(r) for r in sent)
    assert by_event["round_open"][0]["sites"] == 3
    assert {r["logger"] for r in by_event["round_ended"]} == {"cohort.agent", "cohort.job"}
    assert {r["outcome"] for r in by_event["agent_finished"]} == {"job_done"}
    # The scan: thousands of secrets, none in any line.
    assert len(secrets.needles) > 1000
    assert secrets.found_in(lines) == []


def test_the_scan_catches_a_planted_leak(pki) -> None:
    """Planted defect (CONVENTIONS 12): a log line that carries a site's identity key in hex.
    The scan of the test above finds it; a field holding the key's bytes writes their length."""
    secrets = Secrets()
    _key_secrets(pki, secrets)
    handler, stream = _capture()
    log = logging.getLogger("cohort.planted")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        key = pki.sites[2].identity.private_bytes_raw()
        event(log, logging.INFO, "leak", "a careless line", key=key.hex())
        event(log, logging.INFO, "careful", "the same key as bytes", key=key)
    finally:
        log.removeHandler(handler)
    leak, careful = stream.getvalue().splitlines()
    assert [what for what, _ in secrets.found_in([leak])][:1] == ["site 2 identity key"]
    assert secrets.found_in([careful]) == [] and json.loads(careful)["key"] == "<32 bytes>"


def test_safe_values_and_the_text_format() -> None:
    import enum

    class Colour(enum.Enum):
        RED = "red"

    assert safe_value(b"\x00" * 5) == "<5 bytes>"
    assert safe_value(memoryview(b"abc")) == "<3 bytes>"
    assert safe_value(np.zeros(3)) == "<ndarray>"
    assert safe_value([1, "a", b"x"]) == [1, "a", "<bytes>"]
    assert safe_value(frozenset({2, 1})) == [1, 2]
    assert safe_value(Colour.RED) == "red"
    record = logging.LogRecord("cohort.x", logging.INFO, __file__, 1, "step %d", (3,), None)
    record.cohort_event, record.cohort_fields = "step_sent", {"step": 3, "body": b"zz"}
    assert TextFormatter().format(record).endswith('step 3 step=3 body="<2 bytes>"')
    line = json.loads(JsonFormatter().format(record))
    assert (line["event"], line["step"], line["body"], line["message"]) == (
        "step_sent", 3, "<2 bytes>", "step 3")


def test_log_file_and_json_stderr(tmp_path, capsys) -> None:
    path = tmp_path / "logs" / "serve.jsonl"
    root = logging.getLogger()
    level, saved = root.level, list(root.handlers)
    try:
        configure_logging(verbose=False, json_lines=True, file=path)
        assert not set(saved) & set(root.handlers)  # it replaces every root handler
        log = logging.getLogger("cohort.service")
        event(log, logging.INFO, "round_open", "round open", round="ab", sites=3)
        event(log, logging.WARNING, "roster_refused", "roster refused", version=1)
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert [x["event"] for x in lines] == ["round_open", "roster_refused"]
        err = capsys.readouterr().err.splitlines()
        assert [json.loads(x)["event"] for x in err] == ["roster_refused"]  # not verbose
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_cohort", False):
                root.removeHandler(handler)
                handler.close()
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("role, command", [("coordinator", "serve"), ("clients", "join")])
def test_serve_and_join_take_log_flags(role, command, capsys) -> None:
    from cohort.registry import role_main

    assert role_main(role, [command, "--help"], summary="") == 0
    out = capsys.readouterr().out
    assert "--log-json" in out and "--log-file" in out
