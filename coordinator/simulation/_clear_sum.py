"""The comparison path of :func:`coordinator.secure_sum` with ``secure=False`` (simulation
only: here the vectors are summed in the clear, so nothing of it may run at a coordinator).

The same vectors as the secure path (clip, weight slot, ``WeightedSumCodec``'s layout), summed
as plain floats with nothing masked: CENTRAL adds N(0, (z sqrt(2) c)^2) to the sum, LOCAL adds
it to every site's vector, and the event is the continuous Gaussian mechanism's (no rounding, so
the sensitivity is exactly sqrt(2) c). Stage dropouts mean what they mean in SecAgg+: a site
that stops before sending its masked input is not summed; one that stops later is. There is no
threshold; with nobody left the round aborts. DISTRIBUTED never gets here (its shares of noise
protect nothing without the secure sum).
"""

from __future__ import annotations

import numpy as np

from cohort.contract import SiteId
from privacy import (
    GaussianEvent,
    Mechanism,
    PrivacyEvent,
    RoundRandomness,
    split_weighted,
    weighted_vector,
)
from secagg import Stage
from secagg.errors import ProtocolAbort

from ..sum_config import SecureSumConfig
from ._round_inputs import Site

__all__ = ["clear_sum"]

_BEFORE_INPUT = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT)


def clear_sum(sites: list[Site], config: SecureSumConfig, drop: dict[Stage, frozenset[SiteId]],
              randomness: RoundRandomness) -> tuple[np.ndarray, float, frozenset[SiteId],
                                                PrivacyEvent | None]:
    """(weighted sum, total weight, included sites, event) computed in the clear."""
    gone = frozenset().union(*(drop[s] for s in _BEFORE_INPUT))
    summed = [s for s in sites if s.site_id not in gone]
    if not summed:
        raise ProtocolAbort("every site dropped before sending its input", stage="masked_input")
    rp = config.round_privacy()
    total = np.zeros(sites[0].update.size + 1)
    for site in summed:
        vec = weighted_vector(site.update, weight=site.weight, clip_norm=config.clip_norm,
                              max_weight=config.max_weight)
        if config.mode is Mechanism.LOCAL:
            gen = randomness.source(f"clear-site-{site.index}").generator
            vec = vec + gen.normal(0.0, rp.local_stddev(len(sites)), vec.shape)
        total += vec
    if config.mode is Mechanism.CENTRAL_GAUSSIAN:
        total = rp.central_noise(total, randomness=randomness.source("clear-central"),
                                 simulation=randomness.simulation)
    event = None
    if config.mode is not Mechanism.NONE:
        event = GaussianEvent(noise_multiplier=config.noise_multiplier)
    weighted_sum, total_weight = split_weighted(total, clip_norm=config.clip_norm,
                                                max_weight=config.max_weight)
    return weighted_sum, total_weight, frozenset(s.site_id for s in summed), event
