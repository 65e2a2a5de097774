"""Partitions of the private pool: exact cover, non-empty sites, measured label skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import (
    DatasetName,
    PartitionScheme,
    label_skew,
    load_dataset,
    make_site_data,
    partition,
    split_dataset,
    split_local,
)
from secagg.errors import ConfigurationError

LABELS = np.random.default_rng(0).integers(0, 4, size=300)


@settings(max_examples=60)
@given(n_sites=st.integers(1, 30), alpha=st.floats(0.01, 100.0),
       seed=st.integers(0, 2**32 - 1), scheme=st.sampled_from(list(PartitionScheme)),
       min_samples=st.integers(1, 8))
def test_partition_is_an_exact_cover(n_sites: int, alpha: float, seed: int,
                                     scheme: PartitionScheme, min_samples: int) -> None:
    parts = partition(LABELS, n_sites=n_sites, scheme=scheme, alpha=alpha, sigma=alpha % 3 + 0.1,
                      min_samples=min_samples, seed=seed)
    assert len(parts) == n_sites
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))
    assert min(len(p) for p in parts) >= min_samples


def test_partition_is_deterministic() -> None:
    a = partition(LABELS, n_sites=7, scheme=PartitionScheme.LABEL_DIRICHLET, alpha=0.3, seed=5)
    b = partition(LABELS, n_sites=7, scheme=PartitionScheme.LABEL_DIRICHLET, alpha=0.3, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_small_alpha_gives_more_label_skew() -> None:
    def mean_skew(alpha: float) -> float:
        return float(np.mean([
            label_skew(LABELS, partition(LABELS, n_sites=10, alpha=alpha, seed=s,
                                         scheme=PartitionScheme.LABEL_DIRICHLET))
            for s in range(5)]))
    low, mid, high = mean_skew(0.1), mean_skew(1.0), mean_skew(100.0)
    iid = label_skew(LABELS, partition(LABELS, n_sites=10, scheme=PartitionScheme.IID))
    assert low > mid > high
    assert low > 0.4 and high < 0.15 and iid < 0.15


def test_quantity_skew_gives_unequal_sizes() -> None:
    parts = partition(LABELS, n_sites=10, scheme=PartitionScheme.QUANTITY_DIRICHLET, alpha=0.3,
                      seed=1)
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() > 3 * sizes.min()
    iid = partition(LABELS, n_sites=10, scheme=PartitionScheme.IID, seed=1)
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1


def test_regression_targets_can_be_label_skewed() -> None:
    y = np.random.default_rng(1).normal(size=200).astype(np.float32)
    parts = partition(y, n_sites=4, scheme=PartitionScheme.LABEL_DIRICHLET, alpha=0.1, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))


def test_infeasible_minimum_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        partition(LABELS, n_sites=100, scheme=PartitionScheme.IID, min_samples=5)
    with pytest.raises(ConfigurationError):
        partition(LABELS, n_sites=3, scheme="iid")  # type: ignore[arg-type]


def test_site_data_local_splits() -> None:
    splits = split_dataset(load_dataset(DatasetName.BREAST_CANCER), seed=0)
    sites = make_site_data(splits, n_sites=5, scheme=PartitionScheme.LABEL_DIRICHLET, alpha=0.5,
                           seed=2)
    total = sum(len(s.train) + len(s.test) for s in sites)
    assert total == len(splits.pool)
    assert all(len(s.train) > 0 and len(s.test) > 0 for s in sites)
    local = split_local(splits.pool, test_fraction=0.25, seed=0)
    assert len(local.test) == round(0.25 * len(splits.pool))
