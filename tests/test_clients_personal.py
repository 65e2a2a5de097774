"""Personalisation: FedRep freezes the right parts; FedPer/FedRep at the site share the body."""

from __future__ import annotations

import numpy as np
import pytest

from clients import (
    DatasetName,
    ModelKind,
    Part,
    PartitionScheme,
    PersonalMode,
    RoundRequest,
    Site,
    StrategyName,
    frozen,
    get_flat_params,
    load_dataset,
    make_model,
    make_site_data,
    split_dataset,
    train_part,
    train_personal,
)
from secagg.errors import ConfigurationError

BC = split_dataset(load_dataset(DatasetName.BREAST_CANCER), seed=0)
X, Y = BC.pool.X[:150], BC.pool.y[:150]


def _model(kind: ModelKind = ModelKind.MLP):
    return make_model(kind, input_shape=BC.feature_shape, n_outputs=2, hidden=8, seed=0)


@pytest.mark.parametrize("part,other", [(Part.HEAD, Part.BODY), (Part.BODY, Part.HEAD)])
def test_train_part_leaves_the_other_part_unchanged(part: Part, other: Part) -> None:
    model = _model()
    frozen_before = get_flat_params(model, part=other)
    trained_before = get_flat_params(model, part=part)
    train_part(model, X, Y, part=part, epochs=2, lr=0.1, seed=0)
    assert np.array_equal(get_flat_params(model, part=other), frozen_before)
    assert not np.array_equal(get_flat_params(model, part=part), trained_before)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_fedrep_runs_head_then_body() -> None:
    model = _model()
    stats = train_personal(model, X, Y, mode=PersonalMode.FEDREP, epochs=1, head_epochs=2,
                           lr=0.1, seed=0)
    assert stats.head is not None and len(stats.head.epoch_losses) == 2
    assert len(stats.main.epoch_losses) == 1
    fedper = train_personal(_model(), X, Y, mode=PersonalMode.FEDPER, epochs=1, lr=0.1)
    assert fedper.head is None


def test_frozen_restores_flags_even_if_already_frozen() -> None:
    model = _model()
    for p in model.body.parameters():
        p.requires_grad_(False)
    with frozen(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in model.body.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    with pytest.raises(ConfigurationError):
        train_personal(model, X, Y, mode=PersonalMode.FEDREP, epochs=1, lr=0.1)


def test_site_fedrep_keeps_the_head_and_sends_the_body() -> None:
    data = make_site_data(BC, n_sites=2, scheme=PartitionScheme.IID, seed=0)
    site = Site("h1", data=data[0], model=_model(), seed=0)
    body = get_flat_params(site.model, part=Part.BODY)
    request = RoundRequest(round_number=0, strategy=StrategyName.FEDREP, n_participants=3,
                           secure_aggregation=True)
    update = site.fit(body, request=request, epochs=1, lr=0.1, part=Part.BODY,
                      personal=PersonalMode.FEDREP, head_epochs=1)
    assert update.delta.shape == body.shape and np.linalg.norm(update.delta) > 0
    with pytest.raises(ConfigurationError):
        site.fit(get_flat_params(site.model), request=request, epochs=1, lr=0.1,
                 personal=PersonalMode.FEDREP)
