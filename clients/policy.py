"""A site's policy and the round requests it judges.

A :class:`SitePolicy` says what a hospital agrees to take part in: which strategies and tasks,
how many participants a round must have at least (so its contribution hides in a crowd), that
its outputs only ever leave through secure aggregation (default on), and optionally a privacy
budget (ε, δ) for what it releases. For its local training it says whether it allows, requires or
refuses example-level DP-SGD (:class:`DPSGDRule`) and may cap the example-level (ε, δ) it ever
spends (``example_budget``, enforced against the site's ``EXAMPLE`` ledger track — one patient
record is a different neighbouring relation from one whole site, so the two budgets are never
composed). :func:`check_policy` judges a :class:`RoundRequest` against it *before the site
computes anything* and raises :class:`PolicyViolation` naming the broken :class:`PolicyRule`.
The privacy budget itself is enforced against the site's ledger by :class:`clients.site.Site`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cohort.contract import DPSGDConfig, RoundRequest, RoundTask, StrategyName
from privacy import Budget
from privacy import _validate as v
from secagg.errors import CohortError, ConfigurationError

# DPSGDConfig, RoundRequest, RoundTask and StrategyName cross the wire: they are the
# contract's (cohort.contract), imported here for the policy's checks.
__all__ = [
    "DPSGDRule",
    "PolicyRule",
    "PolicyViolation",
    "SitePolicy",
    "check_policy",
]


class DPSGDRule(enum.Enum):
    """Whether a site trains with example-level DP-SGD when a round asks for it."""

    ALLOW = "allow"      # train as the round asks, with or without DP-SGD
    REQUIRE = "require"  # refuse every training request without DP-SGD
    REFUSE = "refuse"    # refuse every training request with DP-SGD


class PolicyRule(enum.Enum):
    STRATEGY = "strategy not allowed"
    TASK = "task not allowed"
    MIN_PARTICIPANTS = "too few participants"
    SECURE_AGGREGATION = "secure aggregation required"
    PRIVACY_REQUIRED = "a privacy charge is required"
    STALE_ROUND = "round number older than the last round taken part in"
    DP_SGD_REQUIRED = "example-level DP-SGD is required"
    DP_SGD_REFUSED = "example-level DP-SGD is not accepted"


class PolicyViolation(CohortError):
    """A request that a site's policy does not allow; ``rule`` says which rule it broke.
    (A site's error, so it lives with the sites, not in the protocol package.)"""

    def __init__(self, rule: PolicyRule, detail: str) -> None:
        if not isinstance(rule, PolicyRule):
            raise ConfigurationError(f"rule must be a PolicyRule, got {rule!r}")
        super().__init__(f"{rule.value}: {detail}")
        self.rule = rule


_ALL_STRATEGIES = frozenset(StrategyName)
_ALL_TASKS = frozenset(RoundTask)


@dataclass(frozen=True, kw_only=True)
class SitePolicy:
    """What a site agrees to. ``privacy_budget`` set means: every release must carry a privacy
    charge, and the site's ledger (which must have this budget) must be able to pay it.
    ``example_budget`` set means: every training request must use DP-SGD, and the site's
    example-track ledger (which must have this budget) must be able to pay its event."""

    allowed_strategies: frozenset[StrategyName] = field(default=_ALL_STRATEGIES)
    allowed_tasks: frozenset[RoundTask] = field(default=_ALL_TASKS)
    min_participants: int = 3
    require_secure_aggregation: bool = True
    privacy_budget: Budget | None = None
    dp_sgd: DPSGDRule = DPSGDRule.ALLOW
    example_budget: Budget | None = None

    def __post_init__(self) -> None:
        strategies = frozenset(self.allowed_strategies)
        tasks = frozenset(self.allowed_tasks)
        if not all(isinstance(s, StrategyName) for s in strategies):
            raise ConfigurationError("allowed_strategies must hold StrategyName values")
        if not all(isinstance(t, RoundTask) for t in tasks):
            raise ConfigurationError("allowed_tasks must hold RoundTask values")
        if not isinstance(self.require_secure_aggregation, bool):
            raise ConfigurationError("require_secure_aggregation must be a bool")
        if self.privacy_budget is not None and not isinstance(self.privacy_budget, Budget):
            raise ConfigurationError("privacy_budget must be a privacy.Budget or None")
        if not isinstance(self.dp_sgd, DPSGDRule):
            raise ConfigurationError("dp_sgd must be a DPSGDRule")
        if self.example_budget is not None:
            if not isinstance(self.example_budget, Budget):
                raise ConfigurationError("example_budget must be a privacy.Budget or None")
            if self.dp_sgd is DPSGDRule.REFUSE:
                raise ConfigurationError("an example-level budget needs DP-SGD; the policy "
                                         "refuses it")
        object.__setattr__(self, "allowed_strategies", strategies)
        object.__setattr__(self, "allowed_tasks", tasks)
        object.__setattr__(self, "min_participants",
                           v.integer(self.min_participants, "min_participants", minimum=1))


def check_policy(policy: SitePolicy, request: RoundRequest, *,
                 last_round: int | None = None) -> None:
    """Raise :class:`PolicyViolation` if ``request`` breaks ``policy``; change nothing."""
    if request.strategy not in policy.allowed_strategies:
        raise PolicyViolation(PolicyRule.STRATEGY, request.strategy.value)
    if request.task not in policy.allowed_tasks:
        raise PolicyViolation(PolicyRule.TASK, request.task.value)
    if request.n_participants < policy.min_participants:
        raise PolicyViolation(PolicyRule.MIN_PARTICIPANTS,
                                  f"{request.n_participants} < {policy.min_participants}")
    if policy.require_secure_aggregation and not request.secure_aggregation:
        raise PolicyViolation(PolicyRule.SECURE_AGGREGATION, "the round would send in clear")
    if policy.privacy_budget is not None and request.privacy_charge is None:
        raise PolicyViolation(PolicyRule.PRIVACY_REQUIRED,
                                  "the site has a privacy budget; every release must be charged")
    if request.task is RoundTask.FIT:
        wants_dp_sgd = (policy.dp_sgd is DPSGDRule.REQUIRE or policy.example_budget is not None)
        if request.dp_sgd is None and wants_dp_sgd:
            raise PolicyViolation(PolicyRule.DP_SGD_REQUIRED,
                                      "the site trains only with example-level DP-SGD")
        if request.dp_sgd is not None and policy.dp_sgd is DPSGDRule.REFUSE:
            raise PolicyViolation(PolicyRule.DP_SGD_REFUSED,
                                      "the site does not train with DP-SGD")
    if last_round is not None and request.round_number < last_round:
        raise PolicyViolation(PolicyRule.STALE_ROUND,
                                  f"round {request.round_number} < {last_round}")
