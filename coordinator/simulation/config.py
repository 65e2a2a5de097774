"""What a simulated consortium run is: :class:`SimulationConfig` and its choices."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from pathlib import Path

from clients import (
    DatasetName,
    DPSGDConfig,
    ModelKind,
    Optimizer,
    PartitionScheme,
    PersonalMode,
    StrategyName,
)
from cohort.contract import SERVER_OPTIMISERS
from privacy import Mechanism
from secagg.errors import ConfigurationError

__all__ = ["Backend", "Transfer", "SimulationConfig", "SECRET_SAMPLING_ASSUMPTION"]

_PERSONAL = {StrategyName.FEDPER: PersonalMode.FEDPER, StrategyName.FEDREP: PersonalMode.FEDREP}


class Transfer(enum.Enum):
    """Start from a backbone pretrained on the public split: not at all, frozen, or fine-tuned."""

    NONE = "none"
    FROZEN = "frozen"
    FINETUNE = "finetune"


class Backend(enum.Enum):
    """Where the sites' halves of a round run: in this process, or in a pool of Ray actors
    (many sites per actor; the coordinator's half stays in the driver). Same seed, same model."""

    INPROCESS = "inprocess"
    RAY = "ray"


SECRET_SAMPLING_ASSUMPTION = (
    "amplification by sampling assumes that who is sampled in a round stays secret from "
    "whoever sees the released models, and that the sampling really is Poisson with the stated "
    "rate, drawn independently of the data. The coordinator knows who took part, so this "
    "epsilon does not hold against the coordinator; the default epsilon (no amplification) "
    "does.")


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """One run. ``algorithm`` uses the sites' own vocabulary (what a site's policy allows):
    a server optimiser (FEDAVG … FEDYOGI), DISTILLATION, or FEDPER / FEDREP (personal heads).
    Privacy parameters are keyword-only like everything else; ``seed`` fixes the
    data split, partition, model initialisation, local shuffling and the simulated dropouts,
    and makes the secure sum's randomness reproducible (a simulation, not a deployment).

    ``dp_sgd`` trains every site's model with example-level DP-SGD (Opacus); its events go on
    each site's EXAMPLE ledger track, capped by ``example_epsilon`` at ``example_delta`` when
    given, and are reported per site apart from the site-level ``dp`` / ``target_epsilon``
    (a different neighbouring relation: one record, not one site)."""

    dataset: DatasetName | Path = DatasetName.BREAST_CANCER
    label_column: str | None = None
    sites: int = 5
    rounds: int = 30
    partition: PartitionScheme = PartitionScheme.LABEL_DIRICHLET
    alpha: float = 0.5
    algorithm: StrategyName = StrategyName.FEDAVG
    models: tuple[ModelKind, ...] = (ModelKind.MLP,)
    hidden: int = 32
    secagg: bool = True
    dp: Mechanism = Mechanism.NONE
    noise_multiplier: float = 1.0
    clip: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    local_epochs: int = 2
    lr: float | None = None
    optimizer: Optimizer | None = None
    batch_size: int = 32
    prox_mu: float = 0.01
    server_lr: float | None = None
    transfer: Transfer = Transfer.NONE
    pretrain_epochs: int = 30
    distill_epochs: int = 3
    distill_lr: float = 0.01
    temperature: float = 2.0
    global_student: bool = True
    dropout_rate: float = 0.0
    modulus_bits: int | None = None
    baselines: bool = True
    seed: int = 0
    dp_sgd: DPSGDConfig | None = None
    example_epsilon: float | None = None
    example_delta: float = 1e-5
    # -- scale (DESIGN 5a) ---------------------------------------------------------------
    backend: Backend = Backend.INPROCESS
    ray_address: str | None = None  # None: a local Ray started for the run
    ray_actors: int = 2
    clients_per_round: int | None = None  # K of the N sites, uniformly without replacement
    sample_rate: float | None = None      # or each site independently with probability q
    assume_secret_sampling: bool = False  # also report epsilon amplified by Poisson sampling
    min_site_samples: int | None = None   # None: 5, lowered to what the pool allows (>= 1)

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, StrategyName):
            raise ConfigurationError("algorithm must be a clients.StrategyName")
        if self.algorithm is StrategyName.TRANSFER:
            raise ConfigurationError("transfer is a way to start (transfer=...), not an algorithm")
        if not isinstance(self.dp, Mechanism) or self.dp is Mechanism.DP_SGD:
            raise ConfigurationError("dp must be a round privacy.Mechanism (DP-SGD is dp_sgd=)")
        if not isinstance(self.transfer, Transfer):
            raise ConfigurationError("transfer must be a Transfer")
        if not self.models or not all(isinstance(m, ModelKind) for m in self.models):
            raise ConfigurationError("models must be a non-empty tuple of ModelKind")
        if self.sites < 2:
            raise ConfigurationError("a consortium needs at least two sites")
        if self.rounds < 1 or self.local_epochs < 1:
            raise ConfigurationError("rounds and local_epochs must be at least 1")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigurationError("dropout_rate must lie in [0, 1)")
        if self.dp is Mechanism.DISTRIBUTED and not self.secagg:
            raise ConfigurationError("distributed DP needs the secure sum (--secagg)")
        if self.dp is not Mechanism.NONE and not self.noise_multiplier > 0:
            raise ConfigurationError("a DP mode needs a positive noise multiplier")
        if self.target_epsilon is not None and self.dp is Mechanism.NONE:
            raise ConfigurationError("a target epsilon needs a DP mode (--dp)")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigurationError("target_epsilon must be positive")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigurationError("lr must be a positive number")
        if self.optimizer is not None and not isinstance(self.optimizer, Optimizer):
            raise ConfigurationError("optimizer must be a clients.Optimizer")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError("clip must be a positive number")
        if len(set(self.models)) > 1 and not self.distillation:
            raise ConfigurationError("sites with different models can only learn by distillation")
        if self.transfer is not Transfer.NONE and self.distillation:
            raise ConfigurationError("transfer starts a shared model; it does not apply to distill")
        if self.dp_sgd is not None and not isinstance(self.dp_sgd, DPSGDConfig):
            raise ConfigurationError("dp_sgd must be a clients.DPSGDConfig or None")
        if self.dp_sgd is not None and self.distillation:
            raise ConfigurationError(
                "--dp-sgd cannot be combined with --strategy distill: the sites' distillation "
                "step trains on their private data outside DP-SGD")
        if self.example_epsilon is not None:
            if self.dp_sgd is None:
                raise ConfigurationError("an example-level budget (--dp-sgd-epsilon) needs "
                                         "--dp-sgd")
            if not (math.isfinite(self.example_epsilon) and self.example_epsilon > 0):
                raise ConfigurationError("example_epsilon must be a positive number")
        if not 0 < self.example_delta < 1:
            raise ConfigurationError("example_delta must lie in (0, 1)")
        self._check_scale()

    def _check_scale(self) -> None:
        if not isinstance(self.backend, Backend):
            raise ConfigurationError("backend must be a Backend")
        if self.backend is not Backend.RAY and self.ray_address is not None:
            raise ConfigurationError("ray_address applies only to the Ray backend")
        if isinstance(self.ray_actors, bool) or not isinstance(self.ray_actors, int) \
                or self.ray_actors < 1:
            raise ConfigurationError("ray_actors must be a positive integer")
        if self.backend is Backend.RAY and (self.distillation or self.personal_mode is not None):
            raise ConfigurationError(
                "the Ray backend runs shared-model rounds (FedAvg, FedProx, the server "
                "optimisers); distillation and personal heads run in process")
        if self.clients_per_round is not None and self.sample_rate is not None:
            raise ConfigurationError("give clients_per_round (K of N) or sample_rate (Poisson), "
                                     "not both")
        if self.clients_per_round is not None:
            k = self.clients_per_round
            if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= self.sites:
                raise ConfigurationError(f"clients_per_round must be an integer in "
                                         f"[2, sites={self.sites}]")
        if self.sample_rate is not None:
            q = self.sample_rate
            if not (isinstance(q, (int, float)) and math.isfinite(q) and 0 < q <= 1):
                raise ConfigurationError("sample_rate must lie in (0, 1]")
        if self.sampled and self.distillation:
            raise ConfigurationError("sampled rounds apply to shared-model training")
        if self.assume_secret_sampling:
            if self.sample_rate is None:
                raise ConfigurationError(
                    "assume_secret_sampling needs Poisson sampling (sample_rate): the "
                    "amplification bound used is that of Poisson subsampling")
            if self.dp is Mechanism.NONE:
                raise ConfigurationError("assume_secret_sampling needs differential privacy "
                                         "(dp)")
        if self.min_site_samples is not None and (
                isinstance(self.min_site_samples, bool)
                or not isinstance(self.min_site_samples, int) or self.min_site_samples < 1):
            raise ConfigurationError("min_site_samples must be a positive integer")

    @property
    def sampled(self) -> bool:
        """Whether each round runs on a sample of the sites rather than all of them."""
        return self.clients_per_round is not None or self.sample_rate is not None

    @property
    def distillation(self) -> bool:
        return self.algorithm is StrategyName.DISTILLATION

    @property
    def personal_mode(self) -> PersonalMode | None:
        """FedPer or FedRep when sites keep personal heads, else None."""
        return _PERSONAL.get(self.algorithm)

    @property
    def server_optimiser(self) -> StrategyName:
        """The coordinator's optimiser (personalisation averages the shared body with FedAvg)."""
        return self.algorithm if self.algorithm in SERVER_OPTIMISERS else StrategyName.FEDAVG

    @property
    def local_optimizer(self) -> Optimizer:
        """SGD for a shared model (FedAvg's setting); Adam for distillation, whose sites train
        different architectures on their own (a small CNN barely moves under SGD in the few
        steps a round gives it, and a stuck site drags the consensus down)."""
        if self.optimizer is not None:
            return self.optimizer
        return Optimizer.ADAM if self.distillation else Optimizer.SGD

    @property
    def local_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.01 if self.local_optimizer is Optimizer.ADAM else 0.1

    @property
    def update_clip(self) -> float:
        """The L2 clip of each site's update: the given one, else 1 with DP (where it is the
        sensitivity) and 10 without (wide enough to leave typical updates alone)."""
        if self.clip is not None:
            return self.clip
        return 1.0 if self.dp is not Mechanism.NONE else 10.0

    def model_for(self, index: int) -> ModelKind:
        return self.models[index % len(self.models)]
