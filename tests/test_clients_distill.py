"""Federated distillation: soft predictions and distilling toward a consensus."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from clients import (
    DatasetName,
    ModelKind,
    Optimizer,
    PartitionScheme,
    RoundRequest,
    RoundTask,
    Site,
    StrategyName,
    distill,
    distillation_loss,
    load_dataset,
    make_model,
    make_site_data,
    predict_soft,
    split_dataset,
    train_local,
)
from secagg.errors import ConfigurationError, InvalidInput

DIGITS = split_dataset(load_dataset(DatasetName.DIGITS), seed=0)


@cache
def _teacher_targets(temperature: float) -> np.ndarray:
    teacher = make_model(ModelKind.MLP, input_shape=(1, 8, 8), n_outputs=10, hidden=32, seed=1)
    train_local(teacher, DIGITS.pool.X, DIGITS.pool.y, epochs=3, lr=0.01, optimizer=_adam(),
                seed=0)
    return predict_soft(teacher, DIGITS.public.X, temperature=temperature)


def _adam() -> Optimizer:
    return Optimizer.ADAM


def test_predict_soft_gives_probabilities() -> None:
    model = make_model(ModelKind.CNN, input_shape=(1, 8, 8), n_outputs=10, seed=0)
    probs = predict_soft(model, DIGITS.public.X, temperature=2.0)
    assert probs.shape == (len(DIGITS.public), 10) and probs.dtype == np.float64
    assert np.allclose(probs.sum(axis=1), 1.0)
    sharp = predict_soft(model, DIGITS.public.X, temperature=0.5)
    assert sharp.max(axis=1).mean() > probs.max(axis=1).mean()


def test_distillation_moves_predictions_toward_the_targets() -> None:
    targets = _teacher_targets(2.0)
    student = make_model(ModelKind.CNN, input_shape=(1, 8, 8), n_outputs=10, hidden=32, seed=5)
    before = distillation_loss(student, DIGITS.public.X, targets, temperature=2.0)
    stats = distill(student, DIGITS.public.X, targets, epochs=5, lr=0.005, temperature=2.0)
    after = distillation_loss(student, DIGITS.public.X, targets, temperature=2.0)
    assert after < 0.5 * before and stats.n_public == len(DIGITS.public)


def test_distillation_mixed_with_private_loss() -> None:
    targets = _teacher_targets(1.0)
    student = make_model(ModelKind.MLP, input_shape=(1, 8, 8), n_outputs=10, hidden=16, seed=2)
    before = distillation_loss(student, DIGITS.public.X, targets)
    distill(student, DIGITS.public.X, targets, epochs=3, lr=0.01, alpha_ce=0.5,
            X_private=DIGITS.pool.X[:200], y_private=DIGITS.pool.y[:200])
    assert distillation_loss(student, DIGITS.public.X, targets) < before


def test_regression_distillation() -> None:
    splits = split_dataset(load_dataset(DatasetName.DIABETES), seed=0)
    teacher = make_model(ModelKind.LOGISTIC, input_shape=(10,), n_outputs=1, seed=0)
    train_local(teacher, splits.pool.X, splits.pool.y, epochs=10, lr=0.05)
    targets = predict_soft(teacher, splits.public.X)
    assert targets.shape == (len(splits.public),)
    student = make_model(ModelKind.MLP, input_shape=(10,), n_outputs=1, hidden=8, seed=3)
    before = distillation_loss(student, splits.public.X, targets)
    distill(student, splits.public.X, targets, epochs=20, lr=0.01)
    assert distillation_loss(student, splits.public.X, targets) < before


def test_bad_targets_and_options_are_typed() -> None:
    model = make_model(ModelKind.MLP, input_shape=(1, 8, 8), n_outputs=10, hidden=8, seed=0)
    n = len(DIGITS.public)
    with pytest.raises(InvalidInput):
        distill(model, DIGITS.public.X, np.full((n, 10), 0.5), epochs=1, lr=0.01)
    with pytest.raises(InvalidInput):
        distill(model, DIGITS.public.X, np.full((n, 9), 1 / 9), epochs=1, lr=0.01)
    with pytest.raises(ConfigurationError):
        distill(model, DIGITS.public.X, np.full((n, 10), 0.1), epochs=1, lr=0.01, alpha_ce=0.5)
    with pytest.raises(ConfigurationError):
        distill(model, DIGITS.public.X, np.full((n, 10), 0.1), epochs=1, lr=0.01,
                temperature=0.0)


def test_site_predicts_and_distils_under_its_policy() -> None:
    sites = make_site_data(DIGITS, n_sites=3, scheme=PartitionScheme.IID, seed=0)
    model = make_model(ModelKind.CNN, input_shape=(1, 8, 8), n_outputs=10, hidden=16, seed=0)
    site = Site("h1", data=sites[0], model=model, seed=0)
    ask = RoundRequest(round_number=0, strategy=StrategyName.DISTILLATION, n_participants=3,
                       secure_aggregation=True, task=RoundTask.PREDICT_PUBLIC)
    probs = site.predict_public(DIGITS.public.X, request=ask, temperature=2.0)
    assert probs.shape == (len(DIGITS.public), 10)
    consensus = _teacher_targets(2.0)
    before = distillation_loss(model, DIGITS.public.X, consensus, temperature=2.0)
    fit = RoundRequest(round_number=0, strategy=StrategyName.DISTILLATION, n_participants=3,
                       secure_aggregation=True)
    site.distill(DIGITS.public.X, consensus, request=fit, epochs=2, lr=0.005, temperature=2.0,
                 alpha_ce=0.3)
    assert distillation_loss(model, DIGITS.public.X, consensus, temperature=2.0) < before
