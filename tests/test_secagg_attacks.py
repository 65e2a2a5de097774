"""An adversary that designs its own attack, and the regression attacks of the review that played
the attacker (issue findings 1-6). The oracle is :func:`secagg.oracle.leakage`: from the server's
whole view plus everything the corrupt clients hold, no honest input (nor a sum of fewer honest
inputs than the model's minimum) may be recoverable. Each safeguard has a planted defect
(``secagg._testing``) and a test that shows the same attack or search catches it."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from unittest import mock

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from secagg import ProtocolAbort, exposed_clients, simulate_round
from secagg._testing import plant
from secagg.adversary import (
    ArcIsolation,
    ForgedHeader,
    GenericAdversary,
    GraphGrinding,
    LyingShares,
    PrivateRoster,
    Strategy,
    TACTICS,
    TwoViews,
)
from secagg.graph import harary_neighbors
from secagg.oracle import leakage
from secagg.params import complete_graph_threshold, max_corrupt

BITS = 20


def _inputs(n: int, dim: int = 6, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 1 << 12, dim) for c in range(n)}


def _play(inputs, **kwargs):
    """Run one round; return (outcome, leakage) after checking that a finished round's sum is
    the exact sum of the clients it says it includes."""
    try:
        result = simulate_round(inputs, modulus_bits=BITS, **kwargs)
    except ProtocolAbort as exc:
        return exc, leakage(exc.transcript, exc.coalition)
    expected = sum(inputs[c].astype(np.uint64) for c in result.included) % (1 << BITS)
    assert np.array_equal(result.aggregate.astype(np.uint64), expected)
    return result, leakage(result.transcript, result.coalition)


# -- the search ------------------------------------------------------------------------------

@st.composite
def coalitions(draw, *, corrupt_rates=(0.05, 0.1, 0.2), max_n=12, min_n=4):
    n = draw(st.integers(min_n, max_n))
    gamma = draw(st.sampled_from(corrupt_rates))
    tactic = draw(st.sampled_from(TACTICS))
    malicious = tactic in ("two_views", "private_roster") or draw(st.booleans())
    # A coalition is usually as large as the model allows (the strongest attacker), sometimes
    # smaller.
    most = max_corrupt(n, gamma)
    size = most if draw(st.integers(0, 3)) else draw(st.integers(0, most))
    corrupt = frozenset(draw(st.permutations(range(n)))[:size])
    # How a two-view attack splits the honest clients: its own best split (just enough for
    # the second view), a drawn bit pattern, or a drawn fraction.
    mode = draw(st.sampled_from(["best", "best", "bits", "fraction"]))
    strategy = Strategy(corrupt=corrupt, tactic=tactic,
                        victim_rank=draw(st.integers(0, 50)),
                        groups=draw(st.integers(1, (1 << 12) - 1)) if mode == "bits" else 0,
                        split=draw(st.floats(0.0, 1.0)) if mode == "fraction" else None,
                        pad=draw(st.integers(0, n)), liars=draw(st.booleans()))
    return n, gamma, malicious, strategy


@contextlib.contextmanager
def _replayable(case):
    """The clients' nonces, seeds and X25519 key pairs from a stream fixed by the case, so that
    the search sees the same round when it replays an example (Hypothesis needs a deterministic
    predicate to shrink). The key pairs matter to the grinding tactic: the roster it picks is
    scored on the advertised public keys, so keys from the OS made its outcome differ between
    two runs of one example. Outside the search all of it comes from the OS as always."""
    key = hashlib.sha256(repr(case).encode()).digest()
    counter = itertools.count()

    def urandom(size: int) -> bytes:
        return hashlib.shake_256(key + next(counter).to_bytes(8, "big")).digest(size)

    class _Keys:  # what secagg's KeyPair asks of X25519PrivateKey, from the stream
        generate = staticmethod(lambda: X25519PrivateKey.from_private_bytes(urandom(32)))
        from_private_bytes = staticmethod(X25519PrivateKey.from_private_bytes)

    with mock.patch("secagg.client.os.urandom", urandom), \
            mock.patch("secagg.hazmat.crypto.X25519PrivateKey", _Keys):
        yield int.from_bytes(key[:4], "big")


def _attack(case, seed=0):
    n, gamma, malicious, strategy = case
    with _replayable(case) as round_seed:
        return _play(_inputs(n, seed=seed), malicious=malicious, corrupt_rate=gamma,
                     adversary=GenericAdversary(strategy), seed=round_seed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coalitions())
def test_no_strategy_recovers_an_honest_input(case):
    outcome, leak = _attack(case)
    assert not leak.exposed, (case, leak)
    if not isinstance(outcome, ProtocolAbort):
        assert not exposed_clients(outcome.transcript, corrupt=case[3].corrupt)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coalitions(corrupt_rates=(0.05,), min_n=33, max_n=48))
def test_no_strategy_recovers_an_honest_input_on_sparse_default_graphs(case):
    """Above 32 clients the defaults are sparse SecAgg+ graphs (where a reviewer found the
    finder's corrupt count off by one): the same search there."""
    outcome, leak = _attack(case)
    assert not leak.exposed, (case, leak)


def test_sparse_search_finds_the_planted_corrupt_count_rounded_down():
    """With the finder sizing t for floor(gamma * n) corrupt clients, the sparse search finds
    passive corrupt neighbours that hold t shares of both secrets: the test above can fail."""
    with plant("finder_rounds_corrupt_down"):
        found = find(coalitions(corrupt_rates=(0.05,), min_n=33, max_n=39), _leaks,
                     settings=settings(max_examples=60, deadline=None, database=None,
                                       suppress_health_check=list(HealthCheck)))
    assert len(found[3].corrupt) == 2


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coalitions(max_n=24))
def test_no_strategy_recovers_an_honest_input_long(case):
    outcome, leak = _attack(case)
    assert not leak.exposed, (case, leak)


def _leaks(case) -> bool:
    try:
        return bool(_attack(case)[1].exposed)
    except Exception:  # noqa: BLE001 - a configuration the planted rule still refuses
        return False


def test_search_finds_a_planted_weak_threshold_and_quorum():
    """With the old malicious bound (2t > k + 1) and the old signature rule (t signatures), the
    same search finds a two-view attack that recovers an input: the search can fail."""
    with plant("threshold_without_corrupt_term", "signature_quorum_is_threshold"):
        found = find(coalitions(corrupt_rates=(0.2,)), _leaks,
                     settings=settings(max_examples=600, deadline=None, database=None,
                                       suppress_health_check=list(HealthCheck)))
    assert found[3].tactic == "two_views"


def test_search_finds_a_planted_semi_honest_threshold():
    """Semi-honest mode, t at Shamir's minimum with corrupt holders at least t (the t > c rule
    switched off): an honest-but-curious server with its corrupt clients recovers inputs."""

    def weak(case):
        n, gamma, _, strategy = case
        try:
            outcome, leak = _play(_inputs(n), neighbors=n - 1, threshold=2, corrupt_rate=gamma,
                                  dropout_rate=0.9,
                                  adversary=GenericAdversary(
                                      Strategy(strategy.corrupt, "honest_but_curious")))
        except Exception:  # noqa: BLE001
            return False
        return bool(leak.exposed)

    with plant("threshold_without_corrupt_term"):
        found = find(coalitions(corrupt_rates=(0.2,)), weak,
                     settings=settings(max_examples=200, deadline=None, database=None,
                                       suppress_health_check=list(HealthCheck)))
    assert len(found[3].corrupt) >= 2


# -- the regression attacks ----------------------------------------------------------------

def test_finding_1_two_views_with_corrupt_signers():
    """n=10, two corrupt clients (gamma=0.2): the victim's honest holders are split 4/4 between
    a view with it and a view without it; the corrupt clients sign both and hand over both
    kinds of share. With the corrupt term and the quorum the attack gets nothing."""
    inputs = _inputs(10)
    t = complete_graph_threshold(10, corrupt_rate=0.2, malicious=True)
    for groups in (0b1111, 0b11110000, 0b10101010, 0):
        attack = TwoViews(victim=9, groups=groups)
        attack.corrupt = frozenset({0, 1})
        outcome, leak = _play(inputs, malicious=True, corrupt_rate=0.2, neighbors=9,
                              threshold=t, adversary=attack)
        assert not leak.exposed


def test_finding_1_is_real_under_the_old_rules():
    inputs = _inputs(10)
    with plant("threshold_without_corrupt_term", "signature_quorum_is_threshold"):
        attack = TwoViews(victim=9, groups=0b1111)
        attack.corrupt = frozenset({0, 1})
        outcome, leak = _play(inputs, malicious=True, corrupt_rate=0.2, neighbors=9,
                              threshold=6, adversary=attack)
    assert 9 in leak.exposed


@pytest.mark.parametrize("n,pad", [(10, 0), (10, 4), (16, 8), (40, 20)])
def test_finding_2_private_tiny_roster(n, pad):
    attack = PrivateRoster(victim=n - 1, pad=pad)
    attack.corrupt = frozenset(range(max_corrupt(n, 0.05)))
    outcome, leak = _play(_inputs(n), malicious=True, adversary=attack)
    assert isinstance(outcome, ProtocolAbort) or n - 1 not in outcome.included
    assert not leak.exposed
    assert n - 1 in outcome.coalition.ranks  # the victim really played in the private world


def test_finding_3_grinding_predicts_nothing():
    """The server tries hundreds of rosters to surround the victim; with committed nonces the
    graph it predicts is not the graph the clients build."""
    n, k = 40, 4
    attack = GraphGrinding(victim=39, tries=300, leave_out=2)
    attack.corrupt = frozenset({0, 1})
    result, _ = _play(_inputs(n), neighbors=k, threshold=3, dropout_rate=0.2, adversary=attack)
    actual = _neighbourhood(result, 39, k)
    assert attack.predicted is not None and actual != attack.predicted


def test_finding_3_grinding_works_on_the_old_seed():
    n, k = 40, 4
    with plant("graph_seed_from_roster"):
        # ~0.8% of rosters put both corrupt clients next to the victim: 3000 tries find one
        # but for a chance of about 3e-11.
        attack = GraphGrinding(victim=39, tries=3000, leave_out=3)
        attack.corrupt = frozenset({0, 1})
        result, _ = _play(_inputs(n), neighbors=k, threshold=3, dropout_rate=0.2,
                          adversary=attack)
        actual = _neighbourhood(result, 39, k)
    assert actual == attack.predicted
    assert len(attack.predicted & attack.corrupt) == 2  # ground until both surround it


def _neighbourhood(result, client, k):
    from secagg.graph import graph_seed, roster_graph_seed
    from secagg.messages import Kind, decode, peek
    from secagg._testing import planted

    config = result.config
    nonces = roster = None
    for entry in result.transcript:
        kind = peek(entry.data, config)[0]
        if kind is Kind.NONCES:
            nonces = decode(entry.data, config, Kind.NONCES).nonces
        if kind is Kind.ROSTER:
            roster = decode(entry.data, config, Kind.ROSTER).entries
    if planted("graph_seed_from_roster") or nonces is None:
        seed = roster_graph_seed(config.tag, ((e.client, e.channel_key, e.mask_key)
                                              for e in roster))
    else:
        seed = graph_seed(config.tag, nonces)
    return frozenset(harary_neighbors(seed, config.clients, k, client))


def test_finding_4_threshold_one_is_refused():
    from secagg import ConfigurationError

    with pytest.raises(ConfigurationError):
        simulate_round(_inputs(5), modulus_bits=BITS, neighbors=4, threshold=1)


@pytest.mark.parametrize("stage_name", ["advertise_keys", "masked_input"])
def test_finding_5_forged_header_evicts_nobody(stage_name):
    from secagg import Stage

    attack = ForgedHeader(victim=9, stage=Stage(stage_name))
    attack.corrupt = frozenset({0})
    result, _ = _play(_inputs(10), adversary=attack)
    assert 9 in result.included
    assert any(c == 0 for c, _, _ in result.rejected)


def test_finding_5_is_real_when_headers_are_trusted():
    from secagg import Stage

    inputs = _inputs(10)
    with plant("trust_header_sender"):
        attack = ForgedHeader(victim=9, stage=Stage.MASKED_INPUT)
        attack.corrupt = frozenset({0})
        result = simulate_round(inputs, modulus_bits=BITS, adversary=attack)
    # The forger's re-headered message was taken as the victim's: the victim's own is refused
    # as a duplicate, and the sum is not the sum of the clients it claims to include.
    assert any(c == 9 and "duplicate" in why for c, _, why in result.rejected)
    expected = sum(inputs[c].astype(np.uint64) for c in result.included) % (1 << BITS)
    assert not np.array_equal(result.aggregate.astype(np.uint64), expected)


@pytest.mark.parametrize("malicious", [False, True])
def test_finding_6_one_liar_cannot_abort_and_is_named(malicious):
    attack = LyingShares()
    attack.corrupt = frozenset({3})
    result, leak = _play(_inputs(10), malicious=malicious, adversary=attack)
    assert result.included == frozenset(range(10))
    assert result.liars == frozenset({3})
    assert not leak.exposed


def test_finding_6_is_real_with_first_t_reconstruction():
    attack = LyingShares()
    attack.corrupt = frozenset({3})
    with plant("first_t_shares"):
        outcome, _ = _play(_inputs(10), adversary=attack)
    assert isinstance(outcome, ProtocolAbort)


def test_finding_7_exposed_clients_counts_corrupt_holders():
    """Shares the corrupt clients hold never cross the wire; counting them exposes an input
    that the transcript alone would hide (planted weak threshold, two corrupt holders)."""
    with plant("threshold_without_corrupt_term"):
        result = simulate_round(_inputs(6), modulus_bits=BITS, neighbors=5, threshold=2,
                                dropout_rate=0.9, corrupt={0, 1})
    assert not exposed_clients(result.transcript)
    assert exposed_clients(result.transcript, corrupt={0, 1}) == frozenset(range(2, 6))
    assert leakage(result.transcript, result.coalition).exposed == frozenset(range(2, 6))


@pytest.mark.parametrize("n", [10, 33])
def test_defaults_hold_against_two_views_at_other_n(n):
    """The finder's defaults (malicious mode, 5% corrupt) at other cohort sizes."""
    inputs = _inputs(n, dim=4, seed=n)
    corrupt = frozenset(range(max_corrupt(n, 0.05)))
    for groups in (0, 0b1010101010, 0b1111100000):
        attack = TwoViews(victim=n - 1, groups=groups)
        attack.corrupt = corrupt
        _, leak = _play(inputs, malicious=True, adversary=attack)
        assert not leak.exposed


@pytest.mark.parametrize("n", [33, 35, 39, 64])
def test_passive_corrupt_clients_at_the_models_count_recover_nothing(n):
    """Review (attacker) finding: the finder sized t for floor(gamma * n) corrupt clients while
    the model admits ceil(gamma * n); at n = 33..39 two passive corrupt neighbours held t = 2
    shares of both secrets of an honest client. Corrupt clients are now counted up everywhere."""
    corrupt = frozenset(range(max_corrupt(n, 0.05)))
    for seed in range(3):
        result = simulate_round(_inputs(n, seed=seed), modulus_bits=BITS, corrupt=corrupt,
                                seed=seed)
        assert not leakage(result.transcript, result.coalition).exposed
        assert not exposed_clients(result.transcript, corrupt=corrupt)


def _arc_round(start: int):
    attack = ArcIsolation(start=start)
    outcome, leak = _play(_inputs(60, dim=4, seed=start), malicious=True, neighbors=8,
                          threshold=5, corrupt_rate=0.0, dropout_rate=0.3, adversary=attack)
    return attack, outcome, leak


@pytest.mark.parametrize("start", [0, 17, 41])
def test_arc_isolation_by_dropping_two_flanks_is_refused(start):
    """Review (attacker) finding: n=60, k=8, no corrupt client; the network drops the 8 clients
    flanking a 5-client arc. Every client sees k/2 consecutive ring places without a survivor
    and refuses to reveal; nothing about the arc leaks."""
    attack, outcome, leak = _arc_round(start)
    assert len(attack.flank) == 8 and len(attack.arc) == 5
    assert isinstance(outcome, ProtocolAbort)
    assert not leak.exposed


def test_arc_isolation_leaks_the_arc_without_the_ring_check():
    with plant("no_ring_cut_check"):
        attack, outcome, leak = _arc_round(0)
    assert not isinstance(outcome, ProtocolAbort)
    assert set(attack.arc) & leak.exposed


@pytest.mark.parametrize("n,drop", [(3, 1), (4, 2)])
def test_a_tiny_cohort_never_releases_one_honest_input(n, drop):
    """Review (attacker) finding: at n = 3 with one corrupt client and one honest dropout (n = 4
    with two), the sum of the survivors less the corrupt client's input was the other honest
    client's input. The model's minimum now keeps two honest inputs in any released sum."""
    outcome, leak = _play(_inputs(n), corrupt={0},
                          dropouts={"masked_input": list(range(1, 1 + drop))})
    assert isinstance(outcome, ProtocolAbort)
    assert not leak.exposed


def test_two_clients_with_a_corrupt_rate_are_refused():
    from secagg import ConfigurationError

    with pytest.raises(ConfigurationError, match="one client's input"):
        simulate_round(_inputs(2), modulus_bits=BITS)
    simulate_round(_inputs(2), modulus_bits=BITS, corrupt_rate=0.0)  # no corrupt: allowed


@pytest.mark.parametrize("dropped", [3, 4])
def test_one_liar_with_the_dropouts_the_model_allows_cannot_abort(dropped):
    """Review (attacker) finding: with 3 or 4 of 10 dropped, only t + 1 or t holders reveal and
    unique decoding corrects nothing; the commitment check still finds the t honest shares
    (every t-subset is tried) whenever t honest shares are there."""
    attack = LyingShares()
    attack.corrupt = frozenset({3})
    outcome, leak = _play(_inputs(10), malicious=True, adversary=attack,
                          dropouts={"masked_input": list(range(10 - dropped, 10))})
    if dropped == 3:  # 7 holders, 6 honest: enough
        assert not isinstance(outcome, ProtocolAbort)
        assert outcome.included == frozenset(range(7))
        assert 3 in outcome.liars
    assert not leak.exposed
