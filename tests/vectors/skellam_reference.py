"""Regenerates ``privacy_skellam_vectors.json`` (run by hand; not a test).

An independent route to Skellam RDP known answers: the bound is evaluated in mpmath at 50
digits in *Google's* parametrisation (google-research/federated, distributed_dp/
accounting_utils.py, ``_skellam_rdp(l1_sens, l2_sens, central_var, scale, order)``:
original units, sensitivities and the central variance before the 1/gamma scaling by
``scale``), i.e. eps(a) = a D2^2/(2 mu) + min(((2a-1) s D2^2 + 6 D1)/(4 s^3 mu^2), 3 D1/(2 s mu)),
which is Agarwal, Kairouz, Liu 2021 (Corollary 3.6) in the unscaled domain. Cohort analyses the
same release in the scaled integer domain (D' = s D, mu' = s^2 mu), so agreement checks the
formula and the change of units, not a copy of our code. Epsilon: Balle et al. 2020 Thm 21
conversion minimised over *every* integer order 2..max_order, in mpmath.
"""

from __future__ import annotations

import json
from pathlib import Path

import mpmath as mp

mp.mp.dps = 50

SETTINGS = [  # scale s, central stddev (original units), D2, D1 (original units), steps, delta
    dict(scale=100, central_stddev=1000, l2=1, l1=32, steps=1, delta=1e-5, max_order=20000),
    dict(scale=64, central_stddev=25, l2=2, l1=40, steps=10, delta=1e-6, max_order=5000),
    dict(scale=8, central_stddev=30, l2=1.5, l1=12, steps=100, delta=1e-5, max_order=2000),
    dict(scale=1000, central_stddev=50, l2=0.5, l1=16, steps=1, delta=1e-5, max_order=20000),
]
ORDERS = [2, 3, 17, 64, 256, 1024]


def rdp(a, s, sigma, l2, l1):
    a, s, mu, l2, l1 = (mp.mpf(x) for x in (a, s, mp.mpf(sigma) ** 2, l2, l1))
    return a / (2 * mu) * l2 ** 2 + min(((2 * a - 1) * s * l2 ** 2 + 6 * l1) / (4 * s ** 3 * mu ** 2),
                                        3 * l1 / (2 * s * mu))


def epsilon(cfg):
    best, order = None, None
    for a in range(2, cfg["max_order"] + 1):
        r = cfg["steps"] * rdp(a, cfg["scale"], cfg["central_stddev"], cfg["l2"], cfg["l1"])
        e = r - (mp.log(cfg["delta"]) + mp.log(a)) / (a - 1) + mp.log(mp.mpf(a - 1) / a)
        if best is None or e < best:
            best, order = e, a
    assert order < cfg["max_order"], "optimum at the edge: raise max_order"
    return best, order


def main() -> None:
    out = {"description": __doc__.strip().splitlines()[0], "source": (
        "mpmath (50 digits) evaluation of the Skellam RDP bound in the parametrisation of "
        "google-research/federated distributed_dp/accounting_utils.py::_skellam_rdp "
        "(Agarwal, Kairouz, Liu 2021, Corollary 3.6); epsilon by Balle et al. 2020 Theorem 21 "
        "over every integer order; see tests/vectors/skellam_reference.py"), "vectors": []}
    for cfg in SETTINGS:
        eps, order = epsilon(cfg)
        out["vectors"].append({**cfg, "rdp_single_release": {
            str(a): float(rdp(a, cfg["scale"], cfg["central_stddev"], cfg["l2"], cfg["l1"]))
            for a in ORDERS}, "epsilon": float(eps), "best_integer_order": order})
    path = Path(__file__).with_name("privacy_skellam_vectors.json")
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
