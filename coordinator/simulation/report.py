"""What a run leaves behind in its output folder: ``metrics.jsonl`` (one record per round),
``summary.json``, ``rounds.png`` (score, loss and epsilon per round, aborted rounds marked,
reference lines), plus the terminal table.

Metric names follow the task: classification reports ``accuracy``, regression ``r2`` (R²), in
``metrics.jsonl`` and in every ``summary.json`` key that holds a score (``final_r2``,
``site_r2``, ``centralized_r2`` …); ``summary["metric"]`` says which.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .engine import RoundRecord, SimulationResult

__all__ = ["MetricsWriter", "write_summary", "plot_rounds", "print_table", "config_dict",
           "metric_label", "run_status", "OUTPUT_FILES"]

# Every file a run can leave in its folder, and what it holds (for --help and the summary).
OUTPUT_FILES = {
    "metrics.jsonl": "one JSON object per round (score, loss, sites summed, epsilon, aborted)",
    "summary.json": "final scores, per-site scores, references, epsilon, why the run stopped",
    "rounds.png": "score and loss per round, epsilon and its budget with DP, aborted rounds",
    "ledgers.sqlite": "the sites' privacy ledgers (every DP run, with or without a budget)",
    "secagg_rounds.jsonl": "one JSON object per secure round: its public facts, who was summed, "
                           "the noise planned, the event charged (for privacy audit run)",
    "transcripts": "the coordinator's whole view of each secure round, message by message",
    "backbone.pt": "the backbone pretrained on the public split (only with --transfer)",
}


# Test-only knob (CONVENTIONS 12): a factor below 1 plants a summary that prints a smaller
# epsilon than the run's events compose to; the privacy audit's epsilon check proves it
# catches it (tests/test_audit_run.py).
_PLANT_SUMMARY_EPSILON_SCALE = 1.0


def metric_label(metric: str) -> str:
    """How a person reads the metric's name: ``accuracy``, or ``R²`` for ``r2``."""
    return "R²" if metric == "r2" else metric


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


def record_dict(record: RoundRecord, metric: str) -> dict[str, Any]:
    """A round as written to ``metrics.jsonl``: its score under the metric's own name."""
    out = dataclasses.asdict(record)
    if metric != "accuracy":
        out = {(k.replace("accuracy", metric) if k in ("accuracy", "student_accuracy") else k): v
               for k, v in out.items()}
    return out


class MetricsWriter:
    """Appends one JSON object per round to ``metrics.jsonl`` (flushed at once, so a crash
    keeps every finished round)."""

    def __init__(self, out_dir: Path, *, metric: str = "accuracy") -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.metric = metric
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def __call__(self, record: RoundRecord) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record_dict(record, self.metric)) + "\n")


def run_status(result: SimulationResult) -> str:
    """``complete``, ``interrupted``, ``aborted`` (every round's secure sum aborted) or
    ``stopped`` (a budget or a policy ended it early)."""
    if result.interrupted:
        return "interrupted"
    if result.rounds and all(r.aborted for r in result.rounds):
        return "aborted"
    if result.stopped:
        return "stopped"
    return "complete"


def _sampling(config, amplified: float | None) -> dict[str, Any] | None:
    """How each round's cohort was drawn, and what each epsilon assumes (None: every site)."""
    if not config.sampled:
        return None
    from .config import SECRET_SAMPLING_ASSUMPTION

    return {
        "clients_per_round": config.clients_per_round,
        "sample_rate": config.sample_rate,
        "population": config.sites,
        "epsilon_is": "no amplification by sampling: the largest, over the sites, composition "
                      "of the rounds each site was summed in (the coordinator knows who took "
                      "part)",
        "epsilon_amplified_is": None if amplified is None else SECRET_SAMPLING_ASSUMPTION,
    }


def write_summary(out_dir: Path, result: SimulationResult, *,
                  local_only: dict[str, float] | None,
                  local_only_global: dict[str, float] | None,
                  centralized: float | None) -> Path:
    m = result.metric
    rounds = result.rounds
    outputs = ["metrics.jsonl", "summary.json", "rounds.png"]
    outputs += [name for name in ("ledgers.sqlite", "secagg_rounds.jsonl", "transcripts",
                                  "backbone.pt")
                if (Path(out_dir) / name).exists()]
    summary = {
        "status": run_status(result),
        "metric": m,
        f"final_{m}": result.final_accuracy,
        f"final_{m}_is": result.final_meaning,
        "epsilon": (result.epsilon if result.epsilon is None
                    else result.epsilon * _PLANT_SUMMARY_EPSILON_SCALE),
        # Only under the explicit secret-sampling assumption (--assume-secret-sampling):
        # amplified by Poisson sampling, which does not hold against the coordinator.
        "epsilon_amplified": result.epsilon_amplified,
        "sampling": _sampling(result.config, result.epsilon_amplified),
        "delta": result.config.delta if result.epsilon is not None else None,
        "epsilon_budget": result.config.target_epsilon,
        # Example-level (DP-SGD, one record) epsilon per site: a different neighbouring
        # relation from the site-level epsilon above, never composed with it.
        "example_epsilon": result.example_epsilon,
        "example_delta": (result.config.example_delta if result.example_epsilon is not None
                          else None),
        "rounds_completed": len(rounds),
        "rounds_planned": result.config.rounds,
        "rounds_aborted": [r.round for r in rounds if r.aborted],
        "stopped": result.stopped,
        "budget_projection": result.projection,
        f"site_{m}": result.site_accuracy,
        f"site_{m}_global_test": result.site_global_accuracy,
        f"local_only_{m}": local_only,
        f"local_only_{m}_global_test": local_only_global,
        f"centralized_{m}": centralized,
        f"student_{m}": (rounds[-1].student_accuracy if rounds else None),
        "outputs": outputs,
        "config": config_dict(result),
    }
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def _local_reference(result: SimulationResult, local_only: dict[str, float] | None,
                     local_only_global: dict[str, float] | None) -> float | None:
    """The mean local-only score measured the way the run's curve is: on the sites' own test
    splits for personalised models, on the global test split otherwise."""
    chosen = local_only if result.config.personal_mode is not None else local_only_global
    if not chosen:
        return None
    return sum(chosen.values()) / len(chosen)


def plot_rounds(out_dir: Path, result: SimulationResult, *,
                centralized: float | None = None,
                local_only: dict[str, float] | None = None,
                local_only_global: dict[str, float] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cfg = result.config
    label = metric_label(result.metric)
    rounds = [r.round for r in result.rounds]
    eps = [r.epsilon for r in result.rounds]
    with_dp = any(e is not None for e in eps) or cfg.target_epsilon is not None
    if with_dp:
        fig, (ax, ax_eps) = plt.subplots(2, 1, figsize=(8, 6.2), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1.4]})
    else:
        fig, ax = plt.subplots(figsize=(8, 4.6))
        ax_eps = None

    def nan(values):
        return [math.nan if v is None else v for v in values]

    if cfg.personal_mode is not None:
        curve = f"{label}, personal models (mean, own test splits)"
    elif cfg.distillation:
        curve = f"{label}, the sites' models (mean)"
    else:
        curve = f"{label}, global model"
    scores = nan(r.accuracy for r in result.rounds)
    handles = []
    handles += ax.plot(rounds, scores, "o-", color="tab:blue", ms=4, label=curve)
    if any(r.student_accuracy is not None for r in result.rounds):
        handles += ax.plot(rounds, nan(r.student_accuracy for r in result.rounds), "^--",
                           color="tab:purple", ms=4, label=f"global student {label}")
    if centralized is not None:
        handles.append(ax.axhline(centralized, color="tab:green", ls=":", lw=1.6,
                                  label=f"centralised reference ({centralized:.3f})"))
    local = _local_reference(result, local_only, local_only_global)
    if local is not None:
        handles.append(ax.axhline(local, color="tab:orange", ls="-.", lw=1.6,
                                  label=f"mean local-only ({local:.3f})"))
    aborted = [r.round for r in result.rounds if r.aborted]
    for i, x in enumerate(aborted):
        span = ax.axvspan(x - 0.45, x + 0.45, color="tab:red", alpha=0.15, lw=0,
                          label="aborted round (nothing summed)" if i == 0 else None)
        if i == 0:
            handles.append(span)
        if ax_eps is not None:
            ax_eps.axvspan(x - 0.45, x + 0.45, color="tab:red", alpha=0.15, lw=0)
    if aborted:
        ax.plot(aborted, [scores[x - 1] for x in aborted], "x", color="tab:red", ms=8, mew=2)
    levels = [v for v in scores if not math.isnan(v)]
    levels += [v for v in nan(r.student_accuracy for r in result.rounds) if not math.isnan(v)]
    levels += [v for v in (centralized, local) if v is not None]
    if levels:
        lo, hi = min(levels), max(levels)
        pad = 0.08 * (hi - lo) if hi > lo else 0.05
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(label, color="tab:blue")
    losses = nan(r.loss for r in result.rounds)
    if any(not math.isnan(v) for v in losses):
        right = ax.twinx()
        handles += right.plot(rounds, losses, "s-", color="tab:gray", ms=3, lw=1, alpha=0.8,
                              label="test loss")
        right.set_ylabel("test loss", color="tab:gray")
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
              fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    secure = "secure sum" if cfg.secagg else "clear sum"
    dp = "" if cfg.dp.value == "none" else f", {cfg.dp.value} DP"
    fig.suptitle(f"{cfg.algorithm.value} on {_plain(cfg.dataset)}, {cfg.sites} sites "
                 f"({secure}{dp})", fontsize=11)
    bottom = ax_eps if ax_eps is not None else ax
    if ax_eps is not None:
        ax_eps.plot(rounds, nan(eps), "D-", color="tab:red", ms=3, label="epsilon spent")
        if cfg.target_epsilon is not None:
            ax_eps.axhline(cfg.target_epsilon, color="black", ls="--", lw=1,
                           label=f"budget ({cfg.target_epsilon:g})")
        ax_eps.set_ylabel(f"epsilon (δ={cfg.delta:g})", color="tab:red")
        ax_eps.set_ylim(bottom=0)
        ax_eps.legend(loc="upper left", fontsize=8)
        ax_eps.grid(alpha=0.25)
    bottom.set_xlabel("round")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    if rounds:
        bottom.set_xlim(0.5, max(max(rounds), 1) + 0.5)
    if result.stopped:
        p = result.projection or {}
        if "worst" in p:
            text = (f"stopped before round {p['round']} on a worst-case projection: epsilon "
                    f"{p['worst']:.4g} > budget {p['budget']:g} if only {p['worst_survivors']} "
                    f"sites survive ({p['best']:.4g} if all {p['best_survivors']} do)")
        else:
            text = result.stopped if len(result.stopped) < 110 else result.stopped[:107] + "…"
        fig.text(0.01, 0.005, text, fontsize=7, color="tab:red", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if result.stopped else 0, 1, 1))
    path = Path(out_dir) / "rounds.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(result: SimulationResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="rounds")
    for name in ("round", metric_label(result.metric), "loss", "sites summed", "epsilon",
                 "seconds"):
        table.add_column(name, justify="right")
    for r in result.rounds:
        summed = f"{r.participants}/{r.planned}"
        table.add_row(str(r.round), "-" if r.accuracy is None else f"{r.accuracy:.4f}",
                      "-" if r.loss is None else f"{r.loss:.4f}",
                      f"[red]{summed} aborted[/]" if r.aborted else summed,
                      "-" if r.epsilon is None else f"{r.epsilon:.3f}", f"{r.seconds:.2f}")
    console.print(table)
    aborted = [r.round for r in result.rounds if r.aborted]
    if aborted:
        console.print(f"[red]{len(aborted)} of {len(result.rounds)} rounds aborted[/] (nothing "
                      f"revealed, the model unchanged): {result.rounds[aborted[0] - 1].note}",
                      soft_wrap=True)
