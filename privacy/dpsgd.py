"""Example-level DP-SGD inside a site's local training, with Opacus.

The neighbouring relation here is *one record of one site* (one patient), not one whole site:
the events this module produces belong on a site's ``EXAMPLE`` ledger track and are never
composed with the site-level events of the secure sum.

* :func:`dpsgd_event` is the event a DP-SGD run *will* cost, known before it starts (so a site
  can check and reserve it): Opacus's Poisson-subsampled Gaussian with sample rate
  ``q = 1 / ⌈n / B⌉`` (the rate Opacus derives from a loader of ``⌈n / B⌉`` batches; it is
  ``B / n`` when ``B`` divides ``n``), ``steps = epochs × ⌈n / B⌉`` and noise multiplier ``z``.
* :func:`private_training` makes a model, optimiser and loader private with
  ``PrivacyEngine.make_private`` (``GradSampleModule`` per-example gradients, clipping to
  ``max_grad_norm``, Gaussian noise ``z · max_grad_norm``, Poisson sampling), lets the caller run
  its loop, and removes Opacus's hooks afterwards, handing back a plain module.
  :meth:`PrivateTraining.event` is the event of the steps actually taken.
* :func:`train_with_dp` is the older one-call form that calibrates ``z`` to a target epsilon.

Randomness: Poisson sampling and noise each use a ``torch.Generator`` seeded by the caller (a
site seeds them from its round seed), so simulations are reproducible and torch's global state
is left alone. Opacus's ``secure_mode`` (a cryptographically secure generator) needs
``torchcsprng``, which is not available here and not a Cohort dependency; a production site
would need it.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import _validate as v
from .accountants import Accountant
from .errors import ConfigurationError
from .events import GaussianEvent

if TYPE_CHECKING:  # opacus is imported where it is used (see _rdp._opacus_rdp)
    from opacus import PrivacyEngine
    from opacus.optimizers import DPOptimizer

__all__ = ["DPTrainingResult", "PrivateTraining", "check_dp_model", "dpsgd_event",
           "merge_steps", "private_training", "train_with_dp"]


class _Defect(enum.Enum):
    """Defects a test may plant to show that its check catches them (CONVENTIONS 12)."""

    NOISE_OFF = "noise off"          # train without noise, still account for z
    NO_CLIPPING = "no clipping"      # per-example gradients left unclipped


# Test-only: never set outside tests.
_TEST_ONLY_DEFECTS: frozenset[_Defect] = frozenset()


def dpsgd_event(*, n_samples: int, batch_size: int, epochs: int,
                noise_multiplier: float) -> GaussianEvent:
    """The example-level event of ``epochs`` epochs of DP-SGD over ``n_samples`` records with
    expected batches of ``batch_size`` (Opacus's Poisson sampling, see the module docstring)."""
    n = v.integer(n_samples, "n_samples", minimum=1)
    batch = v.integer(batch_size, "batch_size", minimum=1)
    epochs = v.integer(epochs, "epochs", minimum=1)
    batches = math.ceil(n / batch)
    return GaussianEvent(noise_multiplier=noise_multiplier, sample_rate=1.0 / batches,
                         steps=epochs * batches)


def merge_steps(events: Iterable[GaussianEvent]) -> list[GaussianEvent]:
    """The same composition with the steps of events of equal (noise, sample rate) added up:
    RDP is linear in the steps, so the epsilon is unchanged, and a long run of DP-SGD rounds
    costs one subsampled-Gaussian RDP curve instead of one per round."""
    steps: dict[tuple[float, float], int] = {}
    for event in events:
        if not isinstance(event, GaussianEvent):
            raise ConfigurationError(f"not a Gaussian event: {event!r}")
        key = (event.noise_multiplier, event.sample_rate)
        steps[key] = steps.get(key, 0) + event.steps
    return [GaussianEvent(noise_multiplier=z, sample_rate=q, steps=n)
            for (z, q), n in steps.items()]


def check_dp_model(model: nn.Module) -> None:
    """Raise ``ConfigurationError`` if Opacus cannot compute per-example gradients of
    ``model`` (e.g. it has BatchNorm). Changes nothing."""
    if not isinstance(model, nn.Module):
        raise ConfigurationError("model must be a torch nn.Module")
    was_training = model.training
    model.train()  # Opacus's validator insists on training mode; restored below
    try:
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
    finally:
        model.train(was_training)
    if errors:
        raise ConfigurationError(f"the model cannot be trained with DP-SGD: {errors[0]}")


@dataclass
class PrivateTraining:
    """One DP-SGD session: the wrapped ``model``, ``optimizer`` and Poisson ``loader``."""

    model: nn.Module
    optimizer: DPOptimizer
    loader: DataLoader
    noise_multiplier: float
    _engine: PrivacyEngine

    def step(self, add_public_grad: Callable[[], None] | None = None) -> None:
        """Clip, sum, noise and scale the per-example gradients, then step. ``add_public_grad``
        runs in between and may add to ``p.grad`` terms that do not depend on private data
        (e.g. FedProx's pull toward the global model): post-processing, so still private."""
        if self.optimizer.pre_step():
            if add_public_grad is not None:
                add_public_grad()
            self.optimizer.original_optimizer.step()

    def event(self) -> GaussianEvent:
        """The event of the steps taken so far (sample rate and steps as Opacus's accountant
        recorded them; noise multiplier as requested). ``ConfigurationError`` before any step
        or without noise (DP-SGD with z = 0 has no guarantee)."""
        history = self._engine.accountant.history
        steps = sum(int(h[2]) for h in history)
        if steps == 0:
            raise ConfigurationError("no DP-SGD step was taken")
        rates = {float(h[1]) for h in history}
        if len(rates) != 1:
            raise ConfigurationError(f"DP-SGD steps with different sample rates {sorted(rates)}")
        return GaussianEvent(noise_multiplier=self.noise_multiplier, sample_rate=rates.pop(),
                             steps=steps)


@contextmanager
def private_training(model: nn.Module, optimizer: torch.optim.Optimizer,
                     data_loader: DataLoader, *, noise_multiplier: float,
                     max_grad_norm: float,
                     noise_generator: torch.Generator) -> Iterator[PrivateTraining]:
    """Within the block, train with the yielded session's model, optimiser and loader (call
    :meth:`PrivateTraining.step` instead of ``optimizer.step``). ``model`` is trained in place;
    on leaving, Opacus's hooks and per-example gradients are removed. The loader's own
    ``generator`` drives Poisson sampling."""
    noise_multiplier = v.nonnegative(noise_multiplier, "noise_multiplier")
    max_grad_norm = v.positive(max_grad_norm, "max_grad_norm")
    if not isinstance(noise_generator, torch.Generator):
        raise ConfigurationError("noise_generator must be a torch.Generator")
    if not isinstance(data_loader, DataLoader) or not isinstance(data_loader.generator,
                                                                 torch.Generator):
        raise ConfigurationError("data_loader must be a DataLoader with its own generator")
    if len(data_loader) == 0:
        raise ConfigurationError("the data loader is empty")
    check_dp_model(model)
    noise = 0.0 if _Defect.NOISE_OFF in _TEST_ONLY_DEFECTS else noise_multiplier
    clip = 1e12 if _Defect.NO_CLIPPING in _TEST_ONLY_DEFECTS else max_grad_norm
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off: see the module docstring.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant=Accountant.RDP.value)  # its history is all we read
        dp_model, dp_optimizer, dp_loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=data_loader,
            noise_multiplier=noise, max_grad_norm=clip, poisson_sampling=True,
            noise_generator=noise_generator)
    session = PrivateTraining(model=dp_model, optimizer=dp_optimizer, loader=dp_loader,
                              noise_multiplier=noise_multiplier, _engine=engine)
    try:
        with warnings.catch_warnings():
            # A model whose first layers are parameter-free gets no input gradients; Opacus's
            # full backward hooks then say so on every step. Harmless here.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            yield session
    finally:
        dp_optimizer.zero_grad(set_to_none=True)  # drops grad_sample and summed_grad too
        dp_model.remove_hooks()


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

    from opacus import PrivacyEngine

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
