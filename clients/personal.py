"""Personalisation: a shared body aggregated securely, a personal head that stays at the site.

* ``FEDPER`` (Arivazhagan et al. 2019): the site trains its whole model locally; only the body
  is sent for aggregation, the head is kept.
* ``FEDREP`` (Collins et al. 2021): an alternating schedule — first ``head_epochs`` epochs on the
  head with the body frozen, then ``epochs`` epochs on the body with the head frozen; only the
  body is sent.

Freezing is temporary (:func:`frozen`): ``requires_grad`` flags are restored afterwards, so a
backbone frozen for transfer learning stays frozen and nothing else does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from torch import nn

from cohort.contract import DPSGDConfig
from privacy import _validate as v
from privacy.events import GaussianEvent
from secagg.errors import ConfigurationError

from .params import Part, param_count
from .training import Optimizer, TrainStats, train_local

__all__ = ["PersonalMode", "PersonalStats", "frozen", "train_part", "train_personal"]


class PersonalMode(enum.Enum):
    FEDPER = "fedper"
    FEDREP = "fedrep"


@dataclass(frozen=True, kw_only=True)
class PersonalStats:
    """The phases of one personalised round: ``head`` (FedRep only) and ``main`` (FedPer: the
    whole model; FedRep: the body)."""

    head: TrainStats | None
    main: TrainStats

    @property
    def n_samples(self) -> int:
        return self.main.n_samples

    @property
    def mean_loss(self) -> float:
        return self.main.mean_loss

    @property
    def dp_event(self) -> GaussianEvent | None:
        """The example-level event of the whole round: both phases draw from the same records
        with the same noise and sample rate, so their steps add up."""
        phases = [s.dp_event for s in (self.head, self.main) if s is not None]
        if not phases or any(e is None for e in phases):
            return None
        first = phases[0]
        if any((e.noise_multiplier, e.sample_rate) != (first.noise_multiplier, first.sample_rate)
               for e in phases):
            raise ConfigurationError("the phases of a personalised round differ in DP-SGD")
        return GaussianEvent(noise_multiplier=first.noise_multiplier,
                             sample_rate=first.sample_rate, steps=sum(e.steps for e in phases))


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Within the block, ``module``'s parameters have ``requires_grad`` False; restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _part(model: nn.Module, part: Part) -> nn.Module:
    if not isinstance(part, Part):
        raise ConfigurationError("part must be a Part")
    sub = getattr(model, part.value, None)
    if not isinstance(sub, nn.Module):
        raise ConfigurationError(f"the model has no {part.value!r} submodule")
    return sub


def train_part(model: nn.Module, X: np.ndarray, y: np.ndarray, *, part: Part, epochs: int,
               lr: float, batch_size: int = 32, optimizer: Optimizer = Optimizer.SGD,
               prox_mu: float = 0.0, seed: int = 0,
               dp_sgd: DPSGDConfig | None = None) -> TrainStats:
    """Train only ``part`` of ``model`` (the other part frozen for the duration)."""
    other = _part(model, Part.HEAD if part is Part.BODY else Part.BODY)
    if param_count(model, part=part) == 0:
        raise ConfigurationError(f"the model's {part.value} has no trainable parameters")
    with frozen(other):
        return train_local(model, X, y, epochs=epochs, lr=lr, batch_size=batch_size,
                           optimizer=optimizer, prox_mu=prox_mu, seed=seed, dp_sgd=dp_sgd)


def train_personal(model: nn.Module, X: np.ndarray, y: np.ndarray, *, mode: PersonalMode,
                   epochs: int, lr: float, head_epochs: int = 1, batch_size: int = 32,
                   optimizer: Optimizer = Optimizer.SGD, prox_mu: float = 0.0,
                   seed: int = 0, dp_sgd: DPSGDConfig | None = None) -> PersonalStats:
    """One personalised local round (see the module docstring)."""
    if not isinstance(mode, PersonalMode):
        raise ConfigurationError("mode must be a PersonalMode")
    seed = v.integer(seed, "seed", minimum=0)
    if mode is PersonalMode.FEDPER:
        main = train_local(model, X, y, epochs=epochs, lr=lr, batch_size=batch_size,
                           optimizer=optimizer, prox_mu=prox_mu, seed=seed, dp_sgd=dp_sgd)
        return PersonalStats(head=None, main=main)
    head_epochs = v.integer(head_epochs, "head_epochs", minimum=1)
    if param_count(model, part=Part.BODY) == 0:
        raise ConfigurationError("FedRep needs a trainable body")
    head = train_part(model, X, y, part=Part.HEAD, epochs=head_epochs, lr=lr,
                      batch_size=batch_size, optimizer=optimizer, seed=seed, dp_sgd=dp_sgd)
    main = train_part(model, X, y, part=Part.BODY, epochs=epochs, lr=lr, batch_size=batch_size,
                      optimizer=optimizer, prox_mu=prox_mu, seed=seed + 1, dp_sgd=dp_sgd)
    return PersonalStats(head=head, main=main)
