"""Shamir secret sharing over the prime field of the Mersenne prime 2**521 - 1.

The field is far larger than any secret shared in a round (256-bit seeds and X25519 private
keys), so a secret is an ordinary field element and no secret information is lost to reduction.
Polynomial coefficients come from the operating system's CSPRNG (:mod:`secrets`). Share ``x``
coordinates are small positive integers (in the protocol, a holder's rank around the owner on
the ring), which keeps the Lagrange arithmetic on small integers and lets weights be reused.
"""

from __future__ import annotations

import itertools
import math
import operator
import secrets
from functools import lru_cache
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["PRIME", "SHARE_BYTES", "split", "reconstruct", "reconstruct_many", "reconstruct_rows",
           "lagrange_weights_at_zero", "decode_with_errors", "decode_with_check", "evaluate",
           "interpolate", "encode_share", "decode_share"]

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)


def split(secret: int, threshold: int, xs: Sequence[int]) -> list[int]:
    """Evaluate a random polynomial of degree threshold-1 with constant term ``secret`` at ``xs``.

    Any ``threshold`` of the returned values determine ``secret``; any fewer are independent of it.
    """
    if not 0 <= secret < PRIME:
        raise ValueError("secret out of field range")
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    if threshold > len(xs):
        raise ValueError("threshold exceeds the number of shares")
    coefficients = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    top = coefficients[::-1]
    shares = []
    for x in xs:
        acc = 0
        for c in top:
            acc = (acc * x + c) % PRIME
        shares.append(acc)
    return shares


def reconstruct(points: Iterable[tuple[int, int]], threshold: int) -> int:
    """Recover the constant term from ``threshold`` of the (x, y) points.

    Uses the first ``threshold`` points with distinct x; a repeated x must repeat its y.
    """
    return reconstruct_many([points], threshold)[0]


def _choose(points: Iterable[tuple[int, int]], threshold: int) -> dict[int, int]:
    chosen: dict[int, int] = {}
    for x, y in points:
        if not 0 < x < PRIME or not 0 <= y < PRIME:
            raise ValueError("share point out of range")
        if x in chosen:
            if chosen[x] != y:
                raise ValueError("two different shares for the same point")
            continue
        chosen[x] = y
        if len(chosen) == threshold:
            return chosen
    raise ValueError("not enough distinct shares to reconstruct")


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Inverses mod PRIME of non-zero values, with one modular exponentiation in all."""
    prefix = []
    running = 1
    for v in values:
        prefix.append(running)
        running = running * v % PRIME
    inverse = pow(running, -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return out


def lagrange_weights_at_zero(xs: Sequence[int]) -> list[int]:
    """w_i = prod_{j != i} x_j / (x_j - x_i) mod PRIME, so that f(0) = sum_i w_i f(x_i).

    Numerators and denominators are products of small integers, computed exactly; the t
    denominators are inverted together (Montgomery's trick: one modular inverse in all).
    """
    numerator_all = math.prod(xs)
    dens = [math.prod([xj - xi for xj in xs if xj != xi]) % PRIME for xi in xs]
    return [(numerator_all // x) * inv % PRIME for x, inv in zip(xs, _batch_inverse(dens))]


@lru_cache(maxsize=64)
def _dense_tables(top: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """For x-coordinates drawn from 1..top: top! mod p, 1/(i * prod_{j != i}(j - i)) and 1/i.

    prod_{j in 1..top, j != i} (j - i) = (-1)^(i-1) (i-1)! (top-i)!.
    """
    fact = [1] * (top + 1)
    for i in range(1, top + 1):
        fact[i] = fact[i - 1] * i
    full = [(-1) ** (i - 1) * i * fact[i - 1] * fact[top - i] % PRIME for i in range(1, top + 1)]
    return (fact[top] % PRIME, tuple(_batch_inverse(full)),
            tuple(_batch_inverse(list(range(1, top + 1)))))


def _weights(xs: tuple[int, ...]) -> list[int]:
    """Lagrange weights at zero; fast when xs fill most of 1..max(xs) (holders by rank).

    With K = max(xs) and M the ranks in 1..K that are missing from xs,
    w_i = K! * prod_{m in M}(m - x_i) / (prod(M) * x_i * prod_{j in 1..K, j != x_i}(j - x_i)),
    so a set costs |M| small multiplications per weight instead of a product over all of xs.
    """
    scale, small, full = _dense_parts(xs)
    if small is None:
        return [scale * f % PRIME for f in full] if scale != 1 else list(full)
    return [scale * m % PRIME * f % PRIME for m, f in zip(small, full)]


def reconstruct_many(point_sets: Sequence[Iterable[tuple[int, int]]],
                     threshold: int) -> list[int]:
    """Reconstruct several secrets. Lagrange weights depend only on the x-coordinates used, so
    they are computed once per distinct set of x-coordinates: when share holders are numbered
    by their position relative to the owner, most secrets of a round share a handful of sets."""
    cache: dict[tuple[int, ...], list[int]] = {}
    out = []
    for points in point_sets:
        chosen = _choose(points, threshold)
        xs = tuple(chosen)
        weights = cache.get(xs)
        if weights is None:
            weights = cache[xs] = _weights(xs)
        out.append(sum(y * w for y, w in zip(chosen.values(), weights)) % PRIME)
    return out


def reconstruct_rows(xs: np.ndarray, ys: Sequence[int]) -> list[int]:
    """Reconstruct many secrets from exactly t points each, batched over holder sets.

    Row i of the (secrets, t) integer array ``xs`` holds the x-coordinates of secret i's points
    (each row strictly increasing, all positive), and ``ys[i * t:(i + 1) * t]`` their values,
    field elements that the caller has range-checked. Secrets whose rows are equal share one
    Lagrange basis: under the SecAgg+ graph most owners see the same holder ranks, so a round
    computes a few bases and then one t-term dot product per secret. The result equals
    ``reconstruct_many`` on the same points.
    """
    xs = np.asarray(xs)
    if xs.ndim != 2:
        raise ValueError("xs must be a (secrets, threshold) array")
    count, t = xs.shape
    if len(ys) != count * t:
        raise ValueError("ys must hold threshold values per secret")
    if count == 0:
        return []
    if t == 0 or xs[:, 0].min() < 1 or (t > 1 and (np.diff(xs, axis=1) <= 0).any()):
        raise ValueError("share points must be distinct, increasing and non-zero")
    if int(xs[:, -1].max()) >= PRIME:
        raise ValueError("share point out of range")
    # Rows grouped by their bytes (cheaper than a lexicographic sort of the rows).
    rows = np.ascontiguousarray(xs, dtype=np.int64)
    group: dict[bytes, int] = {}
    which = [group.setdefault(key, len(group))
             for key in rows.view(np.dtype((np.void, 8 * t))).ravel().tolist()]
    members = np.zeros(len(group), dtype=np.int64)
    members[which] = np.arange(count)  # any row of a group stands for it: they are equal
    bases = _bases(rows[members])
    mul = operator.mul
    out = []
    for i, g in enumerate(which):
        scale, small, full = bases[g]
        terms = ys[i * t:i * t + t]
        if small is not None:
            terms = map(mul, terms, small)
        acc = sum(map(mul, terms, full)) % PRIME
        out.append(acc if scale == 1 else acc * scale % PRIME)
    return out


def _bases(sets: np.ndarray, chunk: int = 1024) -> list[tuple[int, list[int] | None, list[int]]]:
    """:func:`_dense_parts` of every row of ``sets`` (increasing rows of ranks), with
    the small products of all dense rows computed in numpy, a chunk of rows at a time."""
    count, t = sets.shape
    top = sets[:, -1]
    # Dense rows whose small products fit in int64 (fewer than 63 bits: |M| factors < top).
    cheap = (top <= 2 * t) & ((top - t) * np.log2(np.maximum(top, 2)) < 62)
    out: list = [None] * count
    rows = np.flatnonzero(cheap)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        xs = sets[part]
        width = int(xs[:, -1].max())
        ranks = np.arange(1, width + 1)
        present = np.zeros((len(part), width + 1), dtype=bool)
        present[np.arange(len(part))[:, None], xs] = True
        missing = ~present[:, 1:] & (ranks <= xs[:, -1:])
        factors = np.where(missing[:, None, :], ranks - xs[:, :, None], 1)
        smalls = factors.prod(axis=2).tolist()
        for g, row, gone, small in zip(part.tolist(), xs.tolist(), missing, smalls):
            top_fact, inv_i_full, inv_small = _dense_tables(row[-1])
            scale = top_fact
            absent = (np.flatnonzero(gone) + 1).tolist()
            for m in absent:
                scale = scale * inv_small[m - 1] % PRIME
            out[g] = (scale, small if absent else None, [inv_i_full[x - 1] for x in row])
    for g in np.flatnonzero(~cheap).tolist():
        out[g] = _dense_parts(tuple(sets[g].tolist()))
    return out


def _dense_parts(xs: tuple[int, ...]) -> tuple[int, list[int] | None, list[int]]:
    """Lagrange weights at zero for the ranks ``xs`` as w_i = scale * small_i * full_i mod p
    (see :func:`_weights`): ``full_i`` from the shared table for 1..max(xs), ``small_i`` the
    product of (m - x_i) over the ranks m missing from xs (None when none is missing), and one
    ``scale``. A new set of ranks then costs a few small-integer products, not t modular
    multiplications; each secret pays t cheap small multiplications more. ``xs`` need not be
    sorted; the parts are in its order."""
    top = max(xs)
    # Only worth it (and only bounded in memory) when xs are dense small ranks.
    if top > 4096 or top > 2 * len(xs):
        return 1, None, lagrange_weights_at_zero(xs)
    present = set(xs)
    missing = [m for m in range(1, top + 1) if m not in present]
    top_fact, inv_i_full, inv_small = _dense_tables(top)
    scale = top_fact
    for m in missing:
        scale = scale * inv_small[m - 1] % PRIME
    small = [math.prod([m - x for m in missing]) for x in xs] if missing else None
    return scale, small, [inv_i_full[x - 1] for x in xs]


def evaluate(poly: Sequence[int], x: int) -> int:
    """The polynomial with coefficients ``poly`` (constant term first) at x, mod PRIME."""
    acc = 0
    for c in reversed(poly):
        acc = (acc * x + c) % PRIME
    return acc


# Polynomials below are lists of coefficients mod PRIME, constant term first, without trailing
# zeros (the zero polynomial is []). Written here because the decoder needs exact arithmetic
# over this 521-bit field, which no maintained Python library offers at this size and speed.

def _trim(p: list[int]) -> list[int]:
    while p and p[-1] == 0:
        p.pop()
    return p


def _sub(a: list[int], b: list[int]) -> list[int]:
    out = [0] * max(len(a), len(b))
    for i, c in enumerate(a):
        out[i] = c
    for i, c in enumerate(b):
        out[i] = (out[i] - c) % PRIME
    return _trim(out)


def _mul(a: list[int], b: list[int]) -> list[int]:
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                out[i + j] += x * y
    return _trim([c % PRIME for c in out])


def _divmod(a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
    a = list(a)
    inv = pow(b[-1], -1, PRIME)
    q = [0] * max(0, len(a) - len(b) + 1)
    for shift in range(len(a) - len(b), -1, -1):
        c = a[shift + len(b) - 1] * inv % PRIME
        q[shift] = c
        if c:
            for j, bj in enumerate(b):
                a[shift + j] = (a[shift + j] - c * bj) % PRIME
    return _trim(q), _trim(a[:len(b) - 1])


def interpolate(points: Sequence[tuple[int, int]]) -> list[int]:
    """The polynomial of degree < len(points) through the points (Lagrange, O(m^2))."""
    xs = [x for x, _ in points]
    full = [1]
    for x in xs:
        full = _mul(full, [(-x) % PRIME, 1])
    dens = [math.prod([xi - xj for xj in xs if xj != xi]) % PRIME for xi in xs]
    out = [0] * len(xs)
    for (x, y), inv in zip(points, _batch_inverse(dens)):
        basis, _ = _divmod(full, [(-x) % PRIME, 1])
        scale = y * inv % PRIME
        for i, c in enumerate(basis):
            out[i] = (out[i] + scale * c) % PRIME
    return _trim(out)


def decode_with_errors(points: Sequence[tuple[int, int]], threshold: int) -> list[int]:
    """The polynomial of degree < ``threshold`` that agrees with all but at most
    (len(points) - threshold) // 2 of the points (Gao's Reed-Solomon decoder).

    Raises ValueError when no such polynomial exists (too many wrong shares to correct).
    """
    if len({x for x, _ in points}) != len(points):
        raise ValueError("share points must have distinct x")
    m = len(points)
    if m < threshold:
        raise ValueError("not enough shares to decode")
    g0 = [1]
    for x, _ in points:
        g0 = _mul(g0, [(-x) % PRIME, 1])
    g1 = interpolate(points)
    # Partial extended Euclid on (g0, g1), tracking only the cofactor of g1.
    r_prev, r_cur = g0, g1
    v_prev, v_cur = [], [1]
    while r_cur and 2 * (len(r_cur) - 1) >= m + threshold:
        q, r_next = _divmod(r_prev, r_cur)
        r_prev, r_cur = r_cur, r_next
        v_prev, v_cur = v_cur, _sub(v_prev, _mul(q, v_cur))
    if not r_cur:
        return []  # the zero polynomial fits (every share is zero)
    f, remainder = _divmod(r_cur, v_cur)
    if remainder or len(f) > threshold:
        raise ValueError("too many wrong shares to correct")
    wrong = sum(1 for x, y in points if evaluate(f, x) != y)
    if 2 * wrong > m - threshold:
        raise ValueError("too many wrong shares to correct")
    return f


def decode_with_check(points: Sequence[tuple[int, int]], threshold: int, check,
                      *, max_subsets: int = 4096) -> list[int]:
    """The polynomial of degree < ``threshold`` whose constant term passes ``check`` and that
    agrees with as many points as possible.

    Unique decoding (Gao) corrects (m - t) / 2 wrong points; with the owner's commitment as a
    check, any t correct points suffice: when unique decoding fails, every t-subset is tried
    while there are at most ``max_subsets`` of them (so one wrong share among t + 1 cannot
    stop a reconstruction that t honest shares allow). Raises ValueError if none passes.
    """
    try:
        poly = decode_with_errors(points, threshold)
        if poly and check(poly[0]):
            return poly
    except ValueError:
        pass
    if math.comb(len(points), threshold) > max_subsets:
        raise ValueError("too many wrong shares to correct")
    for subset in itertools.combinations(points, threshold):
        if check(reconstruct(subset, threshold)):
            return interpolate(subset)
    raise ValueError("no set of threshold shares opens the commitment")


def encode_share(y: int) -> bytes:
    if not 0 <= y < PRIME:
        raise ValueError("share out of field range")
    return y.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes) -> int:
    if len(data) != SHARE_BYTES:
        raise ValueError("share has the wrong length")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ValueError("share out of field range")
    return y
