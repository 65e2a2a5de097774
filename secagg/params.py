"""Choosing the neighbour-graph degree k, the Shamir threshold t and the modulus bits.

Degree and threshold follow the Harary-graph parameter search that Google's federated compute
platform uses for SecAgg+ (Bell et al. 2020): the smallest even degree k for which, with a given
fraction of corrupt clients and of dropouts, (a) the graph of honest survivors stays connected and
(b) a threshold t exists that no client's corrupt neighbours reach (statistical security 2^-40)
while every client keeps at least t surviving neighbours (failure probability 2^-20). Both bounds
use the hypergeometric law of a client's neighbourhood. When no such k < n - 1 exists (small
cohorts, and by default any cohort of at most 32 clients), the complete graph of classic SecAgg
is used with a threshold that keeps a majority.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import _testing
from .errors import ConfigurationError

__all__ = [
    "GraphParameters",
    "max_missing_in_window",
    "harary_parameters",
    "choose_parameters",
    "complete_graph_threshold",
    "check_graph",
    "max_corrupt",
    "max_corrupt_neighbors",
    "signature_quorum",
    "min_survivors",
    "required_modulus_bits",
    "DEFAULT_DROPOUT_RATE",
    "DEFAULT_CORRUPT_RATE",
]

SECURITY_BITS = 40
CORRECTNESS_BITS = 20
DEFAULT_DROPOUT_RATE = 0.33
# Up to this many clients the default is the complete graph: it costs little at this size, and
# the finder's sparse graphs rest on large-n bounds (a 10-client ring of degree 4 aborts when
# two neighbours drop together).
COMPLETE_GRAPH_UP_TO = 32
DEFAULT_CORRUPT_RATE = 0.05
# Floating-point slack so that rounding errors in the rates never round in the insecure direction.
_EPS = 1e-14


@dataclass(frozen=True)
class GraphParameters:
    clients: int
    neighbors: int
    threshold: int

    @property
    def complete(self) -> bool:
        return self.neighbors == self.clients - 1


@lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    """log(i!) for i = 0..n."""
    out = np.zeros(n + 1)
    np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)), out=out[1:])
    return out


class _Hypergeometric:
    """Number of marked items among ``draws`` drawn without replacement from ``total``.

    The whole pmf is computed at once from a table of log-factorials; tails are summed from their
    small end so that probabilities near 2^-40 keep their precision.
    """

    def __init__(self, total: int, marked: int, draws: int) -> None:
        lf = _log_factorials(total)
        self.lo = max(0, draws - (total - marked))
        self.hi = min(draws, marked)
        x = np.arange(self.lo, self.hi + 1)
        log_pmf = (lf[marked] + lf[total - marked] + lf[draws] + lf[total - draws] - lf[total]
                   - lf[x] - lf[marked - x] - lf[draws - x] - lf[total - marked - draws + x])
        pmf = np.exp(log_pmf)
        self._cdf = np.cumsum(pmf)  # P[X <= lo + i]
        self._upper = np.cumsum(pmf[::-1])[::-1]  # P[X >= lo + i]

    def cdf(self, x: int) -> float:
        """P[X <= x]."""
        if x < self.lo:
            return 0.0
        if x >= self.hi:
            return 1.0
        return float(self._cdf[x - self.lo])

    def sf(self, x: int) -> float:
        """P[X > x]."""
        if x >= self.hi:
            return 0.0
        if x < self.lo:
            return 1.0
        return float(self._upper[x + 1 - self.lo])

    def smallest_sf_below(self, q: float) -> int:
        """min t with P[X > t] < q."""
        # P[X > t] for t = lo-1 .. hi-1 is _upper[0 .. hi-lo]; it is non-increasing in t.
        below = np.nonzero(self._upper < q)[0]
        if below.size == 0:
            return self.hi
        return int(below[0]) + self.lo - 1

    def smallest_cdf_at_least(self, q: float) -> int:
        """min s with P[X <= s] >= q."""
        above = np.nonzero(self._cdf >= q)[0]
        return int(above[0]) + self.lo if above.size else self.hi


def _log_prob_disconnected(n: int, k: int, bad: int) -> float:
    """Union bound on the log-probability that removing ``bad`` random nodes disconnects a random
    Harary graph of degree k: a cut needs two disjoint runs of k/2 consecutive removed nodes on
    the ring."""
    if k > bad:
        return -math.inf
    log_pairs = math.log(n) + math.log(n - k - 1) - math.log(2)
    return (log_pairs + math.lgamma(bad + 1) + math.lgamma(n - k + 1)
            - math.lgamma(n + 1) - math.lgamma(bad - k + 1))


def _threshold_for(n: int, k: int, corrupt_rate: float, dropout_rate: float,
                   malicious: bool) -> int | None:
    per_event = SECURITY_BITS + 1
    # Corrupt clients are counted as max_corrupt does (rounded up), the same count every
    # client's check uses; rounding down here would size t for fewer corrupt clients than the
    # model admits (at n = 33 and 5%: t = 2 against two corrupt neighbours).
    if _log_prob_disconnected(n, k, _finder_corrupt(n, corrupt_rate)
                              + math.floor((dropout_rate + _EPS) * n)) >= -per_event * math.log(2):
        return None
    corrupt = _finder_corrupt(n, corrupt_rate)
    survivors = math.ceil((1 - dropout_rate - _EPS) * n)
    adversarial = _Hypergeometric(n, corrupt, k)
    surviving = _Hypergeometric(n, survivors, k)
    q_security = 2.0 ** -per_event / n
    q_correct = 2.0 ** -CORRECTNESS_BITS / n
    # t1: fewest corrupt neighbours that are exceeded only with probability < q_security.
    t1 = adversarial.smallest_sf_below(q_security)
    # t2: fewest surviving neighbours s with P[S <= s] >= q_correct; t <= t2 keeps rounds alive.
    t2 = surviving.smallest_cdf_at_least(q_correct)
    if t2 <= t1:
        return None
    if malicious and max_missing_in_window(n, k, corrupt_rate) < 0:
        return None  # every view would have to be refused (see max_missing_in_window)
    t = _secure_threshold(k, t1, malicious=malicious)
    # (The published semi-honest table lifts t1 + 1 to Shamir's minimum of 2 without
    # re-checking t2; the malicious bound must itself keep rounds alive.)
    if malicious and t > t2 or t > k + 1:
        return None
    return t


def _secure_threshold(k: int, corrupt_neighbors: int, *, malicious: bool) -> int:
    """Smallest threshold the threat model allows for degree k and at most ``corrupt_neighbors``
    corrupt share holders of any one client.

    Semi-honest: the corrupt holders alone must stay below t. Malicious: additionally, two
    disjoint groups of the k + 1 - c honest holders, each topped up by the c corrupt holders
    (who reveal both kinds of share), must not both reach t: 2t > k + 1 + c. Shamir needs t >= 2
    always (t = 1 makes every share the secret itself).
    """
    if _testing.planted("threshold_without_corrupt_term"):
        # The old bounds, kept only as a planted defect: no corrupt term anywhere.
        return (k + 1) // 2 + 1 if malicious else 2
    t = max(corrupt_neighbors + 1, 2)
    if malicious:
        t = max(t, (k + 1 + corrupt_neighbors) // 2 + 1)
    return t


def harary_parameters(n: int, *, corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                      dropout_rate: float = DEFAULT_DROPOUT_RATE,
                      malicious: bool = False) -> GraphParameters | None:
    """Smallest secure even degree (and its threshold) below n - 1, or None if there is none."""
    if n < 1:
        raise ConfigurationError("the number of clients must be positive")
    if not 0 <= corrupt_rate < 1 or not 0 <= dropout_rate < 1:
        raise ConfigurationError("corrupt and dropout rates must lie in [0, 1)")
    limit = 2 * dropout_rate if malicious else dropout_rate
    if corrupt_rate + limit > 0.9:
        raise ConfigurationError(
            "infeasible rates: need corrupt + dropout <= 0.9 (corrupt + 2*dropout when malicious)")
    for k in range(2, n - 1, 2):
        t = _threshold_for(n, k, corrupt_rate, dropout_rate, malicious)
        if t is not None:
            return GraphParameters(n, k, t)
    return None


def max_corrupt(n: int, corrupt_rate: float) -> int:
    """Corrupt clients the model allows in a cohort of n: ceil(corrupt_rate * n) (at least one
    whenever the rate is positive, so small cohorts are not assumed clean)."""
    return min(n, math.ceil(corrupt_rate * n - _EPS)) if corrupt_rate > 0 else 0


def _finder_corrupt(n: int, corrupt_rate: float) -> int:
    if _testing.planted("finder_rounds_corrupt_down"):
        return math.floor((corrupt_rate + _EPS) * n)  # the old count, as a planted defect
    return max_corrupt(n, corrupt_rate)


def max_corrupt_neighbors(n: int, k: int, corrupt_rate: float) -> int:
    """Most corrupt share holders (neighbours) one client may have under the model.

    The complete graph: every corrupt client. A sparse random graph: the fewest c exceeded only
    with probability below 2^-41/n under the hypergeometric law of a neighbourhood (the same
    bound the parameter finder uses, so the published table's corrupt count applies).
    """
    if k >= n - 1:
        return max_corrupt(n, corrupt_rate)
    corrupt = _finder_corrupt(n, corrupt_rate)
    return _Hypergeometric(n, corrupt, k).smallest_sf_below(2.0 ** -(SECURITY_BITS + 1) / n)


def max_missing_in_window(n: int, k: int, corrupt_rate: float) -> int:
    """Most clients missing from the survivors (dropped, or never advertised) that any k/2
    consecutive places of the ring may hold before the survivor graph could be cut.

    On the Harary ring a client's neighbours lie within k/2 places on either side, so a run of
    k/2 consecutive places without an honest survivor separates the honest survivors on its
    two sides; a malicious server that knows the graph can drop (or claim dropped) the clients
    of two such runs and learn the sum of the small arc between them alone. Corrupt clients are
    placed by randomness the server cannot steer, so a window with d missing clients becomes a
    cut only if its other k/2 - d places are all corrupt: probability below gamma^(k/2 - d).
    Requiring that below 2^-40 / n for every window gives k/2 - d >= (40 + log2 n) / log2(1/g),
    and at least 1 (with no corrupt clients a window must not be entirely missing); at most
    C + 1 suffices whatever the probabilities, since only C corrupt clients exist.
    """
    half = k // 2
    if k >= n - 1:
        return n  # the complete graph has no cut
    corrupt = max_corrupt(n, corrupt_rate)
    if corrupt == 0:
        spare = 1
    else:
        # ... and never more than the C + 1 places that C corrupt clients cannot fill.
        spare = min(corrupt + 1,
                    math.ceil((SECURITY_BITS + math.log2(n)) / -math.log2(corrupt_rate)))
    return half - max(1, spare)


def signature_quorum(n: int, corrupt_rate: float) -> int:
    """Signatures on one survivor view a client must see before it reveals any share.

    Honest clients sign one view each; corrupt ones sign any number. Two different views with q
    signatures each need 2q <= n + C (C corrupt), so q = floor((n + C) / 2) + 1 makes the view
    unique: the server can never show two groups two survivor lists.
    """
    if _testing.planted("signature_quorum_is_threshold"):
        return 0  # the old rule (threshold signatures) is applied by the caller
    return (n + max_corrupt(n, corrupt_rate)) // 2 + 1


def min_survivors(n: int, threshold: int, dropout_rate: float,
                  corrupt_rate: float = DEFAULT_CORRUPT_RATE) -> int:
    """Fewest clients whose inputs a round may release the sum of: the model allows a fraction
    ``dropout_rate`` of the cohort (rounded up to whole clients) to drop, no more; never fewer
    than the threshold; and never so few that, less the corrupt clients the model allows, the
    sum could hold a single honest input (in a cohort of four with one corrupt client, two
    survivors would release the other one's input)."""
    return max(threshold, n - math.ceil(dropout_rate * n - _EPS),
               max_corrupt(n, corrupt_rate) + 2)


def complete_graph_threshold(n: int, *, corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                             malicious: bool = False) -> int:
    """Threshold for classic SecAgg on the complete graph (each client shares with n - 1 others).

    Every client holds a share of its own secrets too, so there are n share holders.
    Semi-honest: a strict majority of them, and more than the corrupt ones.
    Malicious: more than half of the holders plus the corrupt ones, so that no two disjoint
    groups can each reach t (the server can never get both shares of a client).
    """
    corrupt = max_corrupt(n, corrupt_rate)
    t = max(n // 2 + 1, _secure_threshold(n - 1, corrupt, malicious=malicious))
    return min(t, n)


def check_graph(n: int, k: int, t: int, *, malicious: bool,
                corrupt_rate: float = DEFAULT_CORRUPT_RATE) -> None:
    """Raise ConfigurationError unless (k, t) is a degree and threshold for n clients that the
    threat model allows (DESIGN section 2a): t >= 2, t above the corrupt share holders, and in
    malicious-server mode 2t > k + 1 + c."""
    if n < 2:
        raise ConfigurationError("a secure sum needs at least two clients")
    if not 1 <= k <= n - 1:
        raise ConfigurationError(f"neighbors must be in 1..{n - 1} for {n} clients, got {k}")
    if k < n - 1 and k % 2 and n % 2:
        raise ConfigurationError(
            f"no {k}-regular graph on {n} clients exists: use an even degree or n - 1")
    # Each client's secrets are shared among its k neighbours and itself: k + 1 holders.
    if not 2 <= t <= k + 1:
        raise ConfigurationError(f"threshold must be in 2..{k + 1} (degree + 1), got {t}: "
                                 "with t = 1 every share is the secret itself")
    if malicious and max_missing_in_window(n, k, corrupt_rate) < 0:
        raise ConfigurationError(
            f"degree {k} is too small for malicious-server mode with {n} clients at corrupt rate "
            f"{corrupt_rate}: the corrupt clients alone could fill k/2 consecutive ring places, "
            "so no survivor view could be shown to be uncut")
    corrupt = max_corrupt_neighbors(n, k, corrupt_rate)
    need = _secure_threshold(k, corrupt, malicious=malicious)
    if t < need:
        if malicious:
            why = (f"malicious-server mode needs 2t > neighbors + 1 + c = {k + 1 + corrupt} "
                   f"(c = {corrupt} corrupt neighbours at corrupt rate {corrupt_rate}), so that "
                   "two groups of share holders can never each reveal a different share of one "
                   "client")
        else:
            why = (f"the threshold must exceed the {corrupt} corrupt neighbours a client may "
                   f"have at corrupt rate {corrupt_rate}")
        raise ConfigurationError(f"threshold {t} is below {need}: {why}")


def choose_parameters(n: int, *, neighbors: int | None = None, threshold: int | None = None,
                      dropout_rate: float = DEFAULT_DROPOUT_RATE,
                      corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                      malicious: bool = False) -> GraphParameters:
    """Fill in whichever of degree and threshold is not given, then check the pair."""
    if neighbors is None:
        found = harary_parameters(n, corrupt_rate=corrupt_rate, dropout_rate=dropout_rate,
                                  malicious=malicious) if n > COMPLETE_GRAPH_UP_TO else None
        if found is None:
            neighbors = n - 1
            if threshold is None:
                threshold = complete_graph_threshold(n, corrupt_rate=corrupt_rate,
                                                     malicious=malicious)
        else:
            neighbors = found.neighbors
            if threshold is None:
                threshold = found.threshold
    elif threshold is None:
        if neighbors == n - 1:
            threshold = complete_graph_threshold(n, corrupt_rate=corrupt_rate, malicious=malicious)
        else:
            threshold = _threshold_for(n, neighbors, corrupt_rate, dropout_rate, malicious)
            if threshold is None:
                raise ConfigurationError(
                    f"degree {neighbors} is not secure for {n} clients at corrupt rate "
                    f"{corrupt_rate} and dropout rate {dropout_rate}: give a threshold or a "
                    "larger degree")
    check_graph(n, neighbors, threshold, malicious=malicious, corrupt_rate=corrupt_rate)
    return GraphParameters(n, neighbors, threshold)


def required_modulus_bits(n: int, input_bits: int) -> int:
    """Bits that hold the exact sum of n inputs of ``input_bits`` bits:
    input_bits + ceil(log2 n)."""
    if n < 1 or input_bits < 1:
        raise ConfigurationError("n and input_bits must be positive")
    return input_bits + max(0, (n - 1).bit_length())
