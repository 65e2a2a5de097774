"""Dealing the private pool out to simulated sites (non-IID partitions), and each site's local
train/test split.

Schemes (:class:`PartitionScheme`), all deterministic given ``seed`` (numpy ``Generator``: this
is simulation data, not cryptography), all returning disjoint index arrays that cover the pool
exactly once, every site with at least ``min_samples`` samples (at least one: a
population-scale study may give a site a single sample; see :func:`site_floor`):

* ``IID`` — a random permutation cut into near-equal shares.
* ``LABEL_DIRICHLET`` — the usual label skew: for each class, proportions
  ``p ~ Dirichlet(alpha · 1)`` over sites, and the class's samples are cut by ``p``. Small
  ``alpha`` gives each site few classes; large ``alpha`` approaches IID. If a site ends up with
  fewer than ``min_samples``, the proportions are redrawn (up to ``max_redraws`` times, as in
  the usual NIID-bench procedure); if that still fails — e.g. tiny ``alpha`` with many sites —
  the deficient sites are *topped up* with random samples moved from the currently largest
  site, which keeps the skew everywhere else. Regression targets are binned into
  ``regression_bins`` quantile bins that play the role of classes.
* ``QUANTITY_DIRICHLET`` / ``QUANTITY_LOGNORMAL`` — quantity skew: site shares
  ``p ~ Dirichlet(alpha · 1)`` or ``p ∝ LogNormal(0, sigma)``; each site gets ``min_samples``
  plus a ``Multinomial(n − n_sites · min_samples, p)`` share of a random permutation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from privacy import _validate as v
from secagg.errors import ConfigurationError, InvalidInput

from .splits import DataSplits, LabelledArrays

__all__ = [
    "PartitionScheme",
    "SiteData",
    "label_skew",
    "make_site_data",
    "partition",
    "site_floor",
    "split_local",
]


class PartitionScheme(enum.Enum):
    IID = "iid"
    LABEL_DIRICHLET = "label_dirichlet"
    QUANTITY_DIRICHLET = "quantity_dirichlet"
    QUANTITY_LOGNORMAL = "quantity_lognormal"


@dataclass(frozen=True)
class SiteData:
    """One site's private data: its local train and test splits."""

    train: LabelledArrays
    test: LabelledArrays


def partition(y: np.ndarray, *, n_sites: int, scheme: PartitionScheme, alpha: float = 0.5,
              sigma: float = 1.0, min_samples: int = 5, max_redraws: int = 20,
              regression_bins: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Sorted, disjoint index arrays into ``y``, one per site, covering every index once."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise InvalidInput(f"y must be 1-D, got shape {y.shape}")
    n_sites = v.integer(n_sites, "n_sites", minimum=1)
    min_samples = v.integer(min_samples, "min_samples", minimum=1)
    if not isinstance(scheme, PartitionScheme):
        raise ConfigurationError("scheme must be a PartitionScheme")
    if n_sites * min_samples > len(y):
        raise ConfigurationError(f"{len(y)} samples cannot give {n_sites} sites "
                                 f"{min_samples} samples each")
    rng = np.random.default_rng(v.integer(seed, "seed", minimum=0))
    if scheme is PartitionScheme.IID:
        parts = np.array_split(rng.permutation(len(y)), n_sites)
    elif scheme is PartitionScheme.LABEL_DIRICHLET:
        classes = _label_groups(y, v.integer(regression_bins, "regression_bins", minimum=2))
        parts = _label_dirichlet(classes, n_sites, v.positive(alpha, "alpha"), min_samples,
                                 v.integer(max_redraws, "max_redraws", minimum=1), rng)
    else:
        if scheme is PartitionScheme.QUANTITY_DIRICHLET:
            shares = rng.dirichlet(np.full(n_sites, v.positive(alpha, "alpha")))
        else:
            weights = rng.lognormal(0.0, v.positive(sigma, "sigma"), size=n_sites)
            shares = weights / weights.sum()
        extra = rng.multinomial(len(y) - n_sites * min_samples, shares)
        cuts = np.cumsum(min_samples + extra)[:-1]
        parts = np.split(rng.permutation(len(y)), cuts)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _label_groups(y: np.ndarray, bins: int) -> np.ndarray:
    """Class ids per sample: the labels themselves, or quantile bins of regression targets."""
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    edges = np.quantile(y.astype(np.float64), np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y.astype(np.float64), side="right").astype(np.int64)


def _label_dirichlet(classes: np.ndarray, n_sites: int, alpha: float, min_samples: int,
                     max_redraws: int, rng: np.random.Generator) -> list[np.ndarray]:
    groups = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    parts: list[list[int]] = []
    for _ in range(max_redraws):
        parts = [[] for _ in range(n_sites)]
        for group in groups:
            idx = rng.permutation(group)
            props = rng.dirichlet(np.full(n_sites, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_samples:
            return [np.array(p, dtype=np.int64) for p in parts]
    return _top_up(parts, min_samples, rng)


def _top_up(parts: list[list[int]], min_samples: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Move random samples from the largest site to each site below ``min_samples``.
    Feasible because n_sites · min_samples <= n was checked."""
    arrays = [rng.permutation(np.array(p, dtype=np.int64)) for p in parts]
    for site in range(len(arrays)):
        while len(arrays[site]) < min_samples:
            donor = int(np.argmax([len(a) for a in arrays]))
            take = min(min_samples - len(arrays[site]), len(arrays[donor]) - min_samples)
            arrays[site] = np.concatenate([arrays[site], arrays[donor][:take]])
            arrays[donor] = arrays[donor][take:]
    return arrays


def label_skew(y: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each site's label distribution and the pool's:
    0 for perfectly IID shares, approaching 1 when every site holds one rare class."""
    y = np.asarray(y)
    labels = np.unique(y)
    overall = np.array([np.mean(y == c) for c in labels])
    distances = []
    for p in parts:
        if len(p) == 0:
            raise InvalidInput("a site has no samples")
        local = np.array([np.mean(y[p] == c) for c in labels])
        distances.append(0.5 * np.abs(local - overall).sum())
    return float(np.mean(distances))


DEFAULT_FLOOR = 5


def site_floor(n_samples: int, n_sites: int, *, floor: int = DEFAULT_FLOOR) -> int:
    """The fewest samples a site is dealt: ``floor`` where the pool allows it, else as many as
    it does (at least one). Small consortia keep their five-sample floor (and their
    partitions); a population of sites with a handful of samples each, or with the quantity
    skew of cross-device data, is dealt from the same pool instead of being refused."""
    n_sites = v.integer(n_sites, "n_sites", minimum=1)
    if n_sites > n_samples:
        raise ConfigurationError(f"{n_samples} samples cannot give {n_sites} sites one "
                                 "sample each")
    return max(1, min(v.integer(floor, "floor", minimum=1), n_samples // n_sites))


def split_local(data: LabelledArrays, *, test_fraction: float = 0.2, seed: int = 0) -> SiteData:
    """Cut one site's shard into local train/test. A site of one sample trains on it and has
    an empty local test split (it is left out of the per-site scores); otherwise both are
    non-empty."""
    test_fraction = v.fraction(test_fraction, "test_fraction")
    n = len(data)
    if n < 1:
        raise InvalidInput("a site needs at least one sample")
    if n == 1:
        return SiteData(train=data, test=data.take(np.arange(0)))
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    idx = np.random.default_rng(v.integer(seed, "seed", minimum=0)).permutation(n)
    return SiteData(train=data.take(np.sort(idx[n_test:])), test=data.take(np.sort(idx[:n_test])))


def make_site_data(splits: DataSplits, *, n_sites: int, scheme: PartitionScheme,
                   alpha: float = 0.5, sigma: float = 1.0, min_samples: int | None = None,
                   local_test_fraction: float = 0.2, seed: int = 0) -> list[SiteData]:
    """Partition ``splits.pool`` and split each share locally: one :class:`SiteData` per site.
    ``min_samples`` None: :func:`site_floor` (five, lowered to what the pool allows)."""
    if min_samples is None:
        min_samples = site_floor(len(splits.pool), n_sites)
    parts = partition(splits.pool.y, n_sites=n_sites, scheme=scheme, alpha=alpha, sigma=sigma,
                      min_samples=v.integer(min_samples, "min_samples", minimum=1), seed=seed)
    return [split_local(splits.pool.take(p), test_fraction=local_test_fraction, seed=seed + i)
            for i, p in enumerate(parts)]
