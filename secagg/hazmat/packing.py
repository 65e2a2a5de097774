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

    Lanes that are whole machine words are added directly. The other lanes are summed "SWAR"
    style (several fields per machine word, each with spare high bits to absorb carries): the
    8-bit lane as two sums of 16-bit fields per 32-bit word, the 4/2/1-bit lanes as per-field sums
    in the 8-bit slots of 64-bit words. Before a slot could overflow, the partial sums are flushed
    into the full-width total. Addition is exact mod 2**bits at the end: :meth:`total`.
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
                words = dim // 4
                state.update(words=words, even=np.zeros(words, np.uint32),
                             odd=np.zeros(words, np.uint32), tmp=np.empty(words, np.uint32),
                             limit=256)
            elif width < 8:
                words = length // 8
                per = 8 // width
                state.update(words=words, fields=[np.zeros(words, np.uint64) for _ in range(per)],
                             tmp=np.empty(words, np.uint64),
                             mask=np.uint64(int.from_bytes(bytes([(1 << width) - 1]) * 8,
                                                           "little")),
                             limit=255 // ((1 << width) - 1),
                             tail=np.zeros((length - words * 8) * per, dtype=np.uint64))
            self._state.append(state)
        self.count = 0

    def add(self, data: bytes | memoryview) -> None:
        if len(data) != self._size:
            raise ValueError("packed vector has the wrong length")
        total = self._total
        for state in self._state:
            width, shift, offset, length = (state["width"], state["shift"], state["offset"],
                                            state["length"])
            if width >= 16:
                lane = np.frombuffer(data, dtype=_NATIVE[width], count=self.dim, offset=offset)
                if shift == 0:
                    np.add(total, lane, out=total, casting="unsafe")
                else:  # a 16-bit lane above a 32-bit one (bits >= 48): total is uint64
                    total += lane.astype(self.dtype) << self.dtype.type(shift)
                continue
            if state["pending"] == state["limit"]:
                self._flush(state)
            state["pending"] += 1
            if width == 8:
                words = state["words"]
                w = np.frombuffer(data, dtype="<u4", count=words, offset=offset)
                tmp = state["tmp"]
                mask = np.uint32(0x00FF00FF)
                np.bitwise_and(w, mask, out=tmp)
                np.add(state["even"], tmp, out=state["even"])
                np.right_shift(w, np.uint32(8), out=tmp)
                np.bitwise_and(tmp, mask, out=tmp)
                np.add(state["odd"], tmp, out=state["odd"])
                start = words * 4
                if start < self.dim:
                    rest = np.frombuffer(data, dtype=np.uint8, count=self.dim - start,
                                         offset=offset + start)
                    part = total[start:]
                    np.add(part, rest.astype(self.dtype) << self.dtype.type(shift), out=part)
                continue
            words = state["words"]
            w = np.frombuffer(data, dtype="<u8", count=words, offset=offset)
            tmp, mask = state["tmp"], state["mask"]
            for j, acc in enumerate(state["fields"]):
                if j:
                    np.right_shift(w, np.uint64(j * width), out=tmp)
                    np.bitwise_and(tmp, mask, out=tmp)
                else:
                    np.bitwise_and(w, mask, out=tmp)
                np.add(acc, tmp, out=acc)
            if words * 8 < length:
                rest = np.frombuffer(data, dtype=np.uint8, count=length - words * 8,
                                     offset=offset + words * 8).astype(np.uint64)
                per = 8 // width
                small = (1 << width) - 1
                tail = state["tail"].reshape(per, -1)
                for j in range(per):
                    tail[j] += (rest >> np.uint64(j * width)) & np.uint64(small)
        self.count += 1

    def _flush(self, state: dict) -> None:
        """Move a lane's partial sums into the full-width total and clear them."""
        total, dtype = self._total, self.dtype
        shift = dtype.type(state["shift"])
        width = state["width"]
        if width == 8:
            for acc, first in ((state["even"], 0), (state["odd"], 1)):
                halves = acc.view("<u2")
                for k, lane_pos in enumerate((first, first + 2)):
                    target = total[lane_pos:state["words"] * 4:4]
                    np.add(target, halves[k::2].astype(dtype) << shift, out=target)
                acc.fill(0)
        elif width < 8:
            length, words = state["length"], state["words"]
            per = 8 // width
            tail = state["tail"].reshape(per, -1)
            for j, acc in enumerate(state["fields"]):
                start = j * length
                stop = min(start + words * 8, self.dim)
                if stop > start:
                    target = total[start:stop]
                    sums = acc.view(np.uint8)[:stop - start]
                    np.add(target, sums.astype(dtype) << shift, out=target)
                acc.fill(0)
                t_start = start + words * 8
                t_stop = min(start + length, self.dim)
                if t_stop > t_start:
                    target = total[t_start:t_stop]
                    np.add(target, tail[j][:t_stop - t_start].astype(dtype) << shift,
                           out=target)
            state["tail"].fill(0)
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
            for key in ("even", "odd", "tmp", "tail"):
                if key in state:
                    n += state[key].nbytes
            n += sum(a.nbytes for a in state.get("fields", ()))
        return n
