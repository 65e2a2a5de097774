"""How a federated round is privatised, as objects rather than string flags.

``Mechanism`` names the options; ``RoundPrivacy`` binds one to its parameters and knows how to
plan the round's encoding, what noise the coordinator adds (central mode only), and which frozen
event each site must charge afterwards. Events always describe what really happened: for the
distributed mechanism the noise in the sum is that of the clients actually summed, so the event
is built from ``survivors``, never from the planned number.

* NONE: clipping, rounding and the secure sum, no noise, no privacy claim (no event).
* CENTRAL_GAUSSIAN: clients send noiseless encodings; the coordinator adds discrete Gaussian
  noise N_Z(0, (z c / gamma)^2) to the modular sum inside Z_2^b, before decoding, so a wrap is
  post-processing. Charged as one discrete Gaussian whose sensitivity is one client's rounded
  vector (``EncodingConfig.l2_sensitivity``). Trusts the coordinator with the sum.
* DISTRIBUTED: each client adds its share (variance z^2 c^2 / n_expected, in integers) of
  Skellam or discrete Gaussian noise; the sum carries the whole noise.
* LOCAL: each client adds the full noise z^2 c^2 itself; a site's charge counts only its own.
* DP_SGD: example-level DP inside a site's local training (``privacy.dpsgd``); charged with
  the Gaussian event that Opacus's accounting describes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

import numpy as np

from . import _validate as v
from .encoding import EncodingConfig, Rounding, plan_encoding
from .errors import ConfigurationError
from .events import DiscreteGaussianEvent, PrivacyEvent, SkellamEvent
from .noise import NoiseKind, sample_discrete_gaussian
from .randomness import RandomSource

__all__ = ["Mechanism", "RoundPrivacy"]


class Mechanism(enum.Enum):
    NONE = "none"
    CENTRAL_GAUSSIAN = "central_gaussian"
    DISTRIBUTED = "distributed"
    LOCAL = "local"
    DP_SGD = "dp_sgd"


_ROUND_MECHANISMS = (Mechanism.NONE, Mechanism.CENTRAL_GAUSSIAN, Mechanism.DISTRIBUTED,
                     Mechanism.LOCAL)


@dataclass(frozen=True, kw_only=True)
class RoundPrivacy:
    """One round's privacy mechanism and parameters.

    ``noise_multiplier`` z is the central noise standard deviation divided by ``clip_norm`` c.
    ``noise`` chooses the integer noise of the distributed and local mechanisms.
    """

    mechanism: Mechanism
    clip_norm: float
    noise_multiplier: float = 0.0
    noise: NoiseKind = NoiseKind.SKELLAM
    bits: int | None = None
    target_wrap_probability: float = 1e-4
    rounding: Rounding = Rounding.STOCHASTIC

    def __post_init__(self) -> None:
        if not isinstance(self.mechanism, Mechanism):
            raise ConfigurationError(f"mechanism must be a Mechanism, got {self.mechanism!r}")
        if self.mechanism not in _ROUND_MECHANISMS:
            raise ConfigurationError("DP-SGD is a local-training mechanism: use privacy.dpsgd")
        object.__setattr__(self, "clip_norm", v.positive(self.clip_norm, "clip_norm"))
        z = v.nonnegative(self.noise_multiplier, "noise_multiplier")
        if (self.mechanism is Mechanism.NONE) != (z == 0.0):
            raise ConfigurationError("noise_multiplier must be > 0 exactly when there is a mechanism")
        object.__setattr__(self, "noise_multiplier", z)
        if not isinstance(self.noise, NoiseKind) or (
                self.mechanism in (Mechanism.DISTRIBUTED, Mechanism.LOCAL)
                and self.noise is NoiseKind.NONE):
            raise ConfigurationError("distributed and local mechanisms need Skellam or discrete Gaussian noise")
        if self.bits is not None:
            v.integer(self.bits, "bits", minimum=1, maximum=64)

    def local_stddev(self, expected_clients: int) -> float:
        """Each client's noise standard deviation (original units)."""
        n = v.integer(expected_clients, "expected_clients", minimum=1)
        central = self.noise_multiplier * self.clip_norm
        if self.mechanism is Mechanism.DISTRIBUTED:
            return central / math.sqrt(n)
        if self.mechanism is Mechanism.LOCAL:
            return central
        return 0.0

    def plan(self, *, dim: int, expected_clients: int) -> EncodingConfig:
        """The round's encoding parameters. Central mode leaves headroom in 2^b for its noise
        (planned as if the clients carried it, then taken off the clients: they add none)."""
        client_noise = self.mechanism in (Mechanism.DISTRIBUTED, Mechanism.LOCAL)
        central = self.mechanism is Mechanism.CENTRAL_GAUSSIAN
        n = v.integer(expected_clients, "expected_clients", minimum=1)
        stddev = (self.noise_multiplier * self.clip_norm / math.sqrt(n) if central
                  else self.local_stddev(n))
        noise = (self.noise if client_noise else
                 NoiseKind.DISCRETE_GAUSSIAN if central else NoiseKind.NONE)
        plan = plan_encoding(dim=dim, clip_norm=self.clip_norm, expected_clients=n,
                             local_stddev=stddev, noise=noise, bits=self.bits,
                             target_wrap_probability=self.target_wrap_probability,
                             rounding=self.rounding)
        if central:
            plan = dataclasses.replace(plan, noise=NoiseKind.NONE, local_variance=0.0)
        return plan

    def central_variance(self, config: EncodingConfig) -> float:
        """The central discrete Gaussian's sigma^2 in the scaled integer domain: (z c / gamma)^2."""
        return (self.noise_multiplier * self.clip_norm * config.scale) ** 2

    def central_ring_noise(self, aggregate: np.ndarray, config: EncodingConfig, *,
                           randomness: RandomSource | None = None,
                           simulation: bool = False) -> np.ndarray:
        """The coordinator's step in CENTRAL_GAUSSIAN mode on a secure sum: the modular
        aggregate plus discrete Gaussian noise N_Z(0, (z c / gamma)^2), inside Z_2^b, before
        any centre-lift or decoding. The release is then (sum + noise) mod 2^b, so the wrap is
        post-processing of a DP release whose sensitivity is one client's rounded vector
        (``config.l2_sensitivity``), however the sum wraps. Seeded randomness only with
        ``simulation=True``."""
        self._check_central(randomness, simulation)
        a = np.asarray(aggregate)
        if a.dtype.kind != "u" or a.ndim != 1 or a.size != config.padded_dim:
            raise ConfigurationError("the aggregate must be the secure sum's residues mod 2^b")
        source = randomness if randomness is not None else RandomSource.secure()
        noise = sample_discrete_gaussian(sigma2=self.central_variance(config), size=a.size,
                                         rng=source.generator)
        out = a.astype(np.uint64) + noise.view(np.uint64)  # unsigned wrap-around: mod 2^64
        if config.bits < 64:
            out &= np.uint64((1 << config.bits) - 1)
        return out.astype(config.dtype)

    def central_noise(self, decoded_sum: np.ndarray, *, randomness: RandomSource | None = None,
                      simulation: bool = False) -> np.ndarray:
        """Continuous N(0, (z c)^2) on a float sum: only for the clear comparison path
        (``secure=False``), where nothing wraps. A secure sum uses :meth:`central_ring_noise`.
        Seeded randomness only with ``simulation=True``."""
        self._check_central(randomness, simulation)
        x = np.asarray(decoded_sum, dtype=np.float64)
        source = randomness if randomness is not None else RandomSource.secure()
        return x + source.generator.normal(0.0, self.noise_multiplier * self.clip_norm, x.shape)

    def _check_central(self, randomness: RandomSource | None, simulation: bool) -> None:
        if self.mechanism is not Mechanism.CENTRAL_GAUSSIAN:
            raise ConfigurationError("only the central mechanism adds noise at the coordinator")
        if randomness is not None and not (randomness.is_secure or simulation):
            raise ConfigurationError("seeded randomness is for simulations (simulation=True)")

    def event(self, config: EncodingConfig, *, survivors: int) -> PrivacyEvent | None:
        """What each site charges for a round encoded with ``config`` whose secure sum
        included ``survivors`` clients (None for Mechanism.NONE)."""
        if not isinstance(config, EncodingConfig):
            raise ConfigurationError("config must be an EncodingConfig")
        n = v.integer(survivors, "survivors", minimum=1)
        if self.mechanism is Mechanism.NONE:
            return None
        if self.mechanism is Mechanism.CENTRAL_GAUSSIAN:
            # One discrete Gaussian added in the ring (Canonne, Kamath, Steinke 2020: as private
            # as the continuous one of the same sigma), against one client's rounded vector.
            return DiscreteGaussianEvent(local_variance=self.central_variance(config),
                                         num_clients=1, l2_sensitivity=config.l2_sensitivity,
                                         l1_sensitivity=config.l1_sensitivity,
                                         dim=config.padded_dim)
        if config.noise is NoiseKind.NONE:
            raise ConfigurationError("this config carries no noise")
        summed = n if self.mechanism is Mechanism.DISTRIBUTED else 1
        if config.noise is NoiseKind.SKELLAM:
            return SkellamEvent(variance=summed * config.local_variance,
                                l2_sensitivity=config.l2_sensitivity,
                                l1_sensitivity=config.l1_sensitivity)
        return DiscreteGaussianEvent(local_variance=config.local_variance, num_clients=summed,
                                     l2_sensitivity=config.l2_sensitivity,
                                     l1_sensitivity=config.l1_sensitivity, dim=config.padded_dim)
