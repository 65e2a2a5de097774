"""Graph degree and threshold: the parameter finder reproduces the published table, and the
graph every client derives is the one the server derives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ConfigurationError, choose_parameters, harary_parameters, required_modulus_bits
from secagg.graph import harary_neighbors, neighbor_map

ROWS = json.loads((Path(__file__).parent / "vectors" / "secagg_harary_parameters.json")
                  .read_text())["rows"]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: "{adversary_class}-{clients}-{corrupt_rate}-"
                                                     "{dropout_rate}".format(**r))
def test_parameter_finder_reproduces_table(row):
    found = harary_parameters(row["clients"], corrupt_rate=row["corrupt_rate"],
                              dropout_rate=row["dropout_rate"],
                              malicious=row["adversary_class"] == "semimalicious")
    assert found is not None
    assert found.neighbors == row["degree"]
    assert found.threshold <= row["threshold"]
    if row["adversary_class"] == "semimalicious":
        assert 2 * found.threshold > found.neighbors + 1


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
        assert 1 <= params.threshold <= n
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
