"""Graph degree and threshold: the parameter finder reproduces the published table, and the
graph every client derives is the one the server derives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ConfigurationError, choose_parameters, harary_parameters, required_modulus_bits
from secagg.params import check_graph, max_corrupt_neighbors
from secagg.graph import harary_neighbors, neighbor_map

ROWS = json.loads((Path(__file__).parent / "vectors" / "secagg_harary_parameters.json")
                  .read_text())["rows"]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: "{adversary_class}-{clients}-{corrupt_rate}-"
                                                     "{dropout_rate}".format(**r))
def test_parameter_finder_reproduces_table(row):
    """Semi-honest rows are reproduced exactly. The published semi-malicious rows use a threshold
    step that gives 2t = k + 1 + c when k + c is odd, which lets two views of the survivors each
    reach t with the c corrupt holders counted twice (DESIGN section 2a); there the finder must
    return the smallest degree at or above the table's whose threshold meets 2t > k + 1 + c, and
    the table's own pair must fail the check (the vector is wrong, not the finder)."""
    malicious = row["adversary_class"] == "semimalicious"
    n, gamma = row["clients"], row["corrupt_rate"]
    found = harary_parameters(n, corrupt_rate=gamma, dropout_rate=row["dropout_rate"],
                              malicious=malicious)
    rounded = math.floor(gamma * n) != math.ceil(gamma * n)
    if found is None:
        # Only where Cohort counts one more corrupt client than the table (see below): then
        # no sparse degree is secure, and the complete graph is what the finder falls back to.
        assert rounded
        full = choose_parameters(n, corrupt_rate=gamma, dropout_rate=row["dropout_rate"],
                                 malicious=malicious)
        assert full.neighbors == n - 1
        return
    c = max_corrupt_neighbors(n, found.neighbors, gamma)
    if not malicious:
        assert found.threshold > c
        if not rounded:
            assert found.neighbors == row["degree"]
            assert found.threshold <= row["threshold"]
        else:
            # Google's finder counts floor(gamma * n) corrupt clients; Cohort's model admits
            # ceil(gamma * n) (a review found t = 2 against two corrupt neighbours at n = 33
            # otherwise), so where they differ the degree may only grow.
            assert found.neighbors >= row["degree"]
        return
    assert 2 * found.threshold > found.neighbors + 1 + c
    table_c = max_corrupt_neighbors(n, row["degree"], gamma)
    if 2 * row["threshold"] > row["degree"] + 1 + table_c:
        assert (found.neighbors, found.threshold) == (row["degree"], row["threshold"])
    else:
        assert found.neighbors >= row["degree"]
        with pytest.raises(ConfigurationError, match="2t > neighbors|too small"):
            check_graph(n, row["degree"], row["threshold"], malicious=True, corrupt_rate=gamma)


def test_malicious_thresholds_count_the_corrupt_holders():
    """Review finding 1: n=33 (k=22, t=12) with one corrupt client and n=100 (k=72, t=39) with
    five were the finder's defaults and let two views each reach t. Both are refused now, and
    the defaults at every n meet 2t > k + 1 + c."""
    with pytest.raises(ConfigurationError):
        check_graph(33, 22, 12, malicious=True)
    with pytest.raises(ConfigurationError):
        check_graph(100, 72, 39, malicious=True)
    for n in (10, 33, 50, 100, 300, 1000):
        p = choose_parameters(n, malicious=True)
        c = max_corrupt_neighbors(n, p.neighbors, 0.05)
        assert 2 * p.threshold > p.neighbors + 1 + c


def test_threshold_one_is_refused_in_every_mode():
    """Review finding 4: t = 1 makes every Shamir share the secret itself."""
    for malicious in (False, True):
        with pytest.raises(ConfigurationError, match="t = 1"):
            check_graph(5, 4, 1, malicious=malicious, corrupt_rate=0.0)
    assert choose_parameters(2).threshold == 2


def test_planted_weak_threshold_is_accepted_only_under_the_knob():
    from secagg._testing import plant

    with pytest.raises(ConfigurationError):
        check_graph(100, 72, 39, malicious=True)
    with plant("threshold_without_corrupt_term"):
        check_graph(100, 72, 39, malicious=True)


def test_design_table_rows():
    """The rows quoted in the design brief (semi-honest, 5% corrupt)."""
    assert (harary_parameters(100, corrupt_rate=0.05, dropout_rate=0.05).neighbors,
            harary_parameters(100, corrupt_rate=0.05, dropout_rate=0.05).threshold) == (12, 6)
    assert harary_parameters(1000, corrupt_rate=0.05, dropout_rate=0.05).neighbors == 30
    assert harary_parameters(1000, corrupt_rate=0.05, dropout_rate=0.33).neighbors == 72


def test_small_cohorts_fall_back_to_the_complete_graph():
    for n in (2, 3, 4, 10, 32):
        params = choose_parameters(n)
        assert params.neighbors == n - 1
        assert 2 <= params.threshold <= n
    assert choose_parameters(33).neighbors < 32


def test_infeasible_rates_are_refused():
    with pytest.raises(ConfigurationError):
        harary_parameters(100, corrupt_rate=0.5, dropout_rate=0.45)
    with pytest.raises(ConfigurationError):
        harary_parameters(100, corrupt_rate=0.3, dropout_rate=0.31, malicious=True)


def test_required_modulus_bits():
    assert required_modulus_bits(1024, 16) == 26
    assert required_modulus_bits(1000, 16) == 26
    assert required_modulus_bits(1, 16) == 16
    assert required_modulus_bits(2, 16) == 17


@settings(max_examples=40)
@given(n=st.integers(3, 60), k_half=st.integers(1, 30), seed=st.binary(min_size=32, max_size=32))
def test_graph_is_regular_symmetric_and_agreed(n, k_half, seed):
    k = min(2 * k_half, n - 1)
    graph = {c: frozenset(r) for c, r in neighbor_map(seed, range(n), k).items()}
    for c, nbrs in graph.items():
        assert c not in nbrs
        assert len(nbrs) == k
        assert all(c in graph[v] for v in nbrs)
        assert frozenset(harary_neighbors(seed, range(n), k, c)) == nbrs


def test_graph_depends_on_the_seed():
    a = neighbor_map(b"\x00" * 32, range(50), 6)
    b = neighbor_map(b"\x01" + b"\x00" * 31, range(50), 6)
    assert a != b
