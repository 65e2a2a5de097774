"""Local training (FedAvg/FedProx) and evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from clients import (
    DatasetName,
    ModelKind,
    Optimizer,
    evaluate,
    get_flat_params,
    load_dataset,
    make_model,
    split_dataset,
    train_local,
)
from secagg.errors import ConfigurationError, InvalidInput

BC = split_dataset(load_dataset(DatasetName.BREAST_CANCER), seed=0)


def _model(kind: ModelKind = ModelKind.MLP, seed: int = 0):
    return make_model(kind, input_shape=BC.feature_shape, n_outputs=2, hidden=16, seed=seed)


def test_training_reduces_loss_on_breast_cancer() -> None:
    model = _model()
    before = evaluate(model, BC.pool.X, BC.pool.y)
    stats = train_local(model, BC.pool.X, BC.pool.y, epochs=5, lr=0.05, batch_size=32, seed=1)
    after = evaluate(model, BC.pool.X, BC.pool.y)
    assert stats.n_samples == len(BC.pool) and len(stats.epoch_losses) == 5
    assert after.loss < before.loss and stats.epoch_losses[-1] < stats.epoch_losses[0]
    assert evaluate(model, BC.test.X, BC.test.y).accuracy > 0.85


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_training_is_deterministic(optimizer: Optimizer) -> None:
    flats = []
    for _ in range(2):
        model = _model(ModelKind.CNN)
        train_local(model, BC.pool.X[:100], BC.pool.y[:100], epochs=2, lr=0.01, batch_size=16,
                    optimizer=optimizer, seed=7)
        flats.append(get_flat_params(model))
    assert np.array_equal(flats[0], flats[1])


def test_fedprox_stays_closer_to_the_anchor() -> None:
    anchor = get_flat_params(_model())
    distances = {}
    for mu in (0.0, 1.0):
        model = _model()
        train_local(model, BC.pool.X, BC.pool.y, epochs=3, lr=0.1, prox_mu=mu, anchor=anchor,
                    seed=3)
        distances[mu] = float(np.linalg.norm(get_flat_params(model) - anchor))
    assert distances[1.0] < distances[0.0]


def test_regression_evaluation_reports_r2() -> None:
    splits = split_dataset(load_dataset(DatasetName.DIABETES), seed=0)
    model = make_model(ModelKind.LOGISTIC, input_shape=splits.feature_shape, n_outputs=1, seed=0)
    train_local(model, splits.pool.X, splits.pool.y, epochs=20, lr=0.05, seed=0)
    result = evaluate(model, splits.test.X, splits.test.y)
    assert result.accuracy is None and result.mse == result.loss
    assert result.r2 is not None and result.r2 > 0.3


def test_bad_arguments_are_typed() -> None:
    model = _model()
    with pytest.raises(ConfigurationError):
        train_local(model, BC.pool.X, BC.pool.y, epochs=0, lr=0.1)
    with pytest.raises(ConfigurationError):
        train_local(model, BC.pool.X, BC.pool.y, epochs=1, lr=0.1, optimizer="sgd")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        train_local(model, BC.pool.X, BC.pool.y + 5, epochs=1, lr=0.1)
    with pytest.raises(InvalidInput):
        train_local(model, BC.pool.X, BC.pool.y, epochs=1, lr=0.1, prox_mu=0.1,
                    anchor=np.zeros(3))
    with pytest.raises(InvalidInput):
        evaluate(model, BC.pool.X[:0], BC.pool.y[:0])
