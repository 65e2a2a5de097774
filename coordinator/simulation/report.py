"""What a run leaves behind in its output folder: ``metrics.jsonl`` (one record per round),
``summary.json`` and ``rounds.png`` (accuracy and epsilon per round), plus the terminal table."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .engine import RoundRecord, SimulationResult

__all__ = ["MetricsWriter", "write_summary", "plot_rounds", "print_table", "config_dict"]


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. DPSGDConfig
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def config_dict(result: SimulationResult) -> dict[str, Any]:
    return {f.name: _plain(getattr(result.config, f.name))
            for f in dataclasses.fields(result.config)}


class MetricsWriter:
    """Appends one JSON object per round to ``metrics.jsonl`` (flushed at once, so a crash
    keeps every finished round)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def __call__(self, record: RoundRecord) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(dataclasses.asdict(record)) + "\n")


def write_summary(out_dir: Path, result: SimulationResult, *,
                  local_only: dict[str, float] | None,
                  local_only_global: dict[str, float] | None,
                  centralized: float | None) -> Path:
    summary = {
        "final_accuracy": result.final_accuracy,
        "final_accuracy_is": result.final_meaning,
        "metric": result.metric,
        "epsilon": result.epsilon,
        "delta": result.config.delta if result.epsilon is not None else None,
        # Example-level (DP-SGD, one record) epsilon per site: a different neighbouring
        # relation from the site-level epsilon above, never composed with it.
        "example_epsilon": result.example_epsilon,
        "example_delta": (result.config.example_delta if result.example_epsilon is not None
                          else None),
        "rounds_completed": len(result.rounds),
        "stopped": result.stopped,
        "site_accuracy": result.site_accuracy,
        "site_accuracy_global_test": result.site_global_accuracy,
        "local_only_accuracy": local_only,
        "local_only_accuracy_global_test": local_only_global,
        "centralized_accuracy": centralized,
        "student_accuracy": (result.rounds[-1].student_accuracy if result.rounds else None),
        "config": config_dict(result),
    }
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def plot_rounds(out_dir: Path, result: SimulationResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r.round for r in result.rounds]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(rounds, [r.accuracy for r in result.rounds], "o-", color="tab:blue",
            label=result.metric)
    ax.set_xlabel("round")
    ax.set_ylabel(result.metric, color="tab:blue")
    ax.set_title(f"{result.config.algorithm.value} on {_plain(result.config.dataset)}, "
                 f"{result.config.sites} sites"
                 + (" (secure sum)" if result.config.secagg else " (clear sum)"))
    eps = [r.epsilon for r in result.rounds]
    if any(e is not None for e in eps):
        right = ax.twinx()
        right.plot(rounds, [float("nan") if e is None else e for e in eps], "s--",
                   color="tab:red", label="epsilon")
        right.set_ylabel(f"epsilon (delta={result.config.delta:g})", color="tab:red")
    fig.tight_layout()
    path = Path(out_dir) / "rounds.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(result: SimulationResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="rounds")
    for name in ("round", result.metric, "loss", "sites summed", "epsilon", "seconds"):
        table.add_column(name, justify="right")
    for r in result.rounds:
        table.add_row(str(r.round), "-" if r.accuracy is None else f"{r.accuracy:.4f}",
                      "-" if r.loss is None else f"{r.loss:.4f}",
                      f"{r.participants}/{r.planned}",
                      "-" if r.epsilon is None else f"{r.epsilon:.3f}", f"{r.seconds:.2f}")
    console.print(table)
