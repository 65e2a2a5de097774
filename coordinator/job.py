"""A deployed job at the coordinator: a sequence of secure rounds over the network service.

:class:`AggregationHost` puts one :class:`~coordinator.aggregation.AggregationRound` behind the
service's ``RoundHost`` protocol: the service's integer client ids (the roster's) become the
round's site names, the secagg stages run as they do in the in-memory transport, and one last
step, ``outcome``, carries the :class:`cohort.contract.RoundOutcome` to every site still in the
round (an aborted round's outcome too), each of which answers with a short acknowledgement
once its ledger has settled.

:class:`JobRunner` runs a :class:`cohort.contract.Job`: it waits for the sites to connect, then
each round plans an :class:`AggregationRound` over the sites seen recently, sends each of them a
:class:`cohort.contract.RoundWork` (the announcement and the current global parameters) as the
round's step 0, waits for the round to end, and applies the strategy to the decoded sum
(:func:`~coordinator.aggregation.next_global`, as the simulation does). It knows models only as
flat vectors: whoever starts it (``cohort serve``) supplies the initial parameters and, if any,
an evaluation callback. It never sees an update: only masked vectors reach the host.
"""

from __future__ import annotations

import dataclasses

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cohort.contract import OUTCOME_ACK, Job, RoundRequest, RoundTask, RoundWork
from cohort.logs import event
from privacy import Mechanism, event_from_json, event_to_json
from secagg.errors import InvalidMessage, ProtocolAbort, StageError

from ._randomness import release_id
from .accounting import RoundAccountant
from .aggregation import AggregationRound, next_global, worst_charge
from .service import CoordinatorService, secagg_limits
from .service.rounds import RoundState
from .strategies import make_strategy
from .sum_config import SecureSumConfig
from .sum_result import SecureSumResult

__all__ = ["ACK", "OUTCOME_STAGE", "AggregationHost", "JobRunner", "JobResult", "RoundMetrics"]

log = logging.getLogger("cohort.job")

OUTCOME_STAGE = "outcome"
ACK = OUTCOME_ACK
_ACK_LIMIT = 64
# A site silent at the step where a round aborted sits out the next 1, 2, 4, ... rounds (up to
# this many), its count reset by a round it completes: one corrupt site that withholds its graph
# nonce (which aborts a round visibly, by design: secagg.graph) then costs the job one round in
# two, then fewer, instead of every round. An honest site that crashed there is benched as well,
# for as long; it is back once its bench is over.
_MAX_BENCH = 8
# Test-only knob (CONVENTIONS 12): True plants a runner that never benches anyone, so one site
# that withholds its nonce aborts every round (tests/test_net_job.py must catch it).
_PLANT_NO_BENCH = False


class AggregationHost:
    """The service's ``RoundHost`` over one aggregation round. ``names`` maps the roster's
    client ids of the round's cohort to its site names."""

    def __init__(self, aggregation: AggregationRound, names: Mapping[int, str]) -> None:
        self._agg = aggregation
        self._names = dict(names)
        self._ids = {name: cid for cid, name in self._names.items()}
        self._phase = "secagg"
        self._senders: set[int] = set()
        self._told: frozenset[int] = frozenset()
        self._acked: set[int] = set()
        self.result: SecureSumResult | None = None
        self.outcome = None
        self.abort_reason: str | None = None
        self._limits = secagg_limits(aggregation.announcement.round_config())

    @property
    def stage(self):
        return self._agg.stage if self._phase == "secagg" else OUTCOME_STAGE

    @property
    def outcome_bytes(self) -> bytes | None:
        """The round's outcome once the secure sum has ended (or aborted): what the service
        gives a site that dropped out and asks for it."""
        return None if self.outcome is None else self.outcome.to_bytes()

    def limit(self, stage: object) -> int:
        return _ACK_LIMIT if stage == OUTCOME_STAGE else self._limits(stage)

    def receive(self, sender: int, data: bytes) -> None:
        if self._phase == "outcome":
            if sender not in self._told or data != ACK:
                raise InvalidMessage("not an acknowledgement of the round's outcome")
            self._acked.add(sender)
            return
        if self._phase != "secagg":
            raise StageError("the round is over")
        name = self._names.get(sender)
        if name is None:
            raise InvalidMessage("this site is not in the round's cohort")
        self._agg.receive(name, data)
        self._senders.add(sender)

    def close_stage(self) -> dict[int, bytes]:
        if self._phase == "outcome":
            self._phase = "over"
            return {}
        if self._phase != "secagg":
            return {}
        alive, self._senders = self._senders, set()
        try:
            out = self._agg.close_stage()
        except ProtocolAbort as exc:
            self.abort_reason = f"{exc.stage}: {exc}"
            out = {}
        if out:
            return {self._ids[s]: m for s, m in out.items()}
        if self.abort_reason is None:
            self.result = self._agg.result()
        self.outcome = self._agg.outcome()
        data = self.outcome.to_bytes()
        self._phase = "outcome"
        self._told = frozenset(alive)  # the sites that answered the last stage
        if not self._told:
            self._phase = "over"
            return {}
        return {cid: data for cid in self._told}

    def pending(self) -> frozenset[int]:
        if self._phase == "secagg":
            return frozenset(self._ids[s] for s in self._agg.pending())
        if self._phase == "outcome":
            return self._told - self._acked
        return frozenset()


@dataclass(frozen=True)
class RoundMetrics:
    """One line of a deployed job's ``metrics.jsonl``."""

    round: int
    participants: int
    planned: int
    accuracy: float | None
    loss: float | None
    epsilon: float | None
    seconds: float
    secure_bytes: int | None
    dropouts: list[str]
    aborted: bool = False
    note: str | None = None


@dataclass
class JobResult:
    job: Job
    rounds: list[RoundMetrics] = field(default_factory=list)
    final_params: np.ndarray | None = None
    stopped: str | None = None
    epsilon: float | None = None
    sites: list[str] = field(default_factory=list)


def _release_record(res: SecureSumResult) -> tuple[bytes, dict]:
    """A release as the store keeps it: the weighted sum's bytes and what goes with it."""
    return (np.ascontiguousarray(res.weighted_sum, dtype="<f8").tobytes(),
            {"total_weight": float(res.total_weight), "included": sorted(res.included),
             "planned": int(res.planned),
             "event": None if res.event is None else event_to_json(res.event),
             "transcript_bytes": res.transcript_bytes})


def _envelope_body(sealed: bytes) -> bytes:
    from secagg import envelope

    return bytes(envelope.parse(sealed).body)


class JobRunner:
    """Runs ``job`` on ``service``. ``sites`` maps the roster's active client ids to site names,
    ``directory`` their identity keys (client id -> key); ``initial`` is the global model's flat
    parameters; ``evaluate`` (optional) scores a flat vector as ``{"accuracy":, "loss":}``."""

    def __init__(self, job: Job, service: CoordinatorService, *, sites: Mapping[int, str],
                 directory: Mapping[int, Ed25519PublicKey], initial: np.ndarray,
                 evaluate: Callable[[np.ndarray], Mapping[str, float]] | None = None,
                 on_round: Callable[[RoundMetrics], None] | None = None,
                 stop: threading.Event | None = None, store=None) -> None:
        self.job = job
        # The durable state (coordinator.service.store.CoordinatorStore): every round, message,
        # closed step, release and checkpoint; None keeps them in memory only.
        self.store = store
        self._resumed = None  # a round rebuilt from the store, open before the sites came back
        self.service = service
        self.sites = dict(sites)
        self.directory = dict(directory)
        self.global_flat = np.asarray(initial, dtype=np.float64).copy()
        self.evaluate = evaluate
        self.on_round = on_round
        self.stop = stop or threading.Event()
        self.accountant = RoundAccountant()
        self._gone: dict[int, float] = {}  # a round's dropouts -> when that round ended
        self._strikes: dict[int, int] = {}  # aborts a site was silent at, since it last summed
        self._benched: dict[int, int] = {}  # a site -> the last round it sits out
        hyper: dict[str, float] = {} if job.server_lr is None else {"eta": job.server_lr}
        if job.strategy.value == "fedprox":
            hyper["mu"] = job.training.prox_mu
        self.strategy = make_strategy(job.strategy, **hyper)
        self.strategy.initialize(self.global_flat)

    @property
    def dp(self) -> bool:
        return self.job.mode is not Mechanism.NONE

    def sum_config(self) -> SecureSumConfig:
        job = self.job
        return SecureSumConfig(mode=job.mode, clip_norm=job.clip_norm,
                               max_weight=1.0 if self.dp else job.max_weight,
                               noise_multiplier=job.noise_multiplier if self.dp else 0.0,
                               modulus_bits=job.modulus_bits, neighbors=job.neighbors,
                               threshold=job.threshold, malicious=job.malicious)

    # -- a restart ------------------------------------------------------------------------------
    def _apply_release(self, r: int, aggregate: bytes, meta: dict) -> SecureSumResult:
        """The strategy's step and the accountant's charge for round ``r``'s release, from its
        stored form: the same code whether the release was just made or read back."""
        res = SecureSumResult(
            weighted_sum=np.frombuffer(aggregate, dtype="<f8"),
            total_weight=float(meta["total_weight"]), included=frozenset(meta["included"]),
            planned=int(meta["planned"]),
            event=None if meta["event"] is None else event_from_json(meta["event"]),
            wrap_rate=None, transcript_bytes=meta["transcript_bytes"], encoding=None,
            secure=True)
        self.global_flat = next_global(self.strategy, self.global_flat, res, dp=self.dp)
        self.accountant.record(res.event, round_number=r)
        return res

    def _restore(self, result: "JobResult") -> bytes | None:
        """Bring the runner to where the store says the job is: every ended round's release
        applied again (so the model, the server optimiser's state and the accountant are what
        they were), its metrics from its checkpoint. Returns the id of a round that was still
        open (to be resumed from its inbox), or None. ``StoreError`` if the model rebuilt does
        not match a stored checkpoint (fail closed)."""
        from .service.store import StoreError

        for round_id, number, state, _ in self.store.rounds():
            if state == "open":
                return round_id
            released = self.store.released(round_id)
            if released is not None:
                self._apply_release(number, *released)
            point = self.store.checkpoint_at(number)
            flat = np.ascontiguousarray(self.global_flat, dtype="<f8").tobytes()
            if point is None:  # ended, but the checkpoint did not make it to disk
                metrics = self._metrics_after(number, 0.0, released is not None)
                self.store.checkpoint(number, flat, dataclasses.asdict(metrics))
            elif point.params != flat:
                raise StoreError(f"round {number}: the model rebuilt from the stored releases "
                                 "is not the stored checkpoint")
            else:
                metrics = RoundMetrics(**point.metrics)
            result.rounds.append(metrics)
            if self.on_round is not None:
                self.on_round(metrics)
            event(log, logging.INFO, "round_restored", "round %d restored from the state file",
                  number, round_number=number, round=round_id.hex())
        return None

    def _score_and_epsilon(self) -> tuple[Mapping[str, Any], float | None]:
        """The global model's score and the job's epsilon so far."""
        score: Mapping[str, Any] = {} if self.evaluate is None else self.evaluate(
            self.global_flat)
        epsilon = (float(self.accountant.epsilon(delta=self.job.delta))
                   if self.dp and self.accountant.rounds else None)
        return score, epsilon

    def _metrics_after(self, r: int, seconds: float, summed: bool) -> "RoundMetrics":
        score, epsilon = self._score_and_epsilon()
        return RoundMetrics(round=r, participants=0, planned=0, accuracy=score.get("accuracy"),
                            loss=score.get("loss"), epsilon=epsilon, seconds=seconds,
                            secure_bytes=None, dropouts=[], aborted=not summed,
                            note="restored: ended before its checkpoint was written")

    # -- who takes part ------------------------------------------------------------------------
    def _fresh(self, within: float) -> list[int]:
        """The sites seen within ``within`` seconds, less those that dropped out of a round
        and have not been heard from since it ended (a silent site is not asked again until
        it polls again)."""
        now = time.monotonic()
        seen = self.service.last_seen
        return sorted(c for c in self.sites if now - seen.get(c, -1e18) <= within
                      and seen.get(c, -1e18) > self._gone.get(c, -1e18))

    def _await_fresh(self, within: float) -> list[int]:
        """:meth:`_fresh`, waiting up to ``within`` seconds for two sites: the silent sites of a
        round that just ended are asked again only once they have polled since, and a round
        whose every site was slow ends before any of them has (stopping the job then would
        stop it for sites that are still there)."""
        until = time.monotonic() + within
        while True:
            fresh = self._fresh(within)
            if len(fresh) >= 2 or time.monotonic() >= until or self.stop.is_set():
                return fresh
            time.sleep(0.05)

    def _unbenched(self, r: int, fresh: list[int]) -> list[int]:
        """``fresh`` less the sites benched for round ``r`` (see ``_MAX_BENCH``); all of
        ``fresh`` if benching would leave fewer than two, since a round needs two."""
        playing = [c for c in fresh if self._benched.get(c, 0) < r]
        benched = sorted(set(fresh) - set(playing))
        if benched and len(playing) >= 2:
            event(log, logging.WARNING, "sites_benched", "round %d without %s: silent when an "
                  "earlier round aborted", r, ", ".join(self.sites[c] for c in benched),
                  round=r, sites=[self.sites[c] for c in benched])
            return playing
        return fresh

    def _bench(self, r: int, session, summed: frozenset[int] | None) -> None:
        """After round ``r``: who was silent where it aborted sits out; who summed is clear."""
        if summed is not None:
            for c in summed:
                self._strikes.pop(c, None)
            return
        # The step whose close aborted the secure sum: the last before the outcome's.
        steps = [h for h in session.history if h.stage != OUTCOME_STAGE]
        if _PLANT_NO_BENCH or not steps:
            return
        for c in steps[-1].silent:
            strikes = self._strikes[c] = self._strikes.get(c, 0) + 1
            self._benched[c] = r + min(2 ** (strikes - 1), _MAX_BENCH)

    def wait_for_sites(self) -> list[int]:
        want = self.job.min_sites or len(self.sites)
        until = time.monotonic() + self.job.join_timeout
        while time.monotonic() < until and not self.stop.is_set():
            present = [c for c in self.sites if c in self.service.last_seen]
            if len(present) >= want:
                return sorted(present)
            time.sleep(0.05)
        return sorted(c for c in self.sites if c in self.service.last_seen)

    # -- the job --------------------------------------------------------------------------------
    def run(self) -> JobResult:
        job = self.job
        result = JobResult(job=job)
        try:
            resume = None
            if self.store is not None:
                resume = self._restore(result)
            if resume is not None:  # reopened before any site may ask (the service says 503)
                self._resumed = self._open(len(result.rounds) + 1, [], None, resume=resume)
            self.service.ready = True
            present = self.wait_for_sites()
            result.sites = [self.sites[c] for c in present]
            if len(present) < 2:
                result.stopped = (f"only {len(present)} site(s) connected within "
                                  f"{job.join_timeout:g}s; a secure round needs at least 2")
                return result
            stale = 2 * job.poll_hold + 5.0
            for r in range(len(result.rounds) + 1, job.rounds + 1):
                if self.stop.is_set():
                    result.stopped = f"interrupted at round {r - 1}"
                    break
                if resume is not None:
                    metrics, resume = self.round(r, [], None, resume=resume), None
                    result.rounds.append(metrics)
                    if self.on_round is not None:
                        self.on_round(metrics)
                    continue
                cohort = self._unbenched(r, self._await_fresh(stale))
                if len(cohort) < 2:
                    result.stopped = f"stopped before round {r}: fewer than 2 sites connected"
                    break
                charge = worst_charge(self.sum_config(), self.global_flat.size, len(cohort))
                if job.target_epsilon is not None and charge is not None and \
                        self.accountant.epsilon_after(charge, delta=job.delta) \
                        > job.target_epsilon:
                    result.stopped = (f"stopped before round {r}: it could take epsilon over "
                                      f"the job's target {job.target_epsilon:g}")
                    break
                metrics = self.round(r, cohort, charge)
                result.rounds.append(metrics)
                if self.on_round is not None:
                    self.on_round(metrics)
        finally:
            self.service.finish()
        result.final_params = self.global_flat
        result.epsilon = (float(self.accountant.epsilon(delta=job.delta))
                          if self.dp and self.accountant.rounds else None)
        return result

    def round(self, r: int, cohort: list[int], charge, *,
              resume: bytes | None = None) -> RoundMetrics:
        """Round ``r`` over ``cohort``; with ``resume`` (a round id in the store), that round
        again from its stored work and inbox, after a restart (already opened by :meth:`run`
        before the sites were let in)."""
        start = time.perf_counter()
        opened, self._resumed = self._resumed, None
        if opened is None:
            opened = self._open(r, cohort, charge, resume=resume)
        agg, host, session, names = opened
        while session.state is RoundState.OPEN and not self.stop.is_set():
            time.sleep(0.02)
        return self._finish(r, start, agg, host, session, names)

    def _open(self, r: int, cohort: list[int], charge, *, resume: bytes | None = None):
        """Announce round ``r`` (or rebuild a stored one) and open its session."""
        job = self.job
        seed = None if job.seed is None else job.seed * 1_000 + r
        config = self.sum_config()
        replay = None
        if resume is None:
            names = {c: self.sites[c] for c in cohort}
            request = RoundRequest(round_number=r, strategy=job.strategy,
                                   n_participants=len(cohort), secure_aggregation=True,
                                   task=RoundTask.FIT, privacy_charge=charge,
                                   release_id=release_id(job.seed, r))
            agg = AggregationRound(config, request=request, cohort=[names[c] for c in cohort],
                                   dim=self.global_flat.size, seed=seed,
                                   directory=({names[c]: self.directory[c] for c in cohort}
                                              if config.malicious else None))
            work = RoundWork(announcement=agg.announcement, params=self.global_flat,
                             training=job.training, job=job.name, rounds=job.rounds,
                             seed=seed).to_bytes()
        else:
            work = self.store.round_work(resume)
            announcement = RoundWork.from_bytes(work).announcement
            ids = {name: c for c, name in self.sites.items()}
            cohort = [ids[name] for name in announcement.cohort]
            names = {c: self.sites[c] for c in cohort}
            agg = AggregationRound.resume(config, announcement, seed=seed,
                                          directory=({names[c]: self.directory[c]
                                                      for c in cohort}
                                                     if config.malicious else None))
            replay = _envelope_body
        host = AggregationHost(agg, names)
        if self.store is not None:  # on disk before any site hears of the round
            self.store.open_round(agg.round_id, r, work, sites=names)
        session = self.service.open_round(agg.round_id, host, cohort=frozenset(cohort),
                                          limits=host.limit, stage_timeout=job.stage_timeout,
                                          first={c: work for c in cohort}, inbox=self.store,
                                          replay=replay)
        return agg, host, session, names

    def _finish(self, r: int, start: float, agg, host, session, names) -> RoundMetrics:
        ended = time.monotonic()
        for c in session.dropouts:
            self._gone[c] = ended
        ids = {name: c for c, name in names.items()}
        self._bench(r, session, None if host.result is None
                    else frozenset(ids[name] for name in host.result.included))
        dropouts = sorted(names[c] for c in session.dropouts)
        note = None
        participants = 0
        secure_bytes = None
        if host.result is not None:
            res = host.result
            aggregate, meta = _release_record(res)
            if self.store is not None:  # the first release of this round is the only one
                aggregate, meta = self.store.release(agg.round_id, aggregate, meta)
            res = self._apply_release(r, aggregate, meta)
            participants, secure_bytes = len(res.included), res.transcript_bytes
        if self.store is not None:  # after the release: an ended round's release is on disk
            self.store.end_round(agg.round_id, session.state.value, host.outcome_bytes)
        if host.result is None:
            note = (f"secure sum aborted ({host.abort_reason or session.abort_reason}); "
                    "nothing was revealed")
        score, epsilon = self._score_and_epsilon()
        metrics = RoundMetrics(round=r, participants=participants, planned=len(names),
                               accuracy=score.get("accuracy"), loss=score.get("loss"),
                               epsilon=epsilon, seconds=time.perf_counter() - start,
                               secure_bytes=secure_bytes, dropouts=dropouts,
                               aborted=host.result is None, note=note)
        if self.store is not None:
            self.store.checkpoint(r, np.ascontiguousarray(self.global_flat, dtype="<f8")
                                  .tobytes(), dataclasses.asdict(metrics))
        event(log, logging.INFO, "round_ended", "round %d: %d of %d summed, accuracy %s, %.2fs",
              r, participants, len(names), metrics.accuracy, metrics.seconds, round_number=r,
              round=agg.round_id.hex(), state=session.state.value, summed=participants,
              planned=len(names), dropouts=dropouts, accuracy=metrics.accuracy,
              epsilon=metrics.epsilon, seconds=round(metrics.seconds, 3))
        return metrics
