"""One aggregation round over several sites' float updates, in one process: the convenience
behind :func:`coordinator.secure_sum`.

It runs the same two halves a deployment runs (DESIGN section 5): each site's
``clients.SiteRound`` encodes its own weighted update n_k * Delta_k and weight n_k through
``privacy.WeightedSumCodec`` (clip, rotate, scale, round, the mode's discrete noise, wrap into
[0, 2^b)) with its own randomness and masks it with its own secagg keys; the
``coordinator.AggregationRound`` runs the secagg server and decodes the modular sum; the
in-memory transport carries the bytes between them and injects the dropouts. Only the sums are
revealed: each site's update and sample count stay hidden in the masks. (The coordinator half
never holds an update; this function does, because it is a simulation holding every site.)

Privacy follows DESIGN section 3 (``config.mode``, a ``privacy.Mechanism``). Central noise is a
discrete Gaussian added to the modular sum inside Z_2^b before decoding, so a wrap is
post-processing of the DP release. The event returned is what the round really cost, built
from the sites *actually summed*. If the protocol aborts, its ``ProtocolAbort`` propagates
unchanged and there is no event: nothing was revealed, so nothing is to be charged.

``seed`` is for simulations and tests only: it fixes the rotation, every site's rounding and
noise (each site derives its own stream), the central noise and the protocol's round id. Key
material inside secagg always comes from the OS. Without a seed all randomness is fresh from
the OS CSPRNG.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.round import SiteRound
from cohort.contract import RoundRequest, SiteId, StrategyName
from privacy import RoundRandomness
from secagg import Stage
from secagg.errors import ConfigurationError

from ..aggregation import AggregationRound
from ..sum_config import SecureSumConfig
from ..sum_result import SecureSumResult
from ._clear_sum import clear_sum
from ._round_inputs import check_dropouts, check_seed, check_updates
from .transport import announce, run_secure_round

__all__ = ["secure_sum"]


def _round_id(round_id: bytes | None, seed: int | None) -> bytes:
    if round_id is not None:
        if not isinstance(round_id, bytes) or len(round_id) != 32:
            raise ConfigurationError("round_id must be 32 bytes (a release id)")
        return round_id
    if seed is None:
        return os.urandom(32)
    return hashlib.sha256(b"cohort/secagg/harness-round\x00"
                          + int(seed).to_bytes(16, "big", signed=True)).digest()


def secure_sum(updates: Mapping[SiteId, tuple[Any, float]], config: SecureSumConfig, *,
               dropouts: Mapping[Stage | str, Iterable[SiteId]] | None = None,
               seed: int | None = None, round_id: bytes | None = None) -> SecureSumResult:
    """Sum ``{site_id: (delta, weight)}`` as ``config`` says and report what it cost.

    ``round_id`` (32 bytes) is the secure round's id, the one the sites' ledgers key the
    release on; without it one is drawn (from ``seed`` in simulations).

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
    seed = check_seed(seed)
    if not config.secure:
        weighted_sum, total, included, event = clear_sum(sites, config, drop,
                                                         RoundRandomness(seed))
        if config.integer_weights:
            total = float(round(total))  # sample counts are integers: post-processing only
        return SecureSumResult(weighted_sum=weighted_sum, total_weight=total, included=included,
                               planned=len(sites), event=event, wrap_rate=None,
                               transcript_bytes=None, encoding=None, secure=False)
    cohort = tuple(s.site_id for s in sites)
    request = RoundRequest(round_number=0, strategy=StrategyName.FEDAVG,
                           n_participants=len(cohort), secure_aggregation=True,
                           release_id=_round_id(round_id, seed))
    identities = directory = None
    if config.malicious:  # each site's own identity key, public halves in a roster
        identities = {s: Ed25519PrivateKey.generate() for s in cohort}
        directory = {s: k.public_key() for s, k in identities.items()}
    aggregation = AggregationRound(config, request=request, cohort=cohort,
                                   dim=sites[0].update.size, directory=directory, seed=seed)
    announcement = announce(aggregation)
    rounds = {s.site_id: SiteRound(announcement, site_id=s.site_id,
                                   work=lambda s=s: (s.update, s.weight),
                                   identity=None if identities is None
                                   else identities[s.site_id],
                                   directory=directory, simulation_seed=seed)
              for s in sites}
    for site_round in rounds.values():
        site_round.train()
    return run_secure_round(aggregation, rounds, dropouts=drop)
