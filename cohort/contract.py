"""The one contract between a site and the coordinator: everything that crosses between them.

Both roles import this module and nothing else of each other (CONVENTIONS 15): the strategy
names a site's policy allows and the coordinator runs (:class:`StrategyName`), what a round asks
of a site (:class:`RoundRequest`, :class:`RoundTask`, :class:`DPSGDConfig`), the announcement of
one secure round (:class:`RoundAnnouncement`: the cohort and each site's client id, the secagg
parameters, the privacy mechanism and its encoding plan), the round's outcome
(:class:`RoundOutcome`) and the enrolment error (:class:`NotEnrolled`). The protocol messages
themselves are ``secagg``'s bytes, passed as they are, with the sender the transport
authenticated; the announcement and the outcome have their own byte form
(:meth:`RoundAnnouncement.to_bytes`, :meth:`RoundOutcome.to_bytes`) for a transport to carry.

Imports ``secagg`` and ``privacy`` only, never ``clients`` or ``coordinator``
(tests/test_import_boundaries.py).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from privacy import (
    EncodingConfig,
    Mechanism,
    NoiseKind,
    PrivacyEvent,
    RoundPrivacy,
    Rounding,
    event_from_dict,
    event_to_dict,
)
from privacy import _validate as v
from privacy.events import DiscreteGaussianEvent, GaussianEvent, SkellamEvent
from secagg import RoundConfig
from secagg.errors import CohortError, ConfigurationError, InvalidMessage
from secagg.params import DEFAULT_CORRUPT_RATE, DEFAULT_DROPOUT_RATE

__all__ = [
    "DPSGDConfig",
    "Job",
    "LocalTraining",
    "MODELS",
    "OUTCOME_ACK",
    "RoundWork",
    "parse_job",
    "NotEnrolled",
    "RoundAnnouncement",
    "RoundOutcome",
    "RoundRequest",
    "RoundTask",
    "SERVER_OPTIMISERS",
    "SiteId",
    "StrategyName",
]

SiteId = int | str


class NotEnrolled(CohortError):
    """A party that is not part of a round's cohort tried to take part in it (a site handed an
    announcement that does not name it, or a message from a sender outside the cohort)."""


class StrategyName(enum.Enum):
    """The federated strategies a coordinator runs and a site's policy may allow: the server
    optimisers (FEDAVG … FEDYOGI, :data:`SERVER_OPTIMISERS`), distillation, and personalisation
    (FEDPER / FEDREP average the shared body with FedAvg; TRANSFER names a start, not a step)."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDAVGM = "fedavgm"
    FEDADAGRAD = "fedadagrad"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    DISTILLATION = "distillation"
    FEDPER = "fedper"
    FEDREP = "fedrep"
    TRANSFER = "transfer"


SERVER_OPTIMISERS = frozenset({StrategyName.FEDAVG, StrategyName.FEDPROX, StrategyName.FEDAVGM,
                               StrategyName.FEDADAGRAD, StrategyName.FEDADAM,
                               StrategyName.FEDYOGI})
"""The strategies that are a server step on the secure sum (``coordinator.make_strategy``)."""


class RoundTask(enum.Enum):
    """What the round asks of the site: train and send an update, report test metrics, or
    predict on the public reference set (distillation)."""

    FIT = "fit"
    EVALUATE = "evaluate"
    PREDICT_PUBLIC = "predict_public"


@dataclass(frozen=True, kw_only=True)
class DPSGDConfig:
    """Example-level DP-SGD for a round's local training: per-example gradients clipped to
    L2 norm ``max_grad_norm``, Gaussian noise of standard deviation ``noise_multiplier ×
    max_grad_norm`` added to their sum, Poisson-sampled batches (Opacus). The event it costs
    depends on the site's own record count, so each site computes it (:mod:`privacy.dpsgd`)."""

    noise_multiplier: float
    max_grad_norm: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier",
                           v.positive(self.noise_multiplier, "noise_multiplier"))
        object.__setattr__(self, "max_grad_norm", v.positive(self.max_grad_norm, "max_grad_norm"))


_EVENTS = (GaussianEvent, SkellamEvent, DiscreteGaussianEvent)


@dataclass(frozen=True, kw_only=True)
class RoundRequest:
    """A coordinator's request to a site for one round. ``privacy_charge`` is the event the
    round would cost the site at worst (``None``: no differential privacy in this round);
    ``dp_sgd`` asks a training request (task FIT) to train with example-level DP-SGD.
    ``release_id`` is the unique 32-byte id of what the round releases (the secure round's id):
    a site's ledger reserves and settles the charge under it, and refuses a second release
    under the same id."""

    round_number: int
    strategy: StrategyName
    n_participants: int
    secure_aggregation: bool
    task: RoundTask = RoundTask.FIT
    privacy_charge: PrivacyEvent | None = None
    dp_sgd: DPSGDConfig | None = None
    release_id: bytes | None = None

    def __post_init__(self) -> None:
        if self.release_id is not None and (not isinstance(self.release_id, bytes)
                                            or len(self.release_id) != 32):
            raise ConfigurationError("release_id must be 32 bytes or None")
        object.__setattr__(self, "round_number",
                           v.integer(self.round_number, "round_number", minimum=0))
        object.__setattr__(self, "n_participants",
                           v.integer(self.n_participants, "n_participants", minimum=1))
        if not isinstance(self.strategy, StrategyName):
            raise ConfigurationError("strategy must be a StrategyName")
        if not isinstance(self.task, RoundTask):
            raise ConfigurationError("task must be a RoundTask")
        if not isinstance(self.secure_aggregation, bool):
            raise ConfigurationError("secure_aggregation must be a bool")
        if self.privacy_charge is not None and not isinstance(self.privacy_charge, _EVENTS):
            raise ConfigurationError("privacy_charge must be a privacy event or None")
        if self.dp_sgd is not None:
            if not isinstance(self.dp_sgd, DPSGDConfig):
                raise ConfigurationError("dp_sgd must be a DPSGDConfig or None")
            if self.task is not RoundTask.FIT:
                raise ConfigurationError("dp_sgd applies to training requests (task FIT) only")

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_number": self.round_number, "strategy": self.strategy.value,
            "n_participants": self.n_participants,
            "secure_aggregation": self.secure_aggregation, "task": self.task.value,
            "privacy_charge": (None if self.privacy_charge is None
                               else event_to_dict(self.privacy_charge)),
            "dp_sgd": (None if self.dp_sgd is None else
                       {"noise_multiplier": self.dp_sgd.noise_multiplier,
                        "max_grad_norm": self.dp_sgd.max_grad_norm}),
            "release_id": None if self.release_id is None else self.release_id.hex(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoundRequest":
        charge, dp_sgd, rid = data["privacy_charge"], data["dp_sgd"], data["release_id"]
        return cls(round_number=data["round_number"], strategy=StrategyName(data["strategy"]),
                   n_participants=data["n_participants"],
                   secure_aggregation=data["secure_aggregation"], task=RoundTask(data["task"]),
                   privacy_charge=None if charge is None else event_from_dict(charge),
                   dp_sgd=None if dp_sgd is None else DPSGDConfig(**dp_sgd),
                   release_id=None if rid is None else bytes.fromhex(rid))


def _site_id(site: object) -> SiteId:
    if isinstance(site, bool) or not isinstance(site, (int, str)):
        raise ConfigurationError(f"site ids must be int or str, got {site!r}")
    return site


def _privacy_to_dict(rp: RoundPrivacy) -> dict[str, Any]:
    return {"mechanism": rp.mechanism.value, "clip_norm": rp.clip_norm,
            "noise_multiplier": rp.noise_multiplier, "noise": rp.noise.value, "bits": rp.bits,
            "target_wrap_probability": rp.target_wrap_probability,
            "rounding": rp.rounding.value}


def _privacy_from_dict(data: Mapping[str, Any]) -> RoundPrivacy:
    return RoundPrivacy(mechanism=Mechanism(data["mechanism"]), clip_norm=data["clip_norm"],
                        noise_multiplier=data["noise_multiplier"], noise=NoiseKind(data["noise"]),
                        bits=data["bits"], target_wrap_probability=data["target_wrap_probability"],
                        rounding=Rounding(data["rounding"]))


def _loads(data: bytes, magic: bytes, what: str) -> dict[str, Any]:
    """The JSON body after ``magic``; InvalidMessage (failing closed) for anything else."""
    if not isinstance(data, bytes) or not data.startswith(magic):
        raise InvalidMessage(f"not a {what}")
    try:
        body = json.loads(data[len(magic):].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage(f"not a {what}: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidMessage(f"not a {what}")
    return body


_ANNOUNCEMENT = b"cohort/contract/v1/announcement\n"
_OUTCOME = b"cohort/contract/v1/outcome\n"


@dataclass(frozen=True, kw_only=True)
class RoundAnnouncement:
    """What the coordinator announces to every site of one secure round, before any site
    computes anything: the request the site judges against its policy; the cohort, whose
    i-th member is the round's secagg client ``i``; the secure-aggregation parameters; and the
    privacy mechanism with the encoding plan every site encodes with (the sites and the
    coordinator must agree on it to the bit). ``max_weight`` bounds any site's weight (public,
    agreed before the round); ``integer_weights`` says weights are sample counts.

    The round's id is the request's release id: the secure round and every site's ledger
    entry are named by it."""

    request: RoundRequest
    cohort: tuple[SiteId, ...]
    privacy: RoundPrivacy
    encoding: EncodingConfig
    rotation_seed: bytes
    max_weight: float
    integer_weights: bool
    neighbors: int
    threshold: int
    malicious: bool = False
    corrupt_rate: float = DEFAULT_CORRUPT_RATE
    dropout_rate: float = DEFAULT_DROPOUT_RATE

    def __post_init__(self) -> None:
        if not isinstance(self.request, RoundRequest) or self.request.release_id is None:
            raise ConfigurationError("an announcement needs a RoundRequest with a release id")
        if not self.request.secure_aggregation:
            raise ConfigurationError("an announced round is a secure round")
        cohort = tuple(_site_id(s) for s in self.cohort)
        if len(cohort) < 2 or len(set(cohort)) != len(cohort):
            raise ConfigurationError("the cohort must name at least two distinct sites")
        if len(cohort) != self.request.n_participants:
            raise ConfigurationError("the request's participant count is not the cohort's size")
        object.__setattr__(self, "cohort", cohort)
        if not isinstance(self.privacy, RoundPrivacy):
            raise ConfigurationError("privacy must be a privacy.RoundPrivacy")
        if not isinstance(self.encoding, EncodingConfig):
            raise ConfigurationError("encoding must be a privacy.EncodingConfig")
        if not isinstance(self.rotation_seed, bytes) or len(self.rotation_seed) != 32:
            raise ConfigurationError("rotation_seed must be 32 bytes")
        # Every party checks the plan itself: an announced encoding with less noise (or another
        # scale) than the announced mechanism plans for this cohort is refused, not used.
        if self.privacy.plan(dim=self.encoding.dim, expected_clients=len(cohort)) \
                != self.encoding:
            raise ConfigurationError("the announced encoding is not the announced mechanism's "
                                     "plan for this cohort")
        object.__setattr__(self, "max_weight", v.positive(self.max_weight, "max_weight"))
        for name in ("integer_weights", "malicious"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be a bool")
        self.round_config()  # secagg checks the graph, threshold and rates against the model

    @property
    def round_id(self) -> bytes:
        return self.request.release_id  # type: ignore[return-value]

    def client_id(self, site: SiteId) -> int:
        """The site's client id in the secure round; :class:`NotEnrolled` if it is not in the
        cohort."""
        try:
            return self.cohort.index(site)
        except ValueError:
            raise NotEnrolled(f"site {site!r} is not in this round's cohort") from None

    def site(self, client_id: int) -> SiteId:
        """The site behind a client id; :class:`NotEnrolled` for an id outside the cohort."""
        if isinstance(client_id, bool) or not isinstance(client_id, int) \
                or not 0 <= client_id < len(self.cohort):
            raise NotEnrolled(f"client {client_id!r} is not in this round's cohort")
        return self.cohort[client_id]

    def round_config(self) -> RoundConfig:
        """The secagg round every client and the server run (its tag binds all of it)."""
        return RoundConfig(round_id=self.round_id, clients=tuple(range(len(self.cohort))),
                           dim=self.encoding.padded_dim, modulus_bits=self.encoding.bits,
                           neighbors=self.neighbors, threshold=self.threshold,
                           malicious=self.malicious, corrupt_rate=self.corrupt_rate,
                           dropout_rate=self.dropout_rate)

    def event(self, *, survivors: int) -> PrivacyEvent | None:
        """What each summed site is charged when ``survivors`` sites were summed: computed
        from the announced mechanism and plan, so a site needs nobody's word for it."""
        return self.privacy.event(self.encoding, survivors=survivors)

    def to_bytes(self) -> bytes:
        body = {"request": self.request.to_dict(), "cohort": list(self.cohort),
                "privacy": _privacy_to_dict(self.privacy), "encoding": self.encoding.to_dict(),
                "rotation_seed": self.rotation_seed.hex(), "max_weight": self.max_weight,
                "integer_weights": self.integer_weights, "neighbors": self.neighbors,
                "threshold": self.threshold, "malicious": self.malicious,
                "corrupt_rate": self.corrupt_rate, "dropout_rate": self.dropout_rate}
        return _ANNOUNCEMENT + json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RoundAnnouncement":
        """Parse and check an announcement; InvalidMessage for anything that is not one."""
        body = _loads(data, _ANNOUNCEMENT, "round announcement")
        try:
            return cls(request=RoundRequest.from_dict(body["request"]),
                       cohort=tuple(body["cohort"]),
                       privacy=_privacy_from_dict(body["privacy"]),
                       encoding=EncodingConfig.from_dict(body["encoding"]),
                       rotation_seed=bytes.fromhex(body["rotation_seed"]),
                       max_weight=body["max_weight"], integer_weights=body["integer_weights"],
                       neighbors=body["neighbors"], threshold=body["threshold"],
                       malicious=body["malicious"], corrupt_rate=body["corrupt_rate"],
                       dropout_rate=body["dropout_rate"])
        except (KeyError, TypeError, ValueError, CohortError) as exc:
            raise InvalidMessage(f"not a round announcement: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class RoundOutcome:
    """What the coordinator tells every site when a secure round ends: which sites' inputs are
    in the released sum, or that the round aborted and released nothing. A site settles its
    ledger from it (the event it charges it computes itself, from its announcement)."""

    release_id: bytes
    included: frozenset[SiteId]
    aborted: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.release_id, bytes) or len(self.release_id) != 32:
            raise ConfigurationError("release_id must be 32 bytes")
        if not isinstance(self.aborted, bool):
            raise ConfigurationError("aborted must be a bool")
        included = frozenset(_site_id(s) for s in self.included)
        if self.aborted and included:
            raise ConfigurationError("an aborted round includes nobody")
        object.__setattr__(self, "included", included)

    def to_bytes(self) -> bytes:
        key = lambda s: (isinstance(s, str), s)  # noqa: E731 - ints first, then strings
        body = {"release_id": self.release_id.hex(), "aborted": self.aborted,
                "included": sorted(self.included, key=key)}
        return _OUTCOME + json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RoundOutcome":
        body = _loads(data, _OUTCOME, "round outcome")
        try:
            return cls(release_id=bytes.fromhex(body["release_id"]),
                       included=frozenset(body["included"]), aborted=body["aborted"])
        except (KeyError, TypeError, ValueError, CohortError) as exc:
            raise InvalidMessage(f"not a round outcome: {exc}") from None


# ---------------------------------------------------------------------------------------------
# A deployed job: what the coordinator runs, round after round, and what each round asks.

MODELS = ("logistic", "mlp", "cnn")
"""The model catalogue's names (``clients.ModelKind`` values; a test keeps the two equal). No
code travels to a site: a job names one of these and the site builds it itself."""

OPTIMISERS = ("sgd", "adam")
JOB_MECHANISMS = (Mechanism.NONE, Mechanism.DISTRIBUTED, Mechanism.CENTRAL_GAUSSIAN)


@dataclass(frozen=True, kw_only=True)
class LocalTraining:
    """What a site trains each round: the catalogue model and the local optimiser."""

    model: str = "logistic"
    hidden: int = 32
    epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    optimizer: str = "sgd"
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigurationError(f"model must be one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMISERS:
            raise ConfigurationError(f"optimizer must be one of {', '.join(OPTIMISERS)}")
        object.__setattr__(self, "hidden", v.integer(self.hidden, "hidden", minimum=1))
        object.__setattr__(self, "epochs", v.integer(self.epochs, "epochs", minimum=1))
        object.__setattr__(self, "batch_size", v.integer(self.batch_size, "batch_size",
                                                         minimum=1))
        object.__setattr__(self, "lr", v.positive(self.lr, "lr"))
        if isinstance(self.prox_mu, bool) or not isinstance(self.prox_mu, (int, float)) \
                or self.prox_mu < 0:
            raise ConfigurationError("prox_mu must be a number >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "hidden": self.hidden, "epochs": self.epochs,
                "lr": self.lr, "batch_size": self.batch_size, "optimizer": self.optimizer,
                "prox_mu": self.prox_mu}


@dataclass(frozen=True, kw_only=True)
class Job:
    """A declared job (``job.toml``): ``rounds`` secure rounds of ``strategy`` over the
    catalogue model of ``training``. ``dataset`` (a builtin data set name) gives the model's
    shapes and the coordinator's evaluation split; without it ``features``/``outputs`` say the
    shapes and nothing is evaluated. ``seed`` is for tests only (without it, the OS's
    randomness)."""

    name: str = "job"
    rounds: int = 1
    strategy: StrategyName = StrategyName.FEDAVG
    server_lr: float | None = None
    training: LocalTraining = LocalTraining()
    dataset: str | None = None
    features: int | None = None
    outputs: int | None = None
    mode: Mechanism = Mechanism.NONE
    noise_multiplier: float = 0.0
    clip_norm: float = 1.0
    target_epsilon: float | None = None
    delta: float = 1e-5
    modulus_bits: int | None = None
    max_weight: float = 100_000.0
    neighbors: int | None = None
    threshold: int | None = None
    # The coordinator may be malicious (DESIGN 2a): signed keys and the consistency check
    # unless the consortium decides otherwise ([secagg] malicious = false).
    malicious: bool = True
    min_sites: int | None = None
    stage_timeout: float = 30.0
    join_timeout: float = 120.0
    poll_hold: float = 5.0
    # The service's guards against slow and flooding peers (coordinator.service.connections
    # and .ratelimit): a connection with no request under way for idle_timeout seconds is
    # closed, a request body must arrive within body_timeout, a request may take at most
    # request_timeout; each site may send requests_per_second on average, bursts of
    # request_burst (never below four per poll_hold: an honest agent's polling never meets it).
    idle_timeout: float = 30.0
    body_timeout: float = 30.0
    request_timeout: float = 600.0
    requests_per_second: float = 50.0
    request_burst: int = 200
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rounds", v.integer(self.rounds, "rounds", minimum=1))
        for name in ("idle_timeout", "body_timeout", "request_timeout", "requests_per_second"):
            object.__setattr__(self, name, v.positive(getattr(self, name), name))
        object.__setattr__(self, "request_burst",
                           v.integer(self.request_burst, "request_burst", minimum=1))
        if self.request_timeout <= self.poll_hold + self.body_timeout:
            raise ConfigurationError(
                f"request_timeout must be longer than poll_hold + body_timeout "
                f"({self.poll_hold:g} + {self.body_timeout:g} s): an honest long poll or "
                f"upload takes that long")
        if self.strategy not in SERVER_OPTIMISERS:
            raise ConfigurationError(f"strategy must be a server optimiser (one of "
                                     f"{', '.join(sorted(s.value for s in SERVER_OPTIMISERS))})")
        if self.mode not in JOB_MECHANISMS:
            raise ConfigurationError("mode must be one of "
                                     + ", ".join(m.value for m in JOB_MECHANISMS))
        if self.mode is not Mechanism.NONE and not self.noise_multiplier > 0:
            raise ConfigurationError("noise_multiplier must be > 0 with differential privacy")
        if self.dataset is None and (self.features is None or self.outputs is None):
            raise ConfigurationError("give a dataset, or both features and outputs")
        if not isinstance(self.malicious, bool):
            raise ConfigurationError("malicious must be true or false")


_JOB_KEYS: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "job": {"name": (str, "name"), "rounds": (int, "rounds"), "strategy": (str, "strategy"),
            "server_lr": ((int, float), "server_lr"), "seed": (int, "seed"),
            "min_sites": (int, "min_sites")},
    "data": {"dataset": (str, "dataset"), "features": (int, "features"),
             "outputs": (int, "outputs")},
    "model": {"kind": (str, "model"), "hidden": (int, "hidden")},
    "training": {"epochs": (int, "epochs"), "lr": ((int, float), "lr"),
                 "batch_size": (int, "batch_size"), "optimizer": (str, "optimizer"),
                 "prox_mu": ((int, float), "prox_mu")},
    "privacy": {"mode": (str, "mode"), "noise_multiplier": ((int, float), "noise_multiplier"),
                "clip_norm": ((int, float), "clip_norm"),
                "target_epsilon": ((int, float), "target_epsilon"),
                "delta": ((int, float), "delta")},
    "secagg": {"modulus_bits": (int, "modulus_bits"), "max_weight": ((int, float), "max_weight"),
               "neighbors": (int, "neighbors"), "threshold": (int, "threshold"),
               "malicious": (bool, "malicious")},
    "timeouts": {"stage": ((int, float), "stage_timeout"),
                 "join": ((int, float), "join_timeout"),
                 "poll_hold": ((int, float), "poll_hold"),
                 "idle": ((int, float), "idle_timeout"),
                 "body": ((int, float), "body_timeout"),
                 "request": ((int, float), "request_timeout")},
    "limits": {"requests_per_second": ((int, float), "requests_per_second"),
               "burst": (int, "request_burst")},
}
_TRAINING_FIELDS = {"model", "hidden", "epochs", "lr", "batch_size", "optimizer", "prox_mu"}
_JOB_FIELD_AT = {field: f"{table}.{key}" for table, keys in _JOB_KEYS.items()
                 for key, (_, field) in keys.items()}


def parse_job(text: str, *, source: str = "job.toml") -> Job:
    """A job file into a :class:`Job`; ``ConfigurationError`` naming the file and the field."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not TOML: {exc}") from None
    values: dict[str, Any] = {}
    for table, content in data.items():
        if table not in _JOB_KEYS:
            raise ConfigurationError(f"{source}: [{table}]: unknown table; the tables are "
                                     f"{', '.join(_JOB_KEYS)}")
        if not isinstance(content, dict):
            raise ConfigurationError(f"{source}: {table}: must be a table")
        for key, value in content.items():
            if key not in _JOB_KEYS[table]:
                raise ConfigurationError(f"{source}: {table}.{key}: unknown key; the keys are "
                                         f"{', '.join(_JOB_KEYS[table])}")
            kind, field = _JOB_KEYS[table][key]
            if (kind is bool) != isinstance(value, bool) or not isinstance(value, kind):
                raise ConfigurationError(f"{source}: {table}.{key}: wrong type "
                                         f"({type(value).__name__})")
            values[field] = value
    training = {k: values.pop(k) for k in list(values) if k in _TRAINING_FIELDS}
    field = "training"
    try:
        if "strategy" in values:
            field = "strategy"
            values["strategy"] = StrategyName(values["strategy"])
        if "mode" in values:
            field = "mode"
            values["mode"] = Mechanism(values["mode"])
        for name in ("server_lr", "noise_multiplier", "clip_norm", "target_epsilon", "delta",
                     "max_weight", "stage_timeout", "join_timeout", "poll_hold",
                     "idle_timeout", "body_timeout", "request_timeout", "requests_per_second"):
            if name in values:
                field = name
                values[name] = float(values[name])
        for name, value in training.items():
            field = name
            LocalTraining(**{name: value})
        field = "job"
        if "rounds" in values:
            field = "rounds"
            v.integer(values["rounds"], "rounds", minimum=1)
            field = "job"
        return Job(training=LocalTraining(**training), **values)
    except (ValueError, ConfigurationError) as exc:
        if field == "job":  # Job's own checks: name the file's key the message is about
            field = next((f for f in _JOB_FIELD_AT if str(exc).startswith(f + " ")), field)
        where = _JOB_FIELD_AT.get(field, field)
        raise ConfigurationError(f"{source}: {where}: {exc}") from None


OUTCOME_ACK = b"cohort/contract/v1/settled"
"""A site's answer to a deployed round's outcome: its ledger has settled."""

_WORK = b"cohort/contract/v1/work\n"
_U32 = 4


@dataclass(frozen=True, kw_only=True)
class RoundWork:
    """Step 0 of a deployed round, the coordinator to each site: the round's announcement, the
    current global model's flat parameters (float64) and the local training to run. Framed as
    ``magic | u32 len | announcement | u32 len | json meta | float64 LE parameters``. ``seed``
    (a job's test-only seed) lets the sites derive their round randomness as a simulation
    does; without it each site uses the OS CSPRNG."""

    announcement: RoundAnnouncement
    params: Any  # np.ndarray of float64
    training: LocalTraining
    job: str = "job"
    rounds: int = 1
    seed: int | None = None  # tests and simulations only: the sites' round randomness

    def to_bytes(self) -> bytes:
        import numpy as np

        ann = self.announcement.to_bytes()
        params = np.ascontiguousarray(self.params, dtype="<f8")
        meta = json.dumps({"training": self.training.to_dict(), "job": self.job,
                           "rounds": self.rounds, "dim": int(params.size),
                           "seed": self.seed},
                          sort_keys=True).encode()
        return (_WORK + len(ann).to_bytes(_U32, "big") + ann + len(meta).to_bytes(_U32, "big")
                + meta + params.tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "RoundWork":
        """InvalidMessage for anything that is not a well-formed round's work."""
        import numpy as np

        if not isinstance(data, bytes) or not data.startswith(_WORK):
            raise InvalidMessage("not a round's work")
        try:
            pos = len(_WORK)
            n = int.from_bytes(data[pos:pos + _U32], "big")
            ann = RoundAnnouncement.from_bytes(data[pos + _U32:pos + _U32 + n])
            pos += _U32 + n
            m = int.from_bytes(data[pos:pos + _U32], "big")
            meta = json.loads(data[pos + _U32:pos + _U32 + m].decode("utf-8"))
            pos += _U32 + m
            raw = data[pos:]
            if len(raw) != 8 * int(meta["dim"]):
                raise InvalidMessage("the parameters' length is not the stated one")
            params = np.frombuffer(raw, dtype="<f8").astype(np.float64)
            if not np.isfinite(params).all():
                raise InvalidMessage("the parameters are not finite")
            return cls(announcement=ann, params=params,
                       training=LocalTraining(**meta["training"]), job=str(meta["job"]),
                       rounds=int(meta["rounds"]), seed=meta.get("seed"))
        except InvalidMessage:
            raise
        except (KeyError, TypeError, ValueError, CohortError) as exc:
            raise InvalidMessage(f"not a round's work: {exc}") from None
