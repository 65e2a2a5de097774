"""The one-run audit bound (Steinke et al. 2023), the guess rule and the Gaussian-pair
estimate (Andrew et al.): known answers and properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privacy.audit import (audit_p_value, bound_from_scores, gaussian_pair_epsilon,
                           guesses_from_scores, one_run_epsilon_lower_bound)
from privacy.errors import ConfigurationError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "audit_one_run_bound.json")
                     .read_text())["vectors"]


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: f"r{v['r']}-v{v['v']}")
def test_known_answers(vec) -> None:
    got = one_run_epsilon_lower_bound(m=vec["r"], r=vec["r"], v=vec["v"], delta=vec["delta"],
                                      confidence=vec["confidence"])
    assert round(got, 4) == vec["epsilon"]


def test_all_right_is_closed_form() -> None:
    for r in (10, 37, 500):
        p = 0.05 ** (1 / r)
        assert one_run_epsilon_lower_bound(m=r, r=r, v=r) == pytest.approx(
            math.log(p / (1 - p)), abs=1e-9)


def test_the_bound_is_where_the_p_value_crosses() -> None:
    eps = one_run_epsilon_lower_bound(m=100, r=100, v=90)
    assert audit_p_value(m=100, r=100, v=90, epsilon=eps - 1e-6, delta=0) < 0.05
    assert audit_p_value(m=100, r=100, v=90, epsilon=eps + 1e-6, delta=0) >= 0.05


def test_chance_guessing_proves_nothing() -> None:
    assert one_run_epsilon_lower_bound(m=100, r=100, v=50) == 0.0


@settings(max_examples=40, deadline=None)
@given(r=st.integers(2, 300), frac=st.floats(0.5, 1.0), delta=st.sampled_from([0.0, 1e-6, 1e-3]))
def test_more_right_guesses_never_lower_the_bound(r: int, frac: float, delta: float) -> None:
    v = min(r, max(0, int(frac * r)))
    lo = one_run_epsilon_lower_bound(m=2 * r, r=r, v=v, delta=delta)
    hi = one_run_epsilon_lower_bound(m=2 * r, r=r, v=min(r, v + 1), delta=delta)
    assert 0.0 <= lo <= hi + 1e-9


@settings(max_examples=30, deadline=None)
@given(r=st.integers(5, 200), frac=st.floats(0.6, 1.0))
def test_the_delta_term_only_weakens_the_bound(r: int, frac: float) -> None:
    v = int(frac * r)
    assert one_run_epsilon_lower_bound(m=r, r=r, v=v, delta=1e-4) <= \
        one_run_epsilon_lower_bound(m=r, r=r, v=v, delta=0.0) + 1e-9


@settings(max_examples=30, deadline=None)
@given(eps=st.floats(0, 5), r=st.integers(1, 100), frac=st.floats(0, 1))
def test_p_value_decreases_in_epsilon_never(eps: float, r: int, frac: float) -> None:
    """The p-value of a fixed observation grows with epsilon (a weaker claim explains more)."""
    v = int(frac * r)
    a = audit_p_value(m=r, r=r, v=v, epsilon=eps, delta=0)
    b = audit_p_value(m=r, r=r, v=v, epsilon=eps + 0.1, delta=0)
    assert 0 <= a <= b + 1e-12 <= 1 + 1e-12


def test_guesses_count_right_ones() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    included = np.array([True, True, False, True, False, False])
    g = guesses_from_scores(scores, included, k_in=2, k_out=2)
    assert (g.made, g.right) == (4, 4)
    g = guesses_from_scores(scores, included, k_in=3, k_out=0)
    assert (g.made, g.right) == (3, 2)
    with pytest.raises(ConfigurationError):
        guesses_from_scores(scores, included, k_in=4, k_out=3)


def test_bonferroni_is_applied_to_a_grid() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    scores = included + rng.normal(0, 0.5, 1000)
    fixed = bound_from_scores(scores, included, delta=0, confidence=0.95, guesses=100)
    grid = bound_from_scores(scores, included, delta=0, confidence=0.95, guess_grid=[100, 200])
    assert "fixed before" in fixed[3] and "Bonferroni" in grid[3]
    assert grid[4][0]["confidence"] == pytest.approx(0.975)
    one = [t for t in grid[4] if t["per_side"] == 100][0]
    assert one["bound"] <= fixed[0] + 1e-12  # the same guesses, a stricter level


def test_equal_variance_gaussians_are_the_gaussian_mechanism() -> None:
    mu = 1.0
    eps = gaussian_pair_epsilon(mu, 1.0, 0.0, 1.0, delta=1e-5)
    delta = stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
    assert delta == pytest.approx(1e-5, rel=1e-2)
    assert gaussian_pair_epsilon(0.0, 1.0, 0.0, 1.0, delta=1e-5) == 0.0
