"""Process-level tuning for the long-running roles (the coordinator service, the site agent).

Every round, a site and the coordinator allocate and free the same few buffers of the model's
size (the masked vector, its packed bytes, the signed envelope, the received body). Above glibc
malloc's mmap threshold (128 KiB at start, adapted only up to the size of the largest block
freed so far) each such buffer is a fresh ``mmap`` whose every page faults in on first touch and
is returned to the system on ``free``: at m = 10^6 that is several thousand page faults per
message, more CPU than the AES that makes the mask. Raising the mmap and trim thresholds keeps
freed blocks in the heap for the next round's allocation of the same size. Nothing about what
is computed changes; memory the process no longer uses stays reserved to it (at most a few
model-sized buffers). The service reads bodies on its event-loop thread, and glibc gives such a
thread an arena of its own, made of 64 MiB heaps that are unmapped whole when emptied: a round's
messages do not fit in one, so each round faults thousands of its pages in again. One arena for the
process (``M_ARENA_MAX = 1``) keeps them in the main heap, whose thresholds are raised here; the
roles have a handful of threads, so the shared arena's lock is not contended.

There is no library for this: it is one call to glibc's ``mallopt``, a no-op on other C
libraries and platforms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_large_buffers"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Buffers above this are still served by mmap: a model of more than 2**28 parameters is rare
# enough that returning its memory to the system is then the better call.
_THRESHOLD = 1 << 30


def keep_large_buffers() -> bool:
    """Ask glibc to serve buffers up to 1 GiB from one heap and keep them when freed.

    Returns True when the allocator accepted it; False (and changes nothing) elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2 * _THRESHOLD - 1)) and bool(mallopt(_M_ARENA_MAX, 1))
