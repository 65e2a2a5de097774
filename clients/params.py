"""A model's trainable parameters as one flat float64 vector, and back.

The coordinator aggregates flat vectors; these helpers fix their layout: the order of
``named_parameters()`` of the model (or of its ``body`` / ``head`` when ``part`` says so),
restricted to parameters with ``requires_grad`` — so a frozen backbone is not part of the
federated vector. Loading checks length and finiteness *before* touching the model.
"""

from __future__ import annotations

import enum

import numpy as np
import torch
from torch import nn

from secagg.errors import ConfigurationError, InvalidInput

__all__ = ["Part", "check_flat_params", "get_flat_params", "param_count", "set_flat_params", "trainable_params"]


class Part(enum.Enum):
    """Which submodule of a body/head model a flat vector refers to (``None`` = the whole)."""

    BODY = "body"
    HEAD = "head"


def _module(model: nn.Module, part: Part | None) -> nn.Module:
    if part is None:
        return model
    if not isinstance(part, Part):
        raise ConfigurationError(f"part must be a Part or None, got {part!r}")
    sub = getattr(model, part.value, None)
    if not isinstance(sub, nn.Module):
        raise ConfigurationError(f"the model has no {part.value!r} submodule")
    return sub


def trainable_params(model: nn.Module, *, part: Part | None = None) -> list[nn.Parameter]:
    """The parameters a flat vector covers, in its order."""
    return [p for _, p in _module(model, part).named_parameters() if p.requires_grad]


def param_count(model: nn.Module, *, part: Part | None = None) -> int:
    return sum(p.numel() for p in trainable_params(model, part=part))


def get_flat_params(model: nn.Module, *, part: Part | None = None) -> np.ndarray:
    """A copy of the trainable parameters of ``model`` (or ``part``) as a float64 vector."""
    params = trainable_params(model, part=part)
    if not params:
        return np.zeros(0, dtype=np.float64)
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in params]).numpy().copy()


def check_flat_params(model: nn.Module, flat: np.ndarray, *, part: Part | None = None) -> np.ndarray:
    """``flat`` as an array, after checking it fits ``model`` (or ``part``): 1-D, numeric, the
    right length, finite. Raises ``InvalidInput``; touches nothing."""
    params = trainable_params(model, part=part)
    arr = np.asarray(flat)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
        raise InvalidInput(f"flat parameters must be a 1-D numeric vector, got {arr.shape}")
    expected = sum(p.numel() for p in params)
    if arr.shape[0] != expected:
        raise InvalidInput(f"flat parameters have {arr.shape[0]} entries, the model "
                           f"({'whole' if part is None else part.value}) has {expected}")
    if not np.isfinite(arr).all():
        raise InvalidInput("flat parameters contain NaN or infinite values")
    return arr


def set_flat_params(model: nn.Module, flat: np.ndarray, *, part: Part | None = None) -> None:
    """Load ``flat`` (as made by :func:`get_flat_params` with the same ``part``) into ``model``."""
    arr = check_flat_params(model, flat, part=part)
    params = trainable_params(model, part=part)
    offset = 0
    with torch.no_grad():
        for p in params:
            chunk = arr[offset:offset + p.numel()].reshape(tuple(p.shape))
            p.copy_(torch.from_numpy(np.ascontiguousarray(chunk)).to(p.dtype))
            offset += p.numel()
