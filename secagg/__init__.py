"""Secure aggregation (SecAgg+, Bell et al. 2020, on Bonawitz et al. 2017).

Clients mask their integer vectors with pairwise-cancelling and self masks; a server sums the
masked vectors and learns only the sum of the clients that finished. Pure: numpy and
cryptography only, no I/O. Start with :func:`simulate_round`; deployments drive
:class:`SecAggClient` and :class:`SecAggServer` over their own transport.
"""

from .adversary import ADVERSARIES, Adversary
from .client import SecAggClient
from .config import RoundConfig
from .errors import (
    CohortError,
    ConfigurationError,
    InvalidInput,
    InvalidMessage,
    ProtocolAbort,
    StageError,
)
from .harness import RoundResult, simulate_round
from .params import GraphParameters, choose_parameters, harary_parameters, required_modulus_bits
from .server import AggregateResult, SecAggServer
from .stages import Stage, dropout_plan
from .transcript import Direction, Transcript, TranscriptEntry, exposed_clients

__all__ = [
    "simulate_round",
    "RoundResult",
    "SecAggClient",
    "SecAggServer",
    "AggregateResult",
    "RoundConfig",
    "Stage",
    "dropout_plan",
    "Transcript",
    "TranscriptEntry",
    "Direction",
    "exposed_clients",
    "Adversary",
    "ADVERSARIES",
    "GraphParameters",
    "choose_parameters",
    "harary_parameters",
    "required_modulus_bits",
    "CohortError",
    "ConfigurationError",
    "InvalidInput",
    "InvalidMessage",
    "StageError",
    "ProtocolAbort",
]
