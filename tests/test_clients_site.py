"""The site: policy checks before any computation, ledger checks without charging, updates."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import (
    DatasetName,
    ModelKind,
    Optimizer,
    Part,
    PartitionScheme,
    PersonalMode,
    PolicyRule,
    RoundRequest,
    RoundTask,
    Site,
    SitePolicy,
    StrategyName,
    get_flat_params,
    load_dataset,
    make_model,
    make_site_data,
    set_flat_params,
    split_dataset,
)
from privacy import Budget, BudgetExceeded, GaussianEvent, SiteLedger
from clients import PolicyViolation
from secagg.errors import CohortError, ConfigurationError, InvalidInput

SPLITS = split_dataset(load_dataset(DatasetName.BREAST_CANCER), seed=0)
SITES = make_site_data(SPLITS, n_sites=3, scheme=PartitionScheme.IID, seed=0)


def _site(policy: SitePolicy | None = None, ledger: SiteLedger | None = None,
          site_id: str = "h1", kind: ModelKind = ModelKind.MLP) -> Site:
    model = make_model(kind, input_shape=SPLITS.feature_shape, n_outputs=2, hidden=8, seed=0)
    return Site(site_id, data=SITES[0], model=model, policy=policy, ledger=ledger, seed=1)


def _request(**changes: object) -> RoundRequest:
    fields: dict[str, object] = {"round_number": 1, "strategy": StrategyName.FEDAVG,
                                     "n_participants": 5, "secure_aggregation": True}
    fields.update(changes)
    return RoundRequest(**fields)  # type: ignore[arg-type]


def test_fit_returns_a_delta_and_trains() -> None:
    site = _site()
    start = get_flat_params(site.model)
    update = site.fit(start, request=_request(), epochs=2, lr=0.1)
    assert update.delta.dtype == np.float64 and update.delta.shape == start.shape
    assert update.n_samples == site.n_train and np.isfinite(update.train_loss)
    assert np.allclose(get_flat_params(site.model), (start + update.delta).astype(np.float32))
    assert np.linalg.norm(update.delta) > 0


POLICY = SitePolicy(allowed_strategies=frozenset({StrategyName.FEDAVG, StrategyName.FEDPROX}),
                    allowed_tasks=frozenset({RoundTask.FIT, RoundTask.EVALUATE}),
                    min_participants=3, require_secure_aggregation=True)


@pytest.mark.parametrize("changes,rule", [
    ({"strategy": StrategyName.FEDADAM}, PolicyRule.STRATEGY),
    ({"task": RoundTask.PREDICT_PUBLIC}, PolicyRule.TASK),
    ({"n_participants": 2}, PolicyRule.MIN_PARTICIPANTS),
    ({"secure_aggregation": False}, PolicyRule.SECURE_AGGREGATION),
])
def test_site_refuses_each_rule_before_training(changes: dict[str, object],
                                                rule: PolicyRule) -> None:
    site = _site(POLICY)
    before = get_flat_params(site.model)
    state = site.state_dict()
    request = _request(**changes)
    with pytest.raises(PolicyViolation) as info:
        site.check_round(request)
    assert info.value.rule is rule
    with pytest.raises(PolicyViolation):
        if request.task is RoundTask.FIT:
            site.fit(before + 1.0, request=request, epochs=1, lr=0.1)
        else:
            site.predict_public(SPLITS.public.X, request=request)
    assert np.array_equal(get_flat_params(site.model), before)
    assert site.state_dict()["last_round"] == state["last_round"]


def test_stale_rounds_are_refused() -> None:
    site = _site()
    flat = get_flat_params(site.model)
    site.fit(flat, request=_request(round_number=4), epochs=1, lr=0.1)
    with pytest.raises(PolicyViolation) as info:
        site.check_round(_request(round_number=3))
    assert info.value.rule is PolicyRule.STALE_ROUND
    site.check_round(_request(round_number=4))  # a resumed round may be repeated


def test_ledger_budget_is_checked_without_charging(tmp_path: Path) -> None:
    ledger = SiteLedger(tmp_path / "l.sqlite", site_id="h1", budget=Budget(epsilon=3.0, delta=1e-5))
    site = _site(ledger=ledger)
    cheap = GaussianEvent(noise_multiplier=5.0)
    dear = GaussianEvent(noise_multiplier=0.5)
    eps = site.check_round(_request(privacy_charge=cheap))
    assert eps is not None and 0 < eps < 3.0
    assert ledger.entries() == []
    before = get_flat_params(site.model)
    with pytest.raises(BudgetExceeded):
        site.check_round(_request(privacy_charge=dear))
    with pytest.raises(BudgetExceeded):
        site.fit(before, request=_request(privacy_charge=dear), epochs=1, lr=0.1)
    assert np.array_equal(get_flat_params(site.model), before)
    # A site with a budget refuses releases that carry no privacy charge.
    with pytest.raises(PolicyViolation) as info:
        site.check_round(_request())
    assert info.value.rule is PolicyRule.PRIVACY_REQUIRED
    assert ledger.entries() == []
    site.fit(before, request=_request(privacy_charge=cheap), epochs=1, lr=0.1)
    assert ledger.entries() == []  # the coordinator charges, not the site


def test_site_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        _site(SitePolicy(privacy_budget=Budget(epsilon=1.0, delta=1e-5)))
    ledger = SiteLedger(tmp_path / "l.sqlite", site_id="h2", budget=Budget(epsilon=3.0, delta=1e-5))
    with pytest.raises(ConfigurationError):
        _site(ledger=ledger, site_id="h1")
    with pytest.raises(ConfigurationError):
        _site(SitePolicy(privacy_budget=Budget(epsilon=1.0, delta=1e-5)), ledger=ledger,
              site_id="h2")
    with pytest.raises(ConfigurationError):
        _site().fit(np.zeros(3), request=_request(task=RoundTask.EVALUATE), epochs=1, lr=0.1)


def test_wrong_global_vector_is_refused_unchanged() -> None:
    site = _site()
    before = get_flat_params(site.model)
    with pytest.raises(InvalidInput):
        site.fit(np.zeros(5), request=_request(), epochs=1, lr=0.1)
    assert np.array_equal(get_flat_params(site.model), before)
    assert site.state_dict()["last_round"] is None


def test_evaluate_does_not_touch_the_model() -> None:
    site = _site()
    before = get_flat_params(site.model)
    result = site.evaluate(np.zeros_like(before), request=_request(task=RoundTask.EVALUATE))
    assert result.accuracy is not None and result.n_samples == len(SITES[0].test)
    assert np.array_equal(get_flat_params(site.model), before)


def test_fedper_shares_only_the_body() -> None:
    site = _site()
    head_before = get_flat_params(site.model, part=Part.HEAD)
    body = get_flat_params(site.model, part=Part.BODY)
    update = site.fit(body, request=_request(strategy=StrategyName.FEDPER), epochs=1, lr=0.1,
                      part=Part.BODY)
    assert update.part is Part.BODY and update.delta.shape == body.shape
    assert not np.array_equal(get_flat_params(site.model, part=Part.HEAD), head_before)


def test_state_dict_round_trip() -> None:
    site = _site()
    site.fit(get_flat_params(site.model), request=_request(round_number=2), epochs=1, lr=0.1)
    state = site.state_dict()
    other = _site()
    other.load_state_dict(state)
    assert np.array_equal(get_flat_params(other.model), get_flat_params(site.model))
    with pytest.raises(PolicyViolation):
        other.check_round(_request(round_number=1))
    with pytest.raises(ConfigurationError):
        _site(site_id="h9").load_state_dict(state)
    cnn = _site(kind=ModelKind.CNN)
    before = get_flat_params(cnn.model)
    with pytest.raises(InvalidInput):
        cnn.load_state_dict(state)
    assert np.array_equal(get_flat_params(cnn.model), before)


# -- Site.fit validates everything before it changes anything -------------------------------
# The defect these tests catch (issue 7): fit wrote the global parameters into the model and
# only then found epochs=0 (or another bad argument), so a refused call overwrote the model.

def _snapshot(site: Site) -> dict[str, object]:
    return {"model": {k: t.clone() for k, t in site.model.state_dict().items()},
            "last_round": site.state_dict()["last_round"],
            "rounds_done": site.state_dict()["rounds_done"],
            "ledger": None if site.ledger is None else site.ledger.entries()}


def _assert_refused_unchanged(site: Site, flat: object, request: RoundRequest,
                              kwargs: dict[str, object]) -> None:
    before = _snapshot(site)
    with pytest.raises(CohortError):
        site.fit(flat, request=request, **kwargs)  # type: ignore[arg-type]
    after = _snapshot(site)
    assert before["model"].keys() == after["model"].keys()
    for key, tensor in before["model"].items():  # bit-identical, not merely close
        assert torch.equal(tensor, after["model"][key]), key
    assert (before["last_round"], before["rounds_done"], before["ledger"]) == \
        (after["last_round"], after["rounds_done"], after["ledger"])


_GOOD_FIT = {"epochs": 1, "lr": 0.1, "batch_size": 16, "prox_mu": 0.0, "part": None,
             "optimizer": Optimizer.SGD, "personal": None, "head_epochs": 1}
_BAD_FIT = {
    "epochs": [0, -1, 1.5, True, "2", None],
    "lr": [0.0, -0.1, float("nan"), float("inf"), "0.1", None],
    "batch_size": [0, -4, 2.0, None],
    "prox_mu": [-0.5, float("nan"), float("inf")],
    "optimizer": ["sgd", None],
    "part": ["body", 1],
    "personal": [PersonalMode.FEDREP, "fedper"],   # FedRep without part=BODY; not an enum
    "head_epochs": [0, -2, 0.5],
}
_BAD_FLAT = ["short", "long", "nan", "inf", "matrix", "text"]


def _flat(site: Site, kind: str | None) -> object:
    good = get_flat_params(site.model) + 0.5  # differs from the model: a write would show
    return {None: good, "short": good[:-1], "long": np.append(good, 0.0),
            "nan": np.where(np.arange(good.size) == 3, np.nan, good),
            "inf": np.where(np.arange(good.size) == 0, np.inf, good),
            "matrix": good.reshape(1, -1), "text": np.array(["x"] * good.size)}[kind]


@st.composite
def _bad_fit_calls(draw: st.DrawFn) -> tuple[str | None, dict[str, object]]:
    names = draw(st.lists(st.sampled_from(sorted(_BAD_FIT)), unique=True, max_size=3))
    flat = draw(st.sampled_from([None, *_BAD_FLAT])) if names else draw(st.sampled_from(_BAD_FLAT))
    kwargs = dict(_GOOD_FIT)
    for name in names:
        kwargs[name] = draw(st.sampled_from(_BAD_FIT[name]))
    return flat, kwargs


_LEDGER_DIR = Path(tempfile.mkdtemp(prefix="cohort-fit-"))
_GUARDED = _site(ledger=SiteLedger(_LEDGER_DIR / "l.sqlite", site_id="h1",
                                   budget=Budget(epsilon=5.0, delta=1e-5)))
_CHARGED = _request(privacy_charge=GaussianEvent(noise_multiplier=5.0))


@settings(max_examples=120)
@given(_bad_fit_calls())
def test_fit_with_bad_arguments_leaves_model_and_ledger_bit_identical(
        call: tuple[str | None, dict[str, object]]) -> None:
    flat, kwargs = call
    _assert_refused_unchanged(_GUARDED, _flat(_GUARDED, flat), _CHARGED, kwargs)


def test_fit_with_good_arguments_does_train_the_guarded_site() -> None:
    # The bad-argument search is not vacuous: the same site and request do train.
    site = _site(ledger=SiteLedger(_LEDGER_DIR / "g.sqlite", site_id="h1",
                                   budget=Budget(epsilon=5.0, delta=1e-5)))
    flat = _flat(site, None)
    site.fit(flat, request=_CHARGED, **_GOOD_FIT)  # type: ignore[arg-type]
    assert not np.array_equal(get_flat_params(site.model), flat.astype(np.float32))


def test_the_bad_argument_check_catches_a_fit_that_writes_first(monkeypatch) -> None:
    # Plant the slip: load the parameters before validating (the old fit). The check fails.
    original = Site._plan_fit

    def writes_first(self: Site, flat: object, **kwargs: object):
        with contextlib.suppress(CohortError):
            set_flat_params(self.model, flat, part=kwargs.get("part"))  # type: ignore[arg-type]
        return original(self, flat, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Site, "_plan_fit", writes_first)
    site = _site()
    with pytest.raises(AssertionError):
        _assert_refused_unchanged(site, _flat(site, None), _request(), {**_GOOD_FIT, "epochs": 0})
