"""The simulation engine: a whole consortium in one process (``python -m coordinator
simulate``). :func:`run_simulation` runs a :class:`SimulationConfig` and writes its outputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .audit_record import AuditRecorder
from .baselines import centralized_score, local_only_scores
from .config import SECRET_SAMPLING_ASSUMPTION, Backend, SimulationConfig, Transfer
from .engine import RoundRecord, Simulation, SimulationResult, single_threaded_torch
from .report import MetricsWriter, plot_rounds, print_table, write_summary

__all__ = ["Backend", "Transfer", "SimulationConfig", "SECRET_SAMPLING_ASSUMPTION", "Simulation", "SimulationResult",
           "RoundRecord", "run_simulation"]


def run_simulation(config: SimulationConfig, out_dir: str | Path, *, progress: bool = True,
                   table: bool = True,
                   on_round: Callable[[RoundRecord], None] | None = None,
                   stop_requested: Callable[[], bool] | None = None) -> dict:
    """Run, then write ``metrics.jsonl``, ``summary.json`` and ``rounds.png`` into ``out_dir``
    (created if missing), with the secure rounds' records for the audit
    (``secagg_rounds.jsonl``, ``transcripts/``) and, in a DP run, the sites' ledgers
    (``ledgers.sqlite``); return the summary.

    ``stop_requested`` is asked before each round (see :meth:`Simulation.run`). A stopped run
    — interrupted, out of budget, or with every round aborted — still writes its summary and
    plot, and ``summary["status"]`` says which; an interrupted run skips the reference runs.
    Writing into a folder that must stay untouched on failure is the caller's job (the
    command line writes into a staging folder and renames it, see :mod:`cohort.outputs`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with single_threaded_torch():
        recorder = AuditRecorder(out) if config.secagg else None
        simulation = Simulation(config, work_dir=out, recorder=recorder)
        writer = MetricsWriter(out, metric=simulation.metric)

        def record(r: RoundRecord) -> None:
            writer(r)
            if on_round is not None:
                on_round(r)

        result = simulation.run(on_round=record, progress=progress,
                                stop_requested=stop_requested)
        local_only = local_only_global = centralized = None
        if config.baselines and not result.interrupted:
            try:
                local_only, local_only_global = local_only_scores(config, simulation.consortium)
                centralized = centralized_score(config, simulation.consortium)
            except KeyboardInterrupt:  # Ctrl-C during the reference runs: keep the rounds
                local_only = local_only_global = centralized = None
                result.stopped = f"interrupted at round {len(result.rounds)}"
                result.interrupted = True
    path = write_summary(out, result, local_only=local_only,
                         local_only_global=local_only_global, centralized=centralized)
    plot_rounds(out, result, centralized=centralized, local_only=local_only,
                local_only_global=local_only_global)
    if table:
        print_table(result)
    return json.loads(path.read_text())
