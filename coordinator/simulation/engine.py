"""The in-process simulation engine: rounds of federated learning over the secure sum.

Each round the coordinator asks every site to take part (a :class:`clients.RoundRequest` that
names the strategy, the participants, whether the sum is secure, and the worst privacy charge
the round could cost — the one with the fewest survivors the secure sum accepts). Sites check
their policy and budget *before* computing anything. Each release runs through the same two
halves a deployment runs, over the in-memory transport (DESIGN section 5): every site's
``clients.SiteRound`` trains, encodes with its own randomness, reserves its worst case and masks
with its own keys; the coordinator's ``coordinator.AggregationRound`` only ever sees masked
vectors and decodes their sum (with ``secagg=False``, a clear sum for comparison); the
strategy applies the revealed sums; every site settles its ledger from the round's announced
outcome; the global model is evaluated.
Training stops cleanly, and says why, when a site's budget would be exceeded.

With ``dp_sgd`` every site trains with example-level DP-SGD; each site reserves and settles
its own DP-SGD event on its EXAMPLE ledger track (never on the site-level one), and the run
reports each site's example-level epsilon (``example_epsilon``, at ``example_delta``) next to
the site-level ``epsilon``, never composed with it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clients import (
    Part,
    PolicyViolation,
    Site,
    distill,
    evaluate,
    get_flat_params,
    make_model,
    set_flat_params,
)
from clients.round import Release, SiteRound
from cohort.contract import DPSGDConfig, NotEnrolled, RoundRequest, RoundTask, StrategyName
from privacy import BudgetExceeded, GaussianEvent, Mechanism, PrivacyEvent, compute_epsilon
from privacy.dpsgd import merge_steps
from secagg import choose_parameters
from secagg.errors import ProtocolAbort

from .._randomness import release_id
from ..accounting import RoundAccountant, SampledAccountant
from ..aggregation import AggregationRound, next_global, worst_charge
from ..strategies import Strategy, make_strategy
from ..sum_config import SecureSumConfig
from ..sum_result import SecureSumResult
from .config import Backend, SimulationConfig
from .consortium import Consortium, build_consortium
from .pool import FitJob, LocalPool
from .secure_sum import secure_sum
from .transport import announce, run_secure_round

__all__ = ["RoundRecord", "SimulationResult", "Simulation"]

@dataclass(frozen=True)
class RoundRecord:
    """One line of ``metrics.jsonl``. ``accuracy`` is R² for regression tasks."""

    round: int
    accuracy: float | None
    loss: float | None
    participants: int
    planned: int
    epsilon: float | None
    seconds: float
    wrap_rate: float | None = None
    secure_bytes: int | None = None
    student_accuracy: float | None = None
    note: str | None = None
    aborted: bool = False  # the secure sum aborted: nothing was revealed, the model unchanged
    example_epsilon: dict[str, float] | None = None  # per site, DP-SGD's (one-record) epsilon
    epsilon_amplified: float | None = None  # only under the secret-sampling assumption
    sampled: int | None = None  # sites sampled this round (with sampled rounds)


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundRecord] = field(default_factory=list)
    stopped: str | None = None
    interrupted: bool = False  # stopped by Ctrl-C (``stopped`` says at which round)
    projection: dict | None = None  # the worst-case budget projection that stopped the run
    site_accuracy: dict[str, float] = field(default_factory=dict)
    site_global_accuracy: dict[str, float] = field(default_factory=dict)
    final_accuracy: float | None = None
    final_meaning: str = ""
    epsilon: float | None = None
    metric: str = "accuracy"
    example_epsilon: dict[str, float] | None = None
    epsilon_amplified: float | None = None  # under the secret-sampling assumption only


def _score(result) -> float:
    return float(result.accuracy if result.accuracy is not None else result.r2)


class Simulation:
    """One simulated consortium run, round by round."""

    def __init__(self, config: SimulationConfig, *, work_dir: Path | None = None,
                 recorder: Callable[[object], None] | None = None) -> None:
        self.config = config
        self._recorder = recorder  # sees each secure round's transport when it ends (audit)
        ray = config.backend is Backend.RAY
        self.consortium: Consortium = build_consortium(config, work_dir=work_dir,
                                                       hosted=() if ray else None)
        if ray:  # the sites are built in the actors, each exactly as they would be here
            from .ray_pool import RayPool

            self.pool = RayPool(config, work_dir=work_dir or self.consortium_dir())
        else:
            self.pool = LocalPool(self.consortium.sites)
        splits = self.consortium.splits
        self.metric = "accuracy" if splits.task.value == "classification" else "r2"
        self.accountant = RoundAccountant()
        self.sampled_accountant = SampledAccountant(self.consortium.site_ids)
        self._sampler = np.random.default_rng([config.seed, 5_001])  # who takes part, per round
        self._rng = np.random.default_rng(config.seed + 7)  # simulated dropouts only
        self._strategy: Strategy | None = None
        self._student = None
        # Each site's example-level DP-SGD events (what it settled on its EXAMPLE track).
        self._example_events: dict[str, list[GaussianEvent]] = {
            s: [] for s in self.consortium.site_ids}
        if config.distillation and config.global_student:
            self._student = make_model(config.models[0], input_shape=splits.feature_shape,
                                       n_outputs=splits.n_outputs, hidden=config.hidden,
                                       seed=config.seed + 3)

    # -- the secure sum of one round -------------------------------------------------------
    def _sum_config(self, *, clip: float, max_weight: float) -> SecureSumConfig:
        cfg = self.config
        return SecureSumConfig(mode=cfg.dp, clip_norm=clip, max_weight=max_weight,
                               noise_multiplier=cfg.noise_multiplier if cfg.dp is not
                               Mechanism.NONE else 0.0, secure=cfg.secagg,
                               modulus_bits=cfg.modulus_bits)

    def _worst_charge(self, sum_config: SecureSumConfig, dim: int, n: int) -> PrivacyEvent | None:
        """The charge of a round in which only the fewest clients the secure sum accepts
        survive: what every site must be able to afford before it computes anything."""
        return worst_charge(sum_config, dim, n)

    def consortium_dir(self) -> Path:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="cohort-"))

    def close(self) -> None:
        """Release the site pool (the Ray actors; nothing in process)."""
        self.pool.close()

    def _dropouts(self, sites: list[Site] | list[str]) -> dict[str, list[str]] | None:
        rate = self.config.dropout_rate
        if rate <= 0:
            return None
        ids = [s if isinstance(s, str) else s.site_id for s in sites]
        gone = [s for s in ids if self._rng.random() < rate]
        return {"masked_input": gone} if gone else None

    def _sample(self) -> list[str]:
        """This round's cohort, in consortium order: every site, K of N uniformly without
        replacement, or each site independently with probability q (Poisson)."""
        cfg = self.config
        ids = self.consortium.site_ids
        if cfg.clients_per_round is not None:
            chosen = np.sort(self._sampler.choice(len(ids), cfg.clients_per_round,
                                                  replace=False))
        elif cfg.sample_rate is not None:
            chosen = np.flatnonzero(self._sampler.random(len(ids)) < cfg.sample_rate)
        else:
            return list(ids)
        return [ids[i] for i in chosen]

    def _request(self, round_number: int, task: RoundTask, charge: PrivacyEvent | None,
                 strategy: StrategyName, *, dp_sgd: DPSGDConfig | None = None,
                 n_participants: int | None = None) -> RoundRequest:
        # One id per release, made once: it names the secure round and keys every site's
        # reservation and settlement of its charge.
        n = len(self.consortium.site_ids) if n_participants is None else n_participants
        return RoundRequest(round_number=round_number, strategy=strategy,
                            n_participants=n,
                            secure_aggregation=self.config.secagg, task=task,
                            privacy_charge=charge, dp_sgd=dp_sgd,
                            release_id=release_id(self.config.seed, round_number))

    def _admit(self, request: RoundRequest) -> list[Site]:
        """Every site judges a request whose work releases nothing (distillation's local
        training); BudgetExceeded / PolicyViolation stop the run."""
        for site in self.consortium.sites:
            site.check_round(request)
        return self.consortium.sites

    @staticmethod
    def _reserve_all(releases) -> None:
        """Just before the sites' inputs leave, each site durably reserves the round's worst
        case under the round's release id (DESIGN 2a; the ledger call is the site's own,
        ``clients.round``). If one site cannot, the round stops before anyone sends anything,
        and the reservations already made are settled to nothing."""
        done = []
        try:
            for release in releases:
                release.reserve()
                done.append(release)
        except BudgetExceeded:
            for release in done:
                release.abandon()
            raise

    def _release(self, request: RoundRequest, sum_config: SecureSumConfig, dim: int, *,
                 work: Callable[[Site], tuple[np.ndarray, float]],
                 check: Callable[[Site], object] | None = None) -> SecureSumResult:
        """One release, through the same two halves a deployment runs: the coordinator's
        :class:`AggregationRound` plans and announces it; each site's :class:`SiteRound` judges
        the request (policy, budget), checks that its ``work`` can run, then — every site
        having agreed — computes, encodes with its own randomness and reserves its worst case;
        the in-memory transport carries the protocol's bytes, and every site settles from the
        announced outcome. The coordinator's side never sees an update."""
        seed = self.config.seed * 1_000 + request.round_number
        sites = self.consortium.sites
        if not sum_config.secure:
            return self._clear_release(request, sum_config, sites, seed, work=work, check=check)
        by_id = {site.site_id: site for site in sites}
        aggregation = AggregationRound(sum_config, request=request, cohort=sorted(by_id),
                                       dim=dim, seed=seed)
        announcement = announce(aggregation)
        rounds = {sid: SiteRound(announcement, site_id=sid, site=site,
                                 work=functools.partial(work, site),
                                 check_work=None if check is None
                                 else functools.partial(check, site),
                                 simulation_seed=seed)
                  for sid, site in by_id.items()}
        for site_round in rounds.values():
            site_round.check_request()
        for site_round in rounds.values():  # every site can compute before any site does
            site_round.check()
        for site_round in rounds.values():
            site_round.train()
        self._reserve_all(rounds.values())
        # The audit record is asked for only when there is one (the engine's one seam keeps
        # its old signature for callers that wrap it).
        record = {} if self._recorder is None else {"on_finish": self._recorder}
        result = run_secure_round(aggregation, rounds, dropouts=self._dropouts(sites), **record)
        self._charge(request, result, sum_config)
        return result

    def _charge(self, request: RoundRequest, result: SecureSumResult,
                sum_config: SecureSumConfig) -> None:
        """The run's accounting of one release: every round (as if one site took part in all),
        each site's own rounds (sampled runs), and the amplified track when assumed."""
        if result.event is None:
            return
        r = request.round_number
        self.accountant.record(result.event, round_number=r)
        amplified = None
        if self.config.assume_secret_sampling and result.secure:
            # The release with or without any one site: the round's event with one fewer summed.
            rp = sum_config.round_privacy()
            amplified = rp.event(result.encoding, survivors=max(1, len(result.included) - 1))
        self.sampled_accountant.record(result.event, round_number=r, included=result.included,
                                       sample_rate=self.config.sample_rate,
                                       amplified_event=amplified)

    def _pool_release(self, request: RoundRequest, sum_config: SecureSumConfig, dim: int,
                      job: FitJob, cohort: list[str]) -> SecureSumResult:
        """One shared-model release on the site pool (in process or Ray actors): the same two
        halves as :meth:`_release`; the sites' side runs wherever the sites live, and only
        the announcement, protocol bytes and the outcome cross (and, for the clear comparison
        sum, the clear updates, which is what that path is)."""
        seed = self.config.seed * 1_000 + request.round_number
        pool = self.pool
        if not sum_config.secure:
            updates = self._prepare(pool, job, cohort, announcement=None, seed=seed)
            try:
                result = secure_sum(updates, sum_config, dropouts=self._dropouts(cohort),
                                    seed=seed, round_id=request.release_id)
            except ProtocolAbort:
                pool.abandon()  # an abort reveals nothing
                raise
            pool.settle_clear(result.event, result.included)
            self._charge(request, result, sum_config)
            return result
        order = sorted(cohort)
        aggregation = AggregationRound(sum_config, request=request, cohort=order, dim=dim,
                                       seed=seed)
        self._prepare(pool, job, order, announcement=aggregation.announcement.to_bytes(),
                      seed=seed)
        record = {} if self._recorder is None else {"on_finish": self._recorder}
        result = run_secure_round(aggregation, pool, dropouts=self._dropouts(cohort), **record)
        self._charge(request, result, sum_config)
        return result

    def _prepare(self, pool, job: FitJob, cohort: list[str], *, announcement: bytes | None,
                 seed: int):
        """Open the round on the pool; every site checks before any computes; each trains
        and reserves its worst case. Any failure abandons every reservation. Returns the clear
        updates (None in a secure round: they never leave the sites)."""
        pool.open(job, cohort, announcement=announcement, seed=seed)
        try:
            pool.check()  # every site can compute before any site does
            events, updates = pool.train()
            self._note_example_events(events)
            pool.reserve()
        except BaseException:
            pool.abandon()
            raise
        return updates

    def _note_example_events(self, events: dict[str, GaussianEvent | None]) -> None:
        for site_id, event in events.items():
            if event is not None:
                self._example_events[site_id].append(event)

    def _clear_release(self, request: RoundRequest, sum_config: SecureSumConfig,
                       sites: list[Site], seed: int, *, work, check) -> SecureSumResult:
        """The comparison path (``secagg=False``): the same judging, work and two-phase charge,
        the vectors summed in the clear (no round to announce, nothing masked)."""
        for site in sites:
            site.check_round(request)
        if check is not None:
            for site in sites:
                check(site)
        updates = {site.site_id: work(site) for site in sites}
        releases = {site.site_id: Release(site, request) for site in sites}
        self._reserve_all(releases.values())
        try:
            result = secure_sum(updates, sum_config, dropouts=self._dropouts(sites), seed=seed,
                                round_id=request.release_id)
        except ProtocolAbort:
            for release in releases.values():
                release.abandon()  # an abort reveals nothing
            raise
        for site_id, release in releases.items():
            release.settle(result.event if site_id in result.included else None)
        self._charge(request, result, sum_config)
        return result

    def _example_epsilon(self) -> dict[str, float] | None:
        """Each site's example-level epsilon at ``example_delta`` (None without DP-SGD)."""
        if self.config.dp_sgd is None:
            return None
        return {site: float(compute_epsilon(merge_steps(events), delta=self.config.example_delta))
                for site, events in self._example_events.items()}

    def _epsilon(self) -> float | None:
        """No amplification by sampling (the coordinator knows who took part): with every
        site in every round, the composition of the rounds; with sampled rounds, the largest
        over the sites of the composition of the rounds each was summed in."""
        if self.config.dp is Mechanism.NONE or not self.accountant.rounds:
            return None
        if self.config.sampled:
            return float(self.sampled_accountant.epsilon(delta=self.config.delta))
        return float(self.accountant.epsilon(delta=self.config.delta))

    def _epsilon_amplified(self) -> float | None:
        """Only under the explicit secret-sampling assumption (config.SECRET_SAMPLING_ASSUMPTION)."""
        if not self.config.assume_secret_sampling or not self.accountant.rounds:
            return None
        return float(self.sampled_accountant.amplified_epsilon(delta=self.config.delta))

    # -- one round per algorithm -----------------------------------------------------------
    def _shared_round(self, r: int, global_flat: np.ndarray) -> tuple[np.ndarray, dict]:
        cfg = self.config
        personal = cfg.personal_mode is not None
        part = Part.BODY if personal else None
        cohort = self._sample()
        if len(cohort) < 2:  # a Poisson draw can leave too few: nothing is released
            return global_flat, {"participants": 0, "planned": len(cohort),
                                 "sampled": len(cohort),
                                 "note": f"{len(cohort)} site(s) sampled: no round"}
        dp = cfg.dp is not Mechanism.NONE
        max_weight = 1.0 if dp else float(self.consortium.n_train.max())
        sum_config = self._sum_config(clip=cfg.update_clip, max_weight=max_weight)
        charge = self._worst_charge(sum_config, global_flat.size, len(cohort))
        request = self._request(r, RoundTask.FIT, charge, cfg.algorithm, dp_sgd=cfg.dp_sgd,
                                n_participants=len(cohort))
        prox = cfg.prox_mu if cfg.algorithm is StrategyName.FEDPROX else 0.0
        # With DP every site weighs the same: the denominator is the (public) number of sites
        # summed, never a noisy total.
        job = FitJob(request=request, global_flat=global_flat, epochs=cfg.local_epochs,
                     lr=cfg.local_lr, optimizer=cfg.local_optimizer, batch_size=cfg.batch_size,
                     prox_mu=prox, part=part, personal=cfg.personal_mode, dp=dp)
        result = self._pool_release(request, sum_config, global_flat.size, job, cohort)
        new_flat = next_global(self._strategy, global_flat, result, dp=dp)
        return new_flat, {"participants": len(result.included), "planned": len(cohort),
                          "sampled": len(cohort) if cfg.sampled else None,
                          "wrap_rate": result.wrap_rate,
                          "secure_bytes": result.transcript_bytes}

    def _distill_round(self, r: int) -> dict:
        cfg = self.config
        splits = self.consortium.splits
        X_pub = np.asarray(splits.public.X)
        sites = self.consortium.sites
        n_out = splits.n_outputs
        clip = math.sqrt(X_pub.shape[0] * (1 if n_out > 1 else 4.0))
        sum_config = self._sum_config(clip=clip, max_weight=1.0)
        # The round releases one thing, the sum of the predictions; the training request names
        # that charge too, so a site with a budget can refuse before it computes anything.
        charge = self._worst_charge(sum_config, X_pub.shape[0] * n_out, len(sites))
        fit_request = self._request(r, RoundTask.FIT, charge, StrategyName.DISTILLATION)
        fit_sites = self._admit(fit_request)
        for site in fit_sites:  # local training on private data: nothing leaves the site
            site.fit(get_flat_params(site.model), request=fit_request, epochs=cfg.local_epochs,
                     lr=cfg.local_lr, optimizer=cfg.local_optimizer, batch_size=cfg.batch_size)
        pred_request = self._request(r, RoundTask.PREDICT_PUBLIC, charge,
                                     StrategyName.DISTILLATION)

        def predict(site: Site) -> tuple[np.ndarray, float]:
            return (site.predict_public(X_pub, request=pred_request,
                                        temperature=cfg.temperature).reshape(-1), 1.0)

        result = self._release(pred_request, sum_config, X_pub.shape[0] * n_out, work=predict)
        consensus = np.asarray(result.weighted_sum) / len(result.included)
        consensus = consensus.reshape(X_pub.shape[0], -1) if n_out > 1 else consensus
        if n_out > 1:  # post-processing of the (noisy) average: back onto the simplex
            consensus = np.clip(consensus, 1e-6, None)
            consensus = consensus / consensus.sum(axis=1, keepdims=True)
        for site in fit_sites:
            site.distill(X_pub, consensus, request=fit_request, epochs=cfg.distill_epochs,
                         lr=cfg.distill_lr, temperature=cfg.temperature, alpha_ce=0.5)
        out = {"participants": len(result.included), "planned": len(sites),
               "wrap_rate": result.wrap_rate, "secure_bytes": result.transcript_bytes}
        if self._student is not None:
            distill(self._student, X_pub, consensus, epochs=cfg.distill_epochs * 2,
                    lr=cfg.distill_lr, temperature=cfg.temperature, seed=cfg.seed + r)
            test = splits.test
            out["student_accuracy"] = _score(evaluate(self._student, test.X, test.y))
        return out

    # -- evaluation -------------------------------------------------------------------------
    def _evaluate(self, r: int, global_flat: np.ndarray | None) -> tuple[float, float]:
        cfg = self.config
        test = self.consortium.splits.test
        if cfg.personal_mode is not None:
            scores = self._site_scores(r, global_flat)
            return float(np.mean(list(scores.values()))), float("nan")
        if cfg.distillation:
            results = [evaluate(s.model, test.X, test.y) for s in self.consortium.sites]
            return (float(np.mean([_score(x) for x in results])),
                    float(np.mean([x.loss for x in results])))
        model = self.consortium.global_model
        set_flat_params(model, global_flat)
        result = evaluate(model, test.X, test.y)
        return _score(result), float(result.loss)

    def _site_scores(self, r: int, global_flat: np.ndarray | None) -> dict[str, float]:
        """Each site's final model on its own local test split."""
        cfg = self.config
        part = Part.BODY if cfg.personal_mode is not None else None
        out = {}
        if not cfg.distillation and part is None:  # one global model: no site object needed
            model = _with_params(self.consortium.global_model, global_flat, None)
            for site_id, data in zip(self.consortium.site_ids, self.consortium.site_data):
                if len(data.test):  # a one-sample site has no local test split
                    out[site_id] = _score(evaluate(model, data.test.X, data.test.y))
            return out
        for i, site in enumerate(self.consortium.sites):
            data = self.consortium.site_data[i].test
            if not len(data):
                continue
            if cfg.distillation:
                out[site.site_id] = _score(evaluate(site.model, data.X, data.y))
                continue
            model = (site.model if part is not None else self.consortium.global_model)
            probe = _with_params(model, global_flat, part)
            out[site.site_id] = _score(evaluate(probe, data.X, data.y))
        return out

    def _site_global_scores(self, global_flat: np.ndarray | None) -> dict[str, float]:
        """Each site's final model on the global test split."""
        cfg = self.config
        test = self.consortium.splits.test
        part = Part.BODY if cfg.personal_mode is not None else None
        out = {}
        if not cfg.distillation and part is None:  # one global model, the same for every site
            score = _score(evaluate(_with_params(self.consortium.global_model, global_flat, None),
                                    test.X, test.y))
            return {site_id: score for site_id in self.consortium.site_ids}
        for site in self.consortium.sites:
            if cfg.distillation:
                model = site.model
            else:
                base = site.model if part is not None else self.consortium.global_model
                model = _with_params(base, global_flat, part)
            out[site.site_id] = _score(evaluate(model, test.X, test.y))
        return out

    # -- the run ----------------------------------------------------------------------------
    def run(self, *, on_round: Callable[[RoundRecord], None] | None = None,
            progress: bool = False,
            stop_requested: Callable[[], bool] | None = None) -> SimulationResult:
        """Run every round. ``stop_requested`` is asked before each round (a Ctrl-C handler
        that lets the round in flight finish); a ``KeyboardInterrupt`` raised inside a round
        stops the run too. Either way the result says ``interrupted at round N``."""
        with single_threaded_torch():
            try:
                return self._run(on_round, progress, stop_requested)
            finally:
                self.close()

    def _budget_projection(self, r: int, global_flat: np.ndarray | None) -> dict:
        """What round ``r`` would cost the site closest to its budget: at worst (only the
        fewest sites the secure sum accepts survive; what a site must be able to afford before
        it computes) and at best (every site is summed)."""
        cfg = self.config
        sites = self.consortium.sites  # those hosted here (with Ray: none, no projection)
        n = cfg.clients_per_round or len(self.consortium.site_ids)
        if cfg.distillation:
            rows = np.asarray(self.consortium.splits.public.X).shape[0]
            n_out = self.consortium.splits.n_outputs
            sum_config = self._sum_config(clip=math.sqrt(rows * (1 if n_out > 1 else 4.0)),
                                          max_weight=1.0)
            dim = rows * n_out
        else:
            sum_config = self._sum_config(clip=cfg.update_clip, max_weight=1.0)
            dim = global_flat.size
        worst = self._worst_charge(sum_config, dim, n)
        best = worst
        fewest = n
        if sum_config.secure:
            rp = sum_config.round_privacy()
            best = rp.event(rp.plan(dim=dim + 1, expected_clients=n), survivors=n)
            fewest = min(n, choose_parameters(n).threshold)

        def after(site: Site, event: PrivacyEvent) -> float:
            try:
                return float(site.ledger.check(event))
            except BudgetExceeded as exc:
                return float(exc.requested)

        out = None
        for site in sites:
            if site.ledger is None:
                continue
            row = {"round": r, "site": site.site_id, "spent": float(site.ledger.spent()),
                   "budget": float(site.ledger.budget.epsilon), "worst": after(site, worst),
                   "best": after(site, best), "worst_survivors": fewest, "best_survivors": n}
            if out is None or row["worst"] > out["worst"]:
                out = row
        return out or {"round": r}

    @staticmethod
    def _projection_text(p: dict, exc: BaseException) -> str:
        if "worst" not in p:
            return (f"stopped before round {p['round']}: a site's privacy budget would be "
                    f"exceeded ({exc})")
        head = (f"stopped before round {p['round']} on a worst-case projection: ")
        if p["worst_survivors"] == p["best_survivors"] or p["worst"] == p["best"]:
            return (head + f"round {p['round']} would take {p['site']} from epsilon "
                    f"{p['spent']:.4g} to {p['worst']:.4g} > budget {p['budget']:.4g} "
                    "(its charge does not depend on how many sites survive)")
        best = (f"{p['best']:.4g}, within budget" if p["best"] <= p["budget"]
                else f"{p['best']:.4g}, also over budget")
        return (head + f"if only {p['worst_survivors']} of {p['best_survivors']} sites "
                f"survived round {p['round']}, {p['site']} would go from epsilon "
                f"{p['spent']:.4g} to {p['worst']:.4g} > budget {p['budget']:.4g}; at best, "
                f"with all {p['best_survivors']} summed, to {best}. A site must afford the worst "
                "case before it computes, since it cannot know who will survive")

    def _run(self, on_round: Callable[[RoundRecord], None] | None, progress: bool,
             stop_requested: Callable[[], bool] | None = None) -> SimulationResult:
        cfg = self.config
        result = SimulationResult(config=cfg, metric=self.metric)
        global_flat = None
        if self.consortium.global_model is not None:
            global_flat = get_flat_params(self.consortium.global_model,
                                          part=Part.BODY if cfg.personal_mode else None)
            optimiser = cfg.server_optimiser
            hyper = {} if cfg.server_lr is None else {"eta": cfg.server_lr}
            if cfg.algorithm is StrategyName.FEDPROX:
                hyper["mu"] = cfg.prox_mu
            self._strategy = make_strategy(optimiser, **hyper)
            self._strategy.initialize(global_flat)
        bar = None
        if progress:
            from tqdm import tqdm
            # disable=None: no bar when stderr is not a terminal (logs, pipes, tests).
            bar = tqdm(total=cfg.rounds, desc="rounds", unit="round", leave=False, disable=None)
        r = 0
        try:
            for r in range(1, cfg.rounds + 1):
                if stop_requested is not None and stop_requested():
                    result.stopped, result.interrupted = f"interrupted at round {r - 1}", True
                    break
                start = time.perf_counter()
                note = None
                aborted = False
                extra: dict = {}
                try:
                    if cfg.distillation:
                        extra = self._distill_round(r)
                    else:
                        global_flat, extra = self._shared_round(r, global_flat)
                except BudgetExceeded as exc:
                    result.projection = self._budget_projection(r, global_flat)
                    result.stopped = self._projection_text(result.projection, exc)
                    break
                except (PolicyViolation, NotEnrolled) as exc:
                    result.stopped = f"stopped before round {r}: a site refused the round ({exc})"
                    break
                except ProtocolAbort as exc:
                    note = f"secure sum aborted in {exc.stage}: {exc}; nothing was revealed"
                    aborted = True
                    extra = {"participants": 0, "planned": len(self.consortium.site_ids)}
                score, loss = self._evaluate(r, global_flat)
                record = RoundRecord(
                    round=r, accuracy=score, loss=None if math.isnan(loss) else loss,
                    participants=extra.get("participants", 0),
                    planned=extra.get("planned", len(self.consortium.site_ids)),
                    epsilon=self._epsilon(), example_epsilon=self._example_epsilon(),
                    epsilon_amplified=self._epsilon_amplified(), sampled=extra.get("sampled"),
                    seconds=time.perf_counter() - start,
                    wrap_rate=extra.get("wrap_rate"), secure_bytes=extra.get("secure_bytes"),
                    student_accuracy=extra.get("student_accuracy"),
                    note=note or extra.get("note"),
                    aborted=aborted)
                result.rounds.append(record)
                if on_round is not None:
                    on_round(record)
                if bar is not None:
                    bar.update()
        except KeyboardInterrupt:  # Ctrl-C inside round r: stop; rounds before r are kept
            result.stopped, result.interrupted = f"interrupted at round {r}", True
        finally:
            if bar is not None:
                bar.close()
        result.site_accuracy = self._site_scores(cfg.rounds, global_flat)
        result.site_global_accuracy = self._site_global_scores(global_flat)
        result.epsilon = self._epsilon()
        result.epsilon_amplified = self._epsilon_amplified()
        result.example_epsilon = self._example_epsilon()
        if result.rounds and not all(x.aborted for x in result.rounds):
            result.final_accuracy = result.rounds[-1].accuracy
        if result.rounds and all(x.aborted for x in result.rounds):
            result.final_meaning = ("every round's secure sum aborted, so the model never changed "
                                    "from its initialisation")
        elif cfg.personal_mode is not None:
            result.final_meaning = "mean of the sites' personal models on their own test splits"
        elif cfg.distillation:
            result.final_meaning = "mean of the sites' own models on the global test split"
        else:
            result.final_meaning = "the global model on the global test split"
        return result


@contextlib.contextmanager
def single_threaded_torch():
    """Run torch on one thread, then restore the previous setting. The sites' models are small:
    with several threads per tiny matrix product, synchronisation costs more than the work
    (a distillation round took 30x longer on two cores with torch's default threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_params(model, flat: np.ndarray | None, part):
    """A copy of ``model`` carrying ``flat`` (of ``part``); the original is untouched."""
    probe = copy.deepcopy(model)
    if flat is not None:
        set_flat_params(probe, flat, part=part)
    return probe
