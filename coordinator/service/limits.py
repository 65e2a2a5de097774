"""Per-stage size limits for a secagg round: the largest message a client may send at each
stage, from the same bounds the message decoder enforces (so an honest message always fits and
anything much larger is cut off before it is read)."""

from __future__ import annotations

from collections.abc import Callable

from secagg import RoundConfig, Stage
from secagg.hazmat.packing import packed_size
from secagg.hazmat.shamir import SHARE_BYTES
from secagg.messages import HEADER_BYTES, SEALED_SHARE_BYTES

__all__ = ["secagg_limits"]

_KEY = 32
_SIG = 64


def secagg_limits(config: RoundConfig) -> Callable[[object], int]:
    n = config.n
    table = {
        # advertise (two keys, commitment, optional signature) or the nonce reveal
        Stage.ADVERTISE_KEYS: HEADER_BYTES + 3 * _KEY + 1 + _SIG,
        Stage.SHARE_KEYS: HEADER_BYTES + _KEY + 4 + (n - 1) * (4 + SEALED_SHARE_BYTES),
        Stage.MASKED_INPUT: HEADER_BYTES + packed_size(config.dim, config.modulus_bits),
        Stage.CONSISTENCY_CHECK: HEADER_BYTES + _SIG,
        Stage.UNMASK: HEADER_BYTES + 4 + n * (4 + 1 + SHARE_BYTES),
    }

    def limit(stage: object) -> int:
        return table[Stage.parse(stage)]

    return limit
