"""Where the randomness of rounding and noise comes from.

Secure by default: :meth:`RandomSource.secure` keys a fresh numpy ``Philox`` generator with 256
bits from the operating system's CSPRNG (``secrets``), mixed by ``SeedSequence`` into Philox's
128-bit key and counter. Why Philox: it is a counter-based generator built from a block-cipher
style round function (Salmon et al. 2011), so one key never shares a stream with another and
numpy's exact samplers (Poisson, geometric) run on it at full speed; why fresh OS entropy for
every source: nothing about one client's noise can be predicted from any seed, clock or earlier
output. Philox-4x64-10 is not a proven CSPRNG; what protects the data is that its key comes from
the OS and is never reused or revealed. (Masks in ``secagg`` use AES-CTR; noise here need not
be a keystream.)

Seeds are accepted only through :meth:`RandomSource.for_simulation`, whose name says what it
is for; a source made that way reports ``is_secure == False`` and production code can refuse it.
"""

from __future__ import annotations

import hashlib
import os
import secrets

import numpy as np

from . import _validate as v

__all__ = ["RandomSource", "RoundRandomness"]


class RandomSource:
    """A numpy ``Generator`` together with whether it is fit for real (non-simulated) use."""

    __slots__ = ("_generator", "_secure")

    def __init__(self, generator: np.random.Generator, *, _secure: bool) -> None:
        self._generator = generator
        self._secure = _secure

    @classmethod
    def secure(cls) -> "RandomSource":
        """A fresh generator keyed with 256 bits from ``secrets`` (the OS CSPRNG)."""
        seq = np.random.SeedSequence(secrets.randbits(256))
        return cls(np.random.Generator(np.random.Philox(seq)), _secure=True)

    @classmethod
    def for_simulation(cls, seed: int) -> "RandomSource":
        """A reproducible generator for tests and simulations only (``is_secure`` is False)."""
        seed = v.integer(seed, "seed", minimum=0)
        return cls(np.random.Generator(np.random.Philox(seed)), _secure=False)

    @property
    def generator(self) -> np.random.Generator:
        return self._generator

    @property
    def is_secure(self) -> bool:
        return self._secure

    def __repr__(self) -> str:
        return f"RandomSource({'secure' if self._secure else 'simulation'})"


_ROUND_DOMAIN = b"cohort/coordinator/secure-sum/v1\x00"  # kept: seeded runs stay bit-identical


class RoundRandomness:
    """Where one round's randomness comes from: the OS CSPRNG, or a simulation seed.

    Without a seed every consumer (each site's rounding and noise, the coordinator's central
    noise) gets a fresh :meth:`RandomSource.secure` and the public rotation seed is 32 bytes
    from ``os.urandom``. With a seed (simulations and tests only) each consumer gets its own
    stream derived by SHA-256 from the seed and a label, so no two sites ever share noise. A
    site derives its own stream here itself (label ``site-<client id>``): in a simulation the
    sites and the coordinator share a seed, never the streams."""

    def __init__(self, seed: int | None) -> None:
        self._seed = v.seed(seed)

    @property
    def simulation(self) -> bool:
        return self._seed is not None

    def _digest(self, label: bytes) -> bytes:
        assert self._seed is not None
        return hashlib.sha256(_ROUND_DOMAIN + label + b"\x00" + str(self._seed).encode()).digest()

    def rotation_seed(self) -> bytes:
        return os.urandom(32) if self._seed is None else self._digest(b"rotation")

    def source(self, label: str) -> RandomSource:
        if self._seed is None:
            return RandomSource.secure()
        return RandomSource.for_simulation(int.from_bytes(self._digest(label.encode())[:8], "big"))
