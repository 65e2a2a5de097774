"""The deployed job's ``rounds.png``: what a coordinator's operator looks at after a job.

The simulation's figure (``coordinator.simulation.report.plot_rounds``) is drawn from a
simulation's result, with its references (centralised, local-only) that a deployment cannot
compute: nobody holds the sites' data. A deployment has what the simulation does not: who
answered. So this figure has the global model's score and loss per round, the sites summed
against the sites asked (the gap is that round's dropouts, named), and the epsilon spent
against the job's budget; aborted rounds are shaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from cohort.contract import Job

__all__ = ["plot_job"]


def plot_job(out_dir: Path, job: Job, rounds: Sequence, *, stopped: str | None = None) -> Path:
    """Write ``out_dir/rounds.png`` for a job's ``RoundMetrics`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs = [m.round for m in rounds]
    nan = lambda vs: [math.nan if v is None else v for v in vs]  # noqa: E731
    eps = [m.epsilon for m in rounds]
    with_dp = any(e is not None for e in eps) or job.target_epsilon is not None
    heights = [3, 1.3] + ([1.3] if with_dp else [])
    fig, axes = plt.subplots(len(heights), 1, figsize=(8, 1.4 + 1.1 * sum(heights)),
                             sharex=True, gridspec_kw={"height_ratios": heights})
    ax, ax_sites = axes[0], axes[1]
    scores = nan(m.accuracy for m in rounds)
    handles = ax.plot(xs, scores, "o-", color="tab:blue", ms=4, label="global model score")
    losses = nan(m.loss for m in rounds)
    if any(not math.isnan(v) for v in losses):
        right = ax.twinx()
        handles += right.plot(xs, losses, "s-", color="tab:gray", ms=3, lw=1, alpha=0.8,
                              label="test loss")
        right.set_ylabel("test loss", color="tab:gray")
    ax.set_ylabel("score (held-out split)", color="tab:blue")
    ax.grid(alpha=0.25)

    planned = [m.planned for m in rounds]
    summed = [m.participants for m in rounds]
    ax_sites.bar(xs, planned, width=0.6, color="tab:orange", alpha=0.35, label="sites asked")
    ax_sites.bar(xs, summed, width=0.6, color="tab:green", label="sites summed")
    for m in rounds:
        if m.dropouts:
            names = ", ".join(m.dropouts)
            ax_sites.annotate(names if len(names) < 40 else names[:37] + "…",
                              (m.round, m.planned), textcoords="offset points", xytext=(0, 3),
                              ha="center", fontsize=7, color="tab:red")
    ax_sites.set_ylabel("sites")
    ax_sites.set_ylim(0, max(planned or [1]) * 1.8)  # headroom: dropout names, then the legend
    ax_sites.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_sites.legend(loc="upper left", fontsize=7, ncol=2)
    ax_sites.grid(alpha=0.25, axis="y")

    aborted = [m.round for m in rounds if m.aborted]
    for i, x in enumerate(aborted):
        for a in axes:
            span = a.axvspan(x - 0.45, x + 0.45, color="tab:red", alpha=0.15, lw=0,
                             label="aborted round (nothing summed)" if i == 0 else None)
        if i == 0:
            handles.append(span)
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3,
              fontsize=8, frameon=False)
    if with_dp:
        ax_eps = axes[2]
        ax_eps.plot(xs, nan(eps), "D-", color="tab:red", ms=3, label="epsilon spent")
        if job.target_epsilon is not None:
            ax_eps.axhline(job.target_epsilon, color="black", ls="--", lw=1,
                           label=f"budget ({job.target_epsilon:g})")
        ax_eps.set_ylabel(f"epsilon (δ={job.delta:g})", color="tab:red")
        ax_eps.set_ylim(bottom=0)
        ax_eps.legend(loc="upper left", fontsize=8)
        ax_eps.grid(alpha=0.25)
    bottom = axes[-1]
    bottom.set_xlabel("round")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlim(0.5, max(xs or [1]) + 0.5)
    dp = "" if job.mode.value == "none" else f", {job.mode.value} DP"
    fig.suptitle(f"job {job.name!r}: {job.strategy.value}, {job.training.model}, secure sum"
                 f"{dp}, deployed", fontsize=11)
    if stopped:
        fig.text(0.01, 0.005, stopped if len(stopped) < 110 else stopped[:107] + "…",
                 fontsize=7, color="tab:red", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if stopped else 0, 1, 1))
    path = Path(out_dir) / "rounds.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
