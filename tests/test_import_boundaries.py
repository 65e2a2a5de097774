"""Import boundaries of the role packages (DESIGN section 1), checked two ways:

* statically, over every file: each import (module level or inside a function) of each file of
  a package, resolved to an absolute module name, against that package's rule;
* at run time: a fresh interpreter imports the package and every one of its modules, and
  ``sys.modules`` must not hold a forbidden package afterwards.

The rules: ``secagg`` imports only the standard library, numpy and cryptography; ``privacy``
no ``clients`` / ``coordinator`` / ``cohort``; ``clients`` no ``coordinator``; the coordinator's
core (everything outside ``coordinator/simulation/``) no ``clients`` and no
``coordinator.simulation`` (which may import ``clients``); ``cohort.contract`` no ``clients`` /
``coordinator``. The planted-file test shows the static check can fail (CONVENTIONS 12).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A role's command line (its ``__main__``) is wired with the CLI layer of ``cohort`` and its
# libraries; the rule of the role still holds for every other package.
CLI = ("cohort.errors", "cohort.options", "cohort.registry", "cohort.outputs", "cohort.runtime",
       "click", "rich")

# Named exceptions, each with its reason. Only lazy imports inside a function qualify.
EXEMPT = {
    # The benchmark's progress bar (the bench command only).
    ("secagg/bench.py", "tqdm"),
    # PEP 562 alias: ``coordinator.secure_sum`` loads the simulation's convenience on use.
    ("coordinator/__init__.py", "coordinator.simulation.secure_sum"),
    # The ``simulate`` command builds a simulation: its flags are the sites' vocabulary.
    ("coordinator/__main__.py", "clients"),
    ("coordinator/__main__.py", "coordinator.simulation"),
    # The ``serve`` command builds the job's catalogue model and its evaluation split (the
    # sites' vocabulary); the job runner it drives (coordinator.job) sees flat vectors only.
    ("coordinator/_serve_cli.py", "clients"),
}


def _exempt(rel: str, module: str) -> bool:
    return any(rel == f and (module == m or module.startswith(m + ".")) for f, m in EXEMPT)


def _top(name: str) -> str:
    return name.split(".")[0]


def _imports(path: Path, root: Path) -> list[tuple[str, bool]]:
    """(absolute module name, imported inside a function) for every import in ``path``."""
    rel = path.relative_to(root)
    package = list(rel.parent.parts)
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef,
                                                                    ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        lazy = id(node) in lazy_nodes
        if isinstance(node, ast.Import):
            out += [(alias.name, lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, lazy))
            # ``from . import x`` / ``from pkg import submodule``: the submodules count too.
            out += [(f"{name}.{alias.name}", lazy) for alias in node.names]
    return out


def _rule(rel: str) -> tuple[str, callable] | None:
    """(what the file is, predicate naming a forbidden import) for a file of a role package."""
    stdlib = sys.stdlib_module_names
    if rel.startswith("secagg/"):
        return "secagg", lambda m: _top(m) not in stdlib | {"numpy", "cryptography", "secagg",
                                                             "__future__"}
    if rel.startswith("privacy/"):
        return "privacy", lambda m: _top(m) in {"clients", "coordinator", "cohort"}
    if rel.startswith("clients/"):
        return "clients", lambda m: _top(m) == "coordinator"
    if rel.startswith("coordinator/") and not rel.startswith("coordinator/simulation/"):
        return "coordinator core", lambda m: (_top(m) == "clients"
                                              or m.startswith("coordinator.simulation"))
    if rel == "cohort/contract.py":
        return "cohort.contract", lambda m: _top(m) in {"clients", "coordinator"}
    return None


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        rule = _rule(rel)
        if rule is None:
            continue
        what, forbidden = rule
        for module, lazy in _imports(path, root):
            if not module or not forbidden(module):
                continue
            if path.name == "__main__.py" and any(module == m or module.startswith(m + ".")
                                                  for m in CLI):
                continue
            if lazy and _exempt(rel, module):
                continue
            found.append(f"{rel}: {what} imports {module}")
    return found


def test_every_file_keeps_its_package_boundary() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize("rel, source", [
    ("secagg/_planted.py", "import torch\n"),
    ("secagg/_planted.py", "from privacy import RandomSource\n"),
    ("privacy/_planted.py", "def f():\n    from coordinator import FedAvg\n"),
    ("clients/_planted.py", "from coordinator.strategies import FedAvg\n"),
    ("coordinator/_planted.py", "from clients import Site\n"),
    ("coordinator/_planted.py", "from .simulation import transport\n"),
    ("coordinator/__init__.py", "from clients import Site\n"),  # not lazy: not exempt
    ("cohort/contract.py", "import coordinator.aggregation\n"),
])
def test_a_planted_import_is_caught(tmp_path: Path, rel: str, source: str) -> None:
    planted = tmp_path / rel
    planted.parent.mkdir(parents=True)
    planted.write_text(source)
    found = violations(tmp_path)
    assert found and all(f.startswith(rel + ":") for f in found)


def test_coordinator_core_never_encodes_an_update() -> None:
    """Nothing in the coordinator's core calls an encoder: sites encode, it only decodes."""
    calls = []
    for path in sorted((ROOT / "coordinator").rglob("*.py")):
        if "simulation" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"encode", "encode_signed",
                                                                  "wrap"} and any(
                    w in ast.unparse(node.value).lower() for w in ("codec", "encoder")):
                calls.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert calls == []


_RUNTIME = {
    "secagg": ("torch", "privacy", "clients", "coordinator", "cohort"),
    "privacy": ("clients", "coordinator", "cohort"),
    "clients": ("coordinator",),
    "coordinator": ("clients", "coordinator.simulation"),
    "cohort.contract": ("clients", "coordinator"),
}


@pytest.mark.parametrize("package", sorted(_RUNTIME))
def test_importing_a_package_loads_nothing_it_may_not(package: str) -> None:
    """A fresh interpreter imports the package and all its modules (not ``__main__``, not the
    simulation for the coordinator), then lists forbidden packages in ``sys.modules``."""
    script = textwrap.dedent(f"""
        import importlib, pathlib, sys
        root = importlib.import_module({package!r})
        skip = ("__main__", "coordinator.simulation")
        for path in sorted(pathlib.Path(root.__file__).parent.rglob("*.py")):
            if not hasattr(root, "__path__"):
                break
            rel = path.relative_to(pathlib.Path(root.__file__).parent).with_suffix("")
            name = ".".join((root.__name__, *rel.parts)).removesuffix(".__init__")
            if not any(part in name for part in skip):
                importlib.import_module(name)
        bad = {_RUNTIME[package]!r}
        print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in bad)))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
