"""Example-level DP-SGD inside a site's local training, with Opacus.

:func:`train_with_dp` makes a model, optimiser and data loader private with Opacus's
``PrivacyEngine.make_private_with_epsilon`` (Poisson sampling, per-example clipping, Gaussian
noise calibrated to reach ``target_epsilon`` after ``epochs``), trains, and returns the epsilon
Opacus's accountant reports together with the frozen ``GaussianEvent`` to charge in the site's
ledger. The model is trained in place; Opacus's hooks are removed afterwards.
Noise comes from torch's generator (Opacus's ``secure_mode`` needs ``torchcsprng``, which is
not a Cohort dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader

from . import _validate as v
from .accountants import Accountant
from .errors import ConfigurationError
from .events import GaussianEvent

__all__ = ["DPTrainingResult", "train_with_dp"]


@dataclass(frozen=True, kw_only=True)
class DPTrainingResult:
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    event: GaussianEvent
    final_loss: float


def train_with_dp(model: nn.Module, data_loader: DataLoader, *, target_epsilon: float,
                  target_delta: float, epochs: int, max_grad_norm: float,
                  learning_rate: float = 0.1,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                  accountant: Accountant = Accountant.RDP) -> DPTrainingResult:
    """Train ``model`` on ``data_loader`` under (target_epsilon, target_delta) example-level DP
    with SGD, and return the epsilon spent (Opacus's accountant) and the event to charge."""
    target_epsilon = v.positive(target_epsilon, "target_epsilon")
    target_delta = v.probability(target_delta, "target_delta")
    epochs = v.integer(epochs, "epochs", minimum=1)
    max_grad_norm = v.positive(max_grad_norm, "max_grad_norm")
    learning_rate = v.positive(learning_rate, "learning_rate")
    if not isinstance(accountant, Accountant):
        raise ConfigurationError("accountant must be an Accountant")
    if len(data_loader) == 0:
        raise ConfigurationError("the data loader is empty")
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()

    engine = PrivacyEngine(accountant=accountant.value)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    dp_model, dp_optimizer, dp_loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, data_loader=data_loader,
        target_epsilon=target_epsilon, target_delta=target_delta, epochs=epochs,
        max_grad_norm=max_grad_norm)
    last_loss = float("nan")
    try:
        dp_model.train()
        for _ in range(epochs):
            for features, labels in dp_loader:
                # Every sampled batch is a step, even an empty one (Poisson sampling): that is
                # what the subsampled-Gaussian accounting assumes.
                dp_optimizer.zero_grad()
                loss = loss_fn(dp_model(features), labels)
                loss.backward()
                dp_optimizer.step()
                if len(features):
                    last_loss = float(loss.detach())
        epsilon = float(engine.get_epsilon(target_delta))
    finally:
        dp_model.remove_hooks()  # hand the caller back a plain module
    history = engine.accountant.history
    steps = sum(h[2] for h in history)
    noise, rate = float(dp_optimizer.noise_multiplier), float(history[0][1]) if history else 0.0
    if steps == 0:
        raise ConfigurationError("no training step was taken")
    event = GaussianEvent(noise_multiplier=noise, sample_rate=rate, steps=steps)
    return DPTrainingResult(epsilon=epsilon, delta=target_delta, noise_multiplier=noise,
                            sample_rate=rate, steps=steps, event=event, final_loss=last_loss)
