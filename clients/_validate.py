"""Small argument checks shared by the ``clients`` modules (internal).

Parameter problems raise :class:`secagg.errors.ConfigurationError`; problems with a caller's
data (shapes, dtypes, non-finite values) raise :class:`secagg.errors.InvalidInput`.
"""

from __future__ import annotations

import math

import numpy as np

from privacy._validate import integer, nonnegative, positive
from privacy._validate import real as _real
from secagg.errors import ConfigurationError, InvalidInput

# integer, positive and nonnegative are the privacy layer's checks (same rules, same error).
__all__ = ["integer", "real", "positive", "nonnegative", "fraction", "unit_interval", "seed",
           "features", "labels"]


def real(value: object, name: str) -> float:
    """A finite real number."""
    out = _real(value, name)
    if not math.isfinite(out):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return out


def fraction(value: object, name: str) -> float:
    """A share strictly between 0 and 1."""
    out = real(value, name)
    if not 0 < out < 1:
        raise ConfigurationError(f"{name} must be in (0, 1), got {value!r}")
    return out


def unit_interval(value: object, name: str) -> float:
    """A weight in [0, 1]."""
    out = real(value, name)
    if not 0 <= out <= 1:
        raise ConfigurationError(f"{name} must be in [0, 1], got {value!r}")
    return out


def seed(value: object, name: str = "seed") -> int | None:
    if value is None:
        return None
    return integer(value, name, minimum=0)


def features(X: object, name: str = "X") -> np.ndarray:
    """A finite float32 array with at least one sample (first axis = samples)."""
    try:
        arr = np.array(X, dtype=np.float32)  # a writable copy: torch refuses read-only arrays
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be a numeric array: {exc}") from exc
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise InvalidInput(f"{name} must have shape (n_samples, ...) with n_samples >= 1, "
                           f"got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} contains NaN or infinite values")
    return arr


def labels(y: object, n: int, name: str = "y") -> np.ndarray:
    """Integer class labels (int64) or float regression targets (float32), one per sample."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidInput(f"{name} must be 1-D with {n} entries, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidInput(f"{name} contains NaN or infinite values")
        return arr.astype(np.float32)
    raise InvalidInput(f"{name} must be integer (classes) or float (regression), got {arr.dtype}")
