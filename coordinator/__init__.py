"""The coordinator: server optimisers, the coordinator's half of a secure round
(:class:`AggregationRound`: plan, secagg server, decode) and the accounting of each round's
privacy cost.

The public API is ``__all__``; modules whose names start with ``_`` are internal. The core of
this package never imports ``clients`` (a site's code has no place in a coordinator process):
:func:`secure_sum`, which runs every site's half in one process, is the simulation's
(``coordinator.simulation.secure_sum``) and is loaded from there on first use only.
"""

from __future__ import annotations

from typing import Any

from .accounting import RoundAccountant
from .aggregation import AggregationRound
from .strategies import (
    ClientConfig,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
    StrategyName,
    make_strategy,
)
from .sum_config import SecureSumConfig
from .sum_result import SecureSumResult

__all__ = [
    "AggregationRound",
    "ClientConfig",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "RoundAccountant",
    "SecureSumConfig",
    "SecureSumResult",
    "Strategy",
    "StrategyName",
    "make_strategy",
    "secure_sum",
]


def __getattr__(name: str) -> Any:
    # PEP 562: ``coordinator.secure_sum`` stays where outside scripts find it, without the
    # core importing the sites' code at import time.
    if name == "secure_sum":
        from .simulation.secure_sum import secure_sum

        return secure_sum
    raise AttributeError(f"module 'coordinator' has no attribute {name!r}")
