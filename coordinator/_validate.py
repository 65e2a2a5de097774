"""Argument checks shared by the coordinator's modules.

Hyper-parameters that cannot work raise :class:`ConfigurationError`; a caller's data that the
operation cannot take (wrong shape, NaN, a non-positive total weight) raises
:class:`InvalidInput`. Every check returns a clean value and changes nothing.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from secagg.errors import ConfigurationError, InvalidInput

__all__ = ["hyperparameter", "positive_weight", "same_value", "vector"]


def hyperparameter(value: object, name: str, *, low: float, high: float | None = None,
                   low_open: bool = False, high_open: bool = True) -> float:
    """A finite real in [low, high) (open/closed ends as asked), else ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    if out < low or (low_open and out == low):
        raise ConfigurationError(f"{name} must be {'>' if low_open else '>='} {low}, got {out}")
    if high is not None and (out > high or (high_open and out == high)):
        raise ConfigurationError(f"{name} must be {'<' if high_open else '<='} {high}, got {out}")
    return out


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


def same_value(state: object, mine: object, name: str) -> None:
    """Refuse a saved state whose ``name`` differs from this object's (ConfigurationError)."""
    if state != mine:
        raise ConfigurationError(f"saved state has {name}={state!r}, this object has {mine!r}")
