"""Structured logs for the coordinator service and the site agent: one JSON object per line.

Code logs an *event* with fields through :func:`event`::

    event(log, logging.INFO, "step_accepted", "site %s step %d", site=name, step=3, bytes=n)

:class:`JsonFormatter` writes ``{"time", "level", "logger", "event", "message", **fields}`` on one
line (``cohort serve --log-json`` / ``--log-file``, the same for ``cohort join``); the text
formatter writes the message and then the fields as ``key=value``. Records from other libraries
(uvicorn's, say) get ``event`` = their logger's name and their message.

What a log line may hold, by construction: fields are names of things (round ids, stages, site
names, status codes, outcomes), counts and durations. A field whose value is bytes is written as
its length only, and anything that is not a string, number, bool or None (or a list of those) is
written as its type's name, so no key, share, mask, update vector or message body can reach a
log through a field. Messages are formatted from the same arguments and say what happened, never
what a message carried.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "event", "safe_value"]

_SCALAR = (str, int, float, bool, type(None))


def safe_value(value: Any) -> Any:
    """What a field may carry into a log: scalars as they are, bytes as their length, lists of
    scalars, and for anything else only its type's name."""
    if isinstance(value, _SCALAR):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (list, tuple, frozenset, set)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [v if isinstance(v, _SCALAR) else f"<{type(v).__name__}>" for v in items]
    if hasattr(value, "value") and isinstance(getattr(value, "value"), _SCALAR):  # an Enum
        return value.value
    return f"<{type(value).__name__}>"


def event(logger: logging.Logger, level: int, name: str, message: str = "", *args: Any,
          **fields: Any) -> None:
    """Log event ``name`` with ``fields``; ``message % args`` is the line's human text."""
    if logger.isEnabledFor(level):
        logger.log(level, message or name, *args,
                   extra={"cohort_event": name, "cohort_fields": fields})


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "cohort_fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "cohort_event", None) or record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            if key not in out:
                out[key] = safe_value(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """``time logger message key=value ...`` for a person reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={json.dumps(safe_value(v), default=str)}"
                                   for k, v in fields.items())
        return line


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(*, verbose: bool, json_lines: bool = False,
                      file: str | os.PathLike[str] | None = None) -> None:
    """The commands' logging: stderr (JSON lines with ``json_lines``, text otherwise) at INFO
    with ``verbose`` and WARNING without; with ``file``, also every INFO record as JSON lines
    appended to that file (a log file is for machines). Like ``logging.basicConfig(force=True)``
    it replaces every handler of the root logger (a dependency, opacus, installs one when it is
    imported, which would print every record a second time in its own format)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    stderr = _Stderr()
    stderr._cohort = True  # type: ignore[attr-defined]
    stderr.setLevel(logging.INFO if verbose else logging.WARNING)
    stderr.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(stderr)
    level = logging.INFO if verbose or file is not None else logging.WARNING
    if file is not None:
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler._cohort = True  # type: ignore[attr-defined]
        handler.setLevel(logging.INFO)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
