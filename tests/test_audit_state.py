"""``audit run`` on a coordinator's state file (DESIGN 3a, 5): a real deployed job over
loopback mutual TLS (tests/net_deploy.py: provisioned kits, the job runner with its SQLite
store, site agents with their ledgers) passes every check; each planted defect is caught and
named (CONVENTIONS 12): an upload that is not masked, the server obtaining both shares of one
client, a release missing from a site's ledger, a signature that does not verify, an epsilon
that its events do not support, noise switched off while epsilon is claimed, a stored release
that is not what the replayed secure sum decodes to (one coordinate changed, scaled, the sum of
another set of sites; in central DP, its noise left out or inflated). A check the file
cannot support (no roster, no ledgers) is reported as not made, never as passed; a file that is
not a state file, or of an unknown schema, is refused with one typed line and nothing written.

Every defect is planted in a copy of the honest state file (the audit only ever reads it), or,
for the missing charge, by the sites' own test-only knob in a second job."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

import clients.round as site_round
from cohort.contract import OUTCOME_ACK, Job, RoundOutcome, RoundWork
from net_deploy import deploy
from privacy.audit import (SimulationFolder, StateFile, audit_run, ledger_files, open_records,
                           read_roster, roster_from_kit)
from privacy.audit import state as state_module
from privacy.audit.release import (NOISE_FALSE_ALARM, RELEASE_TOLERANCE, compare_release,
                                   decode_sum)
from privacy.audit.state import RELEASED, REPLAYED, SIGNED, STATE_SCHEMA
from privacy.errors import ReleaseMismatch
from privacy.errors import AuditError
from secagg import envelope
from secagg.hazmat.packing import pack
from secagg.messages import Kind, MaskedInput, ShareKind, UnmaskShares, decode, peek

FOLDER_CHECKS = {"records readable", "survivors >= threshold",
                 "one disjoint survivor/dropped view", "never both shares of one client",
                 "only masked vectors received", "noise summed vs planned",
                 "every release charged", "every printed epsilon recomputed",
                 "no site over its budget"}
LEDGER_CHECKS = {"every release charged", "no site over its budget"}


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Path:
    """Four sites, two rounds, malicious-server mode with distributed DP; site-4 dies in
    round 1 before its masked input leaves (a dropout: 3 of 4 summed, a noise shortfall)."""
    return deploy(tmp_path_factory.mktemp("honest") / "job", sites=4, die="site-4",
                  stage_timeout=5.0)


def _kit(state: Path) -> Path:
    return state.parent / "kits" / "coordinator"


def _audit(state: Path, *, roster: bool = True, **kw):
    return audit_run(open_records(state, roster=roster_from_kit(_kit(state)) if roster else None,
                                  **kw))


def _failed(report) -> dict[str, list[str]]:
    return {c.name: c.details for c in report.failed()}


def _copy(state: Path, tmp: Path) -> Path:
    shutil.copytree(state.parent, tmp / "copy")
    return tmp / "copy" / state.name


def _identity(state: Path, site: str):
    return serialization.load_pem_private_key(
        (state.parent / "kits" / site / "identity.key").read_bytes(), password=None)


def _work(conn: sqlite3.Connection, number: int) -> tuple[bytes, RoundWork]:
    round_id, work = conn.execute("SELECT round_id, work FROM rounds WHERE number = ?",
                                  (number,)).fetchone()
    return bytes(round_id), RoundWork.from_bytes(bytes(work))


def _reseal(state: Path, number: int, stage: str, change: Callable[[bytes, object], bytes],
            *, sites: tuple[int, ...] | None = None) -> None:
    """Replace the body of round ``number``'s stored ``stage`` messages (of ``sites``, default
    all) by ``change(body, round config)``, sealed again with the site's own identity key
    (so that only the audit's other checks can catch it)."""
    conn = sqlite3.connect(state)
    round_id, work = _work(conn, number)
    config = work.announcement.round_config()
    names = dict(conn.execute("SELECT client, site FROM round_sites WHERE round_id = ?",
                              (round_id,)).fetchall())
    rows = conn.execute("SELECT step, site, envelope FROM messages WHERE round_id = ? AND "
                        "stage = ?", (round_id, stage)).fetchall()
    assert rows
    for step, site, blob in rows:
        if sites is not None and site not in sites:
            continue
        e = envelope.parse(bytes(blob))
        body = change(bytes(e.body), config)
        sealed = envelope.seal(_identity(state, names[site]), round_id=e.round_id,
                               client=e.client, step=e.step, stage=e.stage, body=body)
        conn.execute("UPDATE messages SET envelope = ?, digest = ? WHERE round_id = ? AND "
                     "step = ? AND site = ?",
                     (sealed, hashlib.sha256(body).digest(), round_id, step, site))
    conn.commit()
    conn.close()


def _listing(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the honest job ---------------------------------------------------------------------------
def test_an_honest_deployed_job_passes_every_check_and_the_file_is_only_read(honest) -> None:
    before = _listing(honest.parent)
    report = _audit(honest)
    assert report.passed, [(c.name, c.evidence) for c in report.checks if not c.passed]
    assert {c.name for c in report.checks} == FOLDER_CHECKS | {SIGNED, REPLAYED, RELEASED}
    # Distributed DP: the sites' noise is inside the sum, so each release is its decoding,
    # bit for bit.
    assert next(c.evidence for c in report.checks if c.name == RELEASED).startswith(
        "2 stored releases equal to the replayed secure sum's decoding (largest difference 0,")
    summary = json.loads((honest.parent / "summary.json").read_text())
    assert report.measured["site-level epsilon recomputed"] == pytest.approx(
        summary["epsilon"], rel=5e-3)
    assert report.claimed["example-level epsilon"].startswith("none claimed")
    # The dropout in round 1 left a shortfall, which is reported.
    first = report.measured["noise_by_round"][0]
    assert (first["planned_clients"], first["summed_clients"]) == (4, 3)
    assert first["shortfall"] == pytest.approx(0.25)
    # Nothing beside or in the state file was written, not even SQLite's -shm file.
    assert _listing(honest.parent) == before


def test_the_cli_audits_a_state_file(honest, tmp_path, capsys) -> None:
    from cohort.registry import main, role_main

    out = tmp_path / "audit"
    assert main(["audit", "run", str(honest), "--kit", str(_kit(honest)), "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and f"[pass] {SIGNED}" in text
    assert json.loads((out / "audit.json").read_text())["verdict"] == "PASS"
    assert "inbox replays as recorded" in (out / "audit.html").read_text()
    # python -m privacy audit run, pointed at the serve --out folder holding the state file.
    assert role_main("privacy", ["audit", "run", str(honest.parent), "--kit",
                                 str(_kit(honest)), "--out", str(tmp_path / "b"), "--json"],
                     summary="") == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "PASS"


def test_a_semi_honest_job_without_dp_passes_its_secure_checks(tmp_path) -> None:
    """The other server model (no consistency stage to replay) and no privacy claim: the
    ledger checks do not apply, so they are not listed at all."""
    state = deploy(tmp_path / "job", sites=3, rounds=1, malicious=False, dp=False)
    report = _audit(state)
    assert report.passed, [(c.name, c.evidence) for c in report.checks if not c.passed]
    assert {c.name for c in report.checks} == (FOLDER_CHECKS - LEDGER_CHECKS
                                               - {"every printed epsilon recomputed"}
                                               ) | {SIGNED, REPLAYED, RELEASED}
    assert report.claimed["site-level epsilon"].startswith("none claimed")


def test_a_round_still_open_is_audited_for_what_it_received(honest, tmp_path) -> None:
    """A coordinator stopped in round 2's consistency check, as its store then holds it: the
    round open, its closed steps and the messages of the open step, no outcome, release or
    checkpoint. What arrived is audited; nothing was released, so nothing is owed."""
    copy = _copy(honest, tmp_path)
    conn = sqlite3.connect(copy)
    round_id, _ = _work(conn, 2)
    conn.execute("UPDATE rounds SET state = 'open', outcome = NULL, ended = NULL WHERE "
                 "round_id = ?", (round_id,))
    conn.execute("DELETE FROM releases WHERE round_id = ?", (round_id,))
    conn.execute("DELETE FROM checkpoints WHERE number = 2")
    conn.execute("DELETE FROM steps WHERE round_id = ? AND step >= 4", (round_id,))
    conn.execute("DELETE FROM messages WHERE round_id = ? AND (step > 4 OR (step = 4 AND "
                 "site = 1))", (round_id,))
    conn.commit()
    conn.close()
    (copy.parent / "metrics.jsonl").write_text(
        (copy.parent / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    (copy.parent / "summary.json").unlink()
    # The sites' ledgers went on to settle round 2, which this stopped coordinator never
    # released: they belong to another history, so the audit is given none.
    report = _audit(copy, ledgers=[])
    assert not report.failed(), [(c.name, c.evidence) for c in report.failed()]
    assert {c.name for c in report.not_made()} == LEDGER_CHECKS
    assert "6 uploads" in next(c.evidence for c in report.checks
                               if c.name == "only masked vectors received")
    # Its ledgers given after all, the audit sees releases settled that the state never made.
    assert "every printed epsilon recomputed" in _failed(_audit(copy))


def test_without_roster_or_ledgers_those_checks_are_not_made(honest, tmp_path,
                                                             capsys) -> None:
    from cohort.registry import main

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(honest, alone / "state.sqlite")
    report = audit_run(open_records(alone / "state.sqlite"))
    assert report.verdict == "INCOMPLETE" and not report.passed and not report.failed()
    assert {c.name for c in report.not_made()} == LEDGER_CHECKS | {SIGNED}
    for c in report.not_made():
        assert not c.passed and ("ledger" in c.evidence or "roster" in c.evidence)
    # The coordinator's own printed epsilons are still recomputed from its releases.
    assert "every printed epsilon recomputed" in {c.name for c in report.checks if c.passed}
    assert main(["audit", "run", str(alone / "state.sqlite"), "--out",
                 str(tmp_path / "a")]) == 1
    text = capsys.readouterr().out
    assert "INCOMPLETE" in text and f"[not made] {SIGNED}" in text
    assert json.loads((tmp_path / "a" / "audit.json").read_text())["checks"][-1]["made"] is False


def test_ledgers_given_explicitly_and_in_part(honest, tmp_path) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(honest, alone / "state.sqlite")
    kits = honest.parent / "kits"
    assert len(ledger_files(kits)) == 4
    report = _audit_alone(alone, honest, ledgers=ledger_files(kits))
    assert report.passed, [(c.name, c.evidence) for c in report.checks if not c.passed]
    part = _audit_alone(alone, honest, ledgers=[kits / "site-1" / "ledger.sqlite",
                                                kits / "site-2" / "ledger.sqlite"])
    assert not part.failed()
    missing = {c.name: c.evidence for c in part.not_made()}
    assert set(missing) == LEDGER_CHECKS
    assert "site-3" in missing["every release charged"] and \
        "site-1" not in missing["every release charged"]


def _audit_alone(alone: Path, honest: Path, *, ledgers):
    return audit_run(open_records(alone / "state.sqlite", ledgers=ledgers,
                                  roster=roster_from_kit(_kit(honest))))


# -- planted defects ---------------------------------------------------------------------------
def test_planted_unmasked_upload_is_caught(honest, tmp_path) -> None:
    """(a) one stored masked input rewritten to an unmasked encoding: small signed integers
    wrapped into [0, 2^b), validly signed by its site."""
    copy = _copy(honest, tmp_path)
    rng = np.random.default_rng(0)

    def unmasked(body: bytes, config) -> bytes:
        _, sender = peek(body, config)
        plain = (rng.integers(-50, 50, config.dim) % (1 << config.modulus_bits))
        return MaskedInput(sender, pack(plain.astype(np.uint64),
                                        config.modulus_bits)).encode(config)

    _reseal(copy, 2, "masked_input", unmasked, sites=(2,))
    failed = _failed(_audit(copy))
    # The inbox now sums to something else than what the coordinator released, too.
    assert set(failed) == {"only masked vectors received", RELEASED}
    assert any("round 2" in d and "uniformity" in d for d in failed[
        "only masked vectors received"])


def test_planted_both_shares_of_one_client_are_caught(honest, tmp_path) -> None:
    """(b) every unmask reply of round 2 also hands over a mask-key share of client 0, a
    survivor: the server would hold both of its secrets."""
    copy = _copy(honest, tmp_path)

    def both(body: bytes, config) -> bytes:
        reply = decode(body, config, Kind.UNMASK_SHARES)
        seed = next(s for about, kind, s in reply.shares if about == 0
                    and kind is ShareKind.SELF_MASK_SEED)
        shares = sorted(reply.shares + ((0, ShareKind.MASK_KEY, seed),),
                        key=lambda x: (x[0], x[1]))
        return UnmaskShares(reply.sender, tuple(shares)).encode(config)

    _reseal(copy, 2, "unmask", both)
    failed = _failed(_audit(copy))
    details = failed["never both shares of one client"]
    assert any("gave both shares of client(s) [0]" in d for d in details)
    assert any("threshold of seed shares and of mask-key shares of client(s) [0]" in d
               for d in details)
    # An honest server refuses such a reply: the stored inbox is not one it could have kept.
    assert any("refuses" in d for d in failed[REPLAYED])
    assert SIGNED not in failed  # the sites "signed" it: only the protocol checks catch it


def test_planted_release_missing_from_a_site_ledger_is_caught(tmp_path, monkeypatch) -> None:
    """(c) a job whose site-2 releases without charging its ledger (the sites' test-only
    knob): its ledger misses every release."""
    monkeypatch.setattr(site_round, "_PLANT_SKIP_CHARGE", frozenset({"site-2"}))
    state = deploy(tmp_path / "job", sites=3, rounds=1)
    failed = _failed(_audit(state))
    assert set(failed) == {"every release charged"}
    assert any("missing from site-2's ledger" in d for d in failed["every release charged"])


def test_planted_bad_signature_is_caught_with_a_roster_only(honest, tmp_path) -> None:
    """(d) one byte of one stored envelope's signature changed."""
    copy = _copy(honest, tmp_path)
    conn = sqlite3.connect(copy)
    round_id, _ = _work(conn, 1)
    blob = bytearray(conn.execute("SELECT envelope FROM messages WHERE round_id = ? AND "
                                  "stage = 'masked_input' AND site = 2",
                                  (round_id,)).fetchone()[0])
    blob[len(envelope.parse(bytes(blob)).signed) + 5] ^= 0x40
    conn.execute("UPDATE messages SET envelope = ? WHERE round_id = ? AND stage = "
                 "'masked_input' AND site = 2", (bytes(blob), round_id))
    conn.commit()
    conn.close()
    report = _audit(copy)
    failed = _failed(report)
    assert set(failed) == {SIGNED}
    assert failed[SIGNED] == ["round 1 (fit) step 3, site-2: the envelope does not verify "
                              "under site-2's identity key"]
    # Without the roster nothing can tell: the check is not made, and the verdict says so.
    blind = _audit(copy, roster=False)
    assert blind.verdict == "INCOMPLETE" and [c.name for c in blind.not_made()] == [SIGNED]


def test_planted_epsilon_that_the_events_do_not_support_is_caught(honest, tmp_path) -> None:
    copy = _copy(honest, tmp_path)
    conn = sqlite3.connect(copy)
    text, = conn.execute("SELECT metrics FROM checkpoints WHERE number = 2").fetchone()
    m = json.loads(text)
    m["epsilon"] *= 0.9
    conn.execute("UPDATE checkpoints SET metrics = ? WHERE number = 2", (json.dumps(m),))
    conn.commit()
    conn.close()
    summary = json.loads((copy.parent / "summary.json").read_text())
    summary["epsilon"] *= 0.9
    (copy.parent / "summary.json").write_text(json.dumps(summary))
    failed = _failed(_audit(copy))
    assert set(failed) == {"every printed epsilon recomputed"}
    details = failed["every printed epsilon recomputed"]
    assert any(d.startswith("the state file's checkpoints round 2: epsilon") for d in details)
    assert any(d.startswith("summary.json: epsilon") for d in details)
    assert not any(d.startswith("metrics.jsonl") for d in details)  # left as it was


def test_planted_noise_off_while_epsilon_is_claimed_is_caught(honest, tmp_path) -> None:
    """Round 2's announcement rewritten to carry no noise; its release still charges the
    Skellam event and the job still prints its epsilon."""
    copy = _copy(honest, tmp_path)
    conn = sqlite3.connect(copy)
    round_id, work = conn.execute("SELECT round_id, work FROM rounds WHERE number = 2"
                                  ).fetchone()
    work = bytes(work)
    magic = b"cohort/contract/v1/work\n"
    n = int.from_bytes(work[len(magic):len(magic) + 4], "big")
    head = len(magic) + 4
    ann = work[head:head + n]
    prefix = b"cohort/contract/v1/announcement\n"
    body = json.loads(ann[len(prefix):])
    body["encoding"].update(noise="none", local_variance=0.0)
    ann = prefix + json.dumps(body, sort_keys=True).encode()
    work = magic + len(ann).to_bytes(4, "big") + ann + work[head + n:]
    conn.execute("UPDATE rounds SET work = ? WHERE round_id = ?", (work, round_id))
    conn.commit()
    conn.close()
    failed = _failed(_audit(copy))
    # The release's Skellam event is not one a noiseless announcement makes: the release check
    # fails too.
    assert set(failed) == {"noise summed vs planned", RELEASED}
    assert any("round 2" in d and "summed 0" in d for d in failed["noise summed vs planned"])
    assert any("round 2" in d and "make no event" in d for d in failed[RELEASED]), failed


# -- the release is the secure sum --------------------------------------------------------------
@pytest.fixture(scope="module")
def central(tmp_path_factory) -> Path:
    """Three sites, two rounds, semi-honest, central DP: the coordinator adds a discrete
    Gaussian to each secure sum (inside Z_2^b) before it decodes it, so a release is the sum's
    decoding plus noise of the declared size, not a function of the sum."""
    return deploy(tmp_path_factory.mktemp("central") / "job", sites=3, rounds=2,
                  malicious=False, mode="central_gaussian")


def _replayed(state: Path) -> dict[int, tuple[object, np.ndarray]]:
    """Per round, its announcement (as the audit reads it) and the secure sum the audit's
    replay produced: what the release check holds the stored release to."""
    seen: dict[int, tuple[object, np.ndarray]] = {}

    def spy(ann, aggregate, weighted_sum, total_weight):
        seen[ann.round_number] = (ann, np.array(aggregate))
        return compare_release(ann, aggregate, weighted_sum, total_weight)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(state_module, "compare_release", spy)
        records = open_records(state)
        records.integrity()
        records.close()
    return seen


def _stored_release(state: Path, number: int) -> tuple[np.ndarray, dict]:
    conn = sqlite3.connect(f"file:{state}?mode=ro&immutable=1", uri=True)
    round_id, _ = _work(conn, number)
    blob, text = conn.execute("SELECT aggregate, meta FROM releases WHERE round_id = ?",
                              (round_id,)).fetchone()
    conn.close()
    return np.frombuffer(bytes(blob), dtype="<f8").copy(), json.loads(text)


def _rerelease(state: Path, number: int,
               change: Callable[[np.ndarray, float], tuple[np.ndarray, float]]) -> None:
    """Replace round ``number``'s stored weighted sum and total weight by ``change(weighted
    sum, total weight)``, every other field of the release as it was and its digest
    recomputed as the store computes it (sha256 of the aggregate's bytes and the meta's text),
    so that only the release check can catch it."""
    weighted, meta = _stored_release(state, number)
    weighted, meta["total_weight"] = change(weighted, float(meta["total_weight"]))
    blob = np.ascontiguousarray(weighted, dtype="<f8").tobytes()
    text = json.dumps(meta, sort_keys=True)
    conn = sqlite3.connect(state)
    round_id, _ = _work(conn, number)
    conn.execute("UPDATE releases SET aggregate = ?, meta = ?, sha256 = ? WHERE round_id = ?",
                 (blob, text, hashlib.sha256(blob + text.encode()).digest(), round_id))
    conn.commit()
    conn.close()


def _release_fails(state: Path) -> list[str]:
    failed = _failed(_audit(state))
    assert set(failed) == {RELEASED}, failed
    return failed[RELEASED]


def test_an_honest_central_dp_job_passes_and_its_releases_carry_the_declared_noise(
        central) -> None:
    report = _audit(central)
    assert report.passed, [(c.name, c.evidence) for c in report.checks if not c.passed]
    assert {c.name for c in report.checks} == FOLDER_CHECKS | {SIGNED, REPLAYED, RELEASED}
    assert next(c.evidence for c in report.checks if c.name == RELEASED).startswith(
        "2 central-DP releases within the declared noise of the replayed secure sum's "
        f"decoding (two-sided chi-square, false alarm {NOISE_FALSE_ALARM:g} per round")
    for number, (ann, aggregate) in _replayed(central).items():
        weighted, _ = _stored_release(central, number)
        # The noise is really there: the release is not the sum's noiseless decoding.
        assert not np.allclose(weighted, decode_sum(ann, aggregate)[0])


def test_fresh_central_noise_draws_pass_and_the_noise_test_is_calibrated(central) -> None:
    """The coordinator's own central step, drawn afresh 200 times on a real replayed sum:
    every release passes, and the statistic averages its degrees of freedom (a test whose
    scale was wrong would either fail honest rounds or pass inflated noise)."""
    from privacy import RandomSource, WeightedSumCodec

    ann, aggregate = _replayed(central)[1]
    codec = WeightedSumCodec(ann.encoding, rotation_seed=ann.rotation_seed,
                             max_weight=ann.max_weight)
    stats = []
    for i in range(200):
        noisy = ann.privacy.central_ring_noise(aggregate, ann.encoding, simulation=True,
                                               randomness=RandomSource.for_simulation(i))
        weighted, total = codec.decode(noisy, integer_total=ann.integer_weights)
        found = compare_release(ann, aggregate, weighted, total)
        assert found.central and found.bounds[0] < found.statistic < found.bounds[1]
        stats.append(found.statistic)
    dof = found.dof
    assert dof == ann.encoding.dim  # the weighted sum's coordinates and the total weight
    assert abs(np.mean(stats) - dof) < 6 * np.sqrt(2 * dof / len(stats))


def test_planted_release_with_one_coordinate_changed_is_caught(honest, tmp_path,
                                                               monkeypatch) -> None:
    """One coordinate of round 2's stored release moved by 1e-6, its digest recomputed: the
    model moved where the sites' sum did not take it."""
    copy = _copy(honest, tmp_path)

    def nudge(weighted: np.ndarray, total: float) -> tuple[np.ndarray, float]:
        weighted[5] += 1e-6
        return weighted, total

    _rerelease(copy, 2, nudge)
    details = _release_fails(copy)
    dim = _stored_release(copy, 2)[0].size
    assert len(details) == 1 and details[0].startswith(
        f"round 2 (fit): the stored release is not the replayed secure sum's decoding: 1 of "
        f"{dim} coordinates differ, by up to 1e-06 (coordinate 5:")
    assert f"tolerance {RELEASE_TOLERANCE:g} relative" in details[0]
    # Nothing else can tell: with this check switched off, the changed release passes.
    monkeypatch.setattr(state_module, "compare_release",
                        lambda ann, *a: state_module.ReleaseComparison(False, 0.0))
    assert _audit(copy).passed


def test_planted_release_scaled_by_two_is_caught(honest, tmp_path) -> None:
    copy = _copy(honest, tmp_path)
    _rerelease(copy, 1, lambda weighted, total: (2 * weighted, 2 * total))
    details = _release_fails(copy)
    assert len(details) == 1 and details[0].startswith("round 1 (fit): the stored release is "
                                                       "not the replayed secure sum's decoding")


def test_planted_release_of_another_set_of_sites_is_caught(honest, tmp_path) -> None:
    """Round 1 summed site-1..3 (site-4 died). The same job run with no site dying announces
    the very same round (same id, cohort, encoding and rotation seed; the sites encode the
    same vectors) and releases the sum of all four: that release, stored as honest round 1's
    with its meta (included: site-1..3) untouched, is a real secure sum, but of another set."""
    other = deploy(tmp_path / "all", sites=4, rounds=1)
    a = sqlite3.connect(f"file:{honest}?mode=ro&immutable=1", uri=True)
    b = sqlite3.connect(f"file:{other}?mode=ro&immutable=1", uri=True)
    (mine, ours), (theirs, four) = _work(a, 1), _work(b, 1)
    a.close()
    b.close()
    assert mine == theirs and ours.announcement == four.announcement
    weighted, meta = _stored_release(other, 1)
    assert meta["included"] == ["site-1", "site-2", "site-3", "site-4"]
    copy = _copy(honest, tmp_path)
    assert _stored_release(copy, 1)[1]["included"] == ["site-1", "site-2", "site-3"]
    _rerelease(copy, 1, lambda *_: (weighted, float(meta["total_weight"])))
    details = _release_fails(copy)
    assert len(details) == 1 and details[0].startswith("round 1 (fit): the stored release is "
                                                       "not the replayed secure sum's decoding")


def test_planted_central_release_without_its_noise_is_caught(central, tmp_path) -> None:
    """Round 2's release replaced by the sum's noiseless decoding: the job still charges,
    and prints, the central Gaussian's epsilon."""
    ann, aggregate = _replayed(central)[2]
    copy = _copy(central, tmp_path)
    _rerelease(copy, 2, lambda *_: decode_sum(ann, aggregate))
    details = _release_fails(copy)
    assert len(details) == 1 and details[0].startswith(
        "round 2 (fit): the stored release differs from the replayed secure sum's decoding by "
        "less than the declared central noise")
    assert details[0].endswith("it is exactly the decoded sum: no noise was added")


def test_planted_central_release_with_its_noise_multiplied_by_100_is_caught(central,
                                                                            tmp_path) -> None:
    ann, aggregate = _replayed(central)[1]
    clean, weight = decode_sum(ann, aggregate, integer_total=False)
    copy = _copy(central, tmp_path)
    _rerelease(copy, 1, lambda weighted, total: (
        clean + 100 * (weighted - clean), float(round(weight + 100 * (total - weight)))))
    details = _release_fails(copy)
    assert len(details) == 1 and details[0].startswith(
        "round 1 (fit): the stored release differs from the replayed secure sum's decoding by "
        "more than the declared central noise")


def test_a_release_of_the_wrong_size_or_not_finite_is_a_mismatch(honest) -> None:
    """Fail closed, at the function's level, on a real replayed sum: a release one coordinate
    short, or holding a NaN, is never compared coordinate by coordinate and passed."""
    ann, aggregate = _replayed(honest)[2]
    weighted, weight = decode_sum(ann, aggregate)
    assert not compare_release(ann, aggregate, weighted, weight).max_difference
    with pytest.raises(ReleaseMismatch, match=f"has {weighted.size - 1} coordinates"):
        compare_release(ann, aggregate, weighted[:-1], weight)
    weighted[0] = np.nan
    with pytest.raises(ReleaseMismatch, match="NaN or infinite"):
        compare_release(ann, aggregate, weighted, weight)
    with pytest.raises(ReleaseMismatch, match="total weight"):
        compare_release(ann, aggregate, decode_sum(ann, aggregate)[0], weight + 1.0)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_release_coordinate_moved_past_the_tolerance_fails_and_none_passes(
        honest, data) -> None:
    """The property: one coordinate of one round's stored release (or its total weight)
    moved by more than the tolerance, digest recomputed, always fails the release check and
    nothing else; the release left alone (re-signed the same) always passes."""
    number = data.draw(st.sampled_from([1, 2]))
    dim = _stored_release(honest, number)[0].size
    move = data.draw(st.none() | st.tuples(st.integers(0, dim), st.floats(-8.0, 2.0),
                                           st.sampled_from([-1.0, 1.0])))

    def change(weighted: np.ndarray, total: float) -> tuple[np.ndarray, float]:
        if move is None:
            return weighted, total
        at, exponent, sign = move
        if at == dim:  # the total weight
            return weighted, total + sign * 10.0 ** exponent * (1.0 + abs(total))
        weighted[at] += sign * 10.0 ** exponent * (1.0 + abs(weighted[at]))
        return weighted, total

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "state.sqlite"
        shutil.copy(honest, copy)
        _rerelease(copy, number, change)
        report = audit_run(open_records(copy, roster=roster_from_kit(_kit(honest)),
                                        ledgers=ledger_files(honest.parent / "kits")))
    if move is None:
        assert report.passed, _failed(report)
    else:
        failed = _failed(report)
        assert set(failed) == {RELEASED}
        assert failed[RELEASED][0].startswith(f"round {number} (fit): the stored ")


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_any_stored_envelope_is_caught(honest, data) -> None:
    """The search: one byte of one stored envelope (header, signature or body) changed. With
    the roster, the audit never passes, and says why in its records, signature or replay
    check."""
    conn = sqlite3.connect(f"file:{honest}?mode=ro&immutable=1", uri=True)
    keys = conn.execute("SELECT round_id, step, site, length(envelope) FROM messages "
                        "ORDER BY round_id, step, site").fetchall()
    conn.close()
    round_id, step, site, size = data.draw(st.sampled_from(keys))
    where = data.draw(st.integers(0, size - 1))
    flip = data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "state.sqlite"
        shutil.copy(honest, copy)
        conn = sqlite3.connect(copy)
        blob = bytearray(conn.execute("SELECT envelope FROM messages WHERE round_id = ? AND "
                                      "step = ? AND site = ?", (round_id, step, site)
                                      ).fetchone()[0])
        blob[where] ^= flip
        conn.execute("UPDATE messages SET envelope = ? WHERE round_id = ? AND step = ? AND "
                     "site = ?", (bytes(blob), round_id, step, site))
        conn.commit()
        conn.close()
        report = audit_run(open_records(copy, roster=roster_from_kit(_kit(honest)),
                                        ledgers=ledger_files(honest.parent / "kits")))
        assert report.verdict == "FAIL"
        named = [c for c in report.failed() if c.name in {"records readable", SIGNED, REPLAYED}]
        assert named and all(c.details and c.evidence == c.details[0] for c in named)


def test_the_search_would_find_a_signature_check_that_is_skipped(honest, monkeypatch) -> None:
    """The search above can fail: with the envelope check switched off, a changed signature
    byte passes every other check."""
    monkeypatch.setattr(envelope.Envelope, "verify", lambda self, public: None)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "state.sqlite"
        shutil.copy(honest, copy)
        conn = sqlite3.connect(copy)
        round_id, step, site, blob = conn.execute(
            "SELECT round_id, step, site, envelope FROM messages WHERE stage = 'share_keys' "
            "LIMIT 1").fetchone()
        blob = bytearray(blob)
        blob[len(envelope.parse(bytes(blob)).signed)] ^= 1
        conn.execute("UPDATE messages SET envelope = ? WHERE round_id = ? AND step = ? AND "
                     "site = ?", (bytes(blob), round_id, step, site))
        conn.commit()
        conn.close()
        report = audit_run(open_records(copy, roster=roster_from_kit(_kit(honest)),
                                        ledgers=ledger_files(honest.parent / "kits")))
        assert report.passed


# -- what is refused ---------------------------------------------------------------------------
def _refused(argv: list[str], capsys) -> str:
    from cohort.registry import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_unknown_schema_not_a_state_file_and_neither_are_refused(honest, tmp_path,
                                                                 capsys) -> None:
    newer = tmp_path / "newer.sqlite"
    shutil.copy(honest, newer)
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {STATE_SCHEMA + 97}")
    conn.commit()
    conn.close()
    err = _refused(["audit", "run", str(newer), "--out", str(tmp_path / "o1")], capsys)
    assert err.startswith("AuditError: ") and "state schema version 99" in err
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    err = _refused(["audit", "run", str(other), "--out", str(tmp_path / "o2")], capsys)
    assert err.startswith("AuditError: ") and "not a coordinator state file" in err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a database at all")
    err = _refused(["audit", "run", str(junk), "--out", str(tmp_path / "o3")], capsys)
    assert "neither a run's output folder nor a coordinator state file" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _refused(["audit", "run", str(empty), "--out", str(tmp_path / "o4")], capsys)
    assert "not a run's output folder" in err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_a_roster_that_does_not_verify_is_refused(honest, tmp_path, capsys) -> None:
    from net_pki import make_consortium

    foreign = make_consortium(tmp_path / "pki", 1).ca  # another consortium's CA
    err = _refused(["audit", "run", str(honest), "--roster", str(_kit(honest) / "roster.json"),
                    "--ca", str(foreign), "--out", str(tmp_path / "o")], capsys)
    assert err.startswith("AuditError: --roster: ") and "does not verify" in err
    err = _refused(["audit", "run", str(honest), "--kit", str(_kit(honest)), "--roster",
                    str(_kit(honest) / "roster.json"), "--out", str(tmp_path / "o")], capsys)
    assert "--kit or --roster" in err
    assert not (tmp_path / "o").exists()


# -- the readers agree with the code that wrote the file -----------------------------------------
def test_the_readers_agree_with_the_contract_and_the_store(honest) -> None:
    from coordinator.service.store import SCHEMA_VERSION
    from privacy.audit import _wire

    assert STATE_SCHEMA == SCHEMA_VERSION
    assert _wire.OUTCOME_ACK == OUTCOME_ACK
    job = Job(dataset="digits")
    assert (state_module._DEFAULT_MODE, state_module._DEFAULT_DELTA,
            state_module._DEFAULT_NAME) == (job.mode.value, job.delta, job.name)
    conn = sqlite3.connect(f"file:{honest}?mode=ro&immutable=1", uri=True)
    for work, outcome in conn.execute("SELECT work, outcome FROM rounds"):
        theirs = RoundWork.from_bytes(bytes(work)).announcement
        ours = _wire.read_work(bytes(work))
        assert ours.config == theirs.round_config() and ours.cohort == theirs.cohort
        assert ours.encoding == theirs.encoding and ours.privacy == theirs.privacy
        assert ours.round_number == theirs.request.round_number
        assert (ours.rotation_seed, ours.max_weight, ours.integer_weights) == (
            theirs.rotation_seed, theirs.max_weight, theirs.integer_weights)
        o, t = _wire.read_outcome(bytes(outcome)), RoundOutcome.from_bytes(bytes(outcome))
        assert (o.release_id, set(o.included), o.aborted) == (t.release_id, set(t.included),
                                                              t.aborted)
    conn.close()


def test_the_roster_reader_agrees_with_enrolment(honest, tmp_path) -> None:
    from cohort.enrolment import load_roster

    kit = _kit(honest)
    theirs = load_roster(kit / "roster.json", kit / "ca.pem")
    ours = roster_from_kit(kit)
    assert ours.version == theirs.version and ours.consortium == theirs.consortium
    assert {c: (s.name, s.identity.public_bytes_raw()) for c, s in ours.sites.items()} == {
        s.client_id: (s.site_name, s.identity_public.public_bytes_raw()) for s in theirs.sites}
    forged = tmp_path / "roster.json"
    forged.write_bytes((kit / "roster.json").read_bytes().replace(b'"site-1"', b'"site-9"'))
    shutil.copy(kit / "roster.sig", tmp_path / "roster.sig")
    with pytest.raises(AuditError, match="does not verify"):
        read_roster(forged, ca=kit / "ca.pem")


def test_a_simulation_folder_takes_no_state_file_flags(tmp_path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(AuditError, match="apply to a coordinator's state file"):
        open_records(tmp_path, ledgers=[])
    assert isinstance(open_records(tmp_path), SimulationFolder)


def test_a_state_file_reads_as_state(honest) -> None:
    assert isinstance(open_records(honest.parent), StateFile)
    assert isinstance(open_records(honest), StateFile)


def _recharge(state: Path, number: int, change: Callable[[dict], dict | None]) -> None:
    """Replace round ``number``'s stored privacy event by ``change(event)``, the release's
    digest recomputed as the store computes it, so only the release check can catch it."""
    weighted, meta = _stored_release(state, number)
    event = None if meta["event"] is None else json.loads(meta["event"])
    changed = change(event)
    meta["event"] = None if changed is None else json.dumps(changed, sort_keys=True,
                                                            separators=(",", ":"))
    blob = np.ascontiguousarray(weighted, dtype="<f8").tobytes()
    text = json.dumps(meta, sort_keys=True)
    conn = sqlite3.connect(state)
    round_id, _ = _work(conn, number)
    conn.execute("UPDATE releases SET meta = ?, sha256 = ? WHERE round_id = ?",
                 (text, hashlib.sha256(blob + text.encode()).digest(), round_id))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("plant", ["more noise", "more clients", "no event"])
def test_planted_release_charging_another_event_than_announced_is_caught(
        honest, tmp_path, plant) -> None:
    """Round 1's stored event claims twice the announced noise, or noise summed over more
    sites than were summed, or no event at all: each would understate epsilon, and each is
    caught by the release check even without the sites' ledgers."""
    def change(event: dict) -> dict | None:
        assert event is not None and event["kind"] in ("discrete_gaussian", "skellam")
        event = dict(event)
        if plant == "no event":
            return None
        if plant == "more noise":
            key = "local_variance" if event["kind"] == "discrete_gaussian" else "variance"
            event[key] *= 2
        elif event["kind"] == "discrete_gaussian":
            event["num_clients"] += 1
        else:
            event["variance"] *= 4 / 3
        return event

    copy = _copy(honest, tmp_path)
    _recharge(copy, 1, change)
    report = _audit(copy)
    failed = _failed(report)
    assert RELEASED in failed
    assert any("round 1" in d and "make the event" in d for d in failed[RELEASED]), failed

