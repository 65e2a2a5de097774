"""The fast Walsh-Hadamard transform, normalised so that it is orthogonal (and its own inverse).

Internal: the encoder's randomised rotation is ``H @ diag(signs)``. The transform of a length
2^m vector is the Kronecker product of small Hadamard matrices, so it is computed as a few
batched matrix products with 32x32 (or smaller) blocks: numpy's BLAS does the butterflies of five
levels at once, which is about twice as fast as twenty levels of element-wise butterflies.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from typing import Any, ContextManager

import numpy as np

from .errors import ConfigurationError

_BLOCK_BITS = 5
_controller: Any = None


def _single_threaded_blas() -> ContextManager[Any]:
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # the transform is still correct, only slower
            _controller = False
        else:
            _controller = ThreadpoolController()
    if _controller is False:
        return nullcontext()
    return _controller.limit(limits=1, user_api="blas")


@lru_cache(maxsize=None)
def _hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    h.setflags(write=False)
    return h


def _block_sizes(m: int) -> list[int]:
    sizes = [1 << _BLOCK_BITS] * (m // _BLOCK_BITS)
    if m % _BLOCK_BITS:
        sizes.append(1 << (m % _BLOCK_BITS))
    return sizes


def fwht(x: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform of a 1-D float64 array whose length is a power of 2.

    Returns a new array; ``fwht(fwht(x)) == x`` up to rounding.
    """
    n = x.shape[0]
    if x.ndim != 1 or n < 1 or n & (n - 1):
        raise ConfigurationError("the Hadamard transform needs a 1-D array of length 2^m")
    m = n.bit_length() - 1
    y = np.asarray(x, dtype=np.float64)
    before = 1
    with _single_threaded_blas():
        for f in _block_sizes(m):
            after = n // (before * f)
            h = _hadamard(f)
            # Kronecker structure: apply the f x f block along one axis of the (before, f, after)
            # view of the vector.
            y = (y.reshape(-1, f) @ h) if after == 1 else np.matmul(h, y.reshape(before, f, after))
            before *= f
    y = y.reshape(n)
    y *= 1.0 / np.sqrt(n)
    return y


def next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
