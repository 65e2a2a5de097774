"""The secure-sum bridge: exactness within the encoder's bound, dropouts, noise, errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy import Mechanism
from coordinator import SecureSumConfig, SecureSumResult, secure_sum
from privacy.noise import MAX_NOISE_VARIANCE
from privacy import (
    DiscreteGaussianEvent,
    GaussianEvent,
    NoiseKind,
    RandomSource,
    SkellamEvent,
    WeightedSumCodec,
)
from secagg import Stage
from secagg.errors import ConfigurationError, InvalidInput, ProtocolAbort

SEED = b"coordinator-test-rotation-seed-0"


def clipped(x: np.ndarray, c: float) -> np.ndarray:
    n = np.linalg.norm(x)
    return x if n <= c else x * (c / n)


def clear_weighted_sum(updates: dict, sites, c: float) -> tuple[np.ndarray, float]:
    return (sum(updates[s][1] * clipped(updates[s][0], c) for s in sites),
            float(sum(updates[s][1] for s in sites)))


def make_updates(n: int, dim: int, *, seed: int, scale: float = 0.3,
                 max_weight: int = 500) -> dict[int, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    return {i: (rng.standard_normal(dim) * scale, float(rng.integers(1, max_weight + 1)))
            for i in range(n)}


# -- the codec layout the coordinator mirrors ---------------------------------------------------

def test_codec_encode_is_the_wrapped_signed_encoding_and_decode_splits() -> None:
    cfg = WeightedSumCodec.plan(dim=20, clip_norm=0.7, expected_clients=3, bits=32)
    codec = WeightedSumCodec(cfg, rotation_seed=SEED, max_weight=50.0, simulation=True)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(20) * s for s in (0.05, 1.0, 3.0)]  # inside and outside the clip
    ws = [3.0, 50.0, 0.0]
    signed = [codec.encode_signed(x, weight=w, randomness=RandomSource.for_simulation(i))
              for i, (x, w) in enumerate(zip(xs, ws))]
    wrapped = [codec.encode(x, weight=w, randomness=RandomSource.for_simulation(i))
               for i, (x, w) in enumerate(zip(xs, ws))]
    for a, b in zip(signed, wrapped):
        assert np.array_equal(codec.encoder.wrap(a), b)
    agg = codec.encoder.modular_sum(wrapped)
    wsum, wtot = codec.split(codec.encoder.decode(agg))
    want_sum, want_tot = codec.decode(agg)
    assert np.array_equal(wsum, want_sum) and wtot == want_tot
    # The weight slot decodes to the total weight within the rounding bound.
    assert abs(wtot - sum(ws)) <= cfg.rounding_error_bound(3) * 50.0 / codec.update_clip + 1e-9


# -- exactness: secure (mode NONE) against the clear float sum -----------------------------------

site_sets = st.integers(3, 8).flatmap(lambda n: st.integers(1, 12).flatmap(lambda d: st.lists(
    st.tuples(st.lists(st.floats(-2.0, 2.0), min_size=d, max_size=d), st.integers(0, 1000)),
    min_size=n, max_size=n)))


@settings(max_examples=40)
@given(sites=site_sets, clip=st.sampled_from([0.5, 1.0, 4.0]), bits=st.sampled_from([24, 32, 48]),
       seed=st.integers(0, 2**32))
def test_secure_sum_is_within_the_rounding_bound_of_the_clear_sum(sites: list, clip: float,
                                                                  bits: int, seed: int) -> None:
    updates = {i: (np.array(x), float(w)) for i, (x, w) in enumerate(sites)}
    n, w_max = len(updates), 1000.0
    cfg = SecureSumConfig(mode=Mechanism.NONE, clip_norm=clip, max_weight=w_max,
                          modulus_bits=bits)
    result = secure_sum(updates, cfg, seed=seed)
    clear = secure_sum(updates, dataclasses.replace(cfg, secure=False), seed=seed)
    want_sum, want_total = clear_weighted_sum(updates, range(n), clip)
    plan = result.encoding
    assert plan is not None and plan.bits == bits
    # The encoder's analytical bound on the decoded (weight-scaled) vector's rounding error.
    bound = plan.rounding_error_bound(n) * w_max
    slack = 1e-9 * (1 + np.abs(want_sum).sum())
    assert np.linalg.norm(result.weighted_sum - want_sum) <= bound + slack
    assert np.linalg.norm(clear.weighted_sum - want_sum) <= slack
    # The weight slot's error is below the same bound / c, well under 1/2: the total is exact.
    assert bound / clip < 0.5
    assert result.total_weight == want_total == clear.total_weight
    assert result.included == clear.included == frozenset(range(n))
    assert result.event is None and clear.event is None
    assert result.wrap_rate == 0.0 and clear.wrap_rate is None
    assert result.transcript_bytes > 0 and clear.transcript_bytes is None
    assert result.secure and not clear.secure and result.planned == n


def test_seeded_rounds_reproduce_and_results_are_frozen() -> None:
    updates = make_updates(4, 30, seed=2)
    cfg = SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=500,
                          noise_multiplier=0.5, modulus_bits=24)
    a, b = secure_sum(updates, cfg, seed=11), secure_sum(updates, cfg, seed=11)
    assert np.array_equal(a.weighted_sum, b.weighted_sum) and a.total_weight == b.total_weight
    c = secure_sum(updates, cfg, seed=12)
    assert not np.array_equal(a.weighted_sum, c.weighted_sum)
    with pytest.raises(ValueError):
        a.weighted_sum[0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.total_weight = 3.0  # type: ignore[misc]
    assert isinstance(a, SecureSumResult)


# -- dropouts: the result and the event describe the survivors ---------------------------------

@pytest.mark.parametrize("noise", [NoiseKind.SKELLAM, NoiseKind.DISCRETE_GAUSSIAN])
def test_dropouts_at_masked_input_charge_only_the_survivors(noise: NoiseKind) -> None:
    n, dim, w_max = 6, 40, 500.0
    updates = {f"site-{i}": u for i, u in make_updates(n, dim, seed=3).items()}
    dropped = {"site-1", "site-4"}
    survivors = set(updates) - dropped
    cfg = SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=w_max,
                          noise_multiplier=0.05, noise=noise, modulus_bits=28, neighbors=n - 1)
    result = secure_sum(updates, cfg, dropouts={Stage.MASKED_INPUT: dropped}, seed=5)
    assert result.included == frozenset(survivors)
    plan = result.encoding
    assert plan is not None and plan.expected_clients == n  # planned for six ...
    event = result.event
    if noise is NoiseKind.SKELLAM:  # ... charged for the four whose noise is in the sum
        assert isinstance(event, SkellamEvent)
        assert event.variance == pytest.approx(len(survivors) * plan.local_variance, rel=1e-12)
        assert event.l2_sensitivity == plan.l2_sensitivity
    else:
        assert isinstance(event, DiscreteGaussianEvent)
        assert event.num_clients == len(survivors)
        assert event.local_variance == plan.local_variance
    want_sum, want_total = clear_weighted_sum(updates, survivors, 1.0)
    noise_std = plan.noise_std_in_sum(len(survivors))  # per coordinate, before the w_max scale
    tol = (plan.rounding_error_bound(len(survivors)) + 6 * noise_std * math.sqrt(dim + 1)) * w_max
    assert np.linalg.norm(result.weighted_sum - want_sum) <= tol
    assert abs(result.total_weight - want_total) <= 6 * noise_std * w_max + 1


def test_distributed_noise_in_the_sum_is_that_of_the_survivors() -> None:
    n, dim, w_max, z = 5, 3000, 100.0, 0.5
    updates = make_updates(n, dim, seed=4, scale=0.01, max_weight=100)
    cfg = SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=w_max,
                          noise_multiplier=z, modulus_bits=24, neighbors=n - 1)
    result = secure_sum(updates, cfg, dropouts={"masked_input": [0, 3]}, seed=6)
    survivors = {1, 2, 4}
    want_sum, _ = clear_weighted_sum(updates, survivors, 1.0)
    residual = (result.weighted_sum - want_sum) / w_max
    # Each survivor added variance (z sqrt(2) c)^2 / n: three of five shares of the planned noise.
    expected_std = z * math.sqrt(2.0) * math.sqrt(len(survivors) / n)
    assert result.encoding.noise_std_in_sum(3) == pytest.approx(expected_std, rel=1e-9)
    assert np.std(residual) == pytest.approx(expected_std, rel=0.06)
    assert abs(np.mean(residual)) < 4 * expected_std / math.sqrt(dim)


def test_late_dropouts_are_still_summed_and_clear_path_agrees() -> None:
    """A site that drops at share_keys is out; one that drops at unmask already sent its masked
    input and is in. Both paths agree on who, on the total weight and on the weighted sum (the
    secure one within its rounding bound of the clear one)."""
    updates = make_updates(6, 8, seed=7)
    cfg = SecureSumConfig(mode=Mechanism.NONE, clip_norm=1.0, max_weight=500, neighbors=5,
                          modulus_bits=32)
    drops = {"share_keys": [0], "unmask": [2]}
    secure = secure_sum(updates, cfg, dropouts=drops, seed=8)
    clear = secure_sum(updates, dataclasses.replace(cfg, secure=False), dropouts=drops, seed=8)
    assert secure.included == clear.included == frozenset({1, 2, 3, 4, 5})
    assert secure.total_weight == clear.total_weight
    want_sum, want_total = clear_weighted_sum(updates, secure.included, 1.0)
    assert clear.total_weight == want_total
    assert np.allclose(clear.weighted_sum, want_sum, atol=1e-9)
    tol = secure.encoding.rounding_error_bound(len(secure.included)) * 500
    assert np.linalg.norm(secure.weighted_sum - clear.weighted_sum) <= tol
    # The check can fail: the sum without the late dropout's update is far outside the bound.
    without, _ = clear_weighted_sum(updates, secure.included - {2}, 1.0)
    assert np.linalg.norm(secure.weighted_sum - without) > tol


def test_malicious_mode_and_consistency_check_dropouts() -> None:
    """A site that drops at the consistency check had its masked input summed already: it is
    included, and the sum is that of all five (within the rounding bound)."""
    updates = make_updates(5, 8, seed=9)
    cfg = SecureSumConfig(mode=Mechanism.NONE, clip_norm=1.0, max_weight=500, neighbors=4,
                          malicious=True)
    result = secure_sum(updates, cfg, dropouts={"consistency_check": [3]}, seed=1)
    assert result.included == frozenset(range(5))  # its masked input was already in
    want_sum, want_total = clear_weighted_sum(updates, range(5), 1.0)
    # The weight travels as the last coordinate of the encoded vector: the same bound holds.
    tol = result.encoding.rounding_error_bound(5) * 500
    assert abs(result.total_weight - want_total) <= tol
    assert np.linalg.norm(result.weighted_sum - want_sum) <= tol
    without, _ = clear_weighted_sum(updates, [0, 1, 2, 4], 1.0)
    assert np.linalg.norm(result.weighted_sum - without) > tol
    with pytest.raises(ConfigurationError):
        secure_sum(updates, dataclasses.replace(cfg, malicious=False),
                   dropouts={"consistency_check": [3]})


def test_protocol_abort_propagates() -> None:
    updates = make_updates(5, 8, seed=10)
    cfg = SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=500,
                          noise_multiplier=1.0, neighbors=4, threshold=3)
    with pytest.raises(ProtocolAbort):
        secure_sum(updates, cfg, dropouts={"masked_input": [0, 1, 2]}, seed=2)
    with pytest.raises(ProtocolAbort):
        secure_sum(updates, dataclasses.replace(cfg, mode=Mechanism.CENTRAL_GAUSSIAN, secure=False),
                   dropouts={"advertise_keys": range(5)})


# -- central and local noise --------------------------------------------------------------------

def test_central_mode_adds_noise_of_the_planned_scale() -> None:
    n, dim, w_max, z, c = 3, 4000, 200.0, 0.8, 1.5
    updates = make_updates(n, dim, seed=12, scale=0.02, max_weight=200)
    cfg = SecureSumConfig(mode=Mechanism.CENTRAL_GAUSSIAN, clip_norm=c, max_weight=w_max,
                          noise_multiplier=z, modulus_bits=32)
    result = secure_sum(updates, cfg, seed=13)
    want_sum, want_total = clear_weighted_sum(updates, range(n), c)
    residual = (result.weighted_sum - want_sum) / w_max
    planned_std = z * math.sqrt(2.0) * c  # z times the encoded vector's clip sqrt(2) c
    # dim samples: the sample std is within ~3.4 standard errors (1/sqrt(2 dim) = 1.1%).
    assert np.std(residual) == pytest.approx(planned_std, rel=0.04)
    assert abs(np.mean(residual)) < 4 * planned_std / math.sqrt(dim)
    assert abs(result.total_weight - want_total) < 4 * planned_std * w_max / c
    event = result.event
    assert isinstance(event, DiscreteGaussianEvent) and event.num_clients == 1
    # Charged against the clip inflated by rounding: sigma / sensitivity a hair below z.
    assert 0.999 * z < math.sqrt(event.local_variance) / event.l2_sensitivity <= z
    clear = secure_sum(updates, dataclasses.replace(cfg, secure=False), seed=13)
    assert clear.event == GaussianEvent(noise_multiplier=z)
    assert np.std((clear.weighted_sum - want_sum) / w_max) == pytest.approx(planned_std, rel=0.04)


def test_local_mode_charges_one_site_and_adds_everyones_noise() -> None:
    n, dim, w_max, z = 4, 1000, 100.0, 0.3
    updates = make_updates(n, dim, seed=14, scale=0.02, max_weight=100)
    cfg = SecureSumConfig(mode=Mechanism.LOCAL, clip_norm=1.0, max_weight=w_max,
                          noise_multiplier=z, modulus_bits=24)
    result = secure_sum(updates, cfg, dropouts={"masked_input": [1]}, seed=15)
    assert isinstance(result.event, SkellamEvent)
    assert result.event.variance == result.encoding.local_variance  # one site's own noise
    want_sum, _ = clear_weighted_sum(updates, {0, 2, 3}, 1.0)
    residual = (result.weighted_sum - want_sum) / w_max
    assert np.std(residual) == pytest.approx(z * math.sqrt(2.0) * math.sqrt(3), rel=0.1)


def test_many_bits_keep_skellam_noise_within_the_exact_sampler_range() -> None:
    """At 40 bits the scale would give each site a Skellam variance far beyond what numpy's
    Poisson sampler draws exactly; the plan caps it, and the round still runs and charges the
    survivors' noise."""
    updates = make_updates(3, 16, seed=16)
    cfg = SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=500,
                          noise_multiplier=1.0, modulus_bits=40)
    result = secure_sum(updates, cfg, seed=1)
    assert result.encoding.local_variance <= MAX_NOISE_VARIANCE
    assert isinstance(result.event, SkellamEvent)
    assert result.event.variance == pytest.approx(3 * result.encoding.local_variance)
    dg = secure_sum(updates, dataclasses.replace(cfg, noise=NoiseKind.DISCRETE_GAUSSIAN), seed=1)
    assert dg.event.num_clients == 3


# -- errors ---------------------------------------------------------------------------------------

def test_distributed_without_secure_sum_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        SecureSumConfig(mode=Mechanism.DISTRIBUTED, clip_norm=1.0, max_weight=10,
                        noise_multiplier=1.0, secure=False)


@pytest.mark.parametrize("kwargs", [
    {"mode": "none"},
    {"mode": Mechanism.NONE, "noise_multiplier": 1.0},
    {"mode": Mechanism.CENTRAL_GAUSSIAN},
    {"mode": Mechanism.LOCAL, "noise_multiplier": 1.0, "noise": NoiseKind.NONE},
    {"mode": Mechanism.NONE, "clip_norm": 0.0},
    {"mode": Mechanism.NONE, "max_weight": -1.0},
    {"mode": Mechanism.NONE, "modulus_bits": 65},
    {"mode": Mechanism.NONE, "secure": 1},
    {"mode": Mechanism.NONE, "neighbors": 0},
])
def test_bad_configs(kwargs: dict) -> None:
    base = {"clip_norm": 1.0, "max_weight": 10.0}
    base.update(kwargs)
    with pytest.raises(ConfigurationError):
        SecureSumConfig(**base)


GOOD = {0: (np.zeros(4), 1.0), 1: (np.ones(4), 2.0), 2: (np.ones(4), 3.0)}


@pytest.mark.parametrize("updates", [
    {0: (np.zeros(4), 1.0)},                                     # one site
    {**GOOD, 3: (np.zeros(5), 1.0)},                             # another length
    {**GOOD, 3: (np.array([0.0, np.nan, 0.0, 0.0]), 1.0)},
    {**GOOD, 3: (np.zeros(4), 11.0)},                            # above max_weight
    {**GOOD, 3: (np.zeros(4), -1.0)},
    {**GOOD, 3: (np.zeros(4), 1.5)},                             # not a sample count
    {**GOOD, 3: (np.zeros(4), float("nan"))},
    {**GOOD, 3.5: (np.zeros(4), 1.0)},                           # site id type
    {**GOOD, 3: np.zeros(4)},                                    # not a pair
    [(np.zeros(4), 1.0), (np.zeros(4), 1.0)],
])
def test_bad_updates_are_invalid_input(updates) -> None:
    cfg = SecureSumConfig(mode=Mechanism.NONE, clip_norm=1.0, max_weight=10.0)
    with pytest.raises(InvalidInput):
        secure_sum(updates, cfg, seed=0)


@pytest.mark.parametrize("dropouts, seed", [
    ({"masked_input": [7]}, 0),
    ({"no_such_stage": [0]}, 0),
    ({"masked_input": [[0]]}, 0),
    (None, -1),
    (None, 1.5),
])
def test_bad_dropouts_and_seeds(dropouts, seed) -> None:
    cfg = SecureSumConfig(mode=Mechanism.NONE, clip_norm=1.0, max_weight=10.0)
    with pytest.raises(ConfigurationError):
        secure_sum(GOOD, cfg, dropouts=dropouts, seed=seed)
    # The same case through the clear path is refused the same way.
    with pytest.raises(ConfigurationError):
        secure_sum(GOOD, dataclasses.replace(cfg, secure=False), dropouts=dropouts, seed=seed)


def test_a_config_that_is_not_a_secure_sum_config_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        secure_sum(GOOD, {"mode": "none"})  # type: ignore[arg-type]


@pytest.mark.parametrize("round_id", [b"short", b"x" * 33, "a string id of 20 chars"])
def test_bad_round_ids_are_refused(round_id) -> None:
    cfg = SecureSumConfig(mode=Mechanism.NONE, clip_norm=1.0, max_weight=10.0)
    with pytest.raises(ConfigurationError):
        secure_sum(GOOD, cfg, round_id=round_id)  # type: ignore[arg-type]


def test_the_round_id_is_the_secure_rounds_id() -> None:
    from secagg import simulate_round
    rid = bytes(range(32))
    result = simulate_round({c: np.arange(3) for c in range(4)}, modulus_bits=8, round_id=rid)
    assert result.config.round_id == rid


def test_mixed_site_ids_and_float_weights() -> None:
    # Four sites, one dropping: the sum of three may be released (of two, one might be a
    # corrupt site's and the other's input would be revealed; the round refuses that).
    updates = {"b": (np.full(3, 0.1), 2.5), 7: (np.full(3, -0.2), 1.25), "a": (np.zeros(3), 0.0),
               "c": (np.full(3, 0.3), 0.5)}
    cfg = SecureSumConfig(mode=Mechanism.NONE, clip_norm=1.0, max_weight=4.0,
                          integer_weights=False, modulus_bits=32)
    result = secure_sum(updates, cfg, dropouts={"masked_input": ["a"]}, seed=3)
    assert result.included == frozenset({"b", 7, "c"})
    assert result.total_weight == pytest.approx(4.25, abs=1e-6)
    assert np.allclose(result.weighted_sum, 2.5 * 0.1 - 1.25 * 0.2 + 0.5 * 0.3, atol=1e-6)
    with pytest.raises(ProtocolAbort):  # two survivors of three: below the model's minimum
        secure_sum({k: v for k, v in updates.items() if k != "c"}, cfg,
                   dropouts={"masked_input": ["a"]}, seed=3)
