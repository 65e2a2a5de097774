"""The stages of a SecAgg+ round, with the names used in the API, on the wire, in logs and in
dropout injection."""

from __future__ import annotations

import enum

__all__ = ["Stage"]


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
