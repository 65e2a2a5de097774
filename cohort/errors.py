"""The one error path of every Cohort command, and its documented exit codes.

Every command runs through :func:`run`. What a person can cause — a bad flag or value, a file
that is missing or malformed, a protocol abort, an exhausted budget, a refused write, Ctrl-C —
ends as exactly one unwrapped line ``ErrorType: message`` on stderr and the exit code of
:class:`ExitCode`. The message names flags (``--label-column``), never Python names
(``label_column=``): a library error raised inside a command has its parameter names rewritten
into the command's flags. Only a bug (an exception nobody raised on purpose) is reported as
such, still on one line; ``COHORT_TRACEBACK=1`` shows its traceback.
"""

from __future__ import annotations

import enum
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

__all__ = ["ExitCode", "EXIT_CODES_HELP", "Command", "Group", "exit_code_for", "one_line",
           "run", "warn"]


class ExitCode(enum.IntEnum):
    """What a command's exit status means (the same for every command)."""

    OK = 0
    CHECK_FAILED = 1  # the command ran, but its result failed its own check
    USAGE = 2  # a bad flag, value, file or data: nothing was run and nothing written
    PROTOCOL_ABORT = 3  # the secure sum aborted (simulate: every round aborted)
    BUDGET = 4  # a privacy budget refused the work before anything was learned
    POLICY = 5  # a site's policy refused (or a party was not enrolled)
    INTERNAL = 70  # a bug in Cohort: please report it
    IO = 74  # the operating system refused a read or a write
    INTERRUPTED = 130  # Ctrl-C (SIGINT)


EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 ran, but the result failed its own check; 2 bad flag, value, file or "
    "data (nothing run, nothing written); 3 the secure sum aborted (simulate: every round "
    "aborted); 4 a privacy budget refused the work before anything was learned; 5 a site's "
    "policy refused; 74 the operating system refused a read or write; 130 interrupted (Ctrl-C); "
    "70 a bug in Cohort. Errors are one line on stderr: ErrorType: message."
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The documented exit code of an exception that reached the top of a command."""
    from secagg.errors import CohortError, InvalidMessage, ProtocolAbort

    if isinstance(exc, KeyboardInterrupt | click.exceptions.Abort):
        return ExitCode.INTERRUPTED
    if isinstance(exc, click.ClickException):
        return ExitCode.USAGE
    budget = getattr(sys.modules.get("privacy.errors"), "BudgetExceeded", None)
    if budget is not None and isinstance(exc, budget):
        return ExitCode.BUDGET
    if isinstance(exc, ProtocolAbort | InvalidMessage):
        return ExitCode.PROTOCOL_ABORT
    # A site's refusal: the sites' error and the contract's, looked up only if loaded (this
    # module must not import the role packages).
    refusals = tuple(err for err in (
        getattr(sys.modules.get("clients.policy"), "PolicyViolation", None),
        getattr(sys.modules.get("cohort.contract"), "NotEnrolled", None)) if err is not None)
    if refusals and isinstance(exc, refusals):
        return ExitCode.POLICY
    if isinstance(exc, CohortError):
        return ExitCode.USAGE
    if isinstance(exc, OSError):
        return ExitCode.IO
    return ExitCode.INTERNAL


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def _rename_parameters(message: str, flags: Mapping[str, str]) -> str:
    """Rewrite Python parameter names in a library's message into the command's flags:
    ``label_column=`` and ``label_column`` become ``--label-column``; a one-word name only as
    ``name=`` or where the message starts ``name must`` (``rounds must be at least 1``)."""
    for name, flag in sorted(flags.items(), key=lambda kv: -len(kv[0])):
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}\b=?", flag, message)
        else:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}=", flag, message)
            message = re.sub(rf"^{re.escape(name)}(?= (must|is|should|needs|has)\b)", flag,
                             message)
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, click.ClickException):
        text = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            text += f" (see '{ctx.command_path} --help')"
        return f"{type(exc).__name__}: {one_line(text)}"
    if isinstance(exc, KeyboardInterrupt | click.exceptions.Abort):
        detail = one_line(str(exc)) or "stopped by Ctrl-C"
        return f"Interrupted: {detail}"
    text = one_line(str(exc)) or "(no message)"
    flags = getattr(exc, "_cohort_flags", None)
    if flags:
        text = _rename_parameters(text, flags)
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    if exit_code_for(exc) is ExitCode.INTERNAL:
        text += " (a bug in Cohort; set COHORT_TRACEBACK=1 to see where)"
    return f"{type(exc).__name__}: {text}"


def warn(message: str) -> None:
    """One line on stderr that says a flag or setting may not mean what the user thinks."""
    sys.stdout.flush()
    sys.stderr.write(f"Warning: {one_line(message)}\n")
    sys.stderr.flush()


class Command(click.Command):
    """A command whose help shows every default and whose errors name its flags.

    ``flag_aliases`` maps library parameter names that are not option names (e.g. a config
    field ``algorithm`` set by ``--strategy``) to the flag that sets them."""

    def __init__(self, *args: Any, flag_aliases: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        settings = {"show_default": True, "max_content_width": 100,
                    "help_option_names": ["-h", "--help"]}
        settings.update(kwargs.pop("context_settings", None) or {})
        super().__init__(*args, context_settings=settings, **kwargs)
        self.flag_aliases = dict(flag_aliases or {})

    def flags(self) -> dict[str, str]:
        out = {}
        for p in self.params:
            if isinstance(p, click.Option) and p.name:
                longs = [o for o in p.opts if o.startswith("--")]
                out[p.name] = (longs or p.opts)[0]
        out.update(self.flag_aliases)
        return out

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BaseException as exc:
            if not hasattr(exc, "_cohort_flags"):
                try:
                    exc._cohort_flags = self.flags()  # type: ignore[union-attr]
                except AttributeError:  # an exception type without __dict__
                    pass
            raise


class Group(click.Group):
    """A group whose subcommands default to :class:`Command`."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = {"max_content_width": 100, "help_option_names": ["-h", "--help"]}
        settings.update(kwargs.pop("context_settings", None) or {})
        super().__init__(*args, context_settings=settings, **kwargs)


def run(command: click.Command, argv: Sequence[str] | None, *, prog_name: str) -> int:
    """Parse ``argv``, run ``command`` and return its exit code; every error ends here."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with command.make_context(prog_name, args) as ctx:
            result = command.invoke(ctx)
        return int(result or 0)
    except click.exceptions.Exit as exc:  # --help, or a command that chose its exit status
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        return ExitCode.OK
    except BaseException as exc:  # noqa: BLE001 - the one place every error is reported
        if isinstance(exc, SystemExit):
            raise
        code = exit_code_for(exc)
        if code is ExitCode.INTERNAL and os.environ.get("COHORT_TRACEBACK"):
            raise
        try:
            sys.stdout.flush()
        except OSError:
            pass
        sys.stderr.write(_describe(exc) + "\n")
        sys.stderr.flush()
        return int(code)
