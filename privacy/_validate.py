"""Small argument checks shared by the privacy modules; each raises ``ConfigurationError``."""

from __future__ import annotations

import math
import numbers

from secagg.errors import ConfigurationError


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
