"""``python -m clients``: the site's commands of ``cohort`` (``join``: the site agent that
connects to a coordinator with its kit and data, :mod:`._join_cli`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._join_cli import join

__all__ = ["join", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    from cohort.registry import role_main

    return role_main("clients", argv, summary="A hospital site: its data, models and agent.")


if __name__ == "__main__":
    sys.exit(main())
