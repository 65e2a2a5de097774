"""The public API of ``clients`` is exactly ``__all__``, and it imports nothing it may not."""

from __future__ import annotations

import subprocess
import sys

import clients


def test_all_names_exist_and_are_sorted_unique() -> None:
    assert len(set(clients.__all__)) == len(clients.__all__)
    for name in clients.__all__:
        assert hasattr(clients, name), name


def test_clients_does_not_import_the_coordinator() -> None:
    code = "import sys, clients; print(any(m.split('.')[0] == 'coordinator' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
