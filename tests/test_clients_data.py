"""Data loading, global splits and standardisation of the ``clients`` package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients import DatasetName, TaskKind, load_dataset, split_dataset
from secagg.errors import CohortError, ConfigurationError, InvalidInput


@pytest.mark.parametrize("name,task,n_classes,shape", [
    (DatasetName.BREAST_CANCER, TaskKind.CLASSIFICATION, 2, (30,)),
    (DatasetName.DIGITS, TaskKind.CLASSIFICATION, 10, (1, 8, 8)),
    (DatasetName.DIABETES, TaskKind.REGRESSION, 0, (10,)),
])
def test_bundled_datasets(name: DatasetName, task: TaskKind, n_classes: int,
                          shape: tuple[int, ...]) -> None:
    ds = load_dataset(name)
    assert ds.task is task and ds.n_classes == n_classes and ds.feature_shape == shape
    assert ds.X.dtype == np.float32 and ds.X.shape[1:] == shape
    assert ds.y.dtype == (np.int64 if task is TaskKind.CLASSIFICATION else np.float32)
    assert len(ds.feature_names) == int(np.prod(shape))
    with pytest.raises(ValueError):
        ds.X[0, ...] = 0  # read-only


def test_splits_are_disjoint_stratified_and_deterministic() -> None:
    ds = load_dataset(DatasetName.DIGITS)
    a = split_dataset(ds, public_fraction=0.15, test_fraction=0.15, seed=3)
    b = split_dataset(ds, public_fraction=0.15, test_fraction=0.15, seed=3)
    assert np.array_equal(a.public.X, b.public.X) and np.array_equal(a.pool.y, b.pool.y)
    assert len(a.public) + len(a.test) + len(a.pool) == ds.n_samples
    assert set(np.unique(a.public.y)) == set(range(10))
    assert abs(len(a.public) / ds.n_samples - 0.15) < 0.02
    assert a.n_outputs == 10


def test_standardisation_is_fitted_on_the_public_split_only() -> None:
    ds = load_dataset(DatasetName.BREAST_CANCER)
    splits = split_dataset(ds, seed=1)
    # The public split is standardised exactly; the pool is only approximately.
    assert np.allclose(splits.public.X.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(splits.public.X.std(axis=0), 1, atol=1e-3)
    # Recover the raw public rows and check the scaler's statistics are theirs alone.
    raw_public = splits.public.X.astype(np.float64) * splits.scaler.scale + splits.scaler.mean
    assert np.allclose(splits.scaler.mean, raw_public.mean(axis=0))
    # Changing the private pool's raw values leaves the scaler unchanged.
    pool_rows = np.array([i for i in range(ds.n_samples)
                          if not np.any(np.all(np.isclose(ds.X[i], raw_public, rtol=1e-5), axis=1))])
    X = ds.X.copy()
    X[pool_rows] *= 100.0
    from clients import Dataset
    changed = Dataset(name="x", X=X, y=ds.y, task=ds.task, n_classes=2,
                      feature_shape=ds.feature_shape, feature_names=ds.feature_names)
    other = split_dataset(changed, seed=1)
    assert np.allclose(other.scaler.mean, splits.scaler.mean)
    assert np.allclose(other.scaler.scale, splits.scaler.scale)


def test_regression_targets_are_standardised_on_public() -> None:
    splits = split_dataset(load_dataset(DatasetName.DIABETES), seed=0)
    assert abs(float(splits.public.y.mean())) < 1e-4
    assert splits.n_outputs == 1
    back = splits.scaler.inverse_target(splits.public.y)
    assert back.min() > 20 and back.max() < 400


def test_bad_fractions_are_configuration_errors() -> None:
    ds = load_dataset(DatasetName.BREAST_CANCER)
    with pytest.raises(ConfigurationError):
        split_dataset(ds, public_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigurationError):
        split_dataset(ds, public_fraction=0.0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_classification_with_string_labels(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 0.5},{'sick' if i % 3 else 'well'}" for i in range(30))
    ds = load_dataset(_write(tmp_path / "h.csv", "age,bmi,outcome\n" + rows + "\n"),
                      label_column="outcome")
    assert ds.task is TaskKind.CLASSIFICATION and ds.n_classes == 2
    assert ds.class_names == ("sick", "well") and ds.feature_names == ("age", "bmi")
    assert ds.y.dtype == np.int64 and ds.X.shape == (30, 2)


def test_csv_integer_and_float_label_rule(tmp_path: Path) -> None:
    few = "\n".join(f"{i},{i % 4}" for i in range(40))
    ds = load_dataset(_write(tmp_path / "a.csv", "x,y\n" + few), label_column="y")
    assert ds.task is TaskKind.CLASSIFICATION and ds.n_classes == 4
    floats = "\n".join(f"{i},{i * 0.37}" for i in range(40))
    ds = load_dataset(_write(tmp_path / "b.csv", "x,y\n" + floats), label_column="y")
    assert ds.task is TaskKind.REGRESSION and ds.y.dtype == np.float32
    many = "\n".join(f"{i},{i}" for i in range(40))
    ds = load_dataset(_write(tmp_path / "c.csv", "x,y\n" + many), label_column="y")
    assert ds.task is TaskKind.REGRESSION
    ds = load_dataset(tmp_path / "c.csv", label_column="y", task=TaskKind.CLASSIFICATION)
    assert ds.n_classes == 40


def test_csv_errors_are_typed(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "x,y\n1,0\n2,1\n3,0\n")
    with pytest.raises(InvalidInput):
        load_dataset(path, label_column="diagnosis")
    with pytest.raises(ConfigurationError):
        load_dataset(path)
    bad_feature = _write(tmp_path / "e.csv", "x,y\nabc,0\n2,1\n")
    with pytest.raises(InvalidInput):
        load_dataset(bad_feature, label_column="y")
    one_class = _write(tmp_path / "f.csv", "x,y\n1,a\n2,a\n")
    with pytest.raises(InvalidInput):
        load_dataset(one_class, label_column="y")
    text_regression = _write(tmp_path / "g.csv", "x,y\n1,a\n2,b\n")
    with pytest.raises(InvalidInput):
        load_dataset(text_regression, label_column="y", task=TaskKind.REGRESSION)
    with pytest.raises(CohortError):
        load_dataset(tmp_path / "missing.csv", label_column="y")
