"""Cohort's privacy layer: float updates <-> integers for the secure sum, discrete noise,
accountants, the per-site privacy ledger, round mechanisms and DP-SGD with Opacus.

The public API is ``__all__``; modules whose names start with ``_`` are internal.
"""

from __future__ import annotations

from ._amplify import subsampled_epsilon
from .accountants import Accountant, PrivacyAccountant, compute_epsilon, largest_epsilon
from .dpsgd import DPTrainingResult, train_with_dp
from .encoding import (
    EncodingConfig,
    Encoder,
    Rounding,
    WeightedSumCodec,
    centre_lift,
    plan_encoding,
    split_weighted,
    weighted_vector,
    wrap_rate,
)
from .errors import (
    BudgetExceeded,
    InvalidUpdate,
    LedgerError,
    LedgerVersionError,
    ReleaseRepeated,
    UnsupportedEvent,
)
from .events import (
    DiscreteGaussianEvent,
    GaussianEvent,
    PrivacyEvent,
    SkellamEvent,
    event_from_dict,
    event_from_json,
    event_to_dict,
    event_to_json,
)
from .ledger import Budget, LedgerEntry, LedgerTrack, ReleaseStatus, SiteLedger
from .mechanisms import Mechanism, RoundPrivacy
from .noise import (
    NoiseKind,
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    sample_discrete_gaussian,
    sample_discrete_gaussian_exact,
    sample_skellam,
)
from .randomness import RandomSource, RoundRandomness

__all__ = [
    "Accountant",
    "Budget",
    "BudgetExceeded",
    "DPTrainingResult",
    "DiscreteGaussianEvent",
    "Encoder",
    "EncodingConfig",
    "GaussianEvent",
    "InvalidUpdate",
    "LedgerEntry",
    "LedgerError",
    "LedgerTrack",
    "LedgerVersionError",
    "Mechanism",
    "NoiseKind",
    "PrivacyAccountant",
    "PrivacyEvent",
    "RandomSource",
    "ReleaseRepeated",
    "ReleaseStatus",
    "RoundPrivacy",
    "RoundRandomness",
    "Rounding",
    "SiteLedger",
    "SkellamEvent",
    "UnsupportedEvent",
    "WeightedSumCodec",
    "centre_lift",
    "compute_epsilon",
    "largest_epsilon",
    "subsampled_epsilon",
    "discrete_gaussian_pmf",
    "discrete_gaussian_variance",
    "event_from_dict",
    "event_from_json",
    "event_to_dict",
    "event_to_json",
    "plan_encoding",
    "sample_discrete_gaussian",
    "sample_discrete_gaussian_exact",
    "sample_skellam",
    "split_weighted",
    "train_with_dp",
    "weighted_vector",
    "wrap_rate",
]
