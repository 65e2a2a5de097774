"""How a federated round is privatised, as objects rather than string flags.

``Mechanism`` names the options; ``RoundPrivacy`` binds one to its parameters and knows how to
plan the round's encoding, what noise the coordinator adds (central mode only), and which frozen
event each site must charge afterwards. Events always describe what really happened: for the
distributed mechanism the noise in the sum is that of the clients actually summed, so the event
is built from ``survivors``, never from the planned number.

* NONE: clipping, rounding and the secure sum, no noise, no privacy claim (no event).
* CENTRAL_GAUSSIAN: clients send noiseless encodings; the coordinator adds N(0, (z c)^2) to the
  decoded sum. Charged as a Gaussian mechanism whose sensitivity is the clip inflated by
  rounding (``EncodingConfig.l2_sensitivity * gamma``). Trusts the coordinator with the sum.
* DISTRIBUTED: each client adds its share (variance z^2 c^2 / n_expected, in integers) of
  Skellam or discrete Gaussian noise; the sum carries the whole noise.
* LOCAL: each client adds the full noise z^2 c^2 itself; a site's charge counts only its own.
* DP_SGD: example-level DP inside a site's local training (``privacy.dpsgd``); charged with
  the Gaussian event that Opacus's accounting describes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from . import _validate as v
from .encoding import EncodingConfig, Rounding, plan_encoding
from .errors import ConfigurationError
from .events import DiscreteGaussianEvent, GaussianEvent, PrivacyEvent, SkellamEvent
from .noise import NoiseKind
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
        """The round's encoding parameters."""
        client_noise = self.mechanism in (Mechanism.DISTRIBUTED, Mechanism.LOCAL)
        return plan_encoding(dim=dim, clip_norm=self.clip_norm, expected_clients=expected_clients,
                             local_stddev=self.local_stddev(expected_clients),
                             noise=self.noise if client_noise else NoiseKind.NONE, bits=self.bits,
                             target_wrap_probability=self.target_wrap_probability,
                             rounding=self.rounding)

    def central_noise(self, decoded_sum: np.ndarray, *, randomness: RandomSource | None = None,
                      simulation: bool = False) -> np.ndarray:
        """The coordinator's step in CENTRAL_GAUSSIAN mode: the decoded sum plus N(0, (z c)^2).
        Seeded randomness only with ``simulation=True``."""
        if self.mechanism is not Mechanism.CENTRAL_GAUSSIAN:
            raise ConfigurationError("only the central mechanism adds noise at the coordinator")
        if randomness is not None and not (randomness.is_secure or simulation):
            raise ConfigurationError("seeded randomness is for simulations (simulation=True)")
        x = np.asarray(decoded_sum, dtype=np.float64)
        source = randomness if randomness is not None else RandomSource.secure()
        return x + source.generator.normal(0.0, self.noise_multiplier * self.clip_norm, x.shape)

    def event(self, config: EncodingConfig, *, survivors: int) -> PrivacyEvent | None:
        """What each site charges for a round encoded with ``config`` whose secure sum
        included ``survivors`` clients (None for Mechanism.NONE)."""
        if not isinstance(config, EncodingConfig):
            raise ConfigurationError("config must be an EncodingConfig")
        n = v.integer(survivors, "survivors", minimum=1)
        if self.mechanism is Mechanism.NONE:
            return None
        if self.mechanism is Mechanism.CENTRAL_GAUSSIAN:
            sensitivity = config.l2_sensitivity * config.gamma  # clip inflated by rounding
            return GaussianEvent(noise_multiplier=self.noise_multiplier * self.clip_norm / sensitivity)
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
