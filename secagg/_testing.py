"""Planted defects, for tests only: a check must be able to fail (CONVENTIONS 12).

Each name switches one safeguard of the protocol back to a known-broken rule, so that a test
can show that its attack or search catches the defect. Nothing outside the test suite turns
any of them on; production code only asks :func:`planted`, which is False unless a test is
inside :func:`plant`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["DEFECTS", "plant", "planted"]

DEFECTS = frozenset({
    # 2t > k + 1 instead of 2t > k + 1 + c (the finder's and clients' old malicious bound).
    "threshold_without_corrupt_term",
    # Clients reveal after seeing `threshold` signatures, not a quorum no second view can reach.
    "signature_quorum_is_threshold",
    # Clients accept the advertise-time roster as the graph's seed (no commit-then-reveal).
    "graph_seed_from_roster",
    # Reconstruction uses the first t shares only and aborts on a mismatch.
    "first_t_shares",
    # The server trusts the sender id written in a message header.
    "trust_header_sender",
    # The parameter finder counts floor(gamma * n) corrupt clients while the model admits
    # ceil(gamma * n).
    "finder_rounds_corrupt_down",
    # Clients accept a survivor view with a run of k/2 ring places that has no survivor.
    "no_ring_cut_check",
    # A roster is accepted without checking the CA's signature (cohort.enrolment).
    "roster_skips_signature",
    # Clients reveal both shares (self-mask seed and mask key) of every surviving neighbour.
    # The privacy audit's never-both check (privacy.audit) proves it catches it.
    "client_reveals_both_shares",
    # The process-wide memo of signature checks forgets whose key a result was for
    # (secagg._views.signature_holds), so one client's accepted roster passes another's.
    "signature_memo_ignores_key",
})

_active: set[str] = set()


def planted(name: str) -> bool:
    return name in _active


@contextlib.contextmanager
def plant(*names: str) -> Iterator[None]:
    unknown = set(names) - DEFECTS
    if unknown:
        raise ValueError(f"unknown planted defects: {sorted(unknown)}")
    added = set(names) - _active
    _active.update(added)
    try:
        yield
    finally:
        _active.difference_update(added)
