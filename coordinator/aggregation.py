"""The coordinator's half of one secure round: plan it, run the secagg server, decode the sum.

:class:`AggregationRound` is everything the coordinator does in a round and nothing a site does
(DESIGN section 5, "the trust boundary is a process boundary"). It plans the round — the
encoding (``privacy.RoundPrivacy.plan``), the secagg graph and threshold
(``secagg.choose_parameters``), the public rotation seed — and announces it
(:class:`cohort.contract.RoundAnnouncement`, whose round id is the release id every site's
ledger charges). Then it is a byte-oriented step machine that a transport drives:
:meth:`receive` takes one protocol message with the sender the transport authenticated,
:meth:`close_stage` ends a stage and returns the next messages by site. It never holds a site's
update, encoded or not: only masked vectors reach it, and the secagg server keeps only their
running sum. At the end :meth:`result` decodes the modular aggregate (central DP adds its
discrete Gaussian inside Z_2^b first, so a wrap is post-processing) and reports the event the
round really cost, built from the sites actually summed; :meth:`outcome` is what every site is
told, so it can settle its ledger.

What it cannot report is the wrap rate: that needs the sites' clear vectors, which only the
sites hold (the in-process simulation computes it from the sites' side, see
``coordinator.simulation.transport``).

``seed`` is for simulations and tests only: it fixes the rotation seed and the central noise
(the sites derive their own noise from the same seed themselves). Without it, the OS CSPRNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cohort.contract import RoundAnnouncement, RoundOutcome, RoundRequest, SiteId
from privacy import Mechanism, RoundRandomness, WeightedSumCodec, centre_lift
from secagg import SecAggServer, Stage, choose_parameters
from secagg.errors import ConfigurationError, ProtocolAbort

from .sum_config import SecureSumConfig
from .sum_result import SecureSumResult

__all__ = ["AggregationRound", "central_release_shift", "next_global", "worst_charge"]

# Test-only knob (CONVENTIONS 12): True plants finding 8's defect, central noise added as
# float64 Gaussian to the *decoded* sum, after the wrap; the replace-one property test of
# central mode proves it catches it.
_PLANT_CENTRAL_NOISE_AFTER_DECODE = False


class AggregationRound:
    """One secure round at the coordinator, over ``cohort`` (the sites in client-id order),
    for updates of ``dim`` floats. ``request`` (with its release id) is what every site
    judges; ``directory`` (site -> Ed25519 identity public key) is required in
    malicious-server mode, where keys and views are signed."""

    def __init__(self, config: SecureSumConfig, *, request: RoundRequest,
                 cohort: Sequence[SiteId], dim: int,
                 directory: Mapping[SiteId, Ed25519PublicKey] | None = None,
                 seed: int | None = None) -> None:
        if not isinstance(config, SecureSumConfig) or not config.secure:
            raise ConfigurationError("an aggregation round needs a SecureSumConfig with "
                                     "secure=True")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigurationError(f"dim must be a positive integer, got {dim!r}")
        cohort = tuple(cohort)
        randomness = RoundRandomness(seed)
        rp = config.round_privacy()
        plan = rp.plan(dim=dim + 1, expected_clients=len(cohort))  # + the weight slot
        params = choose_parameters(len(cohort), neighbors=config.neighbors,
                                   threshold=config.threshold, malicious=config.malicious)
        announcement = RoundAnnouncement(
            request=request, cohort=cohort, privacy=rp, encoding=plan,
            rotation_seed=randomness.rotation_seed(), max_weight=config.max_weight,
            integer_weights=config.integer_weights, neighbors=params.neighbors,
            threshold=params.threshold, malicious=config.malicious)
        self._setup(config, announcement, randomness, directory)

    @classmethod
    def resume(cls, config: SecureSumConfig, announcement: RoundAnnouncement, *,
               directory: Mapping[SiteId, Ed25519PublicKey] | None = None,
               seed: int | None = None) -> "AggregationRound":
        """The same round again after a restart, from the announcement every site already
        has (its rotation seed and release id were drawn once and must not be drawn again).
        ``ConfigurationError`` if the announcement is not what ``config`` plans for its cohort:
        a state file and a job that disagree are never reconciled by guessing."""
        if not isinstance(config, SecureSumConfig) or not config.secure:
            raise ConfigurationError("an aggregation round needs a SecureSumConfig with "
                                     "secure=True")
        rp = config.round_privacy()
        cohort = announcement.cohort
        plan = rp.plan(dim=announcement.encoding.dim, expected_clients=len(cohort))
        params = choose_parameters(len(cohort), neighbors=config.neighbors,
                                   threshold=config.threshold, malicious=config.malicious)
        if (plan, rp, params.neighbors, params.threshold, config.malicious,
                config.max_weight) != (announcement.encoding, announcement.privacy,
                                       announcement.neighbors, announcement.threshold,
                                       announcement.malicious, announcement.max_weight):
            raise ConfigurationError("the stored announcement is not what this job plans")
        self = cls.__new__(cls)
        self._setup(config, announcement, RoundRandomness(seed), directory)
        return self

    def _setup(self, config: SecureSumConfig, announcement: RoundAnnouncement,
               randomness: RoundRandomness,
               directory: Mapping[SiteId, Ed25519PublicKey] | None) -> None:
        cohort = announcement.cohort
        keys = None
        if config.malicious:
            if directory is None or set(directory) != set(cohort):
                raise ConfigurationError("malicious-server mode needs every site's identity key")
            keys = {announcement.client_id(s): k for s, k in directory.items()}
        self._config = config
        self._randomness = randomness
        self._announcement = announcement
        self._codec = WeightedSumCodec(announcement.encoding,
                                       rotation_seed=announcement.rotation_seed,
                                       max_weight=config.max_weight,
                                       simulation=randomness.simulation)
        self._server = SecAggServer(announcement.round_config(), directory=keys)
        self._bytes = 0
        self._aborted = False

    # -- what the sites are told -----------------------------------------------------------
    @property
    def announcement(self) -> RoundAnnouncement:
        return self._announcement

    @property
    def round_id(self) -> bytes:
        return self._announcement.round_id

    @property
    def stage(self) -> Stage | None:
        """The protocol stage in progress (None once the round is over)."""
        return self._server.stage

    def pending(self) -> frozenset[SiteId]:
        """Sites that may still send a message in the current stage."""
        return frozenset(self._announcement.site(c) for c in self._server.pending())

    # -- the protocol, bytes in and out ----------------------------------------------------
    def receive(self, site: SiteId, data: bytes) -> None:
        """One protocol message from ``site``, as the transport authenticated it (never a
        name the message carries). ``NotEnrolled`` for a sender outside the cohort; the
        server's ``InvalidMessage`` for anything it refuses (its state unchanged but for the
        sender's standing)."""
        client = self._announcement.client_id(site)  # NotEnrolled before anything changes
        self._server.receive(data, sender=client)
        self._bytes += len(data)

    def close_stage(self) -> dict[SiteId, bytes]:
        """End the current stage: the next stage's message for each site ({} at the end).
        ``ProtocolAbort`` when too few sites are left: nothing is revealed."""
        try:
            out = self._server.close_stage()
        except ProtocolAbort:
            self._aborted = True
            raise
        self._bytes += sum(len(m) for m in out.values())
        return {self._announcement.site(c): m for c, m in out.items()}

    # -- the end of the round --------------------------------------------------------------
    def outcome(self) -> RoundOutcome:
        """What every site is told: who is in the released sum, or that the round aborted."""
        if self._aborted:
            return RoundOutcome(release_id=self.round_id, included=frozenset(), aborted=True)
        included = self._server.result.included  # ProtocolAbort while the round runs
        return RoundOutcome(release_id=self.round_id,
                            included=frozenset(self._announcement.site(c) for c in included))

    def result(self) -> SecureSumResult:
        """The decoded weighted sum, the total weight, who is in them and the true event."""
        if self._aborted:
            raise ProtocolAbort("the round aborted; nothing was revealed", stage=None)
        summed = self._server.result
        aggregate = np.asarray(summed.aggregate)
        config, codec, plan = self._config, self._codec, self._announcement.encoding
        rp = self._announcement.privacy
        central = (self._randomness.source("central")
                   if config.mode is Mechanism.CENTRAL_GAUSSIAN else None)
        whole = config.integer_weights  # sample counts are integers: post-processing only
        if central is not None and _PLANT_CENTRAL_NOISE_AFTER_DECODE:
            noisy = rp.central_noise(codec.encoder.decode(aggregate), randomness=central,
                                     simulation=self._randomness.simulation)
            weighted_sum, total = codec.split(noisy, integer_total=whole)
        elif central is not None:  # noise inside Z_2^b: the wrap is post-processing
            weighted_sum, total = codec.decode(rp.central_ring_noise(
                aggregate, plan, randomness=central, simulation=self._randomness.simulation),
                integer_total=whole)
        else:  # privacy.audit.state recomputes exactly this from a replayed sum
            weighted_sum, total = codec.decode(aggregate, integer_total=whole)
        included = frozenset(self._announcement.site(c) for c in summed.included)
        return SecureSumResult(weighted_sum=weighted_sum, total_weight=total, included=included,
                               planned=len(self._announcement.cohort),
                               event=self._announcement.event(survivors=len(included)),
                               wrap_rate=None, transcript_bytes=self._bytes, encoding=plan,
                               secure=True)


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



def worst_charge(config: SecureSumConfig, dim: int, n: int):
    """The charge of a round of ``n`` sites' ``dim``-float updates in which only the fewest
    sites the secure sum accepts survive: what every site must be able to afford before it
    computes anything (None without differential privacy). The simulation and a deployed job
    both ask for it."""
    from privacy import GaussianEvent

    if config.mode is Mechanism.NONE:
        return None
    if not config.secure:
        return GaussianEvent(noise_multiplier=config.noise_multiplier)
    rp = config.round_privacy()
    plan = rp.plan(dim=dim + 1, expected_clients=n)
    fewest = min(n, choose_parameters(n).threshold)
    return rp.event(plan, survivors=fewest)


def next_global(strategy, global_flat: np.ndarray, result: SecureSumResult, *,
                dp: bool) -> np.ndarray:
    """The strategy's step on a round's revealed sum. With DP every site weighs the same, so the
    denominator is the (public) number of sites summed, never a noisy total."""
    total = float(len(result.included)) if dp else result.total_weight
    return strategy.apply(global_flat, result.weighted_sum, total)
