"""Option types and checks shared by the commands, so that every refusal names its flag.

Numbers are checked where they are parsed: an integer that is not one, a real that is NaN or
infinite, a value out of its range all fail as ``BadParameter: Invalid value for '--flag': …``.
Flags that do not apply to what else was asked are refused with :func:`refuse` (a
``UsageError``); :func:`given` tells whether the user typed a flag at all, so a refusal never
depends on a default.
"""

from __future__ import annotations

import math
from typing import Any

import click
from click.core import ParameterSource

__all__ = ["Integer", "Real", "given", "refuse", "flag"]


class _Ranged:
    """What Integer and Real share: no "x" range text for an unbounded option, and text parsed
    with the type's own constructor (so " 7 " works and "seven" names itself)."""

    _cast: type
    _what: str

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()

    def _parse(self, value: Any, param: click.Parameter | None,
               ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                return self._cast(value.strip())
            except ValueError:
                self.fail(f"{value!r} is not {self._what}", param, ctx)
        return value


class Integer(_Ranged, click.IntRange):
    """An integer, optionally within [min, max]."""

    name = "integer"
    _cast, _what = int, "an integer"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        return super().convert(self._parse(value, param, ctx), param, ctx)


class Real(_Ranged, click.FloatRange):
    """A finite real number (never NaN or infinite), optionally within a range."""

    name = "number"
    _cast, _what = float, "a number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        value = self._parse(value, param, ctx)
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return super().convert(value, param, ctx)


def given(ctx: click.Context, name: str) -> bool:
    """True when the user set option ``name`` (on the command line or in the environment)."""
    source = ctx.get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def flag(ctx: click.Context, name: str) -> str:
    """The long flag of option ``name`` of the running command (``label_column`` →
    ``--label-column``)."""
    for p in ctx.command.params:
        if p.name == name:
            longs = [o for o in p.opts if o.startswith("--")]
            return (longs or p.opts)[0]
    raise KeyError(name)


def refuse(message: str, ctx: click.Context | None = None) -> None:
    """Refuse the command line: a flag that does not apply, or flags that contradict."""
    raise click.UsageError(message, ctx)
