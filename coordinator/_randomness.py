"""Where a round's randomness comes from: the OS CSPRNG, or a simulation seed.

Without a seed every site's rounding and noise use a fresh ``RandomSource.secure()`` and the
public rotation seed is 32 bytes from ``os.urandom``. With a seed (simulations and tests only)
each consumer gets its own stream derived by SHA-256 from the seed and a label, so no two sites
ever share noise.
"""

from __future__ import annotations

import hashlib
import os

from privacy import RandomSource

__all__ = ["RoundRandomness", "release_id"]

_DOMAIN = b"cohort/coordinator/secure-sum/v1\x00"


class RoundRandomness:
    def __init__(self, seed: int | None) -> None:
        self._seed = seed

    @property
    def simulation(self) -> bool:
        return self._seed is not None

    def _digest(self, label: bytes) -> bytes:
        assert self._seed is not None
        return hashlib.sha256(_DOMAIN + label + b"\x00" + str(self._seed).encode()).digest()

    def rotation_seed(self) -> bytes:
        return os.urandom(32) if self._seed is None else self._digest(b"rotation")

    def source(self, label: str) -> RandomSource:
        if self._seed is None:
            return RandomSource.secure()
        return RandomSource.for_simulation(int.from_bytes(self._digest(label.encode())[:8], "big"))


def release_id(seed: int | None, round_number: int) -> bytes:
    """The 32-byte id under which every site's ledger charges one round's release: derived
    from a simulation's seed and the round number (unique per run and round), else fresh from
    the OS."""
    if seed is None:
        return os.urandom(32)
    return hashlib.sha256(b"cohort/coordinator/release/v1\x00"
                          + f"{int(seed)}/{int(round_number)}".encode()).digest()
