"""Round accounting: composition of the rounds' events, ordering, errors, state round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from privacy import Mechanism
from coordinator import RoundAccountant, SecureSumConfig, secure_sum
from privacy import (
    Accountant,
    GaussianEvent,
    NoiseKind,
    SkellamEvent,
    UnsupportedEvent,
    compute_epsilon,
)
from secagg.errors import ConfigurationError, InvalidInput, ProtocolAbort

DELTA = 1e-5


def test_gaussian_rounds_compose_like_opacus() -> None:
    acc = RoundAccountant()
    for r in range(10):
        acc.record(GaussianEvent(noise_multiplier=1.5), round_number=r)
    reference = RDPAccountant()
    reference.history = [(1.5, 1.0, 10)]
    assert acc.epsilon(delta=DELTA) == pytest.approx(reference.get_epsilon(delta=DELTA), rel=1e-9)


def test_rounds_without_cost_and_running_epsilon() -> None:
    acc = RoundAccountant()
    acc.record(None, round_number=0)
    assert acc.epsilon(delta=DELTA) == 0.0
    seen = [0.0]
    events = [GaussianEvent(noise_multiplier=2.0),
              SkellamEvent(variance=1e6, l2_sensitivity=300.0, l1_sensitivity=3000.0), None]
    for r, event in enumerate(events, start=1):
        predicted = acc.epsilon_after(event, delta=DELTA)
        acc.record(event, round_number=r * 2)
        assert acc.epsilon(delta=DELTA) == predicted >= seen[-1]
        seen.append(predicted)
    assert acc.epsilon(delta=DELTA) == compute_epsilon(
        [e for e in events if e is not None], delta=DELTA)
    assert [r for r, _ in acc.rounds] == [0, 2, 4, 6]
    assert acc.last_round == 6


def snapshot(acc: RoundAccountant) -> str:
    return json.dumps(acc.state_dict(), sort_keys=True)


def test_bad_records_change_nothing() -> None:
    acc = RoundAccountant()
    acc.record(GaussianEvent(noise_multiplier=1.0), round_number=3)
    before = snapshot(acc)
    for bad_round in (3, 2, -1, 1.0, True):
        with pytest.raises(InvalidInput):
            acc.record(GaussianEvent(noise_multiplier=1.0), round_number=bad_round)
    with pytest.raises(ConfigurationError):
        acc.record("not an event", round_number=4)  # type: ignore[arg-type]
    assert snapshot(acc) == before
    prv = RoundAccountant(accountant=Accountant.PRV)
    with pytest.raises(UnsupportedEvent):
        prv.record(SkellamEvent(variance=1e6, l2_sensitivity=3.0, l1_sensitivity=9.0),
                   round_number=0)
    assert prv.rounds == ()


def test_state_round_trip_continues_identically() -> None:
    a = RoundAccountant()
    a.record(GaussianEvent(noise_multiplier=1.2), round_number=0)
    a.record(None, round_number=1)
    a.record(SkellamEvent(variance=2e6, l2_sensitivity=500.0, l1_sensitivity=4000.0),
             round_number=2)
    b = RoundAccountant(accountant=Accountant.PRV)  # the saved state says which accountant
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.accountant is Accountant.RDP and b.rounds == a.rounds
    for acc in (a, b):
        acc.record(GaussianEvent(noise_multiplier=0.9), round_number=5)
    assert a.epsilon(delta=DELTA) == b.epsilon(delta=DELTA)
    assert snapshot(a) == snapshot(b)


@pytest.mark.parametrize("mutate", [
    lambda s: s.update(version=2),
    lambda s: s.update(accountant="moments"),
    lambda s: s.pop("rounds"),
    lambda s: s["rounds"].append({"round": 0, "event": None}),   # not increasing
    lambda s: s["rounds"].append({"round": 9, "event": {"kind": "laplace", "version": 1}}),
    lambda s: s["rounds"].append({"round": 9}),
])
def test_bad_states_change_nothing(mutate) -> None:
    acc = RoundAccountant()
    acc.record(GaussianEvent(noise_multiplier=1.0), round_number=0)
    before = snapshot(acc)
    state = json.loads(before)
    mutate(state)
    with pytest.raises(ConfigurationError):
        acc.load_state_dict(state)
    assert snapshot(acc) == before
    with pytest.raises(UnsupportedEvent):
        RoundAccountant().load_state_dict({
            "version": 1, "accountant": "prv",
            "rounds": [{"round": 0, "event": {"kind": "skellam", "version": 1, "variance": 1e6,
                                              "l2_sensitivity": 3.0, "l1_sensitivity": 9.0,
                                              "steps": 1}}]})


def test_training_rounds_charge_what_really_happened() -> None:
    rng = np.random.default_rng(0)
    updates = {i: (rng.standard_normal(16) * 0.1, float(rng.integers(1, 50))) for i in range(5)}
    cfg = SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=50,
                          noise_multiplier=1.0, noise=NoiseKind.SKELLAM, modulus_bits=24,
                          neighbors=4, threshold=3)
    acc = RoundAccountant()
    full = secure_sum(updates, cfg, seed=1)
    acc.record(full.event, round_number=0)
    fewer = secure_sum(updates, cfg, dropouts={"masked_input": [4]}, seed=2)
    acc.record(fewer.event, round_number=1)
    assert fewer.event.variance == pytest.approx(full.event.variance * 4 / 5, rel=1e-12)
    # Less noise in the sum costs more than the planned round would have.
    assert acc.epsilon(delta=DELTA) > compute_epsilon([full.event] * 2, delta=DELTA)
    before = snapshot(acc)
    with pytest.raises(ProtocolAbort):  # an aborted round reveals nothing and charges nothing
        acc.record(secure_sum(updates, cfg, dropouts={"masked_input": [0, 1, 2]}, seed=3).event,
                   round_number=2)
    assert snapshot(acc) == before
