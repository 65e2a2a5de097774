"""Federated distillation on the public reference set (FedMD / FedDF style).

Sites with different architectures share no parameters; instead each predicts on the public
split (:func:`predict_soft`), the predictions are averaged securely into a consensus, and each
site distils toward it (:func:`distill`): the loss is
``(1 − alpha_ce) · T² · KL(consensus ‖ softmax(z / T))`` on public batches (the T² keeps the
gradient scale independent of the temperature, Hinton et al. 2015), plus ``alpha_ce`` times the
cross-entropy on the site's private data when it is given. A model with one output is a
regression model: its "soft" predictions are the predictions themselves and the distillation
loss is the squared error to the consensus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from privacy import _validate as v
from secagg.errors import ConfigurationError, InvalidInput

from .params import trainable_params
from .training import Optimizer, batches, data_loss, make_optimizer

__all__ = ["DistillStats", "distill", "distillation_loss", "predict_soft"]


@dataclass(frozen=True, kw_only=True)
class DistillStats:
    n_public: int
    mean_loss: float
    epoch_losses: tuple[float, ...]


def _is_regression(model: nn.Module) -> bool:
    return getattr(model, "n_outputs", None) == 1


def predict_soft(model: nn.Module, X_public: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities ``softmax(z / T)`` as float64 ``(n, C)``; for a regression model,
    its predictions ``(n,)``."""
    temperature = v.positive(temperature, "temperature")
    X = torch.from_numpy(v.features(X_public, "X_public"))
    model.eval()
    with torch.no_grad():
        out = model(X).to(torch.float64)
    if _is_regression(model):
        return out.reshape(-1).numpy()
    return torch.softmax(out / temperature, dim=1).numpy()


def _check_targets(model: nn.Module, targets: np.ndarray, n: int) -> torch.Tensor:
    arr = np.asarray(targets, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise InvalidInput("targets contain NaN or infinite values")
    if _is_regression(model):
        if arr.shape != (n,):
            raise InvalidInput(f"regression targets must have shape ({n},), got {arr.shape}")
        return torch.from_numpy(arr.astype(np.float32))
    n_out = getattr(model, "n_outputs", arr.shape[-1] if arr.ndim == 2 else -1)
    if arr.shape != (n, n_out):
        raise InvalidInput(f"targets must have shape ({n}, {n_out}), got {arr.shape}")
    if (arr < 0).any() or not np.allclose(arr.sum(axis=1), 1.0, atol=1e-4):
        raise InvalidInput("targets must be probability vectors (non-negative, summing to 1)")
    return torch.from_numpy(arr.astype(np.float32))


def _kd_loss(out: torch.Tensor, target: torch.Tensor, temperature: float,
             regression: bool) -> torch.Tensor:
    if regression:
        return F.mse_loss(out.reshape(-1), target)
    log_q = F.log_softmax(out / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_q, target, reduction="batchmean")


def distillation_loss(model: nn.Module, X_public: np.ndarray, targets: np.ndarray, *,
                      temperature: float = 1.0) -> float:
    """The T²-scaled KL (or squared error for regression) of ``model`` to ``targets``."""
    temperature = v.positive(temperature, "temperature")
    X = torch.from_numpy(v.features(X_public, "X_public"))
    target = _check_targets(model, targets, X.shape[0])
    model.eval()
    with torch.no_grad():
        return float(_kd_loss(model(X), target, temperature, _is_regression(model)))


def distill(model: nn.Module, X_public: np.ndarray, targets: np.ndarray, *, epochs: int,
            lr: float, temperature: float = 1.0, alpha_ce: float = 0.0,
            X_private: np.ndarray | None = None, y_private: np.ndarray | None = None,
            batch_size: int = 32, optimizer: Optimizer = Optimizer.ADAM,
            seed: int = 0) -> DistillStats:
    """Train ``model`` in place toward the consensus ``targets`` on the public set; with
    ``alpha_ce`` > 0, mix in the private loss on (``X_private``, ``y_private``)."""
    epochs = v.integer(epochs, "epochs", minimum=1)
    lr = v.positive(lr, "lr")
    temperature = v.positive(temperature, "temperature")
    alpha_ce = v.unit_interval(alpha_ce, "alpha_ce")
    batch_size = v.integer(batch_size, "batch_size", minimum=1)
    seed_value = v.integer(seed, "seed", minimum=0)
    if (X_private is None) != (y_private is None):
        raise ConfigurationError("give both X_private and y_private, or neither")
    if (alpha_ce > 0) != (X_private is not None):
        raise ConfigurationError(
            "alpha_ce > 0 needs private data, and private data needs alpha_ce > 0")
    X = torch.from_numpy(v.features(X_public, "X_public"))
    target = _check_targets(model, targets, X.shape[0])
    private: tuple[torch.Tensor, torch.Tensor] | None = None
    if X_private is not None:
        Xp = v.features(X_private, "X_private")
        yp = v.labels(y_private, Xp.shape[0], "y_private")
        private = (torch.from_numpy(Xp), torch.from_numpy(yp))
    params = trainable_params(model)
    if not params:
        raise ConfigurationError("the model has no trainable parameters")
    opt = make_optimizer(optimizer, params, lr)
    generator = torch.Generator().manual_seed(seed_value)
    regression = _is_regression(model)
    private_batches: list[torch.Tensor] = []
    model.train()
    epoch_losses: list[float] = []
    for _ in range(epochs):
        total = 0.0
        for idx in batches(X.shape[0], batch_size, generator):
            opt.zero_grad()
            loss = (1 - alpha_ce) * _kd_loss(model(X[idx]), target[idx], temperature, regression)
            if private is not None:
                if not private_batches:
                    private_batches = batches(private[0].shape[0], batch_size, generator)
                pidx = private_batches.pop()
                loss = loss + alpha_ce * data_loss(model(private[0][pidx]), private[1][pidx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        epoch_losses.append(total / X.shape[0])
    model.eval()
    return DistillStats(n_public=int(X.shape[0]), mean_loss=epoch_losses[-1],
                        epoch_losses=tuple(epoch_losses))
