"""``audit canaries``: empirical lower bounds (and estimates) of epsilon from one run.

Example level (DP-SGD at one site), Steinke, Nasr, Jagielski 2023. :func:`example_canary_run`
trains a model with DP-SGD (``privacy.dpsgd.private_training``, the same Opacus path a site
uses) on the site's records plus ``m`` canary records, each included with probability 1/2 by a
generator drawn before training. Canary j owns one extra input coordinate that no real record
uses (x = e_{d+j}, a random label; the first layer's weights on the canary coordinates start
at zero), so only canary j's own gradient moves its weights: a Dirac canary made of a record.
Its score is how much lower its loss is than that of a blank input (its coordinate zeroed).
The auditor guesses "in" for the k highest scores and "out" for the k lowest, abstaining on
the rest; the lower bound is :func:`bounds.one_run_epsilon_lower_bound`. The guess counts are
fixed before the scores are seen (``guesses``); trying several (``guess_grid``) pays a
Bonferroni correction: each is tested at ``(1 - confidence) / len(grid)``, and the largest of
the corrected bounds is reported.

Client level (the federated run), Andrew et al. 2024: :func:`client_canary_estimate` takes
the cosines between the run's final model update and the directions of the canary clients it
inserted, and of directions it never inserted, and returns the Gaussian-fit epsilon (both
Gaussians with the null's spread, measured from many never-inserted directions). The run
itself (canary clients in the real secure sum) is driven from ``coordinator.simulation.canaries``
because the privacy package may not import the coordinator or the sites (DESIGN section 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import _validate as v
from ..accountants import compute_epsilon
from ..dpsgd import private_training
from ..errors import ConfigurationError
from ..events import event_to_dict
from .bounds import gaussian_pair_epsilon, guesses_from_scores, one_run_epsilon_lower_bound

__all__ = ["ExampleCanaryResult", "ClientCanaryResult", "example_canary_run",
           "bound_from_scores", "client_canary_estimate"]


@dataclass
class ExampleCanaryResult:
    canaries: int
    included: np.ndarray
    scores: np.ndarray
    claimed_epsilon: float
    delta: float
    event: dict[str, Any]
    lower_bound: float
    guesses: int
    right: int
    thresholds: str  # how the guess counts were chosen
    tried: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def bound_from_scores(scores: np.ndarray, included: np.ndarray, *, delta: float,
                      confidence: float, guesses: int | None = None,
                      guess_grid: Sequence[int] | None = None) -> tuple[float, int, int, str,
                                                                        list[dict[str, Any]]]:
    """(bound, guesses made, right, how thresholds were chosen, every count tried)."""
    m = int(scores.size)
    if (guesses is None) == (guess_grid is None):
        raise ConfigurationError("give guesses (fixed in advance) or guess_grid, not both")
    grid = [guesses] if guesses is not None else sorted(set(int(k) for k in guess_grid))
    for k in grid:
        if k < 1 or 2 * k > m:
            raise ConfigurationError(f"guesses per side must lie in 1..{m // 2}, got {k}")
    level = confidence if len(grid) == 1 else 1 - (1 - confidence) / len(grid)
    tried = []
    for k in grid:
        g = guesses_from_scores(scores, included, k_in=k, k_out=k)
        bound = one_run_epsilon_lower_bound(m=m, r=g.made, v=g.right, delta=delta,
                                            confidence=level)
        tried.append({"per_side": k, "guesses": g.made, "right": g.right, "bound": bound,
                      "confidence": level})
    best = max(tried, key=lambda t: t["bound"])
    how = (f"fixed before the scores were seen: top and bottom {grid[0]}" if len(grid) == 1
           else f"best of {len(grid)} guess counts {grid}, Bonferroni-corrected "
                f"(each at confidence {level:.4g})")
    return best["bound"], best["guesses"], best["right"], how, tried


def _first_linear(model: nn.Module) -> nn.Linear:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module
    raise ConfigurationError("the canary audit needs a model whose first layer is nn.Linear")


def example_canary_run(X: np.ndarray, y: np.ndarray, *,
                       make_model: Callable[[int], nn.Module], n_classes: int,
                       canaries: int = 1000, noise_multiplier: float, max_grad_norm: float,
                       batch_size: int, epochs: int, lr: float, delta: float,
                       confidence: float = 0.95, guesses: int | None = None,
                       guess_grid: Sequence[int] | None = None, seed: int = 0,
                       progress: bool = False) -> ExampleCanaryResult:
    """One DP-SGD training run with canaries, scored and turned into a lower bound (see the
    module docstring). ``make_model(input_dim)`` builds the model to train."""
    start = time.perf_counter()
    m = v.integer(canaries, "canaries", minimum=2)
    delta = v.probability(delta, "delta")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n, d = X.shape
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5  # drawn before anything is trained or scored
    labels = rng.integers(0, n_classes, size=m)
    canary_x = np.zeros((m, d + m), dtype=np.float32)
    canary_x[np.arange(m), d + np.arange(m)] = 1.0
    real_x = np.concatenate([X, np.zeros((n, m), dtype=np.float32)], axis=1)
    train_x = np.concatenate([real_x, canary_x[included]])
    train_y = np.concatenate([y, labels[included]])
    torch.manual_seed(seed)
    model = make_model(d + m)
    first = _first_linear(model)
    with torch.no_grad():
        first.weight[:, d:] = 0.0
    data = TensorDataset(torch.from_numpy(train_x), torch.from_numpy(train_y))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed + 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=epochs, desc="DP-SGD with canaries", unit="epoch", leave=False,
                   disable=None)
    with private_training(model, optimizer, loader, noise_multiplier=noise_multiplier,
                          max_grad_norm=max_grad_norm,
                          noise_generator=torch.Generator().manual_seed(seed + 2)) as session:
        session.model.train()
        for _ in range(epochs):
            for features, targets in session.loader:
                session.optimizer.zero_grad()
                if len(features):
                    loss_fn(session.model(features), targets).backward()
                else:  # an empty Poisson batch is still a step: noise only
                    (sum(p.sum() for p in session.model.parameters()) * 0.0).backward()
                session.step()
            if bar is not None:
                bar.update()
        event = session.event()
    if bar is not None:
        bar.close()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(canary_x))
        blank = model(torch.zeros((1, d + m))).expand_as(logits)
        target = torch.from_numpy(labels)
        per = nn.functional.cross_entropy(logits, target, reduction="none")
        base = nn.functional.cross_entropy(blank, target, reduction="none")
        scores = (base - per).numpy().astype(float)
    claimed = float(compute_epsilon([event], delta=delta))
    bound, made, right, how, tried = bound_from_scores(
        scores, included, delta=delta, confidence=confidence, guesses=guesses,
        guess_grid=guess_grid)
    return ExampleCanaryResult(canaries=m, included=included, scores=scores,
                               claimed_epsilon=claimed, delta=delta,
                               event=event_to_dict(event), lower_bound=bound, guesses=made,
                               right=right, thresholds=how, tried=tried,
                               seconds=time.perf_counter() - start)


@dataclass
class ClientCanaryResult:
    inserted: int
    unobserved: int
    cos_in: np.ndarray
    cos_out: np.ndarray
    mean_in: float
    std_in: float
    mean_out: float
    std_out: float
    estimate: float
    delta: float


def client_canary_estimate(update: np.ndarray, inserted: np.ndarray, unobserved: np.ndarray,
                           *, delta: float) -> ClientCanaryResult:
    """Andrew et al.'s one-shot estimate from the final model update and the canary
    directions (rows of ``inserted`` and ``unobserved``, unit vectors)."""
    u = np.asarray(update, dtype=float)
    norm = float(np.linalg.norm(u))
    if not math.isfinite(norm) or norm == 0:
        raise ConfigurationError("the final model update is zero or not finite")
    a = np.asarray(inserted, dtype=float) @ u / norm
    b = np.asarray(unobserved, dtype=float) @ u / norm
    if a.size < 2 or b.size < 2:
        raise ConfigurationError("need at least two inserted and two unobserved canaries")
    mi, si = float(a.mean()), float(a.std(ddof=1))
    mo, so = float(b.mean()), float(b.std(ddof=1))
    # Both fitted with the null's spread: with a few dozen canaries the inserted cosines'
    # sample variance is too noisy to trust, and unequal variances make the likelihood ratio
    # unbounded (an estimate driven by the variance ratio, not by the shift). The null's
    # spread is well measured from many never-inserted directions (about 1/sqrt(d)).
    eps = gaussian_pair_epsilon(mi, max(so, 1e-12), mo, max(so, 1e-12), delta=delta)
    return ClientCanaryResult(inserted=a.size, unobserved=b.size, cos_in=a, cos_out=b,
                              mean_in=mi, std_in=si, mean_out=mo, std_out=so, estimate=eps,
                              delta=delta)
