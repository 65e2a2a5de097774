"""Transfer learning: pretrained backbones, frozen bodies, typed shape mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clients import (
    DatasetName,
    ModelKind,
    Part,
    evaluate,
    get_flat_params,
    load_backbone,
    load_dataset,
    make_model,
    pretrain_backbone,
    split_dataset,
    train_local,
)
from secagg.errors import InvalidInput

BC = split_dataset(load_dataset(DatasetName.BREAST_CANCER), seed=0)


def test_pretrain_saves_checkpoint_and_metadata(tmp_path: Path) -> None:
    path = pretrain_backbone(ModelKind.MLP, BC, path=tmp_path / "bb.pt", epochs=5, seed=0,
                             hidden=16)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["kind"] == "mlp" and meta["input_shape"] == [30] and meta["n_outputs"] == 2
    model = make_model(ModelKind.MLP, input_shape=(30,), n_outputs=2, hidden=16, seed=1)
    info = load_backbone(model, path, freeze=False)
    assert info.kind is ModelKind.MLP and info.dataset == "breast_cancer"
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_body_is_unchanged_by_training_and_helps(tmp_path: Path) -> None:
    path = pretrain_backbone(ModelKind.MLP, BC, path=tmp_path / "bb.pt", epochs=20, seed=0,
                             hidden=16)
    model = make_model(ModelKind.MLP, input_shape=(30,), n_outputs=2, hidden=16, seed=7)
    load_backbone(model, path, freeze=True)
    body = get_flat_params(model, part=Part.BODY)
    assert body.size == 0  # frozen parameters leave the federated vector
    frozen_values = [p.detach().clone() for p in model.body.parameters()]
    assert np.array_equal(get_flat_params(model), get_flat_params(model, part=Part.HEAD))
    train_local(model, BC.pool.X, BC.pool.y, epochs=2, lr=0.1, seed=0)
    assert all(np.array_equal(a.numpy(), p.detach().numpy())
               for a, p in zip(frozen_values, model.body.parameters()))
    assert evaluate(model, BC.test.X, BC.test.y).accuracy > 0.85


def test_shape_mismatch_is_typed_and_changes_nothing(tmp_path: Path) -> None:
    path = pretrain_backbone(ModelKind.MLP, BC, path=tmp_path / "bb.pt", epochs=1, seed=0,
                             hidden=16)
    wider = make_model(ModelKind.MLP, input_shape=(30,), n_outputs=2, hidden=32, seed=0)
    before = get_flat_params(wider)
    with pytest.raises(InvalidInput):
        load_backbone(wider, path, freeze=True)
    assert np.array_equal(get_flat_params(wider), before)
    assert all(p.requires_grad for p in wider.parameters())
    cnn = make_model(ModelKind.CNN, input_shape=(30,), n_outputs=2, hidden=16, seed=0)
    with pytest.raises(InvalidInput):
        load_backbone(cnn, path, freeze=False)
    other_input = make_model(ModelKind.MLP, input_shape=(10,), n_outputs=1, hidden=16, seed=0)
    with pytest.raises(InvalidInput):
        load_backbone(other_input, path, freeze=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInput):
        load_backbone(wider, tmp_path / "junk.pt", freeze=False)


def test_head_size_may_differ_from_the_pretraining_task(tmp_path: Path) -> None:
    digits = split_dataset(load_dataset(DatasetName.DIGITS), seed=0)
    path = pretrain_backbone(ModelKind.CNN, digits, path=tmp_path / "cnn.pt", epochs=1, seed=0,
                             hidden=16)
    model = make_model(ModelKind.CNN, input_shape=(1, 8, 8), n_outputs=3, hidden=16, seed=0)
    info = load_backbone(model, path, freeze=True)
    assert info.n_outputs == 10 and get_flat_params(model).size == 16 * 3 + 3
