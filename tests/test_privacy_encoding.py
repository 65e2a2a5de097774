"""Encoding: rotation, clipping, rounding, discrete noise, modular wrap, and their bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.linalg import hadamard

from privacy._hadamard import fwht
from privacy.encoding import (
    EncodingConfig,
    Encoder,
    Rounding,
    WeightedSumCodec,
    centre_lift,
    plan_encoding,
    wrap_rate,
)
from privacy.errors import ConfigurationError, InvalidUpdate
from privacy.noise import NoiseKind
from privacy.randomness import RandomSource
from secagg.errors import CohortError

SEED = b"round-0000000001-shared-seed"


def _clip(x: np.ndarray, c: float) -> np.ndarray:
    n = float(np.linalg.norm(x))
    return x if n <= c else x * (c / n)


@pytest.mark.parametrize("m", [0, 1, 3, 5, 6, 10])
def test_fwht_is_the_normalised_hadamard_matrix(m: int) -> None:
    n = 1 << m
    x = np.random.default_rng(m).standard_normal(n)
    assert np.allclose(fwht(x), hadamard(n) @ x / math.sqrt(n))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 13), seed=st.integers(0, 2**32 - 1))
def test_rotation_is_orthogonal_and_invertible(m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dim = max(1, (1 << m) - int(rng.integers(0, max(1, (1 << m) // 2))))
    cfg = plan_encoding(dim=dim, clip_norm=1.0, expected_clients=2, bits=20)
    enc = Encoder(cfg, rotation_seed=seed.to_bytes(4, "big") * 4, simulation=True)
    x = rng.standard_normal(dim) * rng.uniform(1e-3, 1e3)
    y = enc.rotate(x)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-10)
    assert np.allclose(enc.unrotate(y), x, rtol=1e-9, atol=1e-9 * np.abs(x).max())


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 8), dim=st.integers(1, 300), clip=st.floats(1e-3, 1e3),
       scale_in=st.floats(1e-3, 1e3), bits=st.integers(12, 40),
       rounding=st.sampled_from(list(Rounding)), seed=st.integers(0, 2**31))
def test_decode_of_sum_is_within_rounding_bound(n: int, dim: int, clip: float, scale_in: float,
                                                bits: int, rounding: Rounding, seed: int) -> None:
    cfg = plan_encoding(dim=dim, clip_norm=clip, expected_clients=n, bits=bits, rounding=rounding)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(dim) * scale_in for _ in range(n)]
    rs = RandomSource.for_simulation(seed)
    signed = [enc.encode_signed(x, randomness=rs) for x in xs]
    # The plan bounds the *probability* of a wrap (1e-4 per coordinate, checked statistically in
    # the wrap-rate test); the documented error bound is for sums in which nothing wrapped.
    assume(wrap_rate(np.sum(signed, axis=0), bits) == 0.0)
    out = enc.decode(enc.modular_sum([enc.wrap(s) for s in signed]))
    want = np.sum([_clip(x, clip) for x in xs], axis=0)
    err = float(np.linalg.norm(out - want))
    assert err <= cfg.rounding_error_bound(n) * (1 + 1e-9) + 1e-9 * clip * n
    for s in signed:  # every client's integer vector obeys the sensitivity bound
        assert float(np.linalg.norm(s)) <= cfg.l2_sensitivity + 1e-9
        assert float(np.abs(s).sum()) <= cfg.l1_sensitivity + 1e-9


def test_conditional_rounding_meets_its_norm_bound() -> None:
    cfg = plan_encoding(dim=4096, clip_norm=1.0, expected_clients=4, bits=12,
                        rounding=Rounding.CONDITIONAL)
    assert cfg.conditional_bound < cfg.scaled_clip + math.sqrt(cfg.padded_dim)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    rs = RandomSource.for_simulation(3)
    x = np.random.default_rng(3).standard_normal(4096)
    for _ in range(5):
        z = enc.encode_signed(x, randomness=rs)
        assert float(np.linalg.norm(z)) <= cfg.conditional_bound


@pytest.mark.parametrize("noise", [NoiseKind.SKELLAM, NoiseKind.DISCRETE_GAUSSIAN])
def test_noise_in_the_sum_has_the_planned_variance(noise: NoiseKind) -> None:
    n, dim = 6, 1 << 14
    cfg = plan_encoding(dim=dim, clip_norm=1.0, expected_clients=n, local_stddev=0.05,
                        noise=noise, bits=24)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    rs = RandomSource.for_simulation(11)
    zero = np.zeros(dim)  # rotation and rounding of 0 are exact: only the noise is left
    agg = enc.modular_sum([enc.encode(zero, randomness=rs) for _ in range(n)])
    total = centre_lift(agg, cfg.bits).astype(float)
    planned = n * cfg.local_variance
    # (N-1) s^2 / sigma^2 ~ chi2(N-1) for Gaussian-like noise; a 1e-6 two-sided interval.
    k = total.size - 1
    lo, hi = stats.chi2.ppf([5e-7, 1 - 5e-7], k) / k
    assert lo <= total.var(ddof=1) / planned <= hi
    assert abs(total.mean()) < 6 * math.sqrt(planned / total.size)
    decoded = enc.decode(agg)
    std = cfg.noise_std_in_sum(n)
    assert lo <= decoded[:dim].var(ddof=1) / std**2 <= hi


def test_wrap_rate_stays_at_or_below_target() -> None:
    n, dim, p = 10, 1 << 13, 1e-2
    cfg = plan_encoding(dim=dim, clip_norm=1.0, expected_clients=n, local_stddev=0.02,
                        noise=NoiseKind.SKELLAM, bits=8, target_wrap_probability=p)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    rs = RandomSource.for_simulation(5)
    rng = np.random.default_rng(5)
    # Worst case for the heuristic: all clients send the same direction at the clip norm.
    x = rng.standard_normal(dim)
    x /= np.linalg.norm(x)
    rates = []
    for trial in range(3):
        signed = [enc.encode_signed(x, randomness=rs) for _ in range(n)]
        rates.append(wrap_rate(np.sum(signed, axis=0), cfg.bits))
    assert max(rates) <= p


def test_wrap_rate_counts_outside_window() -> None:
    assert wrap_rate(np.array([-128, 127, 128, -129]), 8) == 0.5
    assert wrap_rate(np.array([], dtype=np.int64), 8) == 0.0


@pytest.mark.parametrize("bits", [1, 8, 31, 32, 33, 63, 64])
def test_wrap_and_centre_lift_invert_each_other(bits: int) -> None:
    cfg = EncodingConfig(dim=8, clip_norm=1.0, bits=bits, scale=1.0, expected_clients=1)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    half = 1 << (bits - 1)
    vals = np.clip(np.array([-half, -1, 0, half - 1, 1, -half + 1, 0, 0], dtype=np.int64), -half, half - 1)
    wrapped = enc.wrap(vals)
    assert wrapped.dtype == (np.uint32 if bits <= 32 else np.uint64)
    assert int(wrapped.max()) < 2**bits
    assert np.array_equal(centre_lift(wrapped, bits), vals)


def test_weighted_sums_go_through_the_same_path() -> None:
    dim, n, c, w_max = 100, 5, 2.0, 1000.0
    cfg = WeightedSumCodec.plan(dim=dim, clip_norm=c, expected_clients=n, bits=32)
    codec = WeightedSumCodec(cfg, rotation_seed=SEED, max_weight=w_max, simulation=True)
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal(dim) * 0.1 for _ in range(n)]
    ws = [float(rng.integers(1, 1000)) for _ in range(n)]
    rs = RandomSource.for_simulation(9)
    agg = codec.encoder.modular_sum([codec.encode(x, weight=w, randomness=rs) for x, w in zip(xs, ws)])
    wsum, wtot = codec.decode(agg)
    bound = cfg.rounding_error_bound(n) * w_max
    assert np.linalg.norm(wsum - sum(w * _clip(x, c) for x, w in zip(xs, ws))) <= bound
    assert abs(wtot - sum(ws)) <= bound / c
    with pytest.raises(ConfigurationError):
        codec.encode(xs[0], weight=w_max * 2)


def test_secure_default_randomness_and_simulation_seeds() -> None:
    cfg = plan_encoding(dim=64, clip_norm=1.0, expected_clients=2, local_stddev=1.0,
                        noise=NoiseKind.SKELLAM, bits=24)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    x = np.ones(64) * 0.01
    assert not np.array_equal(enc.encode(x), enc.encode(x))
    a = enc.encode(x, randomness=RandomSource.for_simulation(1))
    b = enc.encode(x, randomness=RandomSource.for_simulation(1))
    assert np.array_equal(a, b)
    assert RandomSource.secure().is_secure and not RandomSource.for_simulation(1).is_secure


@pytest.mark.parametrize("bad", [
    np.array([1.0, np.nan, 0.0, 0.0]),
    np.array([1.0, np.inf, 0.0, 0.0]),
    np.array([-np.inf, 0.0, 0.0, 0.0]),
    np.zeros(5),
    np.zeros(3),
    np.array(["a", "b", "c", "d"]),
    np.array([1 + 1j, 0, 0, 0]),
])
def test_bad_updates_raise_invalid_update(bad: np.ndarray) -> None:
    enc = Encoder(plan_encoding(dim=4, clip_norm=1.0, expected_clients=2, bits=16), rotation_seed=SEED, simulation=True)
    with pytest.raises(InvalidUpdate):
        enc.encode(bad)


@pytest.mark.parametrize("kwargs", [
    dict(clip_norm=-1.0), dict(clip_norm=0.0), dict(clip_norm=float("nan")),
    dict(bits=0), dict(bits=65), dict(dim=0), dict(expected_clients=0),
    dict(target_wrap_probability=0.0), dict(local_stddev=1.0),  # noise NONE with a stddev
    dict(bits=2, expected_clients=1000),  # too few bits for the sum
])
def test_bad_parameters_raise_configuration_error(kwargs: dict) -> None:
    base = dict(dim=16, clip_norm=1.0, expected_clients=4, bits=16)
    base.update(kwargs)
    with pytest.raises(ConfigurationError):
        plan_encoding(**base)


def test_bad_aggregate_and_seed() -> None:
    cfg = plan_encoding(dim=16, clip_norm=1.0, expected_clients=4, bits=16)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    with pytest.raises(InvalidUpdate):
        enc.decode(np.zeros(8, dtype=np.uint32))
    with pytest.raises(InvalidUpdate):
        enc.decode(np.zeros(16))
    with pytest.raises(ConfigurationError):
        Encoder(cfg, rotation_seed=b"short")
    assert issubclass(InvalidUpdate, CohortError)


def test_automatic_bits_and_config_round_trip() -> None:
    cfg = plan_encoding(dim=10_000, clip_norm=1.0, expected_clients=100, local_stddev=0.01,
                        noise=NoiseKind.SKELLAM)
    assert 1 <= cfg.bits <= 64
    assert cfg.gamma / 2 <= 0.01 * math.sqrt(1.0 / cfg.padded_dim + 0.01**2) * (1 + 1e-9)
    assert EncodingConfig.from_dict(cfg.to_dict()) == cfg
    more = plan_encoding(dim=10_000, clip_norm=1.0, expected_clients=100, local_stddev=0.01,
                         noise=NoiseKind.SKELLAM, bits=cfg.bits + 4)
    assert more.scale > cfg.scale  # more bits, finer grid


def test_sixty_four_bit_round_trip() -> None:
    cfg = plan_encoding(dim=128, clip_norm=1.0, expected_clients=3, bits=64)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    xs = [np.full(128, 0.05), np.full(128, -0.02), np.linspace(-0.05, 0.05, 128)]
    rs = RandomSource.for_simulation(2)
    agg = enc.modular_sum([enc.encode(x, randomness=rs) for x in xs])
    assert agg.dtype == np.uint64
    want = sum(_clip(x, 1.0) for x in xs)
    assert np.linalg.norm(enc.decode(agg) - want) <= cfg.rounding_error_bound(3) + 1e-9


def test_through_secagg_simulate_round_if_available() -> None:
    secagg = pytest.importorskip("secagg")
    simulate_round = getattr(secagg, "simulate_round", None)
    if simulate_round is None:
        pytest.skip("secagg.simulate_round is not there yet")
    n, dim = 4, 200
    cfg = plan_encoding(dim=dim, clip_norm=1.0, expected_clients=n, local_stddev=0.01,
                        noise=NoiseKind.SKELLAM, bits=32)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    rng = np.random.default_rng(4)
    xs = {i: rng.standard_normal(dim) * 0.05 for i in range(n)}
    rs = RandomSource.for_simulation(4)
    inputs = {i: enc.encode(x, randomness=rs) for i, x in xs.items()}
    result = simulate_round(inputs, modulus_bits=cfg.bits, neighbors=n - 1, seed=4)
    assert np.array_equal(np.asarray(result.aggregate).astype(np.uint64),
                          enc.modular_sum(list(inputs.values())).astype(np.uint64))
    out = enc.decode(np.asarray(result.aggregate))
    want = sum(_clip(x, 1.0) for x in xs.values())
    tol = cfg.rounding_error_bound(n) + 8 * cfg.noise_std_in_sum(n) * math.sqrt(cfg.padded_dim)
    assert np.linalg.norm(out - want) <= tol


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), dim=st.integers(1, 2000), z=st.floats(0.05, 3.0),
       noise=st.sampled_from([NoiseKind.SKELLAM, NoiseKind.DISCRETE_GAUSSIAN]),
       seed=st.integers(0, 2**31))
def test_noisy_decode_is_within_rounding_plus_noise_bound(n: int, dim: int, z: float,
                                                         noise: NoiseKind, seed: int) -> None:
    """With noise: error <= rounding bound + a generous tail bound on the noise vector's norm
    (its squared norm has mean D s^2; 1.5 s sqrt(D) + 10 s is far in the tail)."""
    c = 1.0
    # A tiny wrap target (k ~ 7 standard deviations of headroom) so that no wrap muddles the
    # bound; wraps at the planned rate are tested separately.
    cfg = plan_encoding(dim=dim, clip_norm=c, expected_clients=n, local_stddev=z * c / math.sqrt(n),
                        noise=noise, bits=32, target_wrap_probability=1e-12)
    enc = Encoder(cfg, rotation_seed=SEED, simulation=True)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(dim) for _ in range(n)]
    rs = RandomSource.for_simulation(seed)
    signed = [enc.encode_signed(x, randomness=rs) for x in xs]
    assert wrap_rate(np.sum(signed, axis=0), cfg.bits) == 0.0
    out = enc.decode(enc.modular_sum([enc.wrap(s) for s in signed]))
    want = np.sum([_clip(x, c) for x in xs], axis=0)
    s = cfg.noise_std_in_sum(n)
    bound = cfg.rounding_error_bound(n) + 1.5 * s * math.sqrt(cfg.padded_dim) + 10 * s
    assert float(np.linalg.norm(out - want)) <= bound


def test_production_encoder_refuses_seeded_randomness() -> None:
    cfg = plan_encoding(dim=16, clip_norm=1.0, expected_clients=2, local_stddev=0.1,
                        noise=NoiseKind.SKELLAM, bits=24)
    enc = Encoder(cfg, rotation_seed=SEED)
    with pytest.raises(ConfigurationError):
        enc.encode(np.zeros(16), randomness=RandomSource.for_simulation(0))
    assert enc.encode(np.zeros(16), randomness=RandomSource.secure()).shape == (16,)
