"""Cohort's one command line: ``cohort`` (console script) and ``python -m cohort``.

Thin on purpose. The role packages own their commands (each ``<role>/__main__.py`` defines
them); this package holds what every command shares: the registry that assembles them into one
tree (:mod:`cohort.registry`), the one error path with its documented exit codes
(:mod:`cohort.errors`), the option types and checks that name flags (:mod:`cohort.options`),
and output-folder safety (:mod:`cohort.outputs`).
"""

from __future__ import annotations

from .errors import ExitCode

__all__ = ["ExitCode", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``cohort`` with ``argv`` (default: the process's arguments); return the exit code."""
    from .registry import main as _main

    return _main(argv)
