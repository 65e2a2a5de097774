"""The three global splits of a data set and the standardisation fitted on the public one.

:func:`split_dataset` cuts a :class:`~clients.data.Dataset` into

* a *public reference split* (``public_fraction``, 15 % by default) that every site may see:
  distillation and backbone pretraining use it;
* a global *test* split, for reporting only;
* the *private pool*, which :mod:`clients.partition` deals out to sites.

Classification splits are stratified (each class is cut in the same proportions) so the public
split holds every class. Feature standardisation (and, for regression, target standardisation)
is fitted on the public split *only* — it is public, so fitting on it leaks no site's private
data — and applied to all three splits. Constant features keep a scale of 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privacy import _validate as v
from secagg.errors import ConfigurationError, InvalidInput

from .data import Dataset, TaskKind

__all__ = ["DataSplits", "LabelledArrays", "Scaler", "split_dataset"]


@dataclass(frozen=True)
class LabelledArrays:
    """Features ``X`` (n, *feature_shape) float32 and labels ``y`` (n,), read-only."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        X = np.array(self.X, dtype=np.float32)
        if X.ndim < 2:
            raise InvalidInput(f"X must have shape (n, ...), got {X.shape}")
        y = np.array(self.y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise InvalidInput(f"y must be 1-D with {X.shape[0]} entries, got {y.shape}")
        X.setflags(write=False)
        y.setflags(write=False)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, indices: np.ndarray) -> LabelledArrays:
        return LabelledArrays(self.X[indices], self.y[indices])


@dataclass(frozen=True, kw_only=True)
class Scaler:
    """Per-feature affine standardisation ``(x - mean) / scale``; for regression also the target
    (``y_mean``/``y_scale``; 0 and 1 for classification)."""

    mean: np.ndarray
    scale: np.ndarray
    y_mean: float = 0.0
    y_scale: float = 1.0

    @classmethod
    def fit(cls, data: LabelledArrays, task: TaskKind) -> Scaler:
        X = data.X.astype(np.float64)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        if task is TaskKind.REGRESSION:
            y = data.y.astype(np.float64)
            y_scale = float(y.std())
            return cls(mean=mean, scale=scale, y_mean=float(y.mean()),
                       y_scale=y_scale if y_scale > 1e-12 else 1.0)
        return cls(mean=mean, scale=scale)

    def transform(self, data: LabelledArrays, task: TaskKind) -> LabelledArrays:
        X = ((data.X.astype(np.float64) - self.mean) / self.scale).astype(np.float32)
        if task is TaskKind.REGRESSION:
            y = ((data.y.astype(np.float64) - self.y_mean) / self.y_scale).astype(np.float32)
            return LabelledArrays(X, y)
        return LabelledArrays(X, data.y)

    def inverse_target(self, y: np.ndarray) -> np.ndarray:
        """Regression predictions back in the original units."""
        return np.asarray(y, dtype=np.float64) * self.y_scale + self.y_mean


@dataclass(frozen=True, kw_only=True)
class DataSplits:
    """The standardised public, test and pool splits, with the data set's metadata."""

    name: str
    public: LabelledArrays
    test: LabelledArrays
    pool: LabelledArrays
    task: TaskKind
    n_classes: int
    feature_shape: tuple[int, ...]
    feature_names: tuple[str, ...]
    scaler: Scaler

    @property
    def n_outputs(self) -> int:
        """Model outputs: one per class, or 1 for regression."""
        return self.n_classes if self.task is TaskKind.CLASSIFICATION else 1


def split_dataset(dataset: Dataset, *, public_fraction: float = 0.15,
                  test_fraction: float = 0.15, seed: int = 0) -> DataSplits:
    """Split and standardise ``dataset`` (deterministic given ``seed``)."""
    if not isinstance(dataset, Dataset):
        raise ConfigurationError("dataset must be a clients.Dataset")
    public_fraction = v.fraction(public_fraction, "public_fraction")
    test_fraction = v.fraction(test_fraction, "test_fraction")
    if public_fraction + test_fraction >= 1:
        raise ConfigurationError("public_fraction + test_fraction must leave a private pool")
    rng = np.random.default_rng(v.integer(seed, "seed", minimum=0))
    if dataset.task is TaskKind.CLASSIFICATION:
        groups = [np.flatnonzero(dataset.y == c) for c in range(dataset.n_classes)]
    else:
        groups = [np.arange(dataset.n_samples)]
    public, test, pool = [], [], []
    for group in groups:
        idx = rng.permutation(group)
        n_pub = round(public_fraction * len(idx))
        n_test = round(test_fraction * len(idx))
        public.append(idx[:n_pub])
        test.append(idx[n_pub:n_pub + n_test])
        pool.append(idx[n_pub + n_test:])
    parts = [np.sort(np.concatenate(p)) for p in (public, test, pool)]
    if any(len(p) == 0 for p in parts):
        raise InvalidInput(f"{dataset.n_samples} samples are too few for these fractions")
    full = LabelledArrays(dataset.X, dataset.y)
    raw_public, raw_test, raw_pool = (full.take(p) for p in parts)
    scaler = Scaler.fit(raw_public, dataset.task)
    return DataSplits(name=dataset.name, public=scaler.transform(raw_public, dataset.task),
                      test=scaler.transform(raw_test, dataset.task),
                      pool=scaler.transform(raw_pool, dataset.task), task=dataset.task,
                      n_classes=dataset.n_classes, feature_shape=dataset.feature_shape,
                      feature_names=dataset.feature_names, scaler=scaler)
