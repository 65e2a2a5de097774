"""Helpers for tests and benchmarks that run a deployment as real processes (``python -m
coordinator serve`` and ``python -m clients join``): a free loopback port, and how far a
running coordinator's state file has got, read without disturbing its writer; the consortium
file and site policy they are provisioned from."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path


def consortium_toml(n: int) -> str:
    """A consortium file for ``site-1`` .. ``site-n`` with a coordinator on loopback."""
    return ('[consortium]\nname = "audit"\n[admin]\nname = "Admin"\nemail = "a@example.org"\n'
            '[coordinator]\nhosts = ["127.0.0.1", "localhost"]\nport = 8443\n'
            + "".join(f'\n[[sites]]\nname = "site-{i}"\n' for i in range(1, n + 1)))


def policy_toml(min_participants: int) -> str:
    """A site policy that takes FedAvg over secure aggregation with at least
    ``min_participants`` sites, and a budget no test job reaches."""
    return ('allowed_strategies = ["fedavg"]\n'
            f"min_participants = {min_participants}\n"
            "require_secure_aggregation = true\n"
            "[privacy_budget]\nepsilon = 1000.0\ndelta = 1e-5\n")


def free_port() -> int:
    """A loopback TCP port nobody listens on now (a ``serve`` process may take it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query_state(state: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of ``sql`` on a coordinator's state file, read-only; [] while the file is missing
    or locked (its writer may be mid-transaction, or just killed)."""
    if not state.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def stage_reached(state: Path, stage: str, round_number: int) -> bool:
    """True once the state file holds a message of ``stage`` in round ``round_number``."""
    rows = query_state(state, "SELECT COUNT(*) FROM messages m JOIN rounds r "
                              "USING (round_id) WHERE r.number = ? AND m.stage = ?",
                       (round_number, stage))
    return bool(rows) and rows[0][0] >= 1
