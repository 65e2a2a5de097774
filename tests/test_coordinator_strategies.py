"""Server optimisers: hand-computed two-round examples, properties, state round trips, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort.contract import SERVER_OPTIMISERS
from coordinator import (
    ClientConfig,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
    StrategyName,
    make_strategy,
)
from secagg.errors import CohortError, ConfigurationError, InvalidInput

# The two rounds every example below uses. Round 1: sum_k n_k Delta_k = [2, -1] over
# sum_k n_k = 4, so Delta_1 = [0.5, -0.25]. Round 2: [-1, 3] over 10, so Delta_2 = [-0.1, 0.3].
X0 = np.array([1.0, 2.0])
ROUNDS = [(np.array([2.0, -1.0]), 4.0), (np.array([-1.0, 3.0]), 10.0)]


def run_two_rounds(strategy: Strategy) -> tuple[np.ndarray, np.ndarray]:
    strategy.initialize(X0)
    x1 = strategy.apply(X0, *ROUNDS[0])
    x2 = strategy.apply(x1, *ROUNDS[1])
    return x1, x2


def adaptive_x(x_prev: list[float], m: list[float], v: list[float], *, eta: float,
               tau: float) -> list[float]:
    return [x + eta * mi / (math.sqrt(vi) + tau) for x, mi, vi in zip(x_prev, m, v)]


def test_fedavg_two_rounds() -> None:
    x1, x2 = run_two_rounds(FedAvg())
    assert np.allclose(x1, [1.5, 1.75], rtol=0, atol=1e-15)
    assert np.allclose(x2, [1.4, 2.05], rtol=0, atol=1e-15)
    x1, x2 = run_two_rounds(FedAvg(eta=0.5))
    assert np.allclose(x1, [1.25, 1.875], rtol=0, atol=1e-15)
    assert np.allclose(x2, [1.2, 2.025], rtol=0, atol=1e-15)


def test_fedprox_is_fedavg_on_the_server_and_carries_mu() -> None:
    prox = FedProx(mu=0.1)
    _x1, x2 = run_two_rounds(prox)
    assert np.allclose(x2, [1.4, 2.05], rtol=0, atol=1e-15)
    assert prox.client_config() == ClientConfig(proximal_mu=0.1)
    assert prox.mu == 0.1
    assert FedAvg().client_config().proximal_mu == 0.0


def test_fedavgm_two_rounds() -> None:
    # m1 = Delta_1 = [0.5, -0.25]; x1 = [1.5, 1.75]
    # m2 = 0.9 m1 + Delta_2 = [0.45 - 0.1, -0.225 + 0.3] = [0.35, 0.075]; x2 = x1 + m2
    x1, x2 = run_two_rounds(FedAvgM(eta=1.0, beta1=0.9))
    assert np.allclose(x1, [1.5, 1.75], rtol=0, atol=1e-15)
    assert np.allclose(x2, [1.85, 1.825], rtol=0, atol=1e-14)


HYPER = {"eta": 0.1, "beta1": 0.9, "tau": 0.1}  # v_{-1} = tau^2 = 0.01
# Shared first moments: m1 = 0.1 Delta_1 = [0.05, -0.025];
# m2 = 0.9 m1 + 0.1 Delta_2 = [0.045 - 0.01, -0.0225 + 0.03] = [0.035, 0.0075].
M1, M2 = [0.05, -0.025], [0.035, 0.0075]


@pytest.mark.parametrize("strategy, v1, v2", [
    # Adagrad: v1 = 0.01 + Delta_1^2 = [0.26, 0.0725]; v2 = v1 + Delta_2^2 = [0.27, 0.1625].
    (FedAdagrad(**HYPER), [0.26, 0.0725], [0.27, 0.1625]),
    # Adam: v1 = 0.99 * 0.01 + 0.01 * Delta_1^2 = [0.0099 + 0.0025, 0.0099 + 0.000625];
    # v2 = 0.99 v1 + 0.01 Delta_2^2 = [0.012276 + 0.0001, 0.01041975 + 0.0009].
    (FedAdam(**HYPER, beta2=0.99), [0.0124, 0.010525], [0.012376, 0.01131975]),
    # Yogi: sign(0.01 - Delta_1^2) = [-1, -1], so v1 = 0.01 + 0.01 Delta_1^2 = [0.0125, 0.010625];
    # sign(v1 - Delta_2^2) = sign([0.0025, -0.079375]) = [+1, -1],
    # so v2 = [0.0125 - 0.0001, 0.010625 + 0.0009] = [0.0124, 0.011525].
    (FedYogi(**HYPER, beta2=0.99), [0.0125, 0.010625], [0.0124, 0.011525]),
], ids=["adagrad", "adam", "yogi"])
def test_adaptive_two_rounds(strategy: Strategy, v1: list[float], v2: list[float]) -> None:
    x1, x2 = run_two_rounds(strategy)
    want1 = adaptive_x(list(X0), M1, v1, eta=0.1, tau=0.1)
    want2 = adaptive_x(want1, M2, v2, eta=0.1, tau=0.1)
    assert np.allclose(x1, want1, rtol=0, atol=1e-14)
    assert np.allclose(x2, want2, rtol=0, atol=1e-14)
    state = strategy.state_dict()
    assert np.allclose(state["slots"]["m"], M2, rtol=0, atol=1e-15)
    assert np.allclose(state["slots"]["v"], v2, rtol=0, atol=1e-15)
    assert state["rounds"] == 2


def test_paper_defaults_and_keyword_only() -> None:
    assert FedAdam().hyperparameters == {"eta": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    assert FedYogi().hyperparameters == {"eta": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    assert FedAdagrad().hyperparameters == {"eta": 1e-2, "beta1": 0.9, "tau": 1e-3}
    assert FedAvgM().hyperparameters == {"eta": 1.0, "beta1": 0.9}
    with pytest.raises(TypeError):
        FedAdam(0.1)  # type: ignore[misc]


OPTIMISERS = sorted(SERVER_OPTIMISERS, key=lambda s: s.value)


def test_make_strategy() -> None:
    for name in OPTIMISERS:
        s = make_strategy(name)
        assert s.name is name
    # One StrategyName for sites and coordinator (the contract's): the names that are no
    # server step are refused, not mapped onto one.
    for name in set(StrategyName) - SERVER_OPTIMISERS:
        with pytest.raises(ConfigurationError, match="not a server optimiser"):
            make_strategy(name)
    assert make_strategy(StrategyName.FEDPROX, mu=0.5).client_config().proximal_mu == 0.5
    with pytest.raises(ConfigurationError):
        make_strategy(StrategyName.FEDAVG, beta2=0.5)
    with pytest.raises(ConfigurationError):
        make_strategy("fedavg")  # type: ignore[arg-type]


@pytest.mark.parametrize("factory, kwargs", [
    (FedAvg, {"eta": 0.0}), (FedAvg, {"eta": -1.0}), (FedAvg, {"eta": float("nan")}),
    (FedProx, {"mu": -0.1}), (FedAvgM, {"beta1": 1.0}), (FedAvgM, {"beta1": -0.1}),
    (FedAdam, {"beta2": 1.0}), (FedAdam, {"tau": 0.0}), (FedYogi, {"eta": float("inf")}),
    (FedAdagrad, {"beta1": True}),
])
def test_bad_hyperparameters(factory: type, kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        factory(**kwargs)


deltas_and_weights = st.integers(min_value=1, max_value=6).flatmap(
    lambda dim: st.lists(
        st.tuples(st.lists(st.floats(-1e3, 1e3), min_size=dim, max_size=dim),
                  st.floats(1e-3, 1e4)),
        min_size=1, max_size=8))


@settings(max_examples=60)
@given(data=deltas_and_weights, eta=st.floats(0.01, 2.0))
def test_fedavg_update_is_the_weighted_mean(data: list, eta: float) -> None:
    deltas = np.array([d for d, _ in data])
    weights = np.array([w for _, w in data])
    x = np.linspace(-1.0, 1.0, deltas.shape[1])
    strategy = FedAvg(eta=eta)
    strategy.initialize(x)
    new = strategy.apply(x, (weights[:, None] * deltas).sum(axis=0), float(weights.sum()))
    mean = np.average(deltas, axis=0, weights=weights)
    assert np.allclose(new - x, eta * mean, rtol=1e-9, atol=1e-9 * (1 + np.abs(deltas).max()))


round_inputs = st.lists(
    st.tuples(st.lists(st.floats(-10, 10), min_size=3, max_size=3), st.floats(0.1, 100)),
    min_size=2, max_size=6)


@settings(max_examples=40)
@given(rounds=round_inputs, split=st.integers(0, 6),
       name=st.sampled_from([StrategyName.FEDADAM, StrategyName.FEDYOGI,
                             StrategyName.FEDADAGRAD, StrategyName.FEDAVGM]))
def test_state_round_trip_continues_identically(rounds: list, split: int,
                                                name: StrategyName) -> None:
    split = min(split, len(rounds))
    a = make_strategy(name, eta=0.05)
    x = np.array([0.5, -0.5, 1.0])
    a.initialize(x)
    for s, w in rounds[:split]:
        x = a.apply(x, np.array(s), w)
    # Through JSON, as a checkpoint store would keep it.
    saved = a.state_dict()
    text = json.dumps({**saved, "slots": {k: s.tolist() for k, s in saved["slots"].items()}})
    b = make_strategy(name, eta=0.05)
    b.load_state_dict(json.loads(text))
    xa = xb = x
    for s, w in rounds[split:]:
        xa = a.apply(xa, np.array(s), w)
        xb = b.apply(xb, np.array(s), w)
        assert np.array_equal(xa, xb)
    assert a.rounds == b.rounds == len(rounds)


def snapshot(strategy: Strategy) -> str:
    state = strategy.state_dict()
    return json.dumps({**state, "slots": {k: s.tolist() for k, s in state["slots"].items()}})


@pytest.mark.parametrize("name", OPTIMISERS)
@pytest.mark.parametrize("x, wsum, weight", [
    (np.zeros(2), np.zeros(3), 1.0),            # wrong length
    (np.zeros(3), np.zeros((3, 1)), 1.0),       # wrong shape
    (np.zeros(3), np.array([0.0, np.nan, 0.0]), 1.0),
    (np.array([np.inf, 0.0, 0.0]), np.zeros(3), 1.0),
    (np.zeros(3), np.zeros(3), 0.0),
    (np.zeros(3), np.zeros(3), -2.0),
    (np.zeros(3), np.zeros(3), float("nan")),
    (np.zeros(3), np.zeros(3), True),
    (np.zeros(3), np.array(["a", "b", "c"]), 1.0),
    (np.zeros(3), np.full(3, 1e308), 1e-300),   # overflows float64
])
def test_bad_inputs_raise_and_leave_state_unchanged(name: StrategyName, x: np.ndarray,
                                                    wsum: np.ndarray, weight: float) -> None:
    strategy = make_strategy(name)
    strategy.initialize(np.ones(3))
    strategy.apply(np.ones(3), np.array([1.0, -2.0, 0.5]), 3.0)
    before = snapshot(strategy)
    with pytest.raises(InvalidInput):
        strategy.apply(x, wsum, weight)
    assert snapshot(strategy) == before


def test_apply_before_initialize_and_bad_states() -> None:
    with pytest.raises(ConfigurationError):
        FedAdam().apply(np.zeros(2), np.zeros(2), 1.0)
    s = FedAdam()
    s.initialize(np.zeros(2))
    s.apply(np.zeros(2), np.ones(2), 2.0)
    before = snapshot(s)
    good = s.state_dict()
    bad_states = [
        {**good, "name": "fedyogi"},
        {**good, "hyperparameters": {**good["hyperparameters"], "eta": 0.5}},
        {**good, "slots": {"m": good["slots"]["m"]}},
        {**good, "slots": {"m": good["slots"]["m"], "v": -np.ones(2)}},
        {**good, "slots": {"m": np.ones(3), "v": np.ones(3)}},
        {**good, "slots": {"m": np.array([np.nan, 0.0]), "v": np.ones(2)}},
        {**good, "rounds": -1},
        {**good, "version": 99},
        {k: val for k, val in good.items() if k != "dim"},
        "not a state",
    ]
    for bad in bad_states:
        with pytest.raises(ConfigurationError):
            s.load_state_dict(bad)  # type: ignore[arg-type]
        assert snapshot(s) == before
    with pytest.raises(InvalidInput):
        s.initialize(np.array([]))
    assert issubclass(InvalidInput, CohortError)


def test_uninitialised_state_round_trip_and_initialize_resets() -> None:
    a = FedYogi()
    b = FedYogi()
    b.load_state_dict(a.state_dict())
    assert b.dim is None and b.rounds == 0
    b.initialize(np.zeros(4))
    b.apply(np.zeros(4), np.ones(4), 1.0)
    b.initialize(np.zeros(4))
    assert b.rounds == 0
    assert np.array_equal(b.state_dict()["slots"]["m"], np.zeros(4))
    assert np.allclose(b.state_dict()["slots"]["v"], 1e-6)


def test_apply_does_not_modify_its_arguments() -> None:
    s = FedAdam()
    x, wsum = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    s.initialize(x)
    s.apply(x, wsum, 2.0)
    assert np.array_equal(x, [1.0, 2.0]) and np.array_equal(wsum, [3.0, 4.0])
