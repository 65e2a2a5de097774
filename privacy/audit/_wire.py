"""The byte forms of the site–coordinator contract that a coordinator's state file holds, read
without importing ``cohort``.

The privacy package may not import ``cohort`` (tests/test_import_boundaries.py), yet the state
file stores each round's work (``cohort.contract.RoundWork``: the announcement and the global
model) and its outcome (``RoundOutcome``) in the contract's framing. This module reads just what
an audit needs from them — the round's number, task and release id, the cohort in client-id
order, the mechanism and encoding plan, the secagg parameters, the worst-case charge, and what
decoding the sum needs (the rotation seed, the weight bound, whether weights are integers) —
and builds the privacy and secagg objects itself (``EncodingConfig``, ``RoundPrivacy``,
``RoundConfig``), which check every field. tests/test_audit_state.py holds these readers to the
contract's own ``to_bytes`` so the two cannot drift apart.

Anything that does not parse is an :class:`~privacy.errors.AuditError` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from secagg import RoundConfig

from ..encoding import EncodingConfig, Rounding
from ..errors import AuditError
from ..mechanisms import Mechanism, RoundPrivacy
from ..noise import NoiseKind

__all__ = ["WORK_MAGIC", "ANNOUNCEMENT_MAGIC", "OUTCOME_MAGIC", "OUTCOME_ACK", "Announcement",
           "Outcome", "read_work", "read_outcome"]

# The contract's magics (cohort/contract.py): the framing is versioned by them.
WORK_MAGIC = b"cohort/contract/v1/work\n"
ANNOUNCEMENT_MAGIC = b"cohort/contract/v1/announcement\n"
OUTCOME_MAGIC = b"cohort/contract/v1/outcome\n"
OUTCOME_ACK = b"cohort/contract/v1/settled"
_U32 = 4


@dataclass(frozen=True)
class Announcement:
    """What the audit reads of one round's announcement."""

    round_number: int
    task: str
    release_id: bytes
    cohort: tuple[str, ...]  # the i-th site is the round's secagg client i
    privacy: RoundPrivacy
    encoding: EncodingConfig
    config: RoundConfig
    charge: dict[str, Any] | None  # the request's worst-case privacy event (its dict form)
    # What decoding the sum needs besides the encoding (the coordinator's WeightedSumCodec):
    rotation_seed: bytes  # the public rotation seed, 32 bytes
    max_weight: float  # the public bound on a site's weight
    integer_weights: bool  # the total weight is rounded to an integer (sample counts)


@dataclass(frozen=True)
class Outcome:
    release_id: bytes
    included: tuple[str, ...]
    aborted: bool


def _field(body: dict, key: str, what: str) -> Any:
    try:
        return body[key]
    except (KeyError, TypeError):
        raise AuditError(f"{what}: field {key!r} is missing") from None


def _json(data: bytes, magic: bytes, what: str) -> dict:
    if not data.startswith(magic):
        raise AuditError(f"not a {what} (bad magic)")
    try:
        body = json.loads(data[len(magic):].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AuditError(f"not a {what}: {exc}") from None
    if not isinstance(body, dict):
        raise AuditError(f"not a {what}: not a JSON object")
    return body


def read_announcement(data: bytes) -> Announcement:
    what = "round announcement"
    body = _json(data, ANNOUNCEMENT_MAGIC, what)
    request = _field(body, "request", what)
    raw_privacy = _field(body, "privacy", what)
    try:
        cohort = tuple(_field(body, "cohort", what))
        if not all(isinstance(s, str) for s in cohort):
            raise AuditError(f"{what}: cohort: site names must be strings")
        privacy = RoundPrivacy(
            mechanism=Mechanism(_field(raw_privacy, "mechanism", what)),
            clip_norm=_field(raw_privacy, "clip_norm", what),
            noise_multiplier=_field(raw_privacy, "noise_multiplier", what),
            noise=NoiseKind(_field(raw_privacy, "noise", what)),
            bits=_field(raw_privacy, "bits", what),
            target_wrap_probability=_field(raw_privacy, "target_wrap_probability", what),
            rounding=Rounding(_field(raw_privacy, "rounding", what)))
        encoding = EncodingConfig.from_dict(_field(body, "encoding", what))
        release_id = bytes.fromhex(_field(request, "release_id", what))
        config = RoundConfig(round_id=release_id, clients=tuple(range(len(cohort))),
                             dim=encoding.padded_dim, modulus_bits=encoding.bits,
                             neighbors=_field(body, "neighbors", what),
                             threshold=_field(body, "threshold", what),
                             malicious=_field(body, "malicious", what),
                             corrupt_rate=_field(body, "corrupt_rate", what),
                             dropout_rate=_field(body, "dropout_rate", what))
        number = _field(request, "round_number", what)
        if isinstance(number, bool) or not isinstance(number, int):
            raise AuditError(f"{what}: request.round_number is not an integer")
        charge = _field(request, "privacy_charge", what)
        rotation_seed = bytes.fromhex(_field(body, "rotation_seed", what))
        if len(rotation_seed) != 32:
            raise AuditError(f"{what}: rotation_seed is not 32 bytes")
        max_weight = _field(body, "max_weight", what)
        if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) \
                or not 0 < max_weight < float("inf"):
            raise AuditError(f"{what}: max_weight is not a positive number")
        integer_weights = _field(body, "integer_weights", what)
        if not isinstance(integer_weights, bool):
            raise AuditError(f"{what}: integer_weights is not a bool")
        return Announcement(round_number=number, task=str(_field(request, "task", what)),
                            release_id=release_id, cohort=cohort, privacy=privacy,
                            encoding=encoding, config=config, charge=charge,
                            rotation_seed=rotation_seed, max_weight=float(max_weight),
                            integer_weights=integer_weights)
    except AuditError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:  # the types' own checks
        raise AuditError(f"{what}: {type(exc).__name__}: {exc}") from None


def read_work(data: bytes) -> Announcement:
    """The announcement inside a round's work (``magic | u32 | announcement | u32 | meta |
    parameters``); the parameters are not read."""
    if not data.startswith(WORK_MAGIC):
        raise AuditError("not a round's work (bad magic)")
    pos = len(WORK_MAGIC)
    n = int.from_bytes(data[pos:pos + _U32], "big")
    if pos + _U32 + n > len(data):
        raise AuditError("a round's work is truncated inside its announcement")
    return read_announcement(data[pos + _U32:pos + _U32 + n])


def read_outcome(data: bytes) -> Outcome:
    what = "round outcome"
    body = _json(data, OUTCOME_MAGIC, what)
    included = _field(body, "included", what)
    aborted = _field(body, "aborted", what)
    if not isinstance(included, list) or not all(isinstance(s, str) for s in included) \
            or not isinstance(aborted, bool):
        raise AuditError(f"{what}: included must be site names and aborted a bool")
    try:
        release_id = bytes.fromhex(_field(body, "release_id", what))
    except (TypeError, ValueError):
        raise AuditError(f"{what}: release_id is not hex") from None
    return Outcome(release_id=release_id, included=tuple(included), aborted=aborted)
