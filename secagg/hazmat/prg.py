"""The mask PRG: AES-128-CTR keystreams written straight into preallocated numpy buffers.

Every mask in a round is the keystream of AES-128-CTR under a fresh 128-bit key that was derived
(HKDF-SHA256) for that round and that pair or self-mask; the counter starts at zero, which is safe
because no key is ever used for two streams. The keystream is produced with ``update_into`` into a
reusable buffer (no allocation per mask), and added to or subtracted from an accumulator in place:
unsigned wrap-around of uint32/uint64 *is* the reduction mod 2**32 / 2**64, and since 2**b divides
those, the result is also right mod 2**b for every smaller b once the high bits are masked.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["MASK_KEY_BYTES", "MaskGenerator", "word_dtype"]

MASK_KEY_BYTES = 16
_ZERO_IV = bytes(16)
# cryptography's update_into has historically demanded block_size - 1 spare bytes of output.
_SLACK = 15


def word_dtype(modulus_bits: int) -> np.dtype:
    """The unsigned machine word in which arithmetic mod 2**modulus_bits is done."""
    if not 1 <= modulus_bits <= 64:
        raise ValueError("modulus_bits must be in 1..64")
    return np.dtype(np.uint32) if modulus_bits <= 32 else np.dtype(np.uint64)


class MaskGenerator:
    """Expands 128-bit keys into mask vectors of ``dim`` words and folds them into accumulators.

    One generator owns one scratch buffer of ``dim`` words and one all-zero plaintext, so expanding
    thousands of masks allocates nothing.
    """

    def __init__(self, dim: int, modulus_bits: int) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.dim = dim
        self.dtype = word_dtype(modulus_bits)
        self.nbytes = dim * self.dtype.itemsize
        self._raw = bytearray(self.nbytes + _SLACK)
        self._zeros = bytes(self.nbytes)
        self._out = memoryview(self._raw)
        self.buffer: np.ndarray = np.frombuffer(self._raw, dtype=self.dtype, count=dim)
        # A mode object is a stateless description of CTR from counter block zero: one serves
        # every key (each key still gets its own cipher context and key schedule).
        self._zero_mode = modes.CTR(_ZERO_IV)

    def expand(self, key: bytes, counter_block: bytes = _ZERO_IV) -> np.ndarray:
        """Fill the scratch buffer with the mask of ``key`` and return it (valid until next call).

        Masks always start from the all-zero counter block; ``counter_block`` exists so that the
        keystream can be checked against published AES-CTR vectors.
        """
        if len(key) != MASK_KEY_BYTES:
            raise ValueError("mask keys are 16 bytes")
        mode = self._zero_mode if counter_block is _ZERO_IV else modes.CTR(counter_block)
        Cipher(algorithms.AES(key), mode).encryptor().update_into(self._zeros, self._out)
        return self.buffer

    def add(self, acc: np.ndarray, key: bytes) -> None:
        """acc += PRG(key), wrapping."""
        np.add(acc, self.expand(key), out=acc)

    def subtract(self, acc: np.ndarray, key: bytes) -> None:
        """acc -= PRG(key), wrapping."""
        np.subtract(acc, self.expand(key), out=acc)
