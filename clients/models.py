"""Model factory: every model is a ``body`` (feature extractor) followed by a ``head``.

Personalisation shares the body and keeps the head; transfer learning loads a pretrained body.
Kinds (:class:`ModelKind`):

* ``LOGISTIC`` — multinomial logistic regression (linear regression when ``n_outputs`` is 1);
  its body only flattens and has no parameters, so all of it is head.
* ``MLP`` — two ReLU layers of width ``hidden``.
* ``CNN`` — for image input ``(C, H, W)`` (the 1×8×8 digits): two 3×3 convolutions, a 2×2 max
  pool and a dense layer; for tabular input ``(d,)``: the same over a 1-D "signal" of the
  ``d`` standardised features.

Inputs may be given flat ``(n, prod(input_shape))`` or shaped ``(n, *input_shape)``.
Models have no dropout or batch norm, so training is deterministic given the shuffling seed.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn

from privacy import _validate as v
from secagg.errors import ConfigurationError, InvalidInput

__all__ = ["BodyHeadModel", "ModelKind", "make_model"]


class ModelKind(enum.Enum):
    LOGISTIC = "logistic"
    MLP = "mlp"
    CNN = "cnn"


class _Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != self.shape and math.prod(x.shape[1:]) == math.prod(self.shape):
            return x.reshape(x.shape[0], *self.shape)
        if x.shape[1:] != self.shape:
            raise InvalidInput(f"input samples have shape {tuple(x.shape[1:])}, "
                               f"the model expects {self.shape}")
        return x


class BodyHeadModel(nn.Module):
    """``head(body(x))``, remembering how it was built (for checkpoints and shape checks)."""

    def __init__(self, *, kind: ModelKind, input_shape: tuple[int, ...], n_outputs: int,
                 hidden: int, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.kind = kind
        self.input_shape = input_shape
        self.n_outputs = n_outputs
        self.hidden = hidden
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_model(kind: ModelKind, *, input_shape: tuple[int, ...], n_outputs: int,
               hidden: int = 64, seed: int | None = None) -> BodyHeadModel:
    """A fresh model; with ``seed``, its initial weights are deterministic."""
    if not isinstance(kind, ModelKind):
        raise ConfigurationError("kind must be a ModelKind")
    shape = tuple(v.integer(d, "input_shape entry", minimum=1) for d in input_shape)
    if len(shape) not in (1, 3):
        raise ConfigurationError(f"input_shape must be (d,) or (C, H, W), got {input_shape}")
    n_outputs = v.integer(n_outputs, "n_outputs", minimum=1)
    hidden = v.integer(hidden, "hidden", minimum=1)
    seed = v.seed(seed)
    if seed is None:
        body, head = _build(kind, shape, n_outputs, hidden)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            body, head = _build(kind, shape, n_outputs, hidden)
    return BodyHeadModel(kind=kind, input_shape=shape, n_outputs=n_outputs, hidden=hidden,
                         body=body, head=head)


def _build(kind: ModelKind, shape: tuple[int, ...], n_outputs: int,
           hidden: int) -> tuple[nn.Module, nn.Module]:
    flat = math.prod(shape)
    if kind is ModelKind.LOGISTIC:
        return nn.Sequential(_Reshape(shape), nn.Flatten()), nn.Linear(flat, n_outputs)
    if kind is ModelKind.MLP:
        body = nn.Sequential(_Reshape(shape), nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(),
                             nn.Linear(hidden, hidden), nn.ReLU())
        return body, nn.Linear(hidden, n_outputs)
    if len(shape) == 3:
        channels, height, width = shape
        if height < 2 or width < 2:
            raise ConfigurationError("the CNN needs images of at least 2×2")
        body = nn.Sequential(
            _Reshape(shape), nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * (height // 2) * (width // 2), hidden), nn.ReLU())
    else:
        (d,) = shape
        body = nn.Sequential(
            _Reshape((1, d)), nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(),
            nn.Conv1d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * d, hidden), nn.ReLU())
    return body, nn.Linear(hidden, n_outputs)
