"""The signed transport envelope, the error-to-status table, hostile bodies against the live
service (no 500, no state change), and the import boundaries of the network code."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.service import status_for
from net_pki import make_consortium
from net_round import open_secagg_round, round_config, start_service
from cohort.contract import NotEnrolled
from secagg import InvalidMessage, ProtocolAbort, StageError, envelope

KEY = Ed25519PrivateKey.generate()
RID = bytes(range(16))


def _sealed(body: bytes = b"hello", **kw) -> bytes:
    args = dict(round_id=RID, client=3, step=2, stage="share_keys", body=body) | kw
    return envelope.seal(KEY, **args)


def test_round_trip() -> None:
    e = envelope.parse(_sealed(b"\x00" * 100))
    assert (e.round_id, e.client, e.step, e.stage, e.body) == (RID, 3, 2, "share_keys",
                                                              b"\x00" * 100)
    e.verify(KEY.public_key())
    assert len(_sealed(b"")) <= envelope.MAX_OVERHEAD


@pytest.mark.parametrize("position", ["magic", "round", "client", "step", "stage", "digest",
                                      "signature", "body"])
def test_any_flipped_byte_fails_verification_or_parsing(position: str) -> None:
    raw = bytearray(_sealed(b"payload"))
    offsets = {"magic": 0, "round": 6, "client": 5 + 16 + 3, "step": 5 + 16 + 7,
               "stage": 5 + 16 + 9 + 2, "digest": 5 + 16 + 9 + 10 + 5,
               "signature": 5 + 16 + 9 + 10 + 32 + 5, "body": len(raw) - 1}
    raw[offsets[position]] ^= 0x01
    with pytest.raises(InvalidMessage):
        envelope.parse(bytes(raw)).verify(KEY.public_key())


def test_another_key_does_not_verify() -> None:
    with pytest.raises(envelope.InvalidSignature):
        envelope.parse(_sealed()).verify(Ed25519PrivateKey.generate().public_key())


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_arbitrary_bytes_parse_or_raise_malformed(data: bytes) -> None:
    try:
        envelope.parse(data)
    except envelope.MalformedEnvelope:
        pass


def test_truncations_are_malformed() -> None:
    raw = _sealed(b"")
    for cut in range(len(raw)):
        with pytest.raises(envelope.MalformedEnvelope):
            envelope.parse(raw[:cut])


def test_status_table() -> None:
    from coordinator.service import MessageTooLarge, NoRound, WrongSender
    assert status_for(NotEnrolled("x")) == 403
    assert status_for(WrongSender("x")) == 403
    assert status_for(envelope.InvalidSignature("x")) == 401
    assert status_for(MessageTooLarge("x")) == 413
    assert status_for(NoRound("x")) == 409 and status_for(StageError("x")) == 409
    assert status_for(ProtocolAbort("x")) == 409
    assert status_for(envelope.MalformedEnvelope("x")) == 400
    assert status_for(InvalidMessage("x")) == 400


# -- hostile bodies against the live service ---------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory):
    pki = make_consortium(tmp_path_factory.mktemp("pki"), 3)
    run = start_service(pki, poll_hold=0.2)
    config = round_config(3, 32)
    server, session = open_secagg_round(run, config, stage_timeout=600)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    kit = pki.sites[1]
    ctx.load_cert_chain(str(kit.tls.cert), str(kit.tls.key))
    http = httpx.Client(base_url=run.url, verify=ctx, timeout=10)
    yield pki, config, server, session, http
    http.close()
    run.stop()


def _frozen(server, session):
    snap = session.snapshot()
    snap.pop("deadline_in")
    return snap, server.state, server.pending()


@given(body=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda b, step, client, stage: (step, envelope.seal(
        KEY, round_id=RID, client=client, step=step, stage=stage, body=b)),
        st.binary(max_size=200), st.integers(0, 3), st.integers(0, 5),
        st.sampled_from(["advertise_keys", "unmask", "x"]))))
@settings(max_examples=100, deadline=None)
def test_hostile_bodies_never_500_and_change_nothing(live, body) -> None:
    pki, config, server, session, http = live
    before = _frozen(server, session)
    if isinstance(body, tuple):
        step, raw = body
    else:
        step, raw = 0, body
    r = http.post(f"/v1/rounds/{config.round_id.hex()}/steps/{step}", content=raw)
    assert r.status_code in (400, 401, 403, 409, 413), r.text
    assert _frozen(server, session) == before


@pytest.mark.parametrize("path", ["/v1/rounds/zz/steps/0", "/v1/rounds/00/steps/-1",
                                  "/v1/rounds/00/steps/x", "/v1/work?after=x",
                                  "/v1/work?wait=nan", "/v1/nothing"])
def test_bad_paths_and_queries_are_client_errors(live, path) -> None:
    pki, config, server, session, http = live
    r = http.post(path, content=b"") if "/rounds/" in path else http.get(path)
    assert 400 <= r.status_code < 500


def _imports(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    return set(out.stdout.split())


@pytest.mark.slow  # two fresh interpreters that each import torch
def test_the_agent_does_not_import_the_coordinator_and_the_service_not_the_sites() -> None:
    assert "coordinator" not in _imports("clients.agent")
    assert "clients" not in _imports("coordinator.service")
