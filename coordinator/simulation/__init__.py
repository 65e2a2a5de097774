"""The simulation engine: a whole consortium in one process (``python -m coordinator
simulate``). :func:`run_simulation` runs a :class:`SimulationConfig` and writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

from .baselines import centralized_score, local_only_scores
from .config import SimulationConfig, Transfer
from .engine import RoundRecord, Simulation, SimulationResult, single_threaded_torch
from .report import MetricsWriter, plot_rounds, print_table, write_summary

__all__ = ["Transfer", "SimulationConfig", "Simulation", "SimulationResult",
           "RoundRecord", "run_simulation"]


def run_simulation(config: SimulationConfig, out_dir: str | Path, *, progress: bool = True,
                   table: bool = True) -> dict:
    """Run, then write ``metrics.jsonl``, ``summary.json`` and ``rounds.png`` into ``out_dir``;
    return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with single_threaded_torch():
        simulation = Simulation(config, work_dir=out)
        result = simulation.run(on_round=MetricsWriter(out), progress=progress)
        local_only = local_only_global = centralized = None
        if config.baselines:
            local_only, local_only_global = local_only_scores(config, simulation.consortium)
            centralized = centralized_score(config, simulation.consortium)
    path = write_summary(out, result, local_only=local_only,
                         local_only_global=local_only_global, centralized=centralized)
    plot_rounds(out, result)
    if table:
        print_table(result)
    return json.loads(path.read_text())
