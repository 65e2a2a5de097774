"""One aggregation round over several sites' float updates, through the real SecAgg+ protocol.

:func:`secure_sum` is the bridge between the learning layer and ``secagg``: every site's
weighted update n_k * Delta_k and weight n_k go through ``privacy.WeightedSumCodec`` (clip,
rotate, scale, round, the mode's discrete noise, wrap into [0, 2^b)), the integer vectors go
through ``secagg.simulate_round`` (real clients and server in one process, with injectable
dropouts), and the modular sum is decoded back into floats. Only the sums are revealed: each
site's update and sample count stay hidden in the masks.

Privacy follows DESIGN section 3 (see :class:`~coordinator.sum_config.PrivacyMode`). Central
noise is a discrete Gaussian added to the modular sum inside Z_2^b before decoding, so a wrap is
post-processing of the DP release (``privacy.RoundPrivacy.central_ring_noise``). The event
returned is what the round really cost, built by ``privacy.RoundPrivacy.event`` from the sites
*actually summed*: with dropouts, distributed noise is the survivors' shares only, and the
event says so. If the protocol aborts, its ``ProtocolAbort`` propagates unchanged and there is
no event: nothing was revealed, so nothing is to be charged.

``seed`` is for simulations and tests only: it fixes the rotation, every site's rounding and
noise (each from its own derived stream), the central noise and the protocol's round id. Key
material inside secagg always comes from the OS. Without a seed all randomness is fresh from
the OS CSPRNG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from privacy import EncodingConfig, PrivacyEvent, WeightedSumCodec, centre_lift, wrap_rate
from secagg import Stage, simulate_round
from secagg.errors import ConfigurationError

from ._clear_sum import clear_sum
from ._randomness import RoundRandomness
from ._round_inputs import Site, SiteId, check_dropouts, check_seed, check_updates
from .sum_config import PrivacyMode, SecureSumConfig
from .sum_result import SecureSumResult

__all__ = ["secure_sum"]

# Test-only knob (CONVENTIONS 12): True plants finding 8's defect, central noise added as
# float64 Gaussian to the *decoded* sum, after the wrap; the replace-one property test of
# central mode proves it catches it.
_PLANT_CENTRAL_NOISE_AFTER_DECODE = False


def secure_sum(updates: Mapping[SiteId, tuple[Any, float]], config: SecureSumConfig, *,
               dropouts: Mapping[Stage | str, Iterable[SiteId]] | None = None,
               seed: int | None = None, round_id: bytes | None = None) -> SecureSumResult:
    """Sum ``{site_id: (delta, weight)}`` as ``config`` says and report what it cost.

    ``round_id`` (16 to 32 bytes) is the secure round's id, the one the sites' ledgers key the
    release on; without it the protocol draws one (from ``seed`` in simulations).

    ``dropouts`` maps a secagg stage (a :class:`secagg.Stage` or its name) to the sites that
    stop before sending that stage's message. Raises ``InvalidInput`` for bad updates or
    weights, ``ConfigurationError`` for an impossible plan, and secagg's ``ProtocolAbort`` when
    too few sites are left; nothing is encoded or sent before the inputs are checked.
    """
    if not isinstance(config, SecureSumConfig):
        raise ConfigurationError(f"config must be a SecureSumConfig, got {config!r}")
    sites = check_updates(updates, max_weight=config.max_weight,
                          integer_weights=config.integer_weights)
    drop = check_dropouts(dropouts, sites, malicious=config.malicious)
    randomness = RoundRandomness(check_seed(seed))
    if not config.secure:
        weighted_sum, total, included, event = clear_sum(sites, config, drop, randomness)
        return _result(config, weighted_sum, total, included=included, planned=len(sites),
                       event=event, wrap=None, transcript_bytes=None, encoding=None)
    return _secure(sites, config, drop, randomness, seed, round_id)


def _secure(sites: list[Site], config: SecureSumConfig, drop: dict[Stage, frozenset[SiteId]],
            randomness: RoundRandomness, seed: int | None,
            round_id: bytes | None) -> SecureSumResult:
    rp = config.round_privacy()
    plan = rp.plan(dim=sites[0].update.size + 1, expected_clients=len(sites))
    codec = WeightedSumCodec(plan, rotation_seed=randomness.rotation_seed(),
                             max_weight=config.max_weight, simulation=randomness.simulation)
    signed = {s.index: codec.encode_signed(s.update, weight=s.weight,
                                           randomness=randomness.source(f"site-{s.index}"))
              for s in sites}
    index_of = {s.site_id: s.index for s in sites}
    secagg_drops = {stage: sorted(index_of[site] for site in chosen)
                    for stage, chosen in drop.items() if chosen}
    round_result = simulate_round({i: codec.encoder.wrap(z) for i, z in signed.items()},
                                  modulus_bits=plan.bits, neighbors=config.neighbors,
                                  threshold=config.threshold, dropouts=secagg_drops,
                                  malicious=config.malicious, seed=seed, round_id=round_id)
    summed = sorted(round_result.included)
    aggregate = np.asarray(round_result.aggregate)
    if config.mode is PrivacyMode.CENTRAL and _PLANT_CENTRAL_NOISE_AFTER_DECODE:
        noisy = rp.central_noise(codec.encoder.decode(aggregate),
                                 randomness=randomness.source("central"),
                                 simulation=randomness.simulation)
        weighted_sum, total = codec.split(noisy)
    elif config.mode is PrivacyMode.CENTRAL:  # noise inside Z_2^b: the wrap is post-processing
        weighted_sum, total = codec.decode(rp.central_ring_noise(
            aggregate, plan, randomness=randomness.source("central"),
            simulation=randomness.simulation))
    else:
        weighted_sum, total = codec.decode(aggregate)
    by_index = {s.index: s.site_id for s in sites}
    return _result(config, weighted_sum, total,
                   included=frozenset(by_index[i] for i in summed), planned=len(sites),
                   event=rp.event(plan, survivors=len(summed)),
                   wrap=wrap_rate(_exact_sum([signed[i] for i in summed]), plan.bits),
                   transcript_bytes=round_result.transcript.total_bytes(), encoding=plan)


def _exact_sum(vectors: list[np.ndarray]) -> np.ndarray:
    """The true integer sum, in int64 when it cannot overflow, else in Python integers."""
    largest = max(int(np.abs(z).max()) for z in vectors)
    if largest * len(vectors) < 2 ** 62:
        return np.sum(vectors, axis=0, dtype=np.int64)
    total = np.zeros(vectors[0].size, dtype=object)
    for z in vectors:
        total += z.astype(object)
    return total


def _result(config: SecureSumConfig, weighted_sum: np.ndarray, total: float, *,
            included: frozenset[SiteId], planned: int, event: PrivacyEvent | None,
            wrap: float | None, transcript_bytes: int | None,
            encoding: EncodingConfig | None) -> SecureSumResult:
    if config.integer_weights:
        total = float(round(total))  # sample counts are integers: post-processing only
    return SecureSumResult(weighted_sum=weighted_sum, total_weight=total, included=included,
                           planned=planned, event=event, wrap_rate=wrap,
                           transcript_bytes=transcript_bytes, encoding=encoding,
                           secure=config.secure)


def central_release_shift(codec: WeightedSumCodec, before: np.ndarray,
                          after: np.ndarray) -> float:
    """How far, in L2 and scaled integer units, the quantity to which central mode adds its
    noise moves between two modular aggregates (the sensitivity a central event must bound).

    Noise in the ring: the noised quantity is the residue vector, and the move is the
    centre-lifted difference (after - before) mod 2^b, at most one client's rounded vector
    however the sum wraps. With the planted defect, the decoded floats (the rotation is
    orthonormal, so their L2 move is that of the centre-lifted sums, over gamma)."""
    cfg = codec.encoder.config
    if _PLANT_CENTRAL_NOISE_AFTER_DECODE:
        d = codec.encoder.decode(after) - codec.encoder.decode(before)
        return float(np.linalg.norm(d)) / cfg.gamma
    diff = np.asarray(after, dtype=np.uint64) - np.asarray(before, dtype=np.uint64)
    return float(np.linalg.norm(centre_lift(diff, cfg.bits).astype(np.float64)))
