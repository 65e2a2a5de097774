"""Float updates <-> integers mod 2^b for the secure sum (the distributed-DP encoding of TFF).

Per client: flatten -> pad to a power of two D -> random signs and orthonormal Walsh-Hadamard
rotation (signs derived from a per-round seed shared by all clients; public) -> clip to L2 norm
c -> scale by 1/gamma -> stochastic rounding (or conditional rounding: re-round until the norm
bound of Kairouz, Liu, Steinke 2021, Theorem 1 / Proposition 22, holds) -> add discrete noise
(Skellam or discrete Gaussian) with the client's variance -> wrap into [0, 2^b) (uint32 for
b <= 32, uint64 above). After the secure sum: centre-lift mod 2^b into signed integers, times
gamma, inverse rotation, unpad.

Error of the decoded sum of n clients, when no coordinate wrapped: the rounding moves each
rotated coordinate of each client by less than gamma, so (the rotation being orthogonal)
||decode(sum) - noise - sum_i clip(x_i)||_2 < n * gamma * sqrt(D); the noise is independent
across coordinates with variance (sum of the clients' variances) * gamma^2 per coordinate.

Parameters come from :func:`plan_encoding`, which picks gamma by TFF's heuristic
(``_heuristic_scale_factor`` of ``tff.aggregators.DistributedDpSumFactory``): k standard
deviations of the noisy quantised aggregate, k = sqrt(2) erfcinv(p_wrap), must fit in 2^b:
2^b = 2k sqrt(c^2 n^2 / D + (gamma^2/4 + sigma^2) n) / gamma.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import special

from . import _validate as v
from ._hadamard import fwht, next_power_of_two
from .errors import ConfigurationError, InvalidUpdate
from .noise import MAX_NOISE_VARIANCE, NoiseKind, sample_discrete_gaussian, sample_skellam

# Test-only knob (CONVENTIONS 12): True plants a site that adds no distributed or local noise
# while its plan and its charge say it did; the client-level canary audit proves it catches it
# (tests/test_audit_canaries.py).
_PLANT_NOISE_OFF = False
from .randomness import RandomSource

__all__ = [
    "EncodingConfig",
    "Encoder",
    "Rounding",
    "WeightedSumCodec",
    "centre_lift",
    "plan_encoding",
    "split_weighted",
    "weighted_vector",
    "wrap_rate",
]

# Scaled coordinates must stay exactly representable in float64 (2^53) with room for rounding
# and noise, whatever b is: cap the scale so that c / gamma <= 2^50.
_MAX_SCALED_NORM = float(2 ** 50)
_MAX_CONDITIONAL_ATTEMPTS = 10_000


class Rounding(enum.Enum):
    """How scaled coordinates become integers."""

    STOCHASTIC = "stochastic"
    CONDITIONAL = "conditional"


@dataclass(frozen=True, kw_only=True)
class EncodingConfig:
    """Everything a client and the server must agree on to encode and decode one round.

    ``local_variance`` is each client's noise variance per coordinate in the scaled integer
    domain (the discrete Gaussian's sigma^2 parameter, or the Skellam variance).
    """

    dim: int
    clip_norm: float
    bits: int
    scale: float
    expected_clients: int
    noise: NoiseKind = NoiseKind.NONE
    local_variance: float = 0.0
    rounding: Rounding = Rounding.STOCHASTIC
    beta: float = math.exp(-0.5)
    target_wrap_probability: float = 1e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim", v.integer(self.dim, "dim", minimum=1))
        object.__setattr__(self, "clip_norm", v.positive(self.clip_norm, "clip_norm"))
        object.__setattr__(self, "bits", v.integer(self.bits, "bits", minimum=1, maximum=64))
        object.__setattr__(self, "scale", v.positive(self.scale, "scale"))
        object.__setattr__(self, "expected_clients",
                           v.integer(self.expected_clients, "expected_clients", minimum=1))
        if not isinstance(self.noise, NoiseKind):
            raise ConfigurationError(f"noise must be a NoiseKind, got {self.noise!r}")
        if not isinstance(self.rounding, Rounding):
            raise ConfigurationError(f"rounding must be a Rounding, got {self.rounding!r}")
        var = v.nonnegative(self.local_variance, "local_variance")
        if (self.noise is NoiseKind.NONE) != (var == 0.0):
            raise ConfigurationError("local_variance must be > 0 exactly when noise is not NONE")
        object.__setattr__(self, "local_variance", var)
        object.__setattr__(self, "beta", v.probability(self.beta, "beta"))
        object.__setattr__(self, "target_wrap_probability",
                           v.probability(self.target_wrap_probability, "target_wrap_probability"))
        if self.clip_norm * self.scale > _MAX_SCALED_NORM:
            raise ConfigurationError("clip_norm * scale too large for exact float64 rounding")

    @property
    def padded_dim(self) -> int:
        return next_power_of_two(self.dim)

    @property
    def gamma(self) -> float:
        return 1.0 / self.scale

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.bits <= 32 else np.uint64)

    @property
    def scaled_clip(self) -> float:
        return self.clip_norm * self.scale

    @property
    def conditional_bound(self) -> float:
        """Kairouz et al. 2021 bound on the rounded norm that conditional rounding enforces."""
        c, d = self.scaled_clip, self.padded_dim
        sq = c * c + d / 4.0 + math.sqrt(2.0 * math.log(1.0 / self.beta)) * (c + math.sqrt(d) / 2.0)
        return math.sqrt(sq)

    @property
    def l2_sensitivity(self) -> float:
        """L2 norm bound of one client's rounded, scaled vector (scaled integer domain).

        Stochastic rounding moves every coordinate by less than 1: c/gamma + sqrt(D). Conditional
        rounding guarantees the (usually smaller) bound of Kairouz et al.
        """
        bound = self.scaled_clip + math.sqrt(self.padded_dim)
        if self.rounding is Rounding.CONDITIONAL:
            bound = min(bound, self.conditional_bound)
        return bound

    @property
    def l1_sensitivity(self) -> float:
        """L1 bound: <= sqrt(D) * L2 always, and <= L2^2 for integer vectors (TFF's bound)."""
        l2 = self.l2_sensitivity
        return l2 * min(math.sqrt(self.padded_dim), l2)

    def noise_std_in_sum(self, num_clients: int) -> float:
        """Standard deviation per coordinate, in the original units, of the noise that
        ``num_clients`` clients' shares add up to in the decoded sum."""
        num_clients = v.integer(num_clients, "num_clients", minimum=0)
        return math.sqrt(num_clients * self.local_variance) * self.gamma

    def rounding_error_bound(self, num_clients: int) -> float:
        """Bound on the L2 rounding error of the decoded sum of ``num_clients`` clients."""
        return num_clients * self.gamma * math.sqrt(self.padded_dim)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["noise"] = self.noise.value
        out["rounding"] = self.rounding.value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EncodingConfig":
        fields = dict(data)
        try:
            fields["noise"] = NoiseKind(fields["noise"])
            fields["rounding"] = Rounding(fields["rounding"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"not an encoding config: {exc}") from exc


def _k_stddevs(p: float) -> float:
    return math.sqrt(2.0) * float(special.erfcinv(p))


def heuristic_scale(*, local_stddev: float, clip_norm: float, bits: int, num_clients: int,
                    padded_dim: int, k_stddevs: float, rho: float = 1.0) -> float:
    """TFF's ``_heuristic_scale_factor``: the 1/gamma for which k standard deviations of the
    noisy quantised sum of ``num_clients`` clients fit in 2^bits."""
    n, c, s = float(num_clients), clip_norm, local_stddev
    room = 2.0 ** (2.0 * bits) - n * k_stddevs ** 2
    if room <= 0:
        raise ConfigurationError(
            f"{bits} bits are too few for {num_clients} clients at this wrap probability")
    return math.sqrt(room) / (2.0 * k_stddevs * math.sqrt(rho / padded_dim * c * c * n * n + n * s * s))


def plan_encoding(*, dim: int, clip_norm: float, expected_clients: int,
                  local_stddev: float = 0.0, noise: NoiseKind = NoiseKind.NONE,
                  bits: int | None = None, target_wrap_probability: float = 1e-4,
                  rounding: Rounding = Rounding.STOCHASTIC, beta: float = math.exp(-0.5),
                  quantization_tolerance: float = 0.01) -> EncodingConfig:
    """Choose gamma (and b, when ``bits`` is None) for a round.

    ``local_stddev`` is each client's noise standard deviation in the original units (for the
    distributed mechanism: central stddev / sqrt(expected clients)). With ``bits=None`` the
    smallest b is chosen whose rounding error is small: gamma / 2 <= tolerance *
    sqrt(c^2 / D + local_stddev^2), i.e. the rounding noise per coordinate is at most
    ``quantization_tolerance`` of one client's typical coordinate (signal plus noise).
    """
    dim = v.integer(dim, "dim", minimum=1)
    clip_norm = v.positive(clip_norm, "clip_norm")
    expected_clients = v.integer(expected_clients, "expected_clients", minimum=1)
    local_stddev = v.nonnegative(local_stddev, "local_stddev")
    p = v.probability(target_wrap_probability, "target_wrap_probability")
    tol = v.positive(quantization_tolerance, "quantization_tolerance")
    if not isinstance(noise, NoiseKind):
        raise ConfigurationError(f"noise must be a NoiseKind, got {noise!r}")
    if (noise is NoiseKind.NONE) != (local_stddev == 0.0):
        raise ConfigurationError("local_stddev must be > 0 exactly when noise is not NONE")
    padded = next_power_of_two(dim)
    k = _k_stddevs(p)
    max_scale = _MAX_SCALED_NORM / clip_norm
    if local_stddev > 0.0:
        # Keep each client's noise variance (in integer units) where the samplers are exact;
        # at that size the rounding error (< 1 unit) is a millionth of the noise anyway.
        max_scale = min(max_scale, math.sqrt(MAX_NOISE_VARIANCE) / local_stddev)

    def scale_for(b: int) -> float:
        return min(heuristic_scale(local_stddev=local_stddev, clip_norm=clip_norm, bits=b,
                                   num_clients=expected_clients, padded_dim=padded,
                                   k_stddevs=k), max_scale)

    if bits is None:
        wanted_gamma = 2.0 * tol * math.sqrt(clip_norm ** 2 / padded + local_stddev ** 2)
        chosen = None
        for b in range(1, 65):
            if 2.0 ** (2 * b) <= expected_clients * k * k:
                continue
            s = scale_for(b)
            if 1.0 / s <= wanted_gamma or s >= max_scale:
                chosen = b
                break
        bits = chosen if chosen is not None else 64
    bits = v.integer(bits, "bits", minimum=1, maximum=64)
    scale = scale_for(bits)
    return EncodingConfig(dim=dim, clip_norm=clip_norm, bits=bits, scale=scale,
                          expected_clients=expected_clients, noise=noise,
                          local_variance=(local_stddev * scale) ** 2, rounding=rounding,
                          beta=beta, target_wrap_probability=p)


def centre_lift(values: np.ndarray, bits: int) -> np.ndarray:
    """Map residues mod 2^bits to the signed representatives in [-2^(bits-1), 2^(bits-1))."""
    bits = v.integer(bits, "bits", minimum=1, maximum=64)
    # Shift the b-bit residue to the top of a 64-bit word and shift back arithmetically: the
    # sign extension is the centre lift, for every b in 1..64, without overflow.
    shift = np.uint64(64 - bits)
    u = np.asarray(values).astype(np.uint64)
    u <<= shift
    return u.view(np.int64) >> np.int64(64 - bits)


def wrap_rate(true_sum: np.ndarray, bits: int) -> float:
    """Fraction of coordinates of an exact integer sum that fall outside the centred window
    [-2^(bits-1), 2^(bits-1)) and therefore decode wrongly after the modular sum."""
    bits = v.integer(bits, "bits", minimum=1, maximum=64)
    s = np.asarray(true_sum)
    if s.size == 0:
        return 0.0
    half = 1 << (bits - 1)
    if s.dtype == object:
        outside = sum(1 for x in s.tolist() if not -half <= x < half)
        return outside / s.size
    return float(np.count_nonzero((s < -half) | (s >= half))) / s.size


def rotation_signs(seed: bytes, n: int) -> np.ndarray:
    """The public per-round random signs (+1.0 / -1.0) of the rotation, from ``seed``."""
    if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16:
        raise ConfigurationError("rotation_seed must be at least 16 bytes")
    digest = hashlib.sha256(b"cohort/privacy/rotation/v1" + bytes(seed)).digest()
    gen = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
    return gen.integers(0, 2, n, dtype=np.int8).astype(np.float64) * 2.0 - 1.0


class Encoder:
    """Encodes one client's float update and decodes the secure sum, for one round's config."""

    def __init__(self, config: EncodingConfig, *, rotation_seed: bytes,
                 simulation: bool = False) -> None:
        """``simulation=True`` is the explicit test/simulation mode in which seeded randomness
        (``RandomSource.for_simulation``) is accepted; otherwise encoding refuses it."""
        if not isinstance(config, EncodingConfig):
            raise ConfigurationError("config must be an EncodingConfig")
        if not isinstance(simulation, bool):
            raise ConfigurationError("simulation must be a bool")
        self._config = config
        self._simulation = simulation
        self._signs = rotation_signs(rotation_seed, config.padded_dim)

    @property
    def config(self) -> EncodingConfig:
        return self._config

    # -- client side -------------------------------------------------------------------
    def _check_update(self, update: Any) -> np.ndarray:
        try:
            x = np.asarray(update)
        except Exception as exc:  # ragged sequences and the like
            raise InvalidUpdate(f"update is not an array: {exc}") from exc
        if x.dtype.kind not in "fiu":
            raise InvalidUpdate(f"update must be real numbers, got dtype {x.dtype}")
        x = x.reshape(-1).astype(np.float64)
        if x.size != self._config.dim:
            raise InvalidUpdate(f"update has {x.size} entries, the round expects {self._config.dim}")
        if not np.isfinite(x).all():
            raise InvalidUpdate("update contains NaN or infinite entries")
        return x

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Pad, apply the random signs, then the orthonormal Hadamard transform."""
        cfg = self._config
        y = np.zeros(cfg.padded_dim)
        y[: cfg.dim] = x
        y *= self._signs
        return fwht(y)

    def unrotate(self, y: np.ndarray) -> np.ndarray:
        x = fwht(np.asarray(y, dtype=np.float64))
        x *= self._signs
        return x[: self._config.dim]

    def _round(self, y: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        cfg = self._config
        floor = np.floor(y)
        frac = y - floor
        if cfg.rounding is Rounding.STOCHASTIC:
            floor += gen.random(y.size) < frac
            return floor.astype(np.int64)
        bound_sq = cfg.conditional_bound ** 2
        for _ in range(_MAX_CONDITIONAL_ATTEMPTS):
            r = floor + (gen.random(y.size) < frac)
            if float(np.dot(r, r)) <= bound_sq:
                return r.astype(np.int64)
        raise InvalidUpdate("conditional rounding did not meet its norm bound")

    def encode_signed(self, update: Any, *, randomness: RandomSource | None = None) -> np.ndarray:
        """The client's integer vector before the modular wrap (int64; for simulations and
        wrap measurements). ``randomness`` None means a fresh secure source."""
        cfg = self._config
        x = self._check_update(update)
        source = randomness if randomness is not None else RandomSource.secure()
        if not isinstance(source, RandomSource):
            raise ConfigurationError("randomness must be a RandomSource")
        if not (source.is_secure or self._simulation):
            raise ConfigurationError("seeded randomness is for simulations: build the Encoder "
                                     "with simulation=True")
        gen = source.generator
        y = self.rotate(x)
        norm = math.sqrt(float(np.dot(y, y)))
        factor = cfg.scale * (min(1.0, cfg.clip_norm / norm) if norm > 0 else 1.0)
        y *= factor
        z = self._round(y, gen)
        if _PLANT_NOISE_OFF:
            return z  # the planted defect: no noise, while the plan (and the charge) claim it
        if cfg.noise is NoiseKind.SKELLAM:
            z += sample_skellam(variance=cfg.local_variance, size=z.size, rng=gen)
        elif cfg.noise is NoiseKind.DISCRETE_GAUSSIAN:
            z += sample_discrete_gaussian(sigma2=cfg.local_variance, size=z.size, rng=gen)
        return z

    def wrap(self, signed: np.ndarray) -> np.ndarray:
        """Residues mod 2^b of a signed integer vector, as uint32 (b <= 32) or uint64."""
        cfg = self._config
        u = np.asarray(signed, dtype=np.int64).view(np.uint64)
        if cfg.bits < 64:
            u = u & np.uint64((1 << cfg.bits) - 1)
        return u.astype(cfg.dtype, copy=False)

    def encode(self, update: Any, *, randomness: RandomSource | None = None) -> np.ndarray:
        """The client's input to the secure sum: values in [0, 2^b)."""
        return self.wrap(self.encode_signed(update, randomness=randomness))

    # -- server side -------------------------------------------------------------------
    def decode(self, aggregate: np.ndarray) -> np.ndarray:
        """The float sum from the modular sum of the clients' encodings."""
        cfg = self._config
        a = np.asarray(aggregate)
        if a.ndim != 1 or a.size != cfg.padded_dim:
            raise InvalidUpdate(f"aggregate must be a vector of {cfg.padded_dim} residues")
        if a.dtype.kind not in "iu":
            raise InvalidUpdate(f"aggregate must be integers, got dtype {a.dtype}")
        if cfg.bits < 64 and a.dtype.kind == "i" and (a < 0).any():
            raise InvalidUpdate("aggregate residues must be non-negative")
        signed = centre_lift(a, cfg.bits).astype(np.float64)
        signed *= cfg.gamma
        return self.unrotate(signed)

    def modular_sum(self, encodings: Sequence[np.ndarray]) -> np.ndarray:
        """Plain numpy sum mod 2^b of encodings (what the secure sum reveals; for simulation)."""
        cfg = self._config
        acc = np.zeros(cfg.padded_dim, dtype=np.uint64)
        for e in encodings:
            acc += np.asarray(e, dtype=np.uint64)  # uint64 wrap-around is mod 2^64
        if cfg.bits < 64:
            acc &= np.uint64((1 << cfg.bits) - 1)
        return acc.astype(cfg.dtype)


def weighted_vector(update: Any, *, weight: float, clip_norm: float,
                    max_weight: float) -> np.ndarray:
    """(weight / max_weight) * [clip_c(update), c] as float64: the vector one site contributes so
    that a single sum carries both sum_k w_k x_k and sum_k w_k (see :class:`WeightedSumCodec`)."""
    max_weight = v.positive(max_weight, "max_weight")
    c = v.positive(clip_norm, "clip_norm")
    w = v.nonnegative(weight, "weight")
    if w > max_weight:
        raise ConfigurationError(f"weight {w} exceeds max_weight {max_weight}")
    x = np.asarray(update)
    if x.dtype.kind not in "fiu":
        raise InvalidUpdate(f"update must be real numbers, got dtype {x.dtype}")
    x = x.reshape(-1).astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidUpdate("update contains NaN or infinite entries")
    norm = float(np.linalg.norm(x))
    if norm > c:
        x = x * (c / norm)
    z = np.empty(x.size + 1)
    z[:-1] = x
    z[-1] = c
    z *= w / max_weight
    return z


def split_weighted(total: np.ndarray, *, clip_norm: float, max_weight: float,
                   integer_total: bool = False) -> tuple[np.ndarray, float]:
    """(sum_k w_k x_k, sum_k w_k) from a (decoded, possibly noised) sum of weighted vectors.
    ``integer_total`` (weights are sample counts) rounds the total weight to the nearest
    integer: post-processing only."""
    total = np.asarray(total, dtype=np.float64)
    weight = float(total[-1]) * max_weight / clip_norm
    return total[:-1] * max_weight, float(round(weight)) if integer_total else weight


class WeightedSumCodec:
    """FedAvg's secret weights through the same path: one client sends (w/w_max)*[clip_c(x), c].

    The extra coordinate carries the weight, so the sum reveals sum_k w_k x_k = w_max * (first
    d coordinates) and sum_k w_k = w_max * (last coordinate) / c. The vector a client encodes has
    L2 norm <= sqrt(2) * c, which is the clip (and sensitivity) of the underlying encoder: the
    release of both sums together costs what one release with clip sqrt(2) c costs.
    Weights must lie in [0, w_max].
    """

    def __init__(self, config: EncodingConfig, *, rotation_seed: bytes, max_weight: float,
                 simulation: bool = False) -> None:
        self._max_weight = v.positive(max_weight, "max_weight")
        if config.dim < 2:
            raise ConfigurationError("a weighted config needs dim = update dim + 1 >= 2")
        self._encoder = Encoder(config, rotation_seed=rotation_seed, simulation=simulation)
        self._update_clip = config.clip_norm / math.sqrt(2.0)

    @staticmethod
    def plan(*, dim: int, clip_norm: float, **kwargs: Any) -> EncodingConfig:
        """Plan for updates of ``dim`` entries clipped to ``clip_norm`` (adds the weight slot)."""
        dim = v.integer(dim, "dim", minimum=1)
        clip_norm = v.positive(clip_norm, "clip_norm")
        return plan_encoding(dim=dim + 1, clip_norm=math.sqrt(2.0) * clip_norm, **kwargs)

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    @property
    def max_weight(self) -> float:
        return self._max_weight

    @property
    def update_clip(self) -> float:
        """The clip c of the updates (the encoder itself clips at sqrt(2) c)."""
        return self._update_clip

    def encode_signed(self, update: Any, *, weight: float,
                      randomness: RandomSource | None = None) -> np.ndarray:
        """A site's integer vector before the modular wrap (to measure wrap rates)."""
        z = weighted_vector(update, weight=weight, clip_norm=self._update_clip,
                            max_weight=self._max_weight)
        if z.size != self._encoder.config.dim:
            raise InvalidUpdate("update has the wrong number of entries")
        return self._encoder.encode_signed(z, randomness=randomness)

    def encode(self, update: Any, *, weight: float,
               randomness: RandomSource | None = None) -> np.ndarray:
        return self._encoder.wrap(self.encode_signed(update, weight=weight,
                                                     randomness=randomness))

    def split(self, total: np.ndarray, *, integer_total: bool = False
              ) -> tuple[np.ndarray, float]:
        """(sum_k w_k x_k, sum_k w_k) from a decoded float sum (e.g. after central noise);
        ``integer_total`` rounds the total weight (sample counts are integers)."""
        return split_weighted(total, clip_norm=self._update_clip, max_weight=self._max_weight,
                              integer_total=integer_total)

    def decode(self, aggregate: np.ndarray, *, integer_total: bool = False
               ) -> tuple[np.ndarray, float]:
        """(sum_k w_k x_k, sum_k w_k) from the modular sum: what the coordinator releases (and
        what an audit recomputes from a replayed sum); ``integer_total`` as for :meth:`split`."""
        return self.split(self._encoder.decode(aggregate), integer_total=integer_total)
