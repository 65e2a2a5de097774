"""Privacy audits for privacy officers (DESIGN section 3a): verify what a run did
(:func:`audit_run`), and measure what it leaks (canaries: :mod:`.canaries`, :mod:`.bounds`;
membership inference: :mod:`.mia`). Each produces an :class:`AuditReport`, written as
``audit.json`` and ``audit.html`` by :func:`write_report`.

This package reads runs as files (:class:`RunRecords`: a simulation's output folder,
:class:`SimulationFolder`, or a coordinator's state file, :class:`StateFile`); it never imports
the coordinator or the sites. The training the canary and membership audits need is driven from
``coordinator.simulation.audit_runs``.
"""

from __future__ import annotations

from .bounds import (audit_p_value, gaussian_pair_epsilon, guesses_from_scores,
                     one_run_epsilon_lower_bound)
from .build import canary_report, mia_report, plot_canaries
from .canaries import (ClientCanaryResult, ExampleCanaryResult, bound_from_scores,
                       client_canary_estimate, example_canary_run)
from .mia import AttackMetrics, attack_metrics, lira_offline_scores, logit_confidence
from .recompute import independent_epsilon
from .records import RunRecords, SimulationFolder, open_records
from .report import AuditReport, Check, write_report
from .roster import RosterKeys, read_roster, roster_from_kit
from .state import StateFile, ledger_files
from .run import audit_run, uniformity_pvalue

__all__ = [
    "AttackMetrics", "AuditReport", "Check", "ClientCanaryResult", "ExampleCanaryResult",
    "RosterKeys", "RunRecords", "SimulationFolder", "StateFile", "attack_metrics",
    "audit_p_value", "audit_run",
    "bound_from_scores", "canary_report", "client_canary_estimate", "example_canary_run",
    "gaussian_pair_epsilon", "guesses_from_scores", "independent_epsilon", "ledger_files",
    "lira_offline_scores", "logit_confidence", "mia_report", "one_run_epsilon_lower_bound",
    "open_records", "plot_canaries", "read_roster", "roster_from_kit", "uniformity_pvalue",
    "write_report",
]
