"""The round split where the trust boundary is (issue 9, DESIGN section 5): a site-side half
(``clients.SiteRound``) and a coordinator-side half (``coordinator.AggregationRound``) that only
bytes pass between, through the in-memory transport.

The scan: every byte the coordinator half is given is a secagg protocol message from the
sender the transport names, and no site's update — neither its floats nor its encoded integer
vector — is in it: no masked input equals, contains or correlates with the site's encoding.
``clients.round._PLANT_SEND_UNMASKED`` plants a site that sends its encoding unmasked, and the
same scan catches it (CONVENTIONS 12)."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest

import clients.round as site_round_module
from clients import NotEnrolled
from clients.round import SiteRound, SiteRoundState
from cohort.contract import RoundAnnouncement, RoundOutcome, RoundRequest, StrategyName
from coordinator import AggregationRound, SecureSumConfig
from coordinator.simulation.transport import InMemoryTransport, announce
from privacy import Budget, GaussianEvent, Mechanism, ReleaseStatus, SiteLedger
from secagg import Stage
from secagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from secagg.hazmat.packing import pack, unpack
from secagg.messages import HEADER_BYTES, Kind, decode, peek

RID = bytes(range(32))
EXPECTED = {Stage.ADVERTISE_KEYS: {Kind.ADVERTISE, Kind.REVEAL}, Stage.SHARE_KEYS: {Kind.SHARES},
            Stage.MASKED_INPUT: {Kind.MASKED_INPUT},
            Stage.CONSISTENCY_CHECK: {Kind.CONSISTENCY_SIGNATURE},
            Stage.UNMASK: {Kind.UNMASK_SHARES}}


def _updates(n: int, dim: int, seed: int = 0) -> dict[str, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    return {f"site-{i}": (rng.standard_normal(dim) * 0.2, float(rng.integers(1, 50)))
            for i in range(n)}


def _round(updates, config: SecureSumConfig, *, seed: int | None = 7, charge=None):
    cohort = sorted(updates)
    request = RoundRequest(round_number=1, strategy=StrategyName.FEDAVG,
                           n_participants=len(cohort), secure_aggregation=True,
                           privacy_charge=charge, release_id=RID)
    dim = next(iter(updates.values()))[0].size
    aggregation = AggregationRound(config, request=request, cohort=cohort, dim=dim, seed=seed)
    return aggregation, announce(aggregation)


def _run(updates, config, *, dropouts=None):
    aggregation, announcement = _round(updates, config)
    sites = {s: SiteRound(announcement, site_id=s, work=lambda s=s: updates[s],
                          simulation_seed=7) for s in updates}
    for s in sites.values():
        s.train()
    transport = InMemoryTransport(aggregation, sites, dropouts=dropouts)
    return transport, transport.run(), sites, announcement


def scan(received, sites, announcement, updates) -> list[str]:
    """What the coordinator half was given that is not a masked protocol message."""
    config = announcement.round_config()
    findings = []
    for stage, site, data in received:
        kind, sender = peek(data, config)
        if sender != announcement.client_id(site) or kind not in EXPECTED[stage]:
            findings.append(f"{site}: a {kind.name} message in {stage.value}")
        decode(data, config, kind)  # a well-formed protocol message, or InvalidMessage
        raw = np.asarray(updates[site][0], dtype=np.float64).tobytes()
        encoded = sites[site].signed_encoding
        wrapped = np.asarray(encoded).astype(np.int64) % (1 << config.modulus_bits)
        packed = data[HEADER_BYTES:]
        mine = pack(wrapped.astype(np.uint64), config.modulus_bits)
        if raw[:64] in data or mine[:64] in data:
            findings.append(f"{site}: its update's bytes are in a {kind.name} message")
        if kind is Kind.MASKED_INPUT:
            values = unpack(packed, config.modulus_bits, config.dim).astype(np.int64)
            if np.array_equal(values, wrapped):
                findings.append(f"{site}: its masked input is its encoding")
            # Masked, the payload is uniform mod 2^b and independent of the encoding: the
            # centre-lifted correlation is ~N(0, 1/dim). Unmasked, it is 1.
            half = 1 << (config.modulus_bits - 1)
            lift = lambda x: ((x + half) % (2 * half)) - half  # noqa: E731
            r = np.corrcoef(lift(values).astype(float), lift(wrapped).astype(float))[0, 1]
            if abs(r) > 6 / np.sqrt(config.dim):
                findings.append(f"{site}: its masked input correlates with its encoding "
                                f"(r = {r:.3f})")
    return findings


CONFIG = SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=50.0,
                         noise_multiplier=0.3, modulus_bits=24)


def test_the_coordinator_half_receives_only_masked_protocol_messages() -> None:
    updates = _updates(4, 1500)
    transport, result, sites, announcement = _run(updates, CONFIG,
                                                  dropouts={"unmask": ["site-2"]})
    assert result.included == frozenset(updates)
    stages = {stage for stage, _, _ in transport.received}
    assert stages == {Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK}
    assert sum(1 for st, _, _ in transport.received if st is Stage.MASKED_INPUT) == 4
    assert scan(transport.received, sites, announcement, updates) == []
    assert transport.rejected == [] and transport.aborted == {}


def test_the_scan_catches_a_site_that_sends_its_encoding_unmasked(monkeypatch) -> None:
    monkeypatch.setattr(site_round_module, "_PLANT_SEND_UNMASKED", True)
    updates = _updates(4, 1500, seed=1)
    transport, _, sites, announcement = _run(updates, CONFIG)
    findings = scan(transport.received, sites, announcement, updates)
    assert len([f for f in findings if "is its encoding" in f]) == 4
    assert len([f for f in findings if "correlates" in f]) == 4


def test_halves_agree_with_the_bound_and_the_event_is_the_survivors() -> None:
    updates = _updates(5, 40, seed=2)
    transport, result, _, announcement = _run(updates, CONFIG,
                                              dropouts={"masked_input": ["site-0"]})
    assert result.included == frozenset(updates) - {"site-0"}
    assert result.event == announcement.event(survivors=4)
    assert result.wrap_rate == 0.0 and result.transcript_bytes > 0


def test_announcement_and_outcome_travel_as_bytes_and_bad_ones_are_refused() -> None:
    aggregation, announcement = _round(_updates(3, 10), CONFIG)
    assert RoundAnnouncement.from_bytes(announcement.to_bytes()) == announcement
    outcome = RoundOutcome(release_id=RID, included=frozenset({"site-1", "site-0"}))
    assert RoundOutcome.from_bytes(outcome.to_bytes()) == outcome
    for junk in (b"", b"{}", announcement.to_bytes()[:-5], outcome.to_bytes()):
        with pytest.raises(InvalidMessage):
            RoundAnnouncement.from_bytes(junk)
    # A plan with less noise than the announced mechanism's is refused by every party.
    weaker = dataclasses.replace(announcement.encoding,
                                 local_variance=announcement.encoding.local_variance / 4)
    with pytest.raises(ConfigurationError, match="plan"):
        dataclasses.replace(announcement, encoding=weaker)


def test_enrolment_is_checked_by_both_halves() -> None:
    updates = _updates(3, 10)
    aggregation, announcement = _round(updates, CONFIG)
    with pytest.raises(NotEnrolled):
        SiteRound(announcement, site_id="site-9", work=lambda: updates["site-0"])
    site = SiteRound(announcement, site_id="site-0", work=lambda: updates["site-0"],
                     simulation_seed=7)
    site.train()
    message = site.start()
    with pytest.raises(NotEnrolled):
        aggregation.receive("site-9", message)  # the transport's sender is not in the cohort
    assert aggregation.pending() == frozenset(updates)  # nothing changed
    aggregation.receive("site-0", message)
    assert aggregation.pending() == frozenset(updates) - {"site-0"}


def test_a_site_settles_from_the_outcome_and_keeps_the_worst_when_unknown(tmp_path) -> None:
    worst = GaussianEvent(noise_multiplier=0.5)
    updates = _updates(3, 10)
    ledgers = {s: SiteLedger(tmp_path / "l.sqlite", site_id=s, budget=Budget(epsilon=1e3,
                                                                              delta=1e-5))
               for s in updates}
    aggregation, announcement = _round(updates, CONFIG, charge=worst)

    class LedgerOnly:  # what SiteRound's Release reads from a site: its ledger
        def __init__(self, ledger):
            self.ledger = ledger

    rounds = {}
    for s in updates:
        rounds[s] = SiteRound(announcement, site_id=s, work=lambda s=s: updates[s],
                              simulation_seed=7)
        rounds[s]._release = site_round_module.Release(LedgerOnly(ledgers[s]),
                                                       announcement.request)
        rounds[s].train()
        rounds[s].reserve()
    for s in updates:
        [row] = ledgers[s].entries()
        assert row.status is ReleaseStatus.RESERVED and row.worst == worst
    with pytest.raises(InvalidMessage):  # another round's outcome changes nothing
        rounds["site-0"].outcome(RoundOutcome(release_id=bytes(32), included=frozenset()))
    rounds["site-0"].outcome(RoundOutcome(release_id=RID, included=frozenset(updates)))
    rounds["site-1"].outcome(RoundOutcome(release_id=RID, included=frozenset(), aborted=True))
    # site-2 never hears the outcome: its worst case stays charged.
    [r0], [r1], [r2] = (ledgers[s].entries() for s in sorted(updates))
    assert r0.status is ReleaseStatus.SETTLED and r0.event == announcement.event(survivors=3)
    assert r1.status is ReleaseStatus.VOID
    assert r2.status is ReleaseStatus.RESERVED
    assert rounds["site-0"].state is SiteRoundState.SETTLED
    with pytest.raises(InvalidMessage):
        rounds["site-0"].outcome(RoundOutcome(release_id=RID, included=frozenset(updates)))


def test_an_aborted_round_tells_every_site() -> None:
    updates = _updates(4, 10)
    aggregation, announcement = _round(updates, dataclasses.replace(CONFIG, neighbors=3,
                                                                    threshold=3))
    sites = {s: SiteRound(announcement, site_id=s, work=lambda s=s: updates[s],
                          simulation_seed=7) for s in updates}
    for s in sites.values():
        s.train()
    with pytest.raises(ProtocolAbort):
        InMemoryTransport(aggregation, sites, dropouts={"masked_input": sorted(updates)[:3]}).run()
    assert all(s.state is SiteRoundState.SETTLED for s in sites.values())
    assert aggregation.outcome().aborted


def _with_ledgers(tmp_path, updates, config, *, worst, malicious=False):
    """Sites with ledgers and their reservations made, the outcome not yet told."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = {s: Ed25519PrivateKey.generate() for s in updates}
    directory = {s: k.public_key() for s, k in keys.items()}
    cohort = sorted(updates)
    request = RoundRequest(round_number=1, strategy=StrategyName.FEDAVG,
                           n_participants=len(cohort), secure_aggregation=True,
                           privacy_charge=worst, release_id=RID)
    config = dataclasses.replace(config, malicious=malicious)
    aggregation = AggregationRound(config, request=request, cohort=cohort,
                                   dim=next(iter(updates.values()))[0].size, seed=7,
                                   directory=directory if malicious else None)
    announcement = announce(aggregation)
    ledgers = {s: SiteLedger(tmp_path / "l.sqlite", site_id=s,
                             budget=Budget(epsilon=1e3, delta=1e-5)) for s in updates}

    class LedgerOnly:
        def __init__(self, ledger):
            self.ledger = ledger

    sites = {}
    for s in updates:
        sites[s] = SiteRound(announcement, site_id=s, work=lambda s=s: updates[s],
                             simulation_seed=7, identity=keys[s] if malicious else None,
                             directory=directory if malicious else None)
        sites[s]._release = site_round_module.Release(LedgerOnly(ledgers[s]),
                                                      announcement.request)
        sites[s].train()
        sites[s].reserve()
    return aggregation, announcement, sites, ledgers


def test_a_site_that_unmasked_refuses_an_outcome_naming_another_sum(tmp_path,
                                                                      monkeypatch) -> None:
    """The coordinator cannot talk a site out of its charge: once the site gave its shares
    for a sum, an outcome that leaves it out (or names any other set) is refused and the worst
    case stays on its ledger. Without the check, the lie would void site-0's reservation."""
    updates = _updates(4, 10)
    worst = GaussianEvent(noise_multiplier=0.5)
    aggregation, announcement, sites, ledgers = _with_ledgers(tmp_path, updates, CONFIG,
                                                              worst=worst)
    told = []
    monkeypatch.setattr(InMemoryTransport, "_tell_outcome", lambda self, o: told.append(o))
    InMemoryTransport(aggregation, sites).run()
    [true] = told
    assert true.included == frozenset(updates)
    lies = [RoundOutcome(release_id=RID, included=true.included - {"site-0"}),
            RoundOutcome(release_id=RID, included=frozenset({"site-1", "site-2"}))]
    for lie in lies:
        with pytest.raises(InvalidMessage, match="not the one this site unmasked"):
            sites["site-0"].outcome(lie)
        [row] = ledgers["site-0"].entries()
        assert row.status is ReleaseStatus.RESERVED and row.worst == worst
    assert sites["site-0"].outcome(true) is True
    [row] = ledgers["site-0"].entries()
    assert row.status is ReleaseStatus.SETTLED and row.event == announcement.event(survivors=4)


def test_in_malicious_mode_a_claimed_abort_after_the_input_left_keeps_the_worst_case(
        tmp_path, monkeypatch) -> None:
    """A malicious server may unmask a site's input with the other clients' shares and then
    tell that site the round aborted, or that it was not included. A site whose masked input
    left and which signed no view it could check the claim against keeps its worst case."""
    updates = _updates(5, 10)
    worst = GaussianEvent(noise_multiplier=0.5)
    config = dataclasses.replace(CONFIG, neighbors=4, threshold=4)
    aggregation, announcement, sites, ledgers = _with_ledgers(tmp_path, updates, config,
                                                              worst=worst, malicious=True)
    told = []
    monkeypatch.setattr(InMemoryTransport, "_tell_outcome", lambda self, o: told.append(o))
    # site-4 drops before the consistency check: its input is in, it never signs a view
    InMemoryTransport(aggregation, sites,
                      dropouts={Stage.CONSISTENCY_CHECK: ["site-4"]}).run()
    [true] = told
    assert "site-4" in true.included and sites["site-4"].input_sent
    for claim in (RoundOutcome(release_id=RID, included=frozenset(), aborted=True),
                  RoundOutcome(release_id=RID, included=true.included - {"site-4"})):
        assert sites["site-4"].outcome(claim) is False
        [row] = ledgers["site-4"].entries()
        assert row.status is ReleaseStatus.RESERVED and row.worst == worst
    # a site that signed and unmasked settles from the true outcome
    assert sites["site-0"].outcome(true) is True
