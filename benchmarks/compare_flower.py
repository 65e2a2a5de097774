"""Cohort's SecAgg+ against Flower 1.41's SecAgg+ on the same round: a side-by-side table.

What it does
------------
Runs two benchmarks as subprocesses on one configuration (clients n, vector length m, graph
degree k, threshold t, dropout fraction, modulus 2^b) and compares their figures:

* **Flower**: ``benchmarks/flower_secaggplus.py`` (one in-process round of Flower's own
  ``SecAggPlusWorkflow`` + ``secaggplus_mod``; see that file) with the interpreter given by
  ``--flower-python`` (default: this one). Flower is not a dependency of Cohort's main
  environment, so this is usually a separate virtualenv, e.g. ``/work/venv-flwr/bin/python``.
* **Cohort**: ``python -m secagg bench --clients N --dim M --neighbors K --threshold T
  --dropout D --modulus-bits B --json`` with this interpreter, from the repository root.

Both print one JSON object. ``client_seconds`` is the mean compute per client over the whole
round (for Cohort, ``client_seconds_alone``: the one simulated client that shares none of the
broadcast checks the bench's clients of one process share, as each Flower client does its own)
and ``server_seconds`` the total server compute for the round, unmasking included. The
script prints a table with both and the ratios Flower/Cohort (above 1: Flower is slower), or
with ``--json`` one object ``{"config", "flower", "cohort", "ratios", "mismatches"}``.
``--cohort-json FILE`` / ``--flower-json FILE`` read a saved result instead of running that side.

Mapping Cohort's k to Flower's ``num_shares``
---------------------------------------------
Cohort's ``k`` (``--neighbors``) is the degree of the neighbour graph: the number of *other*
clients each client is paired with, masks with and sends a share to (k = n - 1 is full-graph
SecAgg). Flower's ``num_shares`` counts the client itself. In flwr 1.41's
``SecAggPlusWorkflow.setup_stage`` each client's neighbourhood is the ring window
``{ids[(i + o) % n] for o in range(-(num_shares >> 1), (num_shares >> 1) + 1)}``, which contains
the client (o = 0); the client makes ``num_shares`` Shamir shares, keeps one for itself and
sends ``num_shares - 1`` to the others, and adds ``num_shares - 1`` pairwise masks. So

    Flower num_shares = k + 1   (Flower degree = num_shares - 1 = k)

with one restriction: Flower's ring is symmetric, so its degree is always even
(``2 * (num_shares >> 1)``) unless the graph is complete, and an even integer ``num_shares``
below n does not work in 1.41 (the workflow sends the even value to the clients but builds a
window of ``num_shares + 1`` nodes, and every client then fails in share_keys with an
IndexError). Hence:

* k >= n - 1 (complete graph): ``num_shares = n``;
* k even: ``num_shares = k + 1`` (exactly the same graph degree);
* k odd (e.g. the default k = 21): no Flower configuration has degree k. ``--odd-k down``
  (default) uses ``num_shares = k`` (degree k - 1, e.g. 20, Flower does a little *less* work
  than Cohort, so the ratios are slightly in Flower's favour); ``--odd-k up`` uses
  ``num_shares = k + 2`` (degree k + 1). ``--flower-num-shares`` overrides the mapping.

The threshold t is passed unchanged: in both it is the number of shares needed to rebuild a
secret. (In Flower a surviving client's own share counts towards t for its self-mask seed.)
Flower's modulus is its default 2^32 (``modulus_range``) with quantisation range 2^22; the
default ``--modulus-bits 32`` gives Cohort the same modulus.

Example::

    /work/venv/bin/python benchmarks/compare_flower.py --flower-python /work/venv-flwr/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWER_SCRIPT = Path(__file__).resolve().parent / "flower_secaggplus.py"

COHORT_KEYS = (
    "clients",
    "dim",
    "neighbors",
    "threshold",
    "dropout",
    "client_seconds",
    "server_seconds",
    "upload_bytes_per_client",
    "expansion",
    "prg_floor_seconds",
)
FLOWER_KEYS = (
    "clients",
    "dim",
    "num_shares",
    "neighbors",
    "threshold",
    "dropout",
    "client_seconds",
    "server_seconds",
    "correct",
    "flwr_version",
    "modulus_bits",
)


class BenchError(RuntimeError):
    """One side of the comparison could not be run or its output could not be read."""


def flower_num_shares(k: int, n: int, odd_k: str = "down") -> int:
    """Flower ``num_shares`` giving the graph degree closest to Cohort's ``k`` (see docstring)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if k >= n - 1:
        return n  # complete graph: Flower's window covers everyone
    if k % 2 == 0:
        return k + 1
    shares = k if odd_k == "down" else k + 2
    return min(max(shares, 3), n)  # Flower reads an int num_shares of 1 as "100%"


def flower_degree(num_shares: int, n: int) -> int:
    """Number of other neighbours each client gets from Flower's ring for ``num_shares``."""
    return min(2 * (num_shares >> 1), n - 1)


def parse_json_output(stdout: str, *, who: str, required: tuple[str, ...]) -> dict[str, Any]:
    """The last line of ``stdout`` that is a JSON object, checked for the ``required`` keys."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            missing = [k for k in required if k not in obj]
            if missing:
                raise BenchError(f"{who} JSON lacks the keys {missing}: {line[:300]}")
            return obj
    # A pretty-printed object spread over several lines.
    try:
        obj = json.loads(stdout)
    except json.JSONDecodeError:
        raise BenchError(f"{who} printed no JSON object; its output was:\n{stdout[-2000:]}")
    if not isinstance(obj, dict):
        raise BenchError(f"{who} printed JSON that is not an object")
    missing = [k for k in required if k not in obj]
    if missing:
        raise BenchError(f"{who} JSON lacks the keys {missing}")
    return obj


def _run(cmd: list[str], *, who: str, cwd: Path) -> str:
    """Run ``cmd``; stderr (progress bars) goes to ours, stdout is returned."""
    print(f"[compare] running {who}: {' '.join(cmd)}", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, check=False)
    except FileNotFoundError as err:
        raise BenchError(f"{who}: cannot start {cmd[0]!r}: {err}") from err
    if proc.returncode != 0 and "{" not in proc.stdout:
        raise BenchError(f"{who} exited with status {proc.returncode} (see its stderr above)")
    return proc.stdout


def run_flower(args: argparse.Namespace, num_shares: int) -> dict[str, Any]:
    """Run the Flower round with ``--flower-python`` and return its JSON."""
    if args.flower_json:
        return parse_json_output(
            Path(args.flower_json).read_text(), who="Flower (file)", required=FLOWER_KEYS
        )
    check = subprocess.run(
        [args.flower_python, "-c", "import flwr, sys; sys.stdout.write(flwr.__version__)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise BenchError(
            f"Flower is not importable with {args.flower_python}. Pass --flower-python with an "
            "interpreter that has flwr==1.41.0 (e.g. /work/venv-flwr/bin/python), or install "
            "it: pip install 'flwr==1.41.0' (the `bench` extra)."
        )
    cmd = [
        args.flower_python,
        str(FLOWER_SCRIPT),
        "--clients", str(args.clients),
        "--dim", str(args.dim),
        "--num-shares", str(num_shares),
        "--threshold", str(args.threshold),
        "--dropout", str(args.dropout),
        "--seed", str(args.seed),
        "--json",
    ]
    if args.no_progress:
        cmd.append("--no-progress")
    out = _run(cmd, who="Flower", cwd=REPO_ROOT)
    return parse_json_output(out, who="Flower", required=FLOWER_KEYS)


def run_cohort(args: argparse.Namespace) -> dict[str, Any]:
    """Run Cohort's ``python -m secagg bench`` with this interpreter and return its JSON."""
    if args.cohort_json:
        return parse_json_output(
            Path(args.cohort_json).read_text(), who="Cohort (file)", required=COHORT_KEYS
        )
    if not (REPO_ROOT / "secagg" / "__main__.py").exists():
        raise BenchError(
            f"Cohort's benchmark is not available yet: {REPO_ROOT / 'secagg' / '__main__.py'} "
            "does not exist, so `python -m secagg bench` cannot run. Run this again once the "
            "secagg package has its bench command, or pass --cohort-json FILE with a saved "
            "result."
        )
    cmd = [
        sys.executable,
        "-m", "secagg", "bench",
        "--clients", str(args.clients),
        "--dim", str(args.dim),
        "--neighbors", str(args.neighbors),
        "--threshold", str(args.threshold),
        "--dropout", str(args.dropout),
        "--modulus-bits", str(args.modulus_bits),
        "--json",
    ]
    out = _run(cmd, who="Cohort", cwd=REPO_ROOT)
    return parse_json_output(out, who="Cohort", required=COHORT_KEYS)


def _ratio(a: Any, b: Any) -> float | None:
    try:
        return float(a) / float(b) if float(b) > 0 else None
    except (TypeError, ValueError):
        return None


def cohort_client_seconds(cohort: dict[str, Any]) -> float:
    """Cohort's compute per client to hold against Flower's: ``client_seconds_alone``, the
    one simulated client that shares no check of the broadcasts with the others (the bench's
    clients share a process, and its other clients reuse those checks; each of Flower's does
    its own), or ``client_seconds`` from a bench too old to report it."""
    return cohort.get("client_seconds_alone") or cohort["client_seconds"]


def compare(
    flower: dict[str, Any], cohort: dict[str, Any], *, modulus_bits: int
) -> tuple[dict[str, float | None], list[str]]:
    """Ratios Flower/Cohort and the ways in which the two rounds differ."""
    ratios = {
        "server_seconds": _ratio(flower["server_seconds"], cohort["server_seconds"]),
        "client_seconds": _ratio(flower["client_seconds"], cohort_client_seconds(cohort)),
        "upload_bytes_per_client": _ratio(
            flower.get("upload_bytes_per_client"), cohort["upload_bytes_per_client"]
        ),
    }
    mismatches: list[str] = []
    for key in ("clients", "dim", "threshold"):
        if flower[key] != cohort[key]:
            mismatches.append(f"{key}: Flower {flower[key]} vs Cohort {cohort[key]}")
    if abs(float(flower["dropout"]) - float(cohort["dropout"])) > 1e-9:
        mismatches.append(f"dropout: Flower {flower['dropout']} vs Cohort {cohort['dropout']}")
    if flower.get("neighbors") != cohort["neighbors"]:
        mismatches.append(
            f"graph degree: Flower {flower.get('neighbors')} (num_shares "
            f"{flower['num_shares']}) vs Cohort k={cohort['neighbors']}"
        )
    cohort_bits = cohort.get("modulus_bits", modulus_bits)
    if flower["modulus_bits"] != cohort_bits:
        mismatches.append(f"modulus: Flower 2^{flower['modulus_bits']} vs Cohort 2^{cohort_bits}")
    if not flower.get("correct", False):
        mismatches.append("Flower's aggregate did NOT check out (correct=false)")
    if cohort.get("correct") is False:
        mismatches.append("Cohort's aggregate did NOT check out (correct=false)")
    return ratios, mismatches


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if unit == "s":
            return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"
        if unit == "B":
            return f"{value / 1e3:,.1f} kB"
        return f"{value:.3g}"
    if isinstance(value, int) and unit == "B":
        return f"{value / 1e3:,.1f} kB"
    return str(value)


def print_table(
    flower: dict[str, Any],
    cohort: dict[str, Any],
    ratios: dict[str, float | None],
    mismatches: list[str],
) -> None:
    """Human-readable side-by-side table."""
    rows: list[tuple[str, Any, Any, float | None, str]] = [
        ("clients", flower["clients"], cohort["clients"], None, ""),
        ("dim", flower["dim"], cohort["dim"], None, ""),
        ("graph degree (others)", flower.get("neighbors"), cohort["neighbors"], None, ""),
        ("threshold", flower["threshold"], cohort["threshold"], None, ""),
        ("dropout", flower["dropout"], cohort["dropout"], None, ""),
        ("modulus bits", flower["modulus_bits"], cohort.get("modulus_bits"), None, ""),
        ("client s / client", flower["client_seconds"], cohort_client_seconds(cohort),
         ratios["client_seconds"], "s"),
        ("server s / round", flower["server_seconds"], cohort["server_seconds"],
         ratios["server_seconds"], "s"),
        ("upload / client", flower.get("upload_bytes_per_client"),
         cohort["upload_bytes_per_client"], ratios["upload_bytes_per_client"], "B"),
        ("expansion", None, cohort["expansion"], None, ""),
        ("PRG floor (Cohort)", None, cohort["prg_floor_seconds"], None, "s"),
        ("correct", flower.get("correct"), cohort.get("correct"), None, ""),
    ]
    print(f"{'':24s} {'Flower ' + str(flower['flwr_version']):>16s} {'Cohort':>16s} "
          f"{'Flower/Cohort':>14s}")
    for name, f_val, c_val, ratio, unit in rows:
        r = f"{ratio:.2f}x" if ratio is not None else ""
        print(f"{name:24s} {_fmt(f_val, unit):>16s} {_fmt(c_val, unit):>16s} {r:>14s}")
    print(f"(Flower num_shares={flower['num_shares']}: its neighbourhood counts the client itself)")
    for m in mismatches:
        print(f"note: {m}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--dim", type=int, default=100_000)
    p.add_argument("--neighbors", "-k", type=int, default=20,
                   help="Cohort's graph degree k (other neighbours per client); the default 20 "
                        "is Flower's num_shares=21")
    p.add_argument("--threshold", type=int, default=11)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--modulus-bits", type=int, default=32,
                   help="Cohort's modulus bits; Flower's default modulus is 2^32")
    p.add_argument("--seed", type=int, default=0, help="seed for the Flower round")
    p.add_argument("--flower-python", default=sys.executable,
                   help="interpreter with flwr==1.41.0 installed (default: this one)")
    p.add_argument("--flower-num-shares", type=int, default=None,
                   help="override the k -> num_shares mapping")
    p.add_argument("--odd-k", choices=("down", "up"), default="down",
                   help="odd k has no Flower equivalent: use degree k-1 (down) or k+1 (up)")
    p.add_argument("--flower-json", default=None, help="read Flower's result from FILE")
    p.add_argument("--cohort-json", default=None, help="read Cohort's result from FILE")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both sides, print the comparison."""
    args = _parse_args(argv)
    num_shares = args.flower_num_shares or flower_num_shares(
        args.neighbors, args.clients, args.odd_k
    )
    try:
        cohort = run_cohort(args)  # first: it fails fast while Cohort's bench does not exist
        flower = run_flower(args, num_shares)
    except BenchError as err:
        print(f"compare_flower.py: {err}", file=sys.stderr)
        return 2
    ratios, mismatches = compare(flower, cohort, modulus_bits=args.modulus_bits)
    config = {
        "clients": args.clients,
        "dim": args.dim,
        "neighbors": args.neighbors,
        "threshold": args.threshold,
        "dropout": args.dropout,
        "modulus_bits": args.modulus_bits,
        "flower_num_shares": num_shares,
        "flower_degree": flower_degree(num_shares, args.clients),
        "odd_k": args.odd_k,
    }
    if args.json:
        print(json.dumps({"config": config, "flower": flower, "cohort": cohort,
                          "ratios": ratios, "mismatches": mismatches}))
    else:
        print_table(flower, cohort, ratios, mismatches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
