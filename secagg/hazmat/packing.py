"""Bit packing of masked vectors: exactly b bits per entry on the wire, for any 1 <= b <= 64.

A b-bit value is cut into *lanes* along the binary digits of b (e.g. 26 = 16 + 8 + 2: bits 0-15,
16-23 and 24-25). Each lane of the whole vector is stored contiguously:

* lanes of 8, 16, 32 or 64 bits are plain little-endian arrays;
* 4-, 2- and 1-bit lanes are *planar*: with ``n`` bytes in the lane, byte ``i`` holds entries
  ``i, i + n, i + 2n, …`` at bit offsets ``0, w, 2w, …`` (so unpacking is a few whole-array
  shifts, and a sum of many packed vectors can be kept per bit field, see
  :class:`PackedAccumulator`).

Each lane is rounded up to whole bytes, so the layout costs less than one byte of padding per
sub-byte lane (at most ceil(dim * b / 8) + 3 bytes in all), and lets the server add a packed
vector into its accumulator with a handful of vectorised passes and no per-entry Python work.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .prg import word_dtype

__all__ = ["packed_size", "pack", "unpack", "unpack_add", "PackedAccumulator"]

_WIDTHS = (64, 32, 16, 8, 4, 2, 1)
_NATIVE = {64: np.dtype("<u8"), 32: np.dtype("<u4"), 16: np.dtype("<u2"), 8: np.dtype("u1")}


@lru_cache(maxsize=256)
def _lanes(bits: int, dim: int) -> tuple[tuple[int, int, int, int], ...]:
    """(width, shift, byte offset, byte length) of each lane."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in 1..64")
    if dim < 1:
        raise ValueError("dim must be positive")
    lanes = []
    shift = offset = 0
    for width in _WIDTHS:
        if bits & width:
            length = -(-dim * width // 8)  # whole bytes: under one byte of padding per lane
            lanes.append((width, shift, offset, length))
            shift += width
            offset += length
    return tuple(lanes)


def packed_size(dim: int, bits: int) -> int:
    """Bytes on the wire for ``dim`` entries of ``bits`` bits."""
    lanes = _lanes(bits, dim)
    return lanes[-1][2] + lanes[-1][3]


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack the low ``bits`` bits of each entry (higher bits are ignored)."""
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind != "u":
        raise ValueError("pack expects a 1-D unsigned array")
    dim = values.shape[0]
    parts: list[bytes] = []
    for width, shift, _, length in _lanes(bits, dim):
        lane = values >> values.dtype.type(shift) if shift else values
        if width >= 8:
            parts.append(lane.astype(_NATIVE[width], copy=False).tobytes())
            continue
        small = (lane & values.dtype.type((1 << width) - 1)).astype(np.uint8)
        per = 8 // width
        buf = np.zeros(length * per, dtype=np.uint8)
        buf[:dim] = small
        planes = buf.reshape(per, length)
        out = planes[0].copy()
        for j in range(1, per):
            out |= planes[j] << np.uint8(j * width)
        parts.append(out.tobytes())
    return b"".join(parts)


def unpack_add(data: bytes | memoryview, bits: int, dim: int, acc: np.ndarray,
               scratch: np.ndarray | None = None) -> None:
    """acc += unpack(data) with wrap-around; ``acc`` is uint32 (bits <= 32) or uint64.

    ``scratch`` (same dtype and length as ``acc``) avoids an allocation per call.
    """
    dtype = acc.dtype
    if dtype != word_dtype(bits) or acc.shape != (dim,):
        raise ValueError("accumulator does not match bits and dim")
    lanes = _lanes(bits, dim)
    if len(data) != lanes[-1][2] + lanes[-1][3]:
        raise ValueError("packed vector has the wrong length")
    if scratch is None:
        scratch = np.empty(dim, dtype=dtype)
    for width, shift, offset, length in lanes:
        s = dtype.type(shift)
        if width >= 8:
            lane = np.frombuffer(data, dtype=_NATIVE[width], count=dim, offset=offset)
            if shift == 0:
                np.add(acc, lane, out=acc, casting="unsafe")
            else:
                np.left_shift(lane, s, out=scratch, casting="unsafe")
                np.add(acc, scratch, out=acc)
            continue
        raw = np.frombuffer(data, dtype=np.uint8, count=length, offset=offset)
        per = 8 // width
        mask = np.uint8((1 << width) - 1)
        small = np.empty(length, dtype=np.uint8)
        for j in range(per):
            start = j * length
            if start >= dim:
                break
            stop = min(start + length, dim)
            count = stop - start
            np.right_shift(raw, np.uint8(j * width), out=small)
            np.bitwise_and(small, mask, out=small)
            part = scratch[:count]
            np.left_shift(small[:count], s, out=part, casting="unsafe")
            target = acc[start:stop]
            np.add(target, part, out=target)


def unpack(data: bytes | memoryview, bits: int, dim: int) -> np.ndarray:
    """The entries of a packed vector, as uint32 (bits <= 32) or uint64."""
    out = np.zeros(dim, dtype=word_dtype(bits))
    unpack_add(data, bits, dim, out)
    return out


class PackedAccumulator:
    """Sums packed vectors without unpacking each one: the server's accumulator.

    Each lane is summed in as few whole-array passes as its width allows, then folded into the
    full-width total before a partial sum could overflow. Lanes of 16 bits or more at shift 0
    are added straight into the total (one widening add); the 8-bit lane into a 16-bit partial
    sum (one widening add; folded every 257 vectors); the planar 4-, 2- and 1-bit lanes, per
    bit field, into 8-bit partial sums (a broadcast shift, mask and add over all the fields at
    once; folded before 255 / (2**width - 1) vectors). Addition is exact mod 2**bits at the end:
    :meth:`total`.
    """

    def __init__(self, bits: int, dim: int) -> None:
        self.bits, self.dim = bits, dim
        self.dtype = word_dtype(bits)
        self._size = packed_size(dim, bits)
        self._total = np.zeros(dim, dtype=self.dtype)
        self._lanes = _lanes(bits, dim)
        self._state: list[dict] = []
        for width, shift, offset, length in self._lanes:
            state: dict = {"width": width, "shift": shift, "offset": offset, "length": length,
                           "pending": 0}
            if width == 8:
                state.update(partial=np.zeros(dim, np.uint16), limit=0xFFFF // 0xFF)
            elif width < 8:
                per = 8 // width
                state.update(partial=np.zeros((per, length), np.uint8),
                             tmp=np.empty((per, length), np.uint8),
                             shifts=(np.arange(per, dtype=np.uint8) * width)[:, None],
                             mask=np.uint8((1 << width) - 1),
                             limit=0xFF // ((1 << width) - 1))
            self._state.append(state)
        self.count = 0

    @property
    def size(self) -> int:
        """Bytes of one packed vector."""
        return self._size

    def add(self, data: bytes | memoryview, offset: int = 0) -> None:
        """Add the packed vector that starts ``offset`` bytes into ``data`` and fills the rest."""
        if len(data) - offset != self._size or offset < 0:
            raise ValueError("packed vector has the wrong length")
        total = self._total
        for state in self._state:
            width = state["width"]
            start = offset + state["offset"]
            if width >= 16:
                lane = np.frombuffer(data, dtype=_NATIVE[width], count=self.dim, offset=start)
                if state["shift"] == 0:
                    np.add(total, lane, out=total, casting="unsafe")
                else:  # a 16-bit lane above a 32-bit one (bits >= 48): total is uint64
                    total += lane.astype(self.dtype) << self.dtype.type(state["shift"])
                continue
            if state["pending"] == state["limit"]:
                self._flush(state)
            state["pending"] += 1
            partial = state["partial"]
            if width == 8:
                lane = np.frombuffer(data, dtype=np.uint8, count=self.dim, offset=start)
                np.add(partial, lane, out=partial, casting="unsafe")
                continue
            lane = np.frombuffer(data, dtype=np.uint8, count=state["length"], offset=start)
            tmp = state["tmp"]
            np.right_shift(lane, state["shifts"], out=tmp)
            np.bitwise_and(tmp, state["mask"], out=tmp)
            np.add(partial, tmp, out=partial)
        self.count += 1

    def _flush(self, state: dict) -> None:
        """Move a lane's partial sums into the full-width total and clear them."""
        total, dtype = self._total, self.dtype
        shift = dtype.type(state["shift"])
        partial = state["partial"]
        if state["width"] == 8:
            np.add(total, partial.astype(dtype) << shift, out=total)
        else:
            # Byte i of a planar lane holds entries i, i + length, i + 2 * length, ...
            length = state["length"]
            for j, sums in enumerate(partial):
                stop = min((j + 1) * length, self.dim)
                if stop > j * length:
                    target = total[j * length:stop]
                    np.add(target, sums[:stop - j * length].astype(dtype) << shift,
                           out=target)
        partial.fill(0)
        state["pending"] = 0

    def total(self) -> np.ndarray:
        """The sum of everything added, mod 2**bits (a new array; the accumulator stays usable)."""
        for state in self._state:
            if state["width"] < 16 and state["pending"]:
                self._flush(state)
        out = self._total.copy()
        if self.bits % 32:
            np.bitwise_and(out, self.dtype.type((1 << self.bits) - 1), out=out)
        return out

    @property
    def nbytes(self) -> int:
        n = self._total.nbytes
        for state in self._state:
            for key in ("partial", "tmp"):
                if key in state:
                    n += state[key].nbytes
        return n
