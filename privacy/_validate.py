"""The argument checks of every role package (privacy, clients, coordinator, the contract):
one module, so one rule means one thing everywhere (internal; CONVENTIONS 15).

Parameters that cannot work raise ``ConfigurationError``; a caller's own data (shapes, dtypes,
non-finite values, weights) raises ``InvalidInput``. Every check returns a clean value and
changes nothing. It lives in ``privacy`` because that is the lowest package the sites, the
coordinator and the contract all import (``secagg`` stays free of them: it has its own, in its
message parser).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from secagg.errors import ConfigurationError, InvalidInput


def real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if math.isnan(out):
        raise ConfigurationError(f"{name} must not be NaN")
    return out


def positive(value: object, name: str, *, allow_inf: bool = False) -> float:
    out = real(value, name)
    if not out > 0 or (math.isinf(out) and not allow_inf):
        raise ConfigurationError(f"{name} must be positive and finite, got {value!r}")
    return out


def nonnegative(value: object, name: str) -> float:
    out = real(value, name)
    if not (out >= 0 and math.isfinite(out)):
        raise ConfigurationError(f"{name} must be >= 0 and finite, got {value!r}")
    return out


def probability(value: object, name: str, *, open_low: bool = True, open_high: bool = True) -> float:
    out = real(value, name)
    low_ok = out > 0 if open_low else out >= 0
    high_ok = out < 1 if open_high else out <= 1
    if not (low_ok and high_ok):
        raise ConfigurationError(f"{name} must be in the probability range, got {value!r}")
    return out


def integer(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum}, got {out}")
    return out


def bounded(value: object, name: str, *, low: float, high: float) -> float:
    """A finite real in [low, high] (a range in which the caller's arithmetic is exact)."""
    out = real(value, name)
    if not low <= out <= high:
        raise ConfigurationError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
    return out


# -- the sites' and the coordinator's checks (one module for every role: CONVENTIONS 15) --------
# ConfigurationError for parameters; InvalidInput for a caller's own data (shapes, NaN, weights).

def finite(value: object, name: str) -> float:
    """A finite real number."""
    out = real(value, name)
    if not math.isfinite(out):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return out


def fraction(value: object, name: str) -> float:
    """A share strictly between 0 and 1."""
    out = finite(value, name)
    if not 0 < out < 1:
        raise ConfigurationError(f"{name} must be in (0, 1), got {value!r}")
    return out


def unit_interval(value: object, name: str) -> float:
    """A weight in [0, 1]."""
    out = finite(value, name)
    if not 0 <= out <= 1:
        raise ConfigurationError(f"{name} must be in [0, 1], got {value!r}")
    return out


def seed(value: object, name: str = "seed") -> int | None:
    """A non-negative integer seed, or None (fresh randomness)."""
    if value is None:
        return None
    return integer(value, name, minimum=0)


def hyperparameter(value: object, name: str, *, low: float, high: float | None = None,
                   low_open: bool = False, high_open: bool = True) -> float:
    """A finite real in [low, high) (open/closed ends as asked), else ConfigurationError."""
    out = finite(value, name)
    if out < low or (low_open and out == low):
        raise ConfigurationError(f"{name} must be {'>' if low_open else '>='} {low}, got {out}")
    if high is not None and (out > high or (high_open and out == high)):
        raise ConfigurationError(f"{name} must be {'<' if high_open else '<='} {high}, got {out}")
    return out


def same_value(state: object, mine: object, name: str) -> None:
    """Refuse a saved state whose ``name`` differs from this object's (ConfigurationError)."""
    if state != mine:
        raise ConfigurationError(f"saved state has {name}={state!r}, this object has {mine!r}")


def vector(value: Any, name: str, *, dim: int | None = None) -> np.ndarray:
    """A finite 1-D float64 copy of ``value`` (of length ``dim`` when given), else InvalidInput."""
    try:
        x = np.asarray(value)
    except Exception as exc:  # ragged sequences and the like
        raise InvalidInput(f"{name} is not an array: {exc}") from exc
    if x.dtype.kind not in "fiu" or x.ndim != 1 or x.size == 0:
        raise InvalidInput(f"{name} must be a non-empty 1-D real vector, got shape {x.shape} "
                           f"and dtype {x.dtype}")
    if dim is not None and x.size != dim:
        raise InvalidInput(f"{name} has {x.size} entries, expected {dim}")
    out = x.astype(np.float64, copy=True)
    if not np.isfinite(out).all():
        raise InvalidInput(f"{name} contains NaN or infinite entries")
    return out


def positive_weight(value: object, name: str) -> float:
    """A finite real > 0 (a total weight), else InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out > 0):
        raise InvalidInput(f"{name} must be positive and finite, got {value!r}")
    return out


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


def weight(value: object, owner: object, *, max_weight: float, integral: bool) -> float:
    """A site's weight in [0, max_weight] (an integer sample count when ``integral``), else
    InvalidInput naming ``owner``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"site {owner!r}: weight must be a real number, got {value!r}")
    w = float(value)
    if not (math.isfinite(w) and 0.0 <= w <= max_weight):
        raise InvalidInput(f"site {owner!r}: weight must lie in [0, max_weight={max_weight}], "
                           f"got {value!r}")
    if integral and not w.is_integer():
        raise InvalidInput(f"site {owner!r}: weight must be an integer (a sample count), "
                           f"got {value!r}")
    return w
