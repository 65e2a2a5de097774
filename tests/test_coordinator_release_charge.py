"""The simulation engine charges every release: each site reserves the round's worst case under
the round's release id before the secure sum runs, and settles afterwards (finding 9). Since
issue 9 the ledger calls are the sites' own (``clients.round.SiteRound``) and the engine drives
the round through ``run_secure_round``, the seam these tests spy on: the spy checks every
reservation when the round starts and again as each masked input reaches the coordinator.

Each test names the defect it catches; ``privacy.ledger._PLANT_CHARGE_AFTER_RELEASE`` plants the
old charge-after-release path and the tests show they catch it."""

from __future__ import annotations

from pathlib import Path

import pytest

import coordinator.simulation.engine as engine
import privacy.ledger as ledger_module
from coordinator._randomness import release_id
from coordinator.simulation import Simulation, SimulationConfig
from privacy import Mechanism, ReleaseStatus
from secagg import Stage

CONFIG = dict(sites=3, rounds=2, local_epochs=1, baselines=False, dp=Mechanism.CENTRAL_GAUSSIAN,
              noise_multiplier=3.0, target_epsilon=40.0, modulus_bits=20, seed=5)


def _spy(monkeypatch, sim: Simulation, *, outcome=None, dropouts=None) -> list[list]:
    """Wrap the engine's secure round: when it starts, and again at the moment each site's
    masked input reaches the coordinator, record each site's ledger entry for the round's
    release id. ``outcome`` replaces the round by an exception (a crash before the outcome is
    known); ``dropouts`` replaces the engine's (e.g. to make the round abort for real)."""
    seen: list[list] = []
    calls: list[int] = []
    real = engine.run_secure_round

    def rows(rid):
        return [[e for e in s.ledger.entries() if e.release_id == rid]
                for s in sim.consortium.sites]

    def spy(aggregation, sites, *, dropouts=None, observer=None):
        calls.append(1)
        rid = release_id(sim.config.seed, len(calls))
        assert aggregation.round_id == rid  # the secure round is named by the release id
        seen.append(rows(rid))
        if outcome is not None:
            raise outcome

        def at_input(stage, site, data):
            if stage is Stage.MASKED_INPUT:
                seen.append(rows(rid))

        return real(aggregation, sites, dropouts=dropouts if forced is None else forced,
                    observer=at_input)

    forced = dropouts
    monkeypatch.setattr(engine, "run_secure_round", spy)
    return seen


def _reserved_before_the_sum(seen: list[list]) -> None:
    for per_site in seen:
        for rows in per_site:
            assert len(rows) == 1 and rows[0].status is ReleaseStatus.RESERVED, rows


def test_every_site_reserves_before_the_sum_and_settles_after(tmp_path: Path, monkeypatch) -> None:
    sim = Simulation(SimulationConfig(**CONFIG), work_dir=tmp_path)
    seen = _spy(monkeypatch, sim)
    result = sim.run()
    assert result.stopped is None and len(seen) == 2 * (1 + 3)  # the start, and 3 inputs
    _reserved_before_the_sum(seen)
    for site in sim.consortium.sites:
        rows = site.ledger.entries()
        assert [e.release_id for e in rows] == [release_id(5, 1), release_id(5, 2)]
        assert all(e.status is ReleaseStatus.SETTLED and e.event == e.worst for e in rows)


def test_planted_charge_after_release_is_caught(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ledger_module, "_PLANT_CHARGE_AFTER_RELEASE", True)
    sim = Simulation(SimulationConfig(**{**CONFIG, "rounds": 1}), work_dir=tmp_path)
    seen = _spy(monkeypatch, sim)
    sim.run()
    with pytest.raises(AssertionError):
        _reserved_before_the_sum(seen)


def test_an_aborted_round_settles_to_nothing(tmp_path: Path, monkeypatch) -> None:
    """A real abort after every masked input left: nobody reveals its shares, the
    coordinator announces the abort, and every site settles to nothing."""
    sim = Simulation(SimulationConfig(**{**CONFIG, "rounds": 1}), work_dir=tmp_path)
    seen = _spy(monkeypatch, sim, dropouts={"unmask": [s.site_id for s in sim.consortium.sites]})
    result = sim.run()
    _reserved_before_the_sum(seen)
    assert "aborted" in result.rounds[0].note
    for site in sim.consortium.sites:
        [row] = site.ledger.entries()
        assert row.status is ReleaseStatus.VOID and site.ledger.spent() == 0.0


def test_an_unknown_outcome_keeps_the_worst_case(tmp_path: Path, monkeypatch) -> None:
    """A crash after the masked inputs left (anything but a clean abort): the outcome is
    unknown, so every reservation stays charged at its worst case."""
    sim = Simulation(SimulationConfig(**{**CONFIG, "rounds": 1}), work_dir=tmp_path)
    _spy(monkeypatch, sim, outcome=RuntimeError("coordinator died mid-round"))
    with pytest.raises(RuntimeError):
        sim.run()
    for site in sim.consortium.sites:
        [row] = site.ledger.entries()
        assert row.status is ReleaseStatus.RESERVED and site.ledger.spent() > 0.0


def test_release_ids_are_unique_per_round_and_32_bytes() -> None:
    ids = {release_id(5, r) for r in range(1, 200)} | {release_id(6, 1)}
    assert len(ids) == 200 and all(len(i) == 32 for i in ids)
    assert release_id(None, 1) != release_id(None, 1)
