"""Model factory shapes and the flat-parameter layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import (
    DatasetName,
    ModelKind,
    Part,
    get_flat_params,
    load_dataset,
    make_model,
    param_count,
    set_flat_params,
    split_dataset,
)
from secagg.errors import ConfigurationError, InvalidInput

SPLITS = {name: split_dataset(load_dataset(name), seed=0) for name in DatasetName}


@pytest.mark.parametrize("kind", list(ModelKind))
@pytest.mark.parametrize("name", list(DatasetName))
def test_factory_shapes(kind: ModelKind, name: DatasetName) -> None:
    splits = SPLITS[name]
    model = make_model(kind, input_shape=splits.feature_shape, n_outputs=splits.n_outputs, seed=0)
    assert isinstance(model.body, torch.nn.Module) and isinstance(model.head, torch.nn.Module)
    X = torch.from_numpy(np.array(splits.public.X[:7]))
    assert model(X).shape == (7, splits.n_outputs)
    flat = X.reshape(7, -1)  # flat input is accepted too
    assert torch.allclose(model(flat), model(X))
    n_body = param_count(model, part=Part.BODY)
    assert n_body + param_count(model, part=Part.HEAD) == param_count(model)
    assert (n_body == 0) == (kind is ModelKind.LOGISTIC)


def test_seeded_models_are_identical_and_bad_input_is_typed() -> None:
    a = make_model(ModelKind.CNN, input_shape=(1, 8, 8), n_outputs=10, seed=4)
    b = make_model(ModelKind.CNN, input_shape=(1, 8, 8), n_outputs=10, seed=4)
    assert np.array_equal(get_flat_params(a), get_flat_params(b))
    with pytest.raises(InvalidInput):
        a(torch.zeros(2, 65))
    with pytest.raises(ConfigurationError):
        make_model("mlp", input_shape=(3,), n_outputs=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        make_model(ModelKind.MLP, input_shape=(3, 4), n_outputs=2)


@settings(max_examples=25)
@given(kind=st.sampled_from(list(ModelKind)), d=st.integers(1, 12), n_out=st.integers(1, 5),
       part=st.sampled_from([None, Part.BODY, Part.HEAD]), seed=st.integers(0, 1000))
def test_flat_round_trip(kind: ModelKind, d: int, n_out: int, part: Part | None, seed: int) -> None:
    model = make_model(kind, input_shape=(d,), n_outputs=n_out, hidden=8, seed=seed)
    flat = get_flat_params(model, part=part)
    assert flat.dtype == np.float64 and flat.shape == (param_count(model, part=part),)
    new = np.random.default_rng(seed).normal(size=flat.shape)
    set_flat_params(model, new, part=part)
    assert np.allclose(get_flat_params(model, part=part), new.astype(np.float32))
    whole = get_flat_params(model)
    set_flat_params(model, whole)
    assert np.array_equal(get_flat_params(model), whole)


def test_set_flat_params_checks_before_changing() -> None:
    model = make_model(ModelKind.MLP, input_shape=(5,), n_outputs=2, hidden=4, seed=0)
    before = get_flat_params(model)
    with pytest.raises(InvalidInput):
        set_flat_params(model, np.zeros(before.size + 1))
    with pytest.raises(InvalidInput):
        set_flat_params(model, np.full(before.size, np.nan))
    with pytest.raises(InvalidInput):
        set_flat_params(model, np.zeros((2, before.size)))
    with pytest.raises(ConfigurationError):
        get_flat_params(model, part="body")  # type: ignore[arg-type]
    assert np.array_equal(get_flat_params(model), before)


def test_frozen_parameters_leave_the_flat_vector() -> None:
    model = make_model(ModelKind.MLP, input_shape=(5,), n_outputs=2, hidden=4, seed=0)
    for p in model.body.parameters():
        p.requires_grad_(False)
    assert np.array_equal(get_flat_params(model), get_flat_params(model, part=Part.HEAD))
