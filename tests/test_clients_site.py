"""The site: policy checks before any computation, ledger checks without charging, updates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients import (
    DatasetName,
    ModelKind,
    Part,
    PartitionScheme,
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
    split_dataset,
)
from privacy import Budget, BudgetExceeded, GaussianEvent, SiteLedger
from secagg.errors import ConfigurationError, InvalidInput, PolicyViolation

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
