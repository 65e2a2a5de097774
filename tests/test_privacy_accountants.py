"""Accountants: known answers from Opacus and dp-accounting, agreement with dp-accounting on
other settings, Skellam -> Gaussian as the variance grows, monotonicity properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy import _rdp
from privacy.accountants import Accountant, PrivacyAccountant, compute_epsilon
from privacy.errors import ConfigurationError, UnsupportedEvent
from privacy.events import (
    DiscreteGaussianEvent,
    GaussianEvent,
    SkellamEvent,
    event_from_json,
    event_to_json,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "privacy_accountant_vectors.json").read_text())


@pytest.mark.parametrize("vec", VECTORS["gaussian"], ids=lambda v: f"{v['accountant']}-{v['steps']}")
def test_gaussian_known_answers(vec: dict) -> None:
    event = GaussianEvent(noise_multiplier=vec["noise_multiplier"], sample_rate=vec["sample_rate"],
                          steps=vec["steps"])
    if vec["accountant"] == "rdp-fine-orders":
        orders = [0.001 * i for i in range(1000, 100000)]
        eps, _ = _rdp.rdp_to_epsilon(orders, _rdp.gaussian_rdp(event, orders), vec["delta"])
    else:
        eps = compute_epsilon([event], delta=vec["delta"], accountant=Accountant(vec["accountant"]))
    assert eps == pytest.approx(vec["epsilon"], abs=vec["tolerance"])


@pytest.mark.parametrize("vec", VECTORS["rdp_to_dp"])
def test_rdp_to_dp_known_answer(vec: dict) -> None:
    eps, order = _rdp.rdp_to_epsilon(vec["orders"], [vec["rdp_constant"]] * len(vec["orders"]),
                                     vec["delta"])
    assert eps == pytest.approx(vec["epsilon"], abs=vec["tolerance"])
    assert order == vec["optimal_order"]


def _dp_accounting_eps(sigma: float, q: float, steps: int, delta: float,
                       orders: tuple[float, ...] = _rdp.OPACUS_ORDERS) -> float:
    acc = dp_accounting.rdp.RdpAccountant(list(orders))
    event = dp_accounting.GaussianDpEvent(sigma)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    acc.compose(event, steps)
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize("sigma,q,steps,delta", [
    (0.8, 0.01, 1000, 1e-5), (1.1, 256 / 60000, 14000, 1e-5), (2.0, 1.0, 50, 1e-6),
    (4.0, 0.1, 300, 1e-7), (1.0, 0.001, 100000, 1e-5), (10.0, 1.0, 1, 1e-5),
])
def test_rdp_agrees_with_dp_accounting(sigma: float, q: float, steps: int, delta: float) -> None:
    ours = compute_epsilon([GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)],
                           delta=delta)
    theirs = _dp_accounting_eps(sigma, q, steps, delta)
    assert ours == pytest.approx(theirs, rel=2e-3)


@settings(max_examples=15, deadline=None)
@given(sigma=st.floats(0.6, 8.0), q=st.floats(0.001, 1.0), steps=st.integers(1, 3000),
       delta=st.sampled_from([1e-4, 1e-5, 1e-6]))
def test_rdp_agrees_with_dp_accounting_property(sigma: float, q: float, steps: int, delta: float) -> None:
    # Integer orders: there dp-accounting's series is exact (at fractional orders it drops orders
    # whose series does not converge, e.g. q=0.5, sigma=1), so both sides see the same curve.
    orders = tuple(range(2, 257))
    event = GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)
    ours, _ = _rdp.rdp_to_epsilon(orders, _rdp.gaussian_rdp(event, orders), delta)
    theirs = _dp_accounting_eps(sigma, q, steps, delta, orders)
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("sigma,q,steps", [(1.0, 0.02, 500), (2.0, 1.0, 20)])
def test_prv_agrees_with_dp_accounting_pld(sigma: float, q: float, steps: int) -> None:
    ours = compute_epsilon([GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)],
                           delta=1e-5, accountant=Accountant.PRV)
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    event = dp_accounting.GaussianDpEvent(sigma)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    acc.compose(event, steps)
    assert ours == pytest.approx(acc.get_epsilon(1e-5), abs=0.03)
    # PRV is the tighter analysis: never (materially) above RDP.
    rdp = compute_epsilon([GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)], delta=1e-5)
    assert ours <= rdp + 0.01


def test_skellam_rdp_matches_corollary_by_hand() -> None:
    # Corollary 3.6 of Agarwal, Kairouz, Liu 2021 written out for one order.
    a, mu, d1, d2 = 7, 250.0, 40.0, 9.0
    by_hand = a * d2**2 / (2 * mu) + min(((2 * a - 1) * d2**2 + 6 * d1) / (4 * mu**2), 3 * d1 / (2 * mu))
    assert _rdp.skellam_rdp_single(a, variance=mu, l1=d1, l2=d2) == pytest.approx(by_hand, rel=1e-14)
    ev = SkellamEvent(variance=mu, l2_sensitivity=d2, l1_sensitivity=d1, steps=3)
    curve = _rdp.skellam_rdp(ev, [1.5, 7.0])
    assert math.isinf(curve[0]) and curve[1] == pytest.approx(3 * by_hand)


@pytest.mark.parametrize("z", [0.7, 1.0, 2.0])
def test_skellam_tends_to_gaussian_with_same_variance(z: float) -> None:
    """At fixed noise multiplier z = sqrt(variance)/D2, the Skellam epsilon decreases towards the
    Gaussian one (computed on the same integer orders) as the variance grows."""
    int_orders = [o for o in _rdp.ORDERS if float(o).is_integer()]
    gauss_curve = _rdp.gaussian_rdp(GaussianEvent(noise_multiplier=z, steps=10), int_orders)
    gauss = _rdp.rdp_to_epsilon(int_orders, gauss_curve, 1e-5)[0]
    gaps = []
    for variance in [1e2, 1e4, 1e6, 1e8]:
        d2 = math.sqrt(variance) / z
        ev = SkellamEvent(variance=variance, l2_sensitivity=d2, l1_sensitivity=d2 * 32, steps=10)
        eps = compute_epsilon([ev], delta=1e-5)
        assert eps >= gauss - 1e-9
        gaps.append(eps - gauss)
    assert all(b <= a + 1e-12 for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-4 * gauss


def test_single_discrete_gaussian_is_the_gaussian_curve() -> None:
    ev = DiscreteGaussianEvent(local_variance=400.0, num_clients=1, l2_sensitivity=10.0,
                               l1_sensitivity=100.0, dim=100, steps=5)
    g = GaussianEvent(noise_multiplier=2.0, steps=5)
    assert compute_epsilon([ev], delta=1e-5) == pytest.approx(
        _rdp.rdp_to_epsilon(_rdp.ORDERS, _rdp.gaussian_rdp(g, _rdp.ORDERS), 1e-5)[0], rel=1e-12)


def test_distributed_discrete_gaussian_pays_for_dropouts() -> None:
    """The charge uses the clients actually summed: fewer survivors, less noise, larger epsilon."""
    def eps(n: int) -> float:
        return compute_epsilon([DiscreteGaussianEvent(
            local_variance=40.0, num_clients=n, l2_sensitivity=20.0, l1_sensitivity=400.0,
            dim=1024)], delta=1e-5)
    assert eps(10) > eps(20) > eps(40)


@settings(max_examples=25, deadline=None)
@given(sigma=st.floats(0.5, 10.0), q=st.floats(0.01, 1.0), steps=st.integers(1, 500),
       extra=st.integers(1, 500))
def test_epsilon_grows_with_steps_and_falls_with_noise(sigma: float, q: float, steps: int, extra: int) -> None:
    e = compute_epsilon([GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)], delta=1e-5)
    more_steps = compute_epsilon([GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps + extra)], delta=1e-5)
    more_noise = compute_epsilon([GaussianEvent(noise_multiplier=sigma * 1.5, sample_rate=q, steps=steps)], delta=1e-5)
    assert more_steps >= e - 1e-12
    assert more_noise <= e + 1e-12


@settings(max_examples=25, deadline=None)
@given(variance=st.floats(10.0, 1e7), ratio=st.floats(0.2, 5.0), steps=st.integers(1, 200),
       extra=st.integers(1, 200))
def test_skellam_epsilon_monotone(variance: float, ratio: float, steps: int, extra: int) -> None:
    d2 = math.sqrt(variance) / ratio
    base = SkellamEvent(variance=variance, l2_sensitivity=d2, l1_sensitivity=d2 * 8, steps=steps)
    e = compute_epsilon([base], delta=1e-5)
    e_steps = compute_epsilon([SkellamEvent(variance=variance, l2_sensitivity=d2, l1_sensitivity=d2 * 8,
                                            steps=steps + extra)], delta=1e-5)
    e_noise = compute_epsilon([SkellamEvent(variance=variance * 2, l2_sensitivity=d2, l1_sensitivity=d2 * 8,
                                            steps=steps)], delta=1e-5)
    assert e_steps >= e - 1e-12 and e_noise <= e + 1e-12


def test_composition_of_mixed_events_adds_up() -> None:
    g = GaussianEvent(noise_multiplier=3.0, steps=4)
    s = SkellamEvent(variance=1e4, l2_sensitivity=30.0, l1_sensitivity=300.0, steps=2)
    both = compute_epsilon([g, s], delta=1e-5)
    assert both > max(compute_epsilon([g], delta=1e-5), compute_epsilon([s], delta=1e-5))
    assert both < compute_epsilon([g], delta=1e-5 / 2) + compute_epsilon([s], delta=1e-5 / 2)


def test_prv_refuses_discrete_events() -> None:
    s = SkellamEvent(variance=1e4, l2_sensitivity=30.0, l1_sensitivity=300.0)
    with pytest.raises(UnsupportedEvent):
        compute_epsilon([s], delta=1e-5, accountant=Accountant.PRV)
    acc = PrivacyAccountant(accountant=Accountant.PRV)
    with pytest.raises(UnsupportedEvent):
        acc.record(s)
    assert acc.events == ()


def test_accountant_state_round_trip() -> None:
    acc = PrivacyAccountant()
    acc.record(GaussianEvent(noise_multiplier=1.2, sample_rate=0.1, steps=30))
    acc.record(DiscreteGaussianEvent(local_variance=50.0, num_clients=8, l2_sensitivity=12.0,
                                     l1_sensitivity=90.0, dim=64))
    other = PrivacyAccountant()
    other.load_state_dict(json.loads(json.dumps(acc.state_dict())))
    assert other.events == acc.events
    assert other.epsilon(delta=1e-5) == acc.epsilon(delta=1e-5)
    with pytest.raises(ConfigurationError):
        other.load_state_dict({"accountant": "rdp", "events": [{"kind": "nope", "version": 1}]})
    assert other.events == acc.events  # a bad state leaves the accountant as it was


@pytest.mark.parametrize("bad", [
    lambda: GaussianEvent(noise_multiplier=0.0),
    lambda: GaussianEvent(noise_multiplier=1.0, sample_rate=1.5),
    lambda: GaussianEvent(noise_multiplier=float("nan")),
    lambda: GaussianEvent(noise_multiplier=1.0, steps=0),
    lambda: SkellamEvent(variance=-1.0, l2_sensitivity=1.0, l1_sensitivity=1.0),
    lambda: SkellamEvent(variance=1.0, l2_sensitivity=2.0, l1_sensitivity=1.0),
    lambda: compute_epsilon([GaussianEvent(noise_multiplier=1.0)], delta=0.0),
])
def test_bad_parameters_raise_configuration_error(bad) -> None:
    with pytest.raises(ConfigurationError):
        bad()


def test_events_are_frozen_and_serialise_canonically() -> None:
    ev = SkellamEvent(variance=10.0, l2_sensitivity=1.0, l1_sensitivity=3.0)
    with pytest.raises(AttributeError):
        ev.variance = 20.0  # type: ignore[misc]
    assert event_from_json(event_to_json(ev)) == ev
    assert compute_epsilon([], delta=1e-5) == 0.0
    assert np.isfinite(compute_epsilon([ev], delta=1e-5))
