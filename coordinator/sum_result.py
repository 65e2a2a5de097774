"""What one aggregation round produced: :class:`SecureSumResult`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.contract import SiteId
from privacy import EncodingConfig, PrivacyEvent

__all__ = ["SecureSumResult"]


@dataclass(frozen=True, kw_only=True)
class SecureSumResult:
    """One round's revealed sums, who is in them and what the round cost.

    ``weighted_sum`` (read-only) is sum_k n_k * clip(Delta_k) over the included sites, plus
    the round's noise; ``total_weight`` is sum_k n_k (noisy too when the mode has noise).
    ``event`` is the privacy event each included site must charge, built from the sites
    actually summed (None for mode NONE). ``wrap_rate`` is the fraction of coordinates whose
    true integer sum fell outside the modulus window (None in the clear, and None from a
    coordinator, which never sees the clear vectors: only the in-process simulation reports
    it, from the sites' side).
    ``transcript_bytes`` counts every byte of the secure-aggregation messages (None in the
    clear). ``encoding`` is the round's encoding plan (None in the clear).
    """

    weighted_sum: np.ndarray
    total_weight: float
    included: frozenset[SiteId]
    planned: int
    event: PrivacyEvent | None
    wrap_rate: float | None
    transcript_bytes: int | None
    encoding: EncodingConfig | None
    secure: bool

    def __post_init__(self) -> None:
        frozen = np.array(self.weighted_sum, dtype=np.float64, copy=True)
        frozen.setflags(write=False)
        object.__setattr__(self, "weighted_sum", frozen)

