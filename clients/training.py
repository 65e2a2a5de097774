"""Local training (FedAvg / FedProx) and evaluation of a body/head model on a site's arrays.

The loss follows the labels: int64 labels mean classification (cross-entropy over the model's
outputs), float32 targets mean regression (mean squared error on a single output). FedProx adds
``prox_mu / 2 · ‖w − anchor‖²`` over the trainable parameters, where ``anchor`` is the global
model as a flat vector (by default: the parameters the model had when training started).
Shuffling uses a private ``torch.Generator`` seeded from ``seed``, so on CPU a run is
deterministic and leaves torch's global random state alone.

With ``dp_sgd`` (a :class:`clients.DPSGDConfig`), training is example-level DP-SGD through
Opacus (:func:`privacy.dpsgd.private_training`): Poisson-sampled batches of expected size
``batch_size``, per-example gradients clipped and noised; the FedProx pull is added after the
noise (it depends only on the public global model, so it is post-processing). Sampling and
noise use two generators derived from ``seed``. The run's example-level event is returned in
:attr:`TrainStats.dp_event`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from cohort.contract import DPSGDConfig
from privacy import _validate as v
from privacy.dpsgd import check_dp_model, private_training
from privacy.events import GaussianEvent
from secagg.errors import ConfigurationError, InvalidInput

from .params import get_flat_params, trainable_params

__all__ = ["EvalResult", "Optimizer", "TrainStats", "check_training_data", "evaluate",
           "train_local"]


class Optimizer(enum.Enum):
    SGD = "sgd"
    ADAM = "adam"


@dataclass(frozen=True, kw_only=True)
class TrainStats:
    """What a local training run did: samples seen per epoch, and the mean loss of the last
    epoch (the data loss, without the proximal term) and of every epoch. With DP-SGD, the
    losses are over the records the Poisson batches actually drew, and ``dp_event`` is the
    example-level event of the run."""

    n_samples: int
    mean_loss: float
    epoch_losses: tuple[float, ...]
    steps: int
    dp_event: GaussianEvent | None = None


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    """Classification: ``accuracy`` and cross-entropy ``loss``; regression: ``r2`` and
    ``mse`` (= ``loss``). Fields of the other task are ``None``."""

    n_samples: int
    loss: float
    accuracy: float | None = None
    r2: float | None = None
    mse: float | None = None


def check_training_data(model: nn.Module, X: np.ndarray, y: np.ndarray) -> None:
    """Raise ``InvalidInput`` unless (``X``, ``y``) can train ``model``. Changes nothing."""
    _tensors(model, X, y)


def _tensors(model: nn.Module, X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    X = v.features(X)
    y = v.labels(y, X.shape[0])
    n_out = getattr(model, "n_outputs", None)
    if y.dtype == np.int64:
        if y.min() < 0 or (n_out is not None and y.max() >= n_out):
            raise InvalidInput(f"class labels must lie in [0, {n_out})")
    elif n_out is not None and n_out != 1:
        raise InvalidInput("float targets (regression) need a model with one output")
    return torch.from_numpy(X), torch.from_numpy(y)


def data_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer labels, mean squared error for float targets."""
    if target.dtype == torch.int64:
        return F.cross_entropy(output, target)
    return F.mse_loss(output.reshape(-1), target)


def make_optimizer(kind: Optimizer, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if kind is Optimizer.SGD:
        return torch.optim.SGD(params, lr=lr)
    if kind is Optimizer.ADAM:
        return torch.optim.Adam(params, lr=lr)
    raise ConfigurationError("optimizer must be an Optimizer")


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's shuffled mini-batch index tensors."""
    order = torch.randperm(n, generator=generator)
    return list(torch.split(order, batch_size))


def train_local(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
                batch_size: int = 32, optimizer: Optimizer = Optimizer.SGD,
                prox_mu: float = 0.0, anchor: np.ndarray | None = None,
                seed: int = 0, dp_sgd: DPSGDConfig | None = None) -> TrainStats:
    """Train ``model``'s trainable parameters in place; return :class:`TrainStats`. Every
    argument is checked before the model is touched."""
    epochs = v.integer(epochs, "epochs", minimum=1)
    lr = v.positive(lr, "lr")
    batch_size = v.integer(batch_size, "batch_size", minimum=1)
    prox_mu = v.nonnegative(prox_mu, "prox_mu")
    seed_value = v.integer(seed, "seed", minimum=0)
    if not isinstance(optimizer, Optimizer):
        raise ConfigurationError("optimizer must be an Optimizer")
    if dp_sgd is not None:
        if not isinstance(dp_sgd, DPSGDConfig):
            raise ConfigurationError("dp_sgd must be a DPSGDConfig or None")
        check_dp_model(model)
    Xt, yt = _tensors(model, X, y)
    params = trainable_params(model)
    if not params:
        raise ConfigurationError("the model has no trainable parameters")
    anchor_params: list[torch.Tensor] = []
    if prox_mu > 0:
        flat = get_flat_params(model) if anchor is None else np.asarray(anchor, dtype=np.float64)
        if flat.ndim != 1 or flat.shape[0] != sum(p.numel() for p in params):
            raise InvalidInput("anchor must be a flat vector of the model's trainable parameters")
        if not np.isfinite(flat).all():
            raise InvalidInput("anchor contains NaN or infinite values")
        offset = 0
        for p in params:
            chunk = flat[offset:offset + p.numel()].reshape(tuple(p.shape))
            anchor_params.append(torch.from_numpy(chunk.copy()).to(p.dtype))
            offset += p.numel()
    opt = make_optimizer(optimizer, params, lr)
    if dp_sgd is not None:
        return _train_dp_sgd(model, Xt, yt, opt, params, anchor_params, prox_mu=prox_mu,
                             epochs=epochs, batch_size=batch_size, dp_sgd=dp_sgd,
                             seed=seed_value)
    generator = torch.Generator().manual_seed(seed_value)
    model.train()
    epoch_losses: list[float] = []
    steps = 0
    for _ in range(epochs):
        total = 0.0
        for idx in batches(len(yt), batch_size, generator):
            opt.zero_grad()
            loss = data_loss(model(Xt[idx]), yt[idx])
            objective = loss
            if anchor_params:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor_params))
                objective = loss + 0.5 * prox_mu * prox
            objective.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            steps += 1
        epoch_losses.append(total / len(yt))
    model.eval()
    return TrainStats(n_samples=len(yt), mean_loss=epoch_losses[-1],
                      epoch_losses=tuple(epoch_losses), steps=steps)


def _train_dp_sgd(model: nn.Module, Xt: torch.Tensor, yt: torch.Tensor,
                  opt: torch.optim.Optimizer, params: list[nn.Parameter],
                  anchor_params: list[torch.Tensor], *, prox_mu: float, epochs: int,
                  batch_size: int, dp_sgd: DPSGDConfig, seed: int) -> TrainStats:
    sampling_seed, noise_seed = np.random.SeedSequence([seed, 0xD95]).generate_state(2)
    loader = DataLoader(TensorDataset(Xt, yt), batch_size=batch_size,
                        generator=torch.Generator().manual_seed(int(sampling_seed)))
    noise = torch.Generator().manual_seed(int(noise_seed))

    def pull_toward_anchor() -> None:  # FedProx: public (the global model), added after noise
        with torch.no_grad():
            for p, a in zip(params, anchor_params):
                p.grad.add_(prox_mu * (p.detach() - a))

    epoch_losses: list[float] = []
    steps = 0
    model.train()
    with private_training(model, opt, loader, noise_multiplier=dp_sgd.noise_multiplier,
                          max_grad_norm=dp_sgd.max_grad_norm, noise_generator=noise) as session:
        for _ in range(epochs):
            total, seen = 0.0, 0
            for features, labels in session.loader:
                # Every Poisson batch is a step, even an empty one: the accounting assumes it.
                session.optimizer.zero_grad()
                loss = data_loss(session.model(features), labels)
                loss.backward()
                session.step(pull_toward_anchor if anchor_params else None)
                if len(labels):
                    total += float(loss.detach()) * len(labels)
                    seen += len(labels)
                steps += 1
            epoch_losses.append(total / seen if seen else math.nan)
        event = session.event()
    model.eval()
    return TrainStats(n_samples=len(yt), mean_loss=epoch_losses[-1],
                      epoch_losses=tuple(epoch_losses), steps=steps, dp_event=event)


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray) -> EvalResult:
    """Accuracy and cross-entropy (classification) or R² and MSE (regression) of ``model``."""
    Xt, yt = _tensors(model, X, y)
    model.eval()
    with torch.no_grad():
        out = model(Xt)
        loss = float(data_loss(out, yt))
    if yt.dtype == torch.int64:
        accuracy = float((out.argmax(dim=1) == yt).to(torch.float64).mean())
        return EvalResult(n_samples=len(yt), loss=loss, accuracy=accuracy)
    target = yt.to(torch.float64)
    variance = float(((target - target.mean()) ** 2).mean())
    r2 = 1.0 - loss / variance if variance > 0 else 0.0
    return EvalResult(n_samples=len(yt), loss=loss, r2=r2, mse=loss)
