"""Whether a stored release is what the secure sum it claims to release decodes to.

A coordinator decodes a round's modular aggregate with the round's own codec
(:class:`privacy.WeightedSumCodec`, from the announced encoding, rotation seed and weight
bound) and stores the weighted sum and the total weight it applies to the model. The audit
regenerates that aggregate by replaying the stored inbox; :func:`compare_release` decodes it
exactly as the coordinator does and holds the stored release to it:

* **No coordinator noise** (modes none, distributed and local: any noise is the sites', inside
  the sum): the decoding is a deterministic function of the sum, so the release must equal it.
  The two are computed by the same code from the same integers and are bit-identical; a
  difference above ``RELEASE_TOLERANCE`` (relative, plus the same absolute) at any coordinate,
  or in the total weight, is a mismatch, reported with its largest difference.
* **Central DP** (mode ``central_gaussian``): the coordinator added a discrete Gaussian of the
  announced sigma^2 = ``RoundPrivacy.central_variance`` (integer units: (z c / gamma)^2) to the
  sum inside Z_2^b before decoding. The decoding is linear, and its rotation orthonormal, so
  (barring a wrap) the release minus the decoded sum is that noise rotated: each decoded
  coordinate carries an independent, near-Gaussian error of standard deviation
  gamma * sd(N_Z(0, sigma^2)) (times ``max_weight`` for the weighted sum, and over the update
  clip for the total weight, which is then rounded when weights are integers: that half unit
  is allowed for in the direction that can only make a false alarm rarer). The sum of the
  squared standardised differences over the d + 1 decoded coordinates must lie inside the
  two-sided chi-square(d + 1) interval whose tails hold ``NOISE_FALSE_ALARM`` together: above
  it, the release is further from the sum than the declared noise goes (a changed or scaled
  release, a release of another sum, noise far larger than declared); below it, nearer (the
  noise left out, exactly zero, or shrunk). An honest round fails this test with probability
  ``NOISE_FALSE_ALARM``, to the Gaussian approximation of the rotated discrete noise (each
  decoded coordinate mixes every integer coordinate's noise; at the sigmas a plan uses the
  discrete Gaussian's variance is sigma^2 to within 1e-15), plus the chance of a wrap (below).
  The scale is the announcement's, which every site checked before it took part; whether the
  stored event charges that scale is the accounting checks' business, not this one's.

What the central test does not prove: that the noise was drawn fairly. A coordinator that
*chose* a noise vector of the declared size (say, one that pushes the model where it likes, or
one it already knows) passes, since such a vector is indistinguishable by its size from a fair
draw; nor does it catch a difference that is itself small beside the noise (a shift of one
coordinate by a fraction of sigma). It also cannot tell a wrong release from an honest noise
draw that wrapped the sum (a coordinate of the replayed sum within the noise's reach of
+-2^(b-1)): such a release fails the test, and the failure says how many coordinates lay within
that reach. It fails closed: the release is then not the secure sum plus the declared noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..encoding import WeightedSumCodec, centre_lift
from ..errors import ReleaseMismatch
from ..mechanisms import Mechanism
from ._wire import Announcement

__all__ = ["RELEASE_TOLERANCE", "NOISE_FALSE_ALARM", "ReleaseComparison", "decode_sum",
           "compare_release"]

RELEASE_TOLERANCE = 1e-9
"""Largest difference, relative (plus the same absolute), between a noiseless release and the
replayed sum's decoding. Both come from the same code and the same integers, so an honest
release is bit-identical: the tolerance is a margin, not an allowance for error."""

NOISE_FALSE_ALARM = 1e-9
"""Probability that an honest central-DP release fails the noise test (both tails together)."""


@dataclass(frozen=True)
class ReleaseComparison:
    """What one comparison found. ``central``: the central-noise test was made (``statistic``
    is its chi-square over ``dof`` coordinates, ``bounds`` the interval it lay in); otherwise
    ``max_difference`` is the largest difference between the release and the decoded sum."""

    central: bool
    max_difference: float
    statistic: float | None = None
    dof: int = 0
    bounds: tuple[float, float] | None = None


def decode_sum(ann: Announcement, aggregate: np.ndarray, *,
               integer_total: bool | None = None) -> tuple[np.ndarray, float]:
    """The coordinator's decoding of a noiseless modular ``aggregate`` of the round ``ann``
    announces: (weighted sum, total weight), the total rounded when the announcement says
    weights are integers (``integer_total`` overrides that)."""
    whole = ann.integer_weights if integer_total is None else integer_total
    return _codec(ann).decode(np.asarray(aggregate), integer_total=whole)


def _codec(ann: Announcement) -> WeightedSumCodec:
    return WeightedSumCodec(ann.encoding, rotation_seed=ann.rotation_seed,
                            max_weight=ann.max_weight)


def _discrete_gaussian_sd(sigma2: float) -> float:
    """The standard deviation of N_Z(0, sigma2): below sigma for small sigma (by less than
    1e-15 relative from sigma = 1 up, where it is taken as sigma)."""
    sigma = math.sqrt(sigma2)
    if sigma >= 1.0:
        return sigma
    x = np.arange(-60, 61, dtype=np.float64)
    w = np.exp(-x * x / (2.0 * sigma2))
    return math.sqrt(float((x * x * w).sum() / w.sum()))


def _read(weighted_sum: np.ndarray, total_weight: float,
          size: int) -> tuple[np.ndarray, float]:
    ws = np.asarray(weighted_sum, dtype=np.float64).reshape(-1)
    if ws.size != size:
        raise ReleaseMismatch(f"the stored release has {ws.size} coordinates; the replayed "
                              f"secure sum decodes to {size}")
    tw = float(total_weight)
    if not (np.isfinite(ws).all() and math.isfinite(tw)):
        raise ReleaseMismatch("the stored release holds NaN or infinite values")
    return ws, tw


def compare_release(ann: Announcement, aggregate: np.ndarray, weighted_sum: np.ndarray,
                    total_weight: float) -> ReleaseComparison:
    """Hold a stored release (``weighted_sum``, ``total_weight``) to the replayed secure sum
    ``aggregate`` (residues mod 2^b) of the round ``ann`` announces; see the module docstring.
    :class:`~privacy.errors.ReleaseMismatch`, saying by how much, if it is not that sum's
    release."""
    if ann.privacy.mechanism is Mechanism.CENTRAL_GAUSSIAN:
        return _central(ann, aggregate, weighted_sum, total_weight)
    want, weight = decode_sum(ann, aggregate)
    ws, tw = _read(weighted_sum, total_weight, want.size)
    diff = np.abs(ws - want)
    bad = np.flatnonzero(diff > RELEASE_TOLERANCE * (1.0 + np.abs(want)))
    worst = float(diff.max(initial=0.0))
    if bad.size:
        i = int(bad[np.argmax(diff[bad])])
        raise ReleaseMismatch(
            f"the stored release is not the replayed secure sum's decoding: {bad.size} of "
            f"{want.size} coordinates differ, by up to {worst:.6g} (coordinate {i}: stored "
            f"{ws[i]:.17g}, decoded {want[i]:.17g}; tolerance {RELEASE_TOLERANCE:g} relative)")
    if abs(tw - weight) > RELEASE_TOLERANCE * (1.0 + abs(weight)):
        raise ReleaseMismatch(f"the stored total weight is {tw:.17g}; the replayed secure sum "
                              f"decodes to {weight:.17g}")
    return ReleaseComparison(central=False, max_difference=max(worst, abs(tw - weight)))


def _central(ann: Announcement, aggregate: np.ndarray, weighted_sum: np.ndarray,
             total_weight: float) -> ReleaseComparison:
    enc, rp = ann.encoding, ann.privacy
    want, weight = decode_sum(ann, aggregate, integer_total=False)
    ws, tw = _read(weighted_sum, total_weight, want.size)
    sigma2 = rp.central_variance(enc)
    decoded_sd = enc.gamma * _discrete_gaussian_sd(sigma2)  # per decoded coordinate
    update_clip = _codec(ann).update_clip  # the weight slot holds (w / max_weight) c
    z = (ws - want) / (decoded_sd * ann.max_weight)
    zw = abs(tw - weight) / (decoded_sd * ann.max_weight / update_clip)
    slack = (0.5 / (decoded_sd * ann.max_weight / update_clip)) if ann.integer_weights else 0.0
    core = float(np.dot(z, z))
    high = core + max(zw - slack, 0.0) ** 2  # the rounding can only have moved it this much
    low = core + (zw + slack) ** 2
    dof = want.size + 1
    lo = float(stats.chi2.ppf(NOISE_FALSE_ALARM / 2.0, dof))
    hi = float(stats.chi2.isf(NOISE_FALSE_ALARM / 2.0, dof))
    worst = float(np.abs(ws - want).max(initial=0.0))
    declared = (f"the declared central noise (sigma {decoded_sd * ann.max_weight:.6g} per "
                f"coordinate of the weighted sum)")
    if high > hi:
        reach = _near_wrap(aggregate, enc.bits, math.sqrt(sigma2), enc.padded_dim)
        wrap = (f"; {reach} coordinate(s) of the replayed sum lie within the noise's reach of "
                "the modulus, where an honest draw may have wrapped" if reach else "")
        raise ReleaseMismatch(
            f"the stored release differs from the replayed secure sum's decoding by more than "
            f"{declared}: chi-square {high:.6g} over {dof} coordinates, above {hi:.6g} (false "
            f"alarm {NOISE_FALSE_ALARM:g}); largest difference {worst:.6g}{wrap}")
    if low < lo:
        whole = float(round(weight)) if ann.integer_weights else weight
        what = ("it is exactly the decoded sum: no noise was added"
                if worst == 0.0 and tw == whole else f"largest difference {worst:.6g}")
        raise ReleaseMismatch(
            f"the stored release differs from the replayed secure sum's decoding by less than "
            f"{declared}: chi-square {low:.6g} over {dof} coordinates, below {lo:.6g} (false "
            f"alarm {NOISE_FALSE_ALARM:g}); {what}")
    return ReleaseComparison(central=True, max_difference=worst, statistic=core + zw * zw,
                             dof=dof, bounds=(lo, hi))


def _near_wrap(aggregate: np.ndarray, bits: int, sigma: float, size: int) -> int:
    """How many residues of ``aggregate`` lie so near +-2^(bits-1) that noise of sd ``sigma``
    reaches past it with more than NOISE_FALSE_ALARM probability over all ``size``."""
    lifted = centre_lift(np.asarray(aggregate), bits).astype(np.float64)
    reach = sigma * float(stats.norm.isf(NOISE_FALSE_ALARM / (2.0 * size)))
    half = float(1 << (bits - 1))
    return int(((lifted + reach >= half) | (lifted - reach < -half)).sum())
