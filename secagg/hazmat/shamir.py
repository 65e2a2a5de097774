"""Shamir secret sharing over the prime field of the Mersenne prime 2**521 - 1.

The field is far larger than any secret shared in a round (256-bit seeds and X25519 private
keys), so a secret is an ordinary field element and no secret information is lost to reduction.
Polynomial coefficients come from the operating system's CSPRNG (:mod:`secrets`). Share ``x``
coordinates are small positive integers (a client's id plus one), which lets reconstruction do
almost all of its Lagrange arithmetic on small integers and pay for one modular inverse only.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence

__all__ = ["PRIME", "SHARE_BYTES", "split", "reconstruct", "reconstruct_many", "encode_share",
           "decode_share"]

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
    """Recover the constant term from ``threshold`` of the (x, y) points (see
    :func:`reconstruct_many`, which shares one modular inverse among many secrets)."""
    return reconstruct_many([points], threshold)[0]


def _fraction(points: Iterable[tuple[int, int]], threshold: int) -> tuple[int, int]:
    """The constant term through ``threshold`` of the (x, y) points, as (numerator, denominator).

    Uses the first ``threshold`` points with distinct x; a repeated x must repeat its y.
    Lagrange weights at zero are
    w_i = prod_{j!=i} x_j / (x_j - x_i); the numerators and denominators are products of small
    integers, so the sum is formed over a common denominator and no inverse is taken here.
    """
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
            break
    if len(chosen) < threshold:
        raise ValueError("not enough distinct shares to reconstruct")
    xs = list(chosen)
    numerator_all = math.prod(xs)
    # Exact integer arithmetic (no reduction until the end): the denominators are products of
    # small differences, so the numbers stay a few thousand bits long and this is fastest.
    total = 0
    common = 1
    for xi in xs:
        den = math.prod([xj - xi for xj in xs if xj != xi])
        # Bring the running sum and this term over the common denominator common*den.
        total = total * den + chosen[xi] * (numerator_all // xi) * common
        common *= den
    return total % PRIME, common % PRIME


def reconstruct_many(point_sets: Sequence[Iterable[tuple[int, int]]],
                     threshold: int) -> list[int]:
    """Reconstruct several secrets; the modular inverses of their common denominators are
    batched (Montgomery's trick), so the whole batch pays for one inversion."""
    fractions = [_fraction(points, threshold) for points in point_sets]
    prefix = []
    running = 1
    for _, den in fractions:
        prefix.append(running)
        running = running * den % PRIME
    inverse = pow(running, -1, PRIME)
    out = [0] * len(fractions)
    for i in range(len(fractions) - 1, -1, -1):
        num, den = fractions[i]
        out[i] = num * (inverse * prefix[i] % PRIME) % PRIME
        inverse = inverse * den % PRIME
    return out


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
