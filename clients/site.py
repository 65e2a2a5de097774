"""The site: one hospital's private data, its model, its policy and (optionally) its ledger.

Every request is judged first — :meth:`Site.check_round` applies the :class:`SitePolicy` and,
when the site has a privacy ledger, asks the ledger whether the round's charge fits the budget
*without charging it* (the coordinator charges after the round, with the clients actually
summed) — and only then does the site compute. A refused request leaves the site exactly as it
was. What leaves the site is a flat float64 delta with its sample count (:class:`Update`), to be
encoded and masked for the secure sum, or predictions on the public reference set.

A site with a ledger always has a privacy budget: if the policy names none, the ledger's is
used, and if it names one, it must be the ledger's.

Example-level DP-SGD (a request with ``dp_sgd``) is accounted on the site's *example* ledger
(track ``EXAMPLE``), never on the site-level one (track ``SITE``): one patient record and one
whole site are different neighbouring relations, and their events are never composed. The
site itself reserves the planned DP-SGD event (known before training: it depends only on the
site's record count, batch size, epochs and noise multiplier) before it trains, and settles it
with the steps actually taken afterwards; if training fails midway the reservation stays at its
worst case. The example ledger's budget is the policy's ``example_budget``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cohort.contract import RoundRequest, RoundTask
from privacy import GaussianEvent, LedgerTrack, SiteLedger
from privacy import _validate as v
from privacy.dpsgd import check_dp_model, dpsgd_event
from secagg.errors import ConfigurationError, InvalidInput

from .distill import DistillStats, distill, predict_soft
from .params import Part, check_flat_params, get_flat_params, param_count, set_flat_params
from .partition import SiteData
from .personal import PersonalMode, train_personal
from .policy import SitePolicy, check_policy
from .training import EvalResult, Optimizer, check_training_data, evaluate, train_local

__all__ = ["Site", "Update"]


@dataclass(frozen=True, kw_only=True)
class Update:
    """A site's contribution to one round: ``delta`` = new − old flat parameters (of ``part``;
    ``None`` = every trainable parameter), the number of training samples and the last epoch's
    mean training loss. ``example_event`` is the example-level DP-SGD event the site
    accounted for on its own example track (site-side bookkeeping for reports: it is not part
    of what the secure sum carries)."""

    site_id: str
    round_number: int
    delta: np.ndarray
    n_samples: int
    train_loss: float
    part: Part | None = None
    example_event: GaussianEvent | None = None

    def __post_init__(self) -> None:
        delta = np.array(self.delta, dtype=np.float64)
        if delta.ndim != 1 or not np.isfinite(delta).all():
            raise InvalidInput("an update's delta must be a finite 1-D vector")
        delta.setflags(write=False)
        object.__setattr__(self, "delta", delta)


# Test-only (CONVENTIONS 12): True plants finding 11's defect, example-level events recorded
# on the site-level ledger track; the simulation's track test proves it catches it.
_TEST_ONLY_EXAMPLE_EVENTS_ON_SITE_LEDGER = False


def _with_ledger_budget(policy: SitePolicy, field: str, ledger: SiteLedger | None,
                        track: LedgerTrack, site_id: str) -> SitePolicy:
    """The policy with its ``field`` budget taken from ``ledger`` (or checked against it)."""
    budget = getattr(policy, field)
    if ledger is None:
        if budget is not None:
            raise ConfigurationError(f"the policy's {field} needs a {track.value}-track ledger")
        return policy
    if not isinstance(ledger, SiteLedger):
        raise ConfigurationError("a ledger must be a privacy.SiteLedger")
    if ledger.site_id != site_id:
        raise ConfigurationError(f"the ledger is for site {ledger.site_id!r}")
    if ledger.track is not track:
        raise ConfigurationError(f"the {field} ledger must be on the {track.value} track, "
                                 f"not {ledger.track.value}")
    if budget is None:
        return dataclasses.replace(policy, **{field: ledger.budget})
    if budget != ledger.budget:
        raise ConfigurationError(f"the policy's {field} differs from the ledger's budget")
    return policy


class Site:
    """One hospital site. ``model`` is trained in place across rounds (its head stays here when
    personalising); ``seed`` makes local shuffling reproducible (tests and simulations)."""

    def __init__(self, site_id: str, *, data: SiteData, model: nn.Module,
                 policy: SitePolicy | None = None, ledger: SiteLedger | None = None,
                 example_ledger: SiteLedger | None = None, seed: int | None = None) -> None:
        if not isinstance(site_id, str) or not site_id:
            raise ConfigurationError("site_id must be a non-empty string")
        if not isinstance(data, SiteData):
            raise ConfigurationError("data must be a clients.SiteData")
        if not isinstance(model, nn.Module):
            raise ConfigurationError("model must be a torch nn.Module")
        policy = SitePolicy() if policy is None else policy
        if not isinstance(policy, SitePolicy):
            raise ConfigurationError("policy must be a SitePolicy")
        policy = _with_ledger_budget(policy, "privacy_budget", ledger, LedgerTrack.SITE,
                                     site_id)
        policy = _with_ledger_budget(policy, "example_budget", example_ledger,
                                     LedgerTrack.EXAMPLE, site_id)
        self._site_id = site_id
        self._data = data
        self._model = model
        self._policy = policy
        self._ledger = ledger
        self._example_ledger = example_ledger
        self._seed = v.seed(seed)
        self._last_round: int | None = None
        self._rounds_done = 0

    # -- properties ----------------------------------------------------------------------
    @property
    def site_id(self) -> str:
        return self._site_id

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def policy(self) -> SitePolicy:
        return self._policy

    @property
    def ledger(self) -> SiteLedger | None:
        return self._ledger

    @property
    def example_ledger(self) -> SiteLedger | None:
        """The ledger of the site's example-level (DP-SGD) events, track ``EXAMPLE``."""
        return self._example_ledger

    @property
    def n_train(self) -> int:
        return len(self._data.train)

    # -- judging -------------------------------------------------------------------------
    def check_round(self, request: RoundRequest) -> float | None:
        """Raise ``PolicyViolation`` (or ``privacy.BudgetExceeded``) if the site must refuse
        ``request``; otherwise return the epsilon the site would have spent after the round's
        charge (``None`` without a ledger). Changes nothing."""
        if not isinstance(request, RoundRequest):
            raise ConfigurationError("request must be a RoundRequest")
        check_policy(self._policy, request, last_round=self._last_round)
        if self._ledger is not None and request.privacy_charge is not None:
            return self._ledger.check(request.privacy_charge)
        return None

    def _admit(self, request: RoundRequest, task: RoundTask) -> None:
        if not isinstance(request, RoundRequest):
            raise ConfigurationError("request must be a RoundRequest")
        if request.task is not task:
            raise ConfigurationError(f"the request is for {request.task.value}, not {task.value}")
        self.check_round(request)

    def _round_seed(self, round_number: int) -> int:
        entropy = None if self._seed is None else [self._seed, round_number]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    # -- work ----------------------------------------------------------------------------
    def check_fit(self, global_flat_params: np.ndarray, *, request: RoundRequest, epochs: int,
                  lr: float, batch_size: int = 32, prox_mu: float = 0.0, part: Part | None = None,
                  optimizer: Optimizer = Optimizer.SGD, personal: PersonalMode | None = None,
                  head_epochs: int = 1) -> GaussianEvent | None:
        """Raise what :meth:`fit` with these arguments would raise before training — a bad
        argument, ``PolicyViolation``, ``privacy.BudgetExceeded`` — and otherwise return the
        example-level DP-SGD event the training will cost (``None`` without DP-SGD). Changes
        nothing; :meth:`fit` runs the same checks first, so a refused or malformed request
        leaves the site's model and ledgers exactly as they were."""
        return self._plan_fit(global_flat_params, request=request, epochs=epochs, lr=lr,
                              batch_size=batch_size, prox_mu=prox_mu, part=part,
                              optimizer=optimizer, personal=personal, head_epochs=head_epochs,
                              check_example_budget=True)

    def _plan_fit(self, global_flat_params: np.ndarray, *, request: RoundRequest, epochs: int,
                  lr: float, batch_size: int, prox_mu: float, part: Part | None,
                  optimizer: Optimizer, personal: PersonalMode | None, head_epochs: int,
                  check_example_budget: bool) -> GaussianEvent | None:
        self._admit(request, RoundTask.FIT)
        epochs = v.integer(epochs, "epochs", minimum=1)
        v.positive(lr, "lr")
        batch_size = v.integer(batch_size, "batch_size", minimum=1)
        v.nonnegative(prox_mu, "prox_mu")
        head_epochs = v.integer(head_epochs, "head_epochs", minimum=1)
        if not isinstance(optimizer, Optimizer):
            raise ConfigurationError("optimizer must be an Optimizer")
        if part is not None and not isinstance(part, Part):
            raise ConfigurationError(f"part must be a Part or None, got {part!r}")
        if personal is not None and (not isinstance(personal, PersonalMode)
                                     or part is not Part.BODY):
            raise ConfigurationError("personal must be a PersonalMode, used with part=Part.BODY")
        if personal is PersonalMode.FEDREP and (param_count(self._model, part=Part.BODY) == 0
                                                or param_count(self._model, part=Part.HEAD) == 0):
            raise ConfigurationError("FedRep needs a trainable body and a trainable head")
        if param_count(self._model) == 0:
            raise ConfigurationError("the model has no trainable parameters")
        check_flat_params(self._model, global_flat_params, part=part)
        check_training_data(self._model, self._data.train.X, self._data.train.y)
        if request.dp_sgd is None:
            return None
        check_dp_model(self._model)
        passes = epochs + (head_epochs if personal is PersonalMode.FEDREP else 0)
        planned = dpsgd_event(n_samples=self.n_train, batch_size=batch_size, epochs=passes,
                              noise_multiplier=request.dp_sgd.noise_multiplier)
        ledger = self._example_track()
        if ledger is not None and check_example_budget:
            ledger.check(planned)  # BudgetExceeded if the cap would be passed
        return planned

    def _example_track(self) -> SiteLedger | None:
        if _TEST_ONLY_EXAMPLE_EVENTS_ON_SITE_LEDGER:
            return self._ledger  # the planted defect: example events on the site-level track
        return self._example_ledger

    def fit(self, global_flat_params: np.ndarray, *, request: RoundRequest, epochs: int,
            lr: float, batch_size: int = 32, prox_mu: float = 0.0, part: Part | None = None,
            optimizer: Optimizer = Optimizer.SGD, personal: PersonalMode | None = None,
            head_epochs: int = 1) -> Update:
        """Load the global parameters of ``part``, train locally and return the delta of
        ``part``: FedAvg, or FedProx with ``prox_mu`` > 0 (anchored at the global model).
        ``personal`` (which needs ``part=Part.BODY``) selects FedPer — the whole model trains,
        only the body is shared — or FedRep's head-then-body schedule; ``part=Part.BODY`` alone
        means FedPer. A request with ``dp_sgd`` trains with example-level DP-SGD (Opacus);
        the update then carries the event the site accounted for (``example_event``)."""
        # The example budget is checked by the reservation itself (atomically, nothing written
        # if it does not fit), so it is not composed twice here.
        planned = self._plan_fit(global_flat_params, request=request, epochs=epochs, lr=lr,
                                 batch_size=batch_size, prox_mu=prox_mu, part=part,
                                 optimizer=optimizer, personal=personal,
                                 head_epochs=head_epochs, check_example_budget=False)
        # Everything else is checked: from here on the site changes state. The DP-SGD event is
        # reserved before the data is touched; a failure below leaves it reserved (worst case).
        ledger = self._example_track() if planned is not None else None
        release_id = os.urandom(32)
        if ledger is not None:
            ledger.reserve(release_id, planned, label=f"round-{request.round_number}/dp-sgd")
        set_flat_params(self._model, global_flat_params, part=part)
        before = get_flat_params(self._model, part=part)
        seed = self._round_seed(request.round_number)
        if personal is PersonalMode.FEDREP:
            stats = train_personal(self._model, self._data.train.X, self._data.train.y,
                                   mode=personal, epochs=epochs, lr=lr, head_epochs=head_epochs,
                                   batch_size=batch_size, optimizer=optimizer, prox_mu=prox_mu,
                                   seed=seed, dp_sgd=request.dp_sgd)
            n_samples, loss, taken = stats.n_samples, stats.mean_loss, stats.dp_event
        else:
            trained = train_local(self._model, self._data.train.X, self._data.train.y,
                                  epochs=epochs, lr=lr, batch_size=batch_size,
                                  optimizer=optimizer, prox_mu=prox_mu, seed=seed,
                                  dp_sgd=request.dp_sgd)
            n_samples, loss, taken = trained.n_samples, trained.mean_loss, trained.dp_event
        if ledger is not None:
            ledger.settle(release_id, taken)  # the truth, even if it is not what was planned
        if taken != planned:
            raise ConfigurationError(f"DP-SGD cost {taken}, planned {planned}")
        return self._finish(request, before, n_samples, loss, part, example_event=taken)

    def _finish(self, request: RoundRequest, before: np.ndarray, n_samples: int, loss: float,
                part: Part | None, *, example_event: GaussianEvent | None) -> Update:
        delta = get_flat_params(self._model, part=part) - before
        self._last_round = request.round_number
        self._rounds_done += 1
        return Update(site_id=self._site_id, round_number=request.round_number, delta=delta,
                      n_samples=n_samples, train_loss=loss, part=part,
                      example_event=example_event)

    def evaluate(self, flat_params: np.ndarray, *, request: RoundRequest,
                 part: Part | None = None) -> EvalResult:
        """Metrics of the given parameters (of ``part``; the rest from the site's own model,
        e.g. its personal head) on the site's local test split. The site's model is untouched."""
        self._admit(request, RoundTask.EVALUATE)
        probe = copy.deepcopy(self._model)
        set_flat_params(probe, flat_params, part=part)
        return evaluate(probe, self._data.test.X, self._data.test.y)

    def predict_public(self, X_public: np.ndarray, *, request: RoundRequest,
                       temperature: float = 1.0) -> np.ndarray:
        """The site model's soft predictions on the public reference set (distillation)."""
        self._admit(request, RoundTask.PREDICT_PUBLIC)
        return predict_soft(self._model, X_public, temperature=temperature)

    def distill(self, X_public: np.ndarray, targets: np.ndarray, *, request: RoundRequest,
                epochs: int, lr: float, temperature: float = 1.0,
                alpha_ce: float = 0.0) -> DistillStats:
        """Distil the site's model toward the consensus ``targets`` (nothing leaves the site);
        with ``alpha_ce`` > 0, mixed with the loss on the site's private training data."""
        alpha_ce = v.unit_interval(alpha_ce, "alpha_ce")
        self._admit(request, RoundTask.FIT)
        if request.dp_sgd is not None and alpha_ce > 0:
            raise ConfigurationError("distillation's private loss (alpha_ce > 0) is not "
                                     "trained with DP-SGD: a DP-SGD request needs alpha_ce = 0")
        private = (self._data.train.X, self._data.train.y) if alpha_ce > 0 else (None, None)
        stats = distill(self._model, X_public, targets, epochs=epochs, lr=lr,
                        temperature=temperature, alpha_ce=alpha_ce, X_private=private[0],
                        y_private=private[1], seed=self._round_seed(request.round_number))
        self._last_round = request.round_number
        self._rounds_done += 1
        return stats

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"site_id": self._site_id, "last_round": self._last_round,
                "rounds_done": self._rounds_done,
                "model": {k: t.detach().clone() for k, t in self._model.state_dict().items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot of this site (same site id, same model layout); checked first."""
        try:
            site_id, last_round = state["site_id"], state["last_round"]
            rounds_done, model_state = state["rounds_done"], dict(state["model"])
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"not a site state: {exc}") from exc
        if site_id != self._site_id:
            raise ConfigurationError(f"the snapshot is of site {site_id!r}")
        if last_round is not None:
            last_round = v.integer(last_round, "last_round", minimum=0)
        rounds_done = v.integer(rounds_done, "rounds_done", minimum=0)
        mine = self._model.state_dict()
        if set(mine) != set(model_state) or any(
                not isinstance(model_state[k], torch.Tensor) or model_state[k].shape != t.shape
                for k, t in mine.items()):
            raise InvalidInput("the snapshot's model does not match this site's model")
        self._model.load_state_dict(model_state)
        self._last_round = last_round
        self._rounds_done = rounds_done
