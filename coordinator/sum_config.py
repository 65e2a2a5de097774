"""How one aggregation round is privatised and summed: :class:`SecureSumConfig`.

Its ``mode`` is a ``privacy.Mechanism`` (one type for one concept; the command line's
``--dp central`` is ``Mechanism.CENTRAL_GAUSSIAN``), DESIGN section 3's round modes: NONE
(clipping, rounding and the secure sum, no privacy claim), CENTRAL_GAUSSIAN (the coordinator
adds discrete Gaussian noise to the modular sum, before decoding), DISTRIBUTED (each site adds
its share of discrete noise inside the encoding; the sum carries the whole noise) and LOCAL
(each site adds the full noise itself).

Sites send FedAvg's secret weights through ``privacy.WeightedSumCodec``: site k encodes
(n_k / max_weight) * [clip_c(Delta_k), c], a vector of L2 norm <= sqrt(2) c. That vector is
what the mechanism protects, so the noise multiplier z is relative to sqrt(2) c: the central
noise standard deviation is z * sqrt(2) * c on every coordinate, the weight slot included.
``max_weight`` is a public bound on any site's weight (e.g. the largest sample count a site
may claim); it must be agreed before the round, never taken from the sites' actual weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy import Mechanism, NoiseKind, Rounding, RoundPrivacy
from privacy import _validate as v
from secagg.errors import ConfigurationError

__all__ = ["SecureSumConfig"]


# The round mechanisms of privacy.Mechanism (DP_SGD is local training's, not a sum's).
_ROUND_MODES = (Mechanism.NONE, Mechanism.CENTRAL_GAUSSIAN, Mechanism.DISTRIBUTED,
                Mechanism.LOCAL)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a bool, got {value!r}")
    return value


def _optional_int(value: object, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{name} must be a positive integer or None, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SecureSumConfig:
    """Everything about a round's sum that is fixed before any site sends anything.

    ``secure=False`` sums the same vectors as plain floats in the clear (same clipping, same
    weight layout, continuous Gaussian noise where the mode has noise): for comparisons only.
    ``modulus_bits`` None lets ``privacy.plan_encoding`` choose; ``neighbors``/``threshold``
    None use secagg's parameter table. ``integer_weights`` (weights are sample counts) rounds
    the decoded total weight to the nearest integer (post-processing). With mode NONE that is
    the exact total whenever the weight slot's decoding error, at most
    ``encoding.rounding_error_bound(n) * max_weight / clip_norm``, is below 1/2: true with
    e.g. 32 bits for a handful of sites, not necessarily with the automatic choice of bits,
    which aims at a 1% quantisation error only.
    """

    mode: Mechanism
    clip_norm: float
    max_weight: float
    noise_multiplier: float = 0.0
    secure: bool = True
    noise: NoiseKind = NoiseKind.SKELLAM
    modulus_bits: int | None = None
    target_wrap_probability: float = 1e-4
    rounding: Rounding = Rounding.STOCHASTIC
    integer_weights: bool = True
    neighbors: int | None = None
    threshold: int | None = None
    malicious: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mechanism) or self.mode not in _ROUND_MODES:
            raise ConfigurationError(f"mode must be a round privacy.Mechanism, got {self.mode!r}")
        object.__setattr__(self, "clip_norm",
                           v.hyperparameter(self.clip_norm, "clip_norm", low=0.0, low_open=True))
        object.__setattr__(self, "max_weight",
                           v.hyperparameter(self.max_weight, "max_weight", low=0.0, low_open=True))
        object.__setattr__(self, "noise_multiplier",
                           v.hyperparameter(self.noise_multiplier, "noise_multiplier", low=0.0))
        for name in ("secure", "integer_weights", "malicious"):
            _flag(getattr(self, name), name)
        for name in ("neighbors", "threshold"):
            _optional_int(getattr(self, name), name)
        if self.mode is Mechanism.DISTRIBUTED and not self.secure:
            raise ConfigurationError("distributed DP needs the secure sum: each site's share of "
                                     "the noise protects nothing on its own (secure=True)")
        self.round_privacy()  # RoundPrivacy checks the mode/noise/bits combination

    @property
    def encoded_clip(self) -> float:
        """L2 bound of the vector each site encodes: sqrt(2) * clip_norm (update + weight slot)."""
        return math.sqrt(2.0) * self.clip_norm

    def round_privacy(self) -> RoundPrivacy:
        """The privacy package's description of this round's mechanism."""
        return RoundPrivacy(mechanism=self.mode, clip_norm=self.encoded_clip,
                            noise_multiplier=self.noise_multiplier, noise=self.noise,
                            bits=self.modulus_bits,
                            target_wrap_probability=self.target_wrap_probability,
                            rounding=self.rounding)
