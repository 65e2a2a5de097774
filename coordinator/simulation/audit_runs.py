"""The training runs behind ``audit canaries`` and ``audit mia``.

The privacy package holds the audits' statistics (``privacy.audit``) but may not import the
sites or the coordinator (DESIGN section 1; ``tests/test_import_boundaries.py``), and these
audits must train the consortium's own models on its own data. So the part that drives
training lives here, where the simulation engine already may import both:

* :func:`example_canaries` — DP-SGD at one site of the consortium (its records, its model
  kind, its DP-SGD parameters, as many epochs as the site trains over the whole run) with
  Steinke et al.'s canaries, through ``privacy.audit.canaries.example_canary_run``.
* :func:`client_canaries` — the federated run itself, with canary clients in the real secure
  sum (Andrew et al.): each contributes its clipped random direction every round, through the
  same ``SiteRound`` / ``AggregationRound`` halves; the sites' ledgers and the run's epsilon are
  the real ones.
* :func:`membership_inference` — the run's final global model attacked on the sites' training
  records (members) against the test split (non-members), with shadow models trained on the
  public split for offline LiRA.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clients import DPSGDConfig, get_flat_params, make_model
from clients.round import SiteRound
from cohort.contract import RoundRequest
from privacy import Mechanism
from privacy.audit.canaries import (ClientCanaryResult, ExampleCanaryResult,
                                    client_canary_estimate, example_canary_run)
from privacy.audit.mia import AttackMetrics, attack_metrics, lira_offline_scores, logit_confidence

from ..aggregation import AggregationRound, worst_charge
from .config import SimulationConfig
from .consortium import build_consortium
from .engine import Simulation, single_threaded_torch
from .transport import announce, run_secure_round

__all__ = ["example_canaries", "client_canaries", "membership_inference", "CanaryRun",
           "MiaRun"]


def example_canaries(config: SimulationConfig, *, site: int = 0, canaries: int = 1000,
                     guesses: int | None = None, guess_grid: list[int] | None = None,
                     confidence: float = 0.95, epochs: int | None = None, seed: int = 0,
                     progress: bool = False) -> ExampleCanaryResult:
    """Steinke et al.'s one-run audit of DP-SGD at site number ``site`` (0-based)."""
    consortium = build_consortium(replace(config, dp=Mechanism.NONE, target_epsilon=None,
                                          example_epsilon=None, dp_sgd=None))
    data = consortium.site_data[site].train
    splits = consortium.splits
    if splits.task.value != "classification":
        raise ValueError("the canary audit needs a classification data set")
    dp = config.dp_sgd or DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0)
    X = np.asarray(data.X, dtype=np.float32).reshape(len(data.y), -1)

    def build(dim: int) -> nn.Module:
        kind = config.models[0]
        if kind.value == "cnn":  # a canary owns an input coordinate: flat inputs only
            kind = type(kind)("mlp")
        return make_model(kind, input_shape=(dim,), n_outputs=splits.n_outputs,
                          hidden=config.hidden, seed=seed)

    with single_threaded_torch():
        return example_canary_run(
            X, np.asarray(data.y), make_model=build, n_classes=splits.n_outputs,
            canaries=canaries, noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm, batch_size=config.batch_size,
            epochs=epochs if epochs is not None else config.rounds * config.local_epochs,
            lr=config.local_lr, delta=config.example_delta, confidence=confidence,
            guesses=guesses, guess_grid=guess_grid, seed=seed, progress=progress)


class _CanarySimulation(Simulation):
    """The run with canary clients added to every secure release's cohort."""

    def __init__(self, config: SimulationConfig, directions: np.ndarray, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self._directions = directions
        self._canary_ids = [f"canary-{i + 1:04d}" for i in range(len(directions))]

    def _request(self, round_number, task, charge, strategy, *, dp_sgd=None,
                 n_participants=None) -> RoundRequest:
        request = super()._request(round_number, task, charge, strategy, dp_sgd=dp_sgd,
                                   n_participants=n_participants)
        return replace(request, n_participants=request.n_participants + len(self._canary_ids))

    def _worst_charge(self, sum_config, dim, n):
        return worst_charge(sum_config, dim, n + len(self._canary_ids))

    def _release(self, request, sum_config, dim, *, work, check=None):
        seed = self.config.seed * 1_000 + request.round_number
        by_id = {site.site_id: site for site in self.consortium.sites}
        cohort = sorted(by_id) + self._canary_ids
        aggregation = AggregationRound(sum_config, request=request, cohort=cohort, dim=dim,
                                       seed=seed)
        announcement = announce(aggregation)
        rounds = {sid: SiteRound(announcement, site_id=sid, site=site,
                                 work=functools.partial(work, site),
                                 check_work=None if check is None
                                 else functools.partial(check, site), simulation_seed=seed)
                  for sid, site in by_id.items()}
        clip = sum_config.clip_norm
        for cid, z in zip(self._canary_ids, self._directions):
            rounds[cid] = SiteRound(announcement, site_id=cid,
                                    work=lambda z=z: (z * clip, 1.0), simulation_seed=seed)
        for site_round in rounds.values():
            site_round.check()
        for site_round in rounds.values():
            site_round.train()
        self._reserve_all(rounds.values())
        record = {} if self._recorder is None else {"on_finish": self._recorder}
        result = run_secure_round(aggregation, rounds,
                                  dropouts=self._dropouts(self.consortium.sites), **record)
        self._charge(request, result, sum_config)
        return result

    def _charge(self, request, result, sum_config):
        # The canaries are the audit's instruments, not sites: only the sites' rounds are
        # composed per site (the round's event itself already counts every summed client).
        canaries = set(self._canary_ids)
        sites = frozenset(s for s in result.included if s not in canaries)
        super()._charge(request, replace(result, included=sites), sum_config)

    def _pool_release(self, request, sum_config, dim, job, cohort):
        # The canaries join the shared-model round here, in process: the sites' half runs
        # through _release above with the pool's fit job as each site's work.
        events = {}

        def work(site):
            delta, weight, event = job.run(site)
            events[site.site_id] = event
            return delta, weight

        result = self._release(request, sum_config, dim, work=work, check=job.check)
        self._note_example_events(events)
        return result


@dataclass
class CanaryRun:
    estimate: ClientCanaryResult
    claimed_epsilon: float | None
    delta: float
    rounds: int
    final_accuracy: float | None


def _unit_rows(rng: np.random.Generator, k: int, dim: int) -> np.ndarray:
    z = rng.standard_normal((k, dim))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def client_canaries(config: SimulationConfig, *, inserted: int = 20, unobserved: int = 200,
                    seed: int = 0, work_dir: Path | None = None,
                    progress: bool = False) -> CanaryRun:
    """Andrew et al.'s one-shot estimate of the federated run's client-level epsilon."""
    if config.distillation or config.personal_mode is not None:
        raise ValueError("client canaries need a shared-model run (FedAvg family)")
    if not config.secagg:
        raise ValueError("client canaries run inside the secure sum (--secagg)")
    probe = build_consortium(replace(config, dp=Mechanism.NONE, target_epsilon=None,
                                     example_epsilon=None, dp_sgd=None))
    dim = get_flat_params(probe.global_model).size
    rng = np.random.default_rng(seed + 99_991)
    directions = _unit_rows(rng, inserted, dim)
    fresh = _unit_rows(rng, unobserved, dim)
    run_config = replace(config, baselines=False)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with single_threaded_torch():
        sim = _CanarySimulation(run_config, directions, work_dir=work_dir)
        start = get_flat_params(sim.consortium.global_model).copy()
        result = sim.run(progress=progress)
        final = get_flat_params(sim.consortium.global_model)
    estimate = client_canary_estimate(final - start, directions, fresh, delta=config.delta)
    return CanaryRun(estimate=estimate, claimed_epsilon=result.epsilon, delta=config.delta,
                     rounds=len(result.rounds), final_accuracy=result.final_accuracy)


@dataclass
class MiaRun:
    attacks: list[AttackMetrics]
    members: int
    nonmembers: int
    shadows: int
    claimed_epsilon: float | None
    delta: float
    final_accuracy: float | None


def _logits(model: nn.Module, X: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(X), dtype=torch.float32)).numpy()


def _train_shadow(config: SimulationConfig, splits, X: np.ndarray, y: np.ndarray, *,
                  epochs: int, seed: int) -> nn.Module:
    model = make_model(config.models[0], input_shape=splits.feature_shape,
                       n_outputs=splits.n_outputs, hidden=config.hidden, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.local_lr)
    gen = torch.Generator().manual_seed(seed)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(yt), config.batch_size):
            idx = order[i:i + config.batch_size]
            opt.zero_grad()
            loss_fn(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    return model


def membership_inference(config: SimulationConfig, *, shadows: int = 4, bootstrap: int = 200,
                         seed: int = 0, work_dir: Path | None = None,
                         progress: bool = False,
                         on_model: Callable[[nn.Module], None] | None = None) -> MiaRun:
    """Train the run, then attack its final global model (see the module docstring)."""
    if config.distillation or config.personal_mode is not None:
        raise ValueError("the membership audit attacks a shared global model (FedAvg family)")
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with single_threaded_torch():
        sim = Simulation(replace(config, baselines=False), work_dir=work_dir)
        if sim.consortium.splits.task.value != "classification":
            raise ValueError("the membership audit needs a classification data set")
        result = sim.run(progress=progress)
        model = sim.consortium.global_model
        splits = sim.consortium.splits
        members_X = np.concatenate([np.asarray(d.train.X) for d in sim.consortium.site_data])
        members_y = np.concatenate([np.asarray(d.train.y) for d in sim.consortium.site_data])
        non_X, non_y = np.asarray(splits.test.X), np.asarray(splits.test.y)
        X = np.concatenate([members_X, non_X])
        y = np.concatenate([members_y, non_y])
        logits = _logits(model, X)
        n_in = len(members_y)
        loss = torch.nn.functional.cross_entropy(torch.as_tensor(logits),
                                                 torch.as_tensor(y), reduction="none").numpy()
        attacks = [attack_metrics("loss threshold", -loss[:n_in], -loss[n_in:],
                                  bootstrap=bootstrap, seed=seed)]
        # Offline LiRA: OUT shadows trained on halves of the public split (no target in it),
        # for as many epochs as a site trains over the run.
        pub_X, pub_y = np.asarray(splits.public.X), np.asarray(splits.public.y)
        rng = np.random.default_rng(seed + 7)
        phis = []
        for s in range(shadows):
            half = rng.random(len(pub_y)) < 0.5
            shadow = _train_shadow(config, splits, pub_X[half], pub_y[half],
                                   epochs=max(1, config.rounds * config.local_epochs),
                                   seed=seed + 1000 + s)
            phis.append(logit_confidence(_logits(shadow, X), y))
        target_phi = logit_confidence(logits, y)
        lira = lira_offline_scores(target_phi, np.asarray(phis))
        attacks.append(attack_metrics(f"offline LiRA ({shadows} shadows)", lira[:n_in],
                                      lira[n_in:], bootstrap=bootstrap, seed=seed))
        if on_model is not None:
            on_model(model)
    return MiaRun(attacks=attacks, members=n_in, nonmembers=len(non_y), shadows=shadows,
                  claimed_epsilon=result.epsilon, delta=config.delta,
                  final_accuracy=result.final_accuracy)
