"""The stages of a SecAgg+ round, with the names used in the API, on the wire, in logs and in
dropout injection."""

from __future__ import annotations

import enum
from collections.abc import Collection, Hashable, Iterable, Mapping

from .errors import ConfigurationError

__all__ = ["Stage", "dropout_plan"]


class Stage(enum.Enum):
    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASK = "unmask"

    @classmethod
    def parse(cls, name: "str | Stage") -> "Stage":
        if isinstance(name, Stage):
            return name
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown stage {name!r}; stages are: {known}") from None


def dropout_plan(dropouts: Mapping[str | Stage, Iterable[Hashable]] | None,
                 members: Collection[Hashable], *, malicious: bool,
                 what: str = "clients") -> dict[Stage, frozenset]:
    """Stage -> the members that stop before sending that stage's message (every stage present).

    ``dropouts`` maps stage names (or :class:`Stage`) to member ids; anything else — an unknown
    stage, ``consistency_check`` outside malicious-server mode, ids that are not members — is a
    :class:`~secagg.errors.ConfigurationError`.
    """
    out: dict[Stage, frozenset] = {stage: frozenset() for stage in Stage}
    if dropouts is None:
        return out
    if not isinstance(dropouts, Mapping):
        raise ConfigurationError(f"dropouts must map stages to {what}")
    known = set(members)
    for name, ids in dropouts.items():
        try:
            stage = Stage.parse(name)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if stage is Stage.CONSISTENCY_CHECK and not malicious:
            raise ConfigurationError("consistency_check only happens in malicious-server mode")
        try:
            chosen = frozenset(ids)
        except TypeError as exc:
            raise ConfigurationError(f"dropouts at {stage.value}: {exc}") from None
        if not chosen <= known:
            raise ConfigurationError(f"dropouts name {what} that are not in the round: "
                                     f"{sorted(map(repr, chosen - known))}")
        out[stage] = chosen
    return out
