"""The id of each round's release: derived from a simulation's seed, else from the OS.

(The round's other randomness, :class:`privacy.RoundRandomness`, is shared with the sites,
which derive their own rounding and noise from it; it lives in ``privacy``.)
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["release_id"]


def release_id(seed: int | None, round_number: int) -> bytes:
    """The 32-byte id under which every site's ledger charges one round's release: derived
    from a simulation's seed and the round number (unique per run and round), else fresh from
    the OS."""
    if seed is None:
        return os.urandom(32)
    return hashlib.sha256(b"cohort/coordinator/release/v1\x00"
                          + f"{int(seed)}/{int(round_number)}".encode()).digest()
