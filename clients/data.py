"""Loading a site's data set: scikit-learn's bundled sets or a local CSV file.

:func:`load_dataset` returns a frozen :class:`Dataset` with float32 features, labels (int64 for
classification, float32 for regression), the task kind, the number of classes, the shape of one
sample's features and the feature names. Arrays are made read-only so a frozen data set stays
what it was.

CSV rule for the task kind (when ``task`` is not given): the label column is a
*classification* label if any of its values is not a number, or if every value is an integer
and there are at most ``max_classes`` distinct values; otherwise it is a *regression* target.
String classes are numbered in sorted order (``class_names`` keeps them).
"""

from __future__ import annotations

import csv
import enum
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn import datasets as skdatasets

from privacy import _validate as v
from secagg.errors import ConfigurationError, InvalidInput

__all__ = ["Dataset", "DatasetName", "TaskKind", "load_dataset"]


class DatasetName(enum.Enum):
    """The real data sets that ship inside scikit-learn (no network needed)."""

    BREAST_CANCER = "breast_cancer"
    DIGITS = "digits"
    DIABETES = "diabetes"


class TaskKind(enum.Enum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A whole data set. ``X`` has shape ``(n, *feature_shape)``; ``n_classes`` is 0 for
    regression."""

    name: str
    X: np.ndarray
    y: np.ndarray
    task: TaskKind
    n_classes: int
    feature_shape: tuple[int, ...]
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        X = v.features(self.X)
        y = v.labels(self.y, X.shape[0])
        if tuple(X.shape[1:]) != tuple(self.feature_shape):
            raise InvalidInput(f"X has sample shape {X.shape[1:]}, not {self.feature_shape}")
        if self.task is TaskKind.CLASSIFICATION:
            if y.dtype != np.int64 or self.n_classes < 2:
                raise InvalidInput("classification needs int64 labels and at least 2 classes")
            if y.min() < 0 or y.max() >= self.n_classes:
                raise InvalidInput(f"labels must lie in [0, {self.n_classes})")
        elif y.dtype != np.float32 or self.n_classes != 0:
            raise InvalidInput("regression needs float32 targets and n_classes = 0")
        X.setflags(write=False)
        y.setflags(write=False)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "feature_shape", tuple(int(d) for d in self.feature_shape))
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])


def load_dataset(source: DatasetName | str | os.PathLike[str], *,
                 label_column: str | None = None, task: TaskKind | None = None,
                 max_classes: int = 20) -> Dataset:
    """Load a bundled data set (``DatasetName``) or a CSV file with a header row.

    For a CSV, ``label_column`` names the label column (required) and every other column must
    be numeric. ``task`` overrides the classification/regression rule in the module docstring.
    """
    if isinstance(source, DatasetName):
        return _load_bundled(source)
    if isinstance(source, (str, os.PathLike)):
        if label_column is None:
            raise ConfigurationError("a CSV source needs label_column=")
        if task is not None and not isinstance(task, TaskKind):
            raise ConfigurationError("task must be a TaskKind or None")
        return _load_csv(Path(source), label_column=label_column, task=task,
                         max_classes=v.integer(max_classes, "max_classes", minimum=2))
    raise ConfigurationError(f"source must be a DatasetName or a CSV path, got {source!r}")


def _load_bundled(name: DatasetName) -> Dataset:
    if name is DatasetName.BREAST_CANCER:
        raw = skdatasets.load_breast_cancer()
        return Dataset(name=name.value, X=raw.data, y=raw.target.astype(np.int64),
                       task=TaskKind.CLASSIFICATION, n_classes=2,
                       feature_shape=(raw.data.shape[1],), feature_names=tuple(raw.feature_names),
                       class_names=tuple(str(c) for c in raw.target_names))
    if name is DatasetName.DIGITS:
        raw = skdatasets.load_digits()
        return Dataset(name=name.value, X=raw.data.reshape(-1, 1, 8, 8),
                       y=raw.target.astype(np.int64), task=TaskKind.CLASSIFICATION, n_classes=10,
                       feature_shape=(1, 8, 8), feature_names=tuple(raw.feature_names),
                       class_names=tuple(str(c) for c in raw.target_names))
    raw = skdatasets.load_diabetes()
    return Dataset(name=name.value, X=raw.data, y=raw.target.astype(np.float32),
                   task=TaskKind.REGRESSION, n_classes=0, feature_shape=(raw.data.shape[1],),
                   feature_names=tuple(raw.feature_names))


def _load_csv(path: Path, *, label_column: str, task: TaskKind | None,
              max_classes: int) -> Dataset:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    if len(rows) < 2:
        raise InvalidInput(f"{path} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise InvalidInput(f"{path} has no column {label_column!r} (columns: {header})")
    if header.count(label_column) > 1:
        raise InvalidInput(f"{path} has more than one column named {label_column!r}")
    body = rows[1:]
    if any(len(r) != len(header) for r in body):
        raise InvalidInput(f"{path}: every row must have {len(header)} fields")
    li = header.index(label_column)
    names = tuple(h for i, h in enumerate(header) if i != li)
    if not names:
        raise InvalidInput(f"{path} has no feature columns")
    X = _features(path, body, header, li)
    raw_labels = [r[li].strip() for r in body]
    if any(s == "" for s in raw_labels):
        raise InvalidInput(f"{path}: the label column {label_column!r} has empty values")
    kind, y, class_names = _labels_from_strings(raw_labels, task=task, max_classes=max_classes)
    return Dataset(name=path.stem, X=X, y=y, task=kind,
                   n_classes=len(class_names) if kind is TaskKind.CLASSIFICATION else 0,
                   feature_shape=(X.shape[1],), feature_names=names, class_names=class_names)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _features(path: Path, body: list[list[str]], header: list[str], label_index: int
              ) -> np.ndarray:
    """The feature cells as float64, refusing any cell that is not a finite number a float32
    can hold, by row (the header is row 1) and column."""
    X = np.empty((len(body), len(header) - 1), dtype=np.float64)
    for r, cells in enumerate(body):
        j = 0
        for i, cell in enumerate(cells):
            if i == label_index:
                continue
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
                what = ("is not a number" if value is None else
                        "is not finite" if not math.isfinite(value) else
                        f"is beyond the float32 range (±{_FLOAT32_MAX:.3g})")
                raise InvalidInput(f"{path}: row {r + 2}, column {i + 1} ({header[i]!r}): "
                                   f"{cell.strip()!r} {what}; every feature cell must be a "
                                   "finite number")
            X[r, j] = value
            j += 1
    return X


def _labels_from_strings(raw: list[str], *, task: TaskKind | None,
                         max_classes: int) -> tuple[TaskKind, np.ndarray, tuple[str, ...]]:
    try:
        numbers: np.ndarray | None = np.array([float(s) for s in raw], dtype=np.float64)
    except ValueError:
        numbers = None
    if numbers is not None and not np.isfinite(numbers).all():
        row = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise InvalidInput(f"the label column has NaN or infinite values (row {row + 2}, the "
                           f"header being row 1: {raw[row]!r})")
    if task is None:
        if numbers is None:
            task = TaskKind.CLASSIFICATION
        else:
            integral = bool(np.all(numbers == np.round(numbers)))
            few = len(np.unique(numbers)) <= max_classes
            task = TaskKind.CLASSIFICATION if integral and few else TaskKind.REGRESSION
    if task is TaskKind.REGRESSION:
        if numbers is None:
            raise InvalidInput("a regression label column must be numeric")
        return task, numbers.astype(np.float32), ()
    # Numeric classes sort by value (so "10" comes after "9"); string classes sort as text.
    if numbers is not None:
        values, codes = np.unique(numbers, return_inverse=True)
        names = tuple(_number_name(x) for x in values)
    else:
        str_values, codes = np.unique(np.array(raw), return_inverse=True)
        names = tuple(str(s) for s in str_values)
    if len(names) < 2:
        raise InvalidInput("a classification label column needs at least 2 distinct classes")
    return task, codes.astype(np.int64), names


def _number_name(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
