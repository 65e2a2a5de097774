"""Frozen privacy events: what one release cost, described by the parameters that determine it.

An event is immutable and its meaning never changes once written (the ledger stores them as
JSON with a ``kind`` tag and a format version). Accountants turn a sequence of events into
(epsilon, delta). Sensitivities and variances of the discrete mechanisms are in the *scaled
integer* domain in which the noise was added (after the 1/gamma scaling and rounding), so an
event can be analysed without knowing gamma.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Union

from . import _validate as v
from .errors import ConfigurationError

__all__ = [
    "DiscreteGaussianEvent",
    "GaussianEvent",
    "PrivacyEvent",
    "SkellamEvent",
    "event_from_dict",
    "event_from_json",
    "event_to_dict",
    "event_to_json",
]

EVENT_FORMAT_VERSION = 1

# The ranges an event's parameters are validated to: inside them every accountant's arithmetic
# stays finite in float64 (no overflow, no division by zero; a Hypothesis fuzz test checks it),
# and outside them no real mechanism lives. A noise multiplier below 1e-3 protects nothing
# (epsilon in the millions); above 1e6 the event is indistinguishable from no release. Scaled
# sensitivities stay below 2^50 plus rounding (``encoding``), variances in integer units below
# 1e30; counts are bounded so that steps * RDP and the discrete Gaussian's tau stay finite.
NOISE_MULTIPLIER_RANGE = (1e-3, 1e6)
MIN_SAMPLE_RATE = 1e-12
MAX_STEPS = 10 ** 9
VARIANCE_RANGE = (1e-6, 1e30)
SENSITIVITY_RANGE = (1e-6, 1e16)
MAX_CLIENTS = 10 ** 6
MAX_DIM = 2 ** 40


@dataclass(frozen=True, kw_only=True)
class GaussianEvent:
    """``steps`` compositions of the (Poisson-subsampled) Gaussian mechanism.

    ``noise_multiplier`` is the noise standard deviation divided by the L2 sensitivity;
    ``sample_rate`` 1.0 means no subsampling (e.g. the central Gaussian added once per round).
    """

    kind: ClassVar[str] = "gaussian"
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        low, high = NOISE_MULTIPLIER_RANGE
        object.__setattr__(self, "noise_multiplier",
                           v.bounded(self.noise_multiplier, "noise_multiplier", low=low, high=high))
        object.__setattr__(self, "sample_rate",
                           v.bounded(self.sample_rate, "sample_rate", low=MIN_SAMPLE_RATE, high=1.0))
        object.__setattr__(self, "steps", v.integer(self.steps, "steps", minimum=1, maximum=MAX_STEPS))


def _check_sensitivities(event: Any) -> None:
    """Validate (and normalise to float) an event's L2 and L1 sensitivities; L1 >= L2 always."""
    low, high = SENSITIVITY_RANGE
    l2 = v.bounded(event.l2_sensitivity, "l2_sensitivity", low=low, high=high)
    l1 = v.bounded(event.l1_sensitivity, "l1_sensitivity", low=low, high=high)
    if l1 < l2 * (1 - 1e-12):
        raise ConfigurationError("l1_sensitivity can never be below l2_sensitivity")
    object.__setattr__(event, "l2_sensitivity", l2)
    object.__setattr__(event, "l1_sensitivity", l1)


@dataclass(frozen=True, kw_only=True)
class SkellamEvent:
    """``steps`` releases of a sum carrying symmetric Skellam noise of total ``variance``.

    ``variance`` is the variance per coordinate of the noise in the released sum: with the
    distributed mechanism, the number of clients actually summed times each one's variance.
    ``l1_sensitivity`` and ``l2_sensitivity`` bound one client's contribution after scaling and
    rounding (Agarwal, Kairouz, Liu 2021).
    """

    kind: ClassVar[str] = "skellam"
    variance: float
    l2_sensitivity: float
    l1_sensitivity: float
    steps: int = 1

    def __post_init__(self) -> None:
        low, high = VARIANCE_RANGE
        object.__setattr__(self, "variance", v.bounded(self.variance, "variance", low=low, high=high))
        _check_sensitivities(self)
        object.__setattr__(self, "steps", v.integer(self.steps, "steps", minimum=1, maximum=MAX_STEPS))


@dataclass(frozen=True, kw_only=True)
class DiscreteGaussianEvent:
    """``steps`` releases of a sum of ``num_clients`` independent discrete Gaussians.

    ``local_variance`` is each client's sigma^2 parameter (scaled integer domain);
    ``num_clients`` is the number of clients *actually summed* (survivors), ``dim`` the
    dimension of the released vector. Accounted with Kairouz, Liu, Steinke 2021, Proposition 14
    (with ``num_clients`` = 1 this is Canonne, Kamath, Steinke 2020: the discrete Gaussian is as
    private as the continuous one with the same sigma).
    """

    kind: ClassVar[str] = "discrete_gaussian"
    local_variance: float
    num_clients: int
    l2_sensitivity: float
    l1_sensitivity: float
    dim: int
    steps: int = 1

    def __post_init__(self) -> None:
        low, high = VARIANCE_RANGE
        object.__setattr__(self, "local_variance",
                           v.bounded(self.local_variance, "local_variance", low=low, high=high))
        object.__setattr__(self, "num_clients",
                           v.integer(self.num_clients, "num_clients", minimum=1, maximum=MAX_CLIENTS))
        _check_sensitivities(self)
        object.__setattr__(self, "dim", v.integer(self.dim, "dim", minimum=1, maximum=MAX_DIM))
        object.__setattr__(self, "steps", v.integer(self.steps, "steps", minimum=1, maximum=MAX_STEPS))


PrivacyEvent = Union[GaussianEvent, SkellamEvent, DiscreteGaussianEvent]

_KINDS: dict[str, type] = {
    cls.kind: cls for cls in (GaussianEvent, SkellamEvent, DiscreteGaussianEvent)
}


def event_to_dict(event: PrivacyEvent) -> dict[str, Any]:
    """A plain, JSON-able description of ``event`` with its kind and format version."""
    if type(event) not in _KINDS.values():
        raise ConfigurationError(f"not a privacy event: {event!r}")
    out: dict[str, Any] = {"kind": event.kind, "version": EVENT_FORMAT_VERSION}
    out.update(dataclasses.asdict(event))
    return out


def event_from_dict(data: Mapping[str, Any]) -> PrivacyEvent:
    """Rebuild an event written by :func:`event_to_dict` (validated like a new one)."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    version = fields.pop("version", None)
    if version != EVENT_FORMAT_VERSION:
        raise ConfigurationError(f"unknown event format version {version!r}")
    cls = _KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ConfigurationError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(fields) != names:
        raise ConfigurationError(f"fields of a {kind} event must be {sorted(names)}")
    return cls(**fields)


def event_to_json(event: PrivacyEvent) -> str:
    """Canonical JSON (sorted keys) so equal events have equal text."""
    return json.dumps(event_to_dict(event), sort_keys=True, separators=(",", ":"))


def event_from_json(text: str) -> PrivacyEvent:
    return event_from_dict(json.loads(text))
