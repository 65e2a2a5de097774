"""The coordinator: server optimisers, the secure-sum bridge between float model updates and
the SecAgg+ protocol, and the accounting of each round's privacy cost.

The public API is ``__all__``; modules whose names start with ``_`` are internal.
"""

from __future__ import annotations

from .accounting import RoundAccountant
from .secure_sum import secure_sum
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
from .sum_config import PrivacyMode, SecureSumConfig
from .sum_result import SecureSumResult

__all__ = [
    "ClientConfig",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "PrivacyMode",
    "RoundAccountant",
    "SecureSumConfig",
    "SecureSumResult",
    "Strategy",
    "StrategyName",
    "make_strategy",
    "secure_sum",
]
