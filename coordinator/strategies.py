"""Server optimisers: how the coordinator turns one round's secure sum into the next model.

Everything works on flat float64 parameter vectors. A round's input is exactly what the secure
sum reveals: the weighted sum of the clients' deltas, sum_k n_k * Delta_k, and the total weight
sum_k n_k (each site's own count stays secret). The average delta is their quotient, and the
strategies differ only in what they do with it:

* ``FedAvg`` (McMahan et al. 2017): x <- x + eta * Delta.
* ``FedProx`` (Li et al. 2020): the same server step; the proximal term mu lives in the
  clients' local objective, so the strategy only carries mu to them (:meth:`client_config`).
* ``FedAvgM`` (Hsu et al. 2019; "FedAvgM" of Reddi et al. 2021): server momentum,
  m <- beta1 * m + Delta, x <- x + eta * m.
* ``FedAdagrad``, ``FedAdam``, ``FedYogi``: Reddi et al. 2021, "Adaptive Federated
  Optimization", Algorithm 2, exactly as written there: m_{-1} = 0, v_{-1} = tau^2, no bias
  correction,
  m <- beta1 * m + (1 - beta1) * Delta,
  v <- v + Delta^2                                        (Adagrad)
  v <- beta2 * v + (1 - beta2) * Delta^2                  (Adam)
  v <- v - (1 - beta2) * Delta^2 * sign(v - Delta^2)      (Yogi),
  x <- x + eta * m / (sqrt(v) + tau).
  Defaults: beta1 = 0.9, beta2 = 0.99 (fixed in the paper's experiments), tau = 1e-3 and
  eta = 1e-2 (the paper tunes both per task; these are the values its experiments centre on and
  that Flower ships for FedYogi).

A strategy validates every input before it changes anything: a wrong shape, a NaN or a
non-positive total weight raises a typed error and leaves the state as it was.

The names are the contract's :class:`cohort.contract.StrategyName` (one enum for the sites'
policies and the coordinator); the server optimisers are its ``SERVER_OPTIMISERS``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cohort.contract import SERVER_OPTIMISERS, StrategyName
from privacy import _validate as v
from secagg.errors import ConfigurationError, InvalidInput

__all__ = [
    "ClientConfig",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Strategy",
    "StrategyName",
    "make_strategy",
]

STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """What a strategy asks of the clients' local training (sent with each round's task)."""

    proximal_mu: float = 0.0
    """FedProx's mu: clients minimise f_k(w) + mu/2 * ||w - x||^2 (0 = plain local SGD)."""


Slots = dict[str, np.ndarray]


class Strategy(abc.ABC):
    """Common base: ``initialize(x0)``, then ``apply(x, weighted_sum, total_weight)`` per round.

    Subclasses define ``_fresh_slots`` (their optimiser state for a given dimension) and
    ``_step`` (a pure function of the current model, the average delta and the slots).
    """

    name: ClassVar[StrategyName]
    _slot_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._dim: int | None = None
        self._rounds = 0
        self._slots: Slots = {}

    # -- what subclasses provide ---------------------------------------------------------
    @property
    @abc.abstractmethod
    def hyperparameters(self) -> dict[str, float]:
        """The strategy's hyper-parameters by keyword name."""

    def _fresh_slots(self, dim: int) -> Slots:
        return {}

    @abc.abstractmethod
    def _step(self, x: np.ndarray, delta: np.ndarray, slots: Slots) -> tuple[np.ndarray, Slots]:
        """The new model and slots; must not modify its arguments."""

    def _check_slots(self, slots: Slots) -> None:
        """Extra invariants of loaded slots (e.g. second moments are non-negative)."""

    # -- public API ----------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        """Length of the parameter vector (None before :meth:`initialize`)."""
        return self._dim

    @property
    def rounds(self) -> int:
        """Number of rounds applied since :meth:`initialize`."""
        return self._rounds

    def client_config(self) -> ClientConfig:
        return ClientConfig()

    def initialize(self, x0: Any) -> None:
        """Start a training run on parameter vectors shaped like ``x0`` (resets all state)."""
        x = v.vector(x0, "x0")
        self._dim, self._rounds, self._slots = x.size, 0, self._fresh_slots(x.size)

    def apply(self, x: Any, weighted_sum: Any, total_weight: float) -> np.ndarray:
        """One server step: the new parameter vector (a new array; ``x`` is not modified)."""
        if self._dim is None:
            raise ConfigurationError("call initialize(x0) before apply")
        params = v.vector(x, "x", dim=self._dim)
        summed = v.vector(weighted_sum, "weighted_sum", dim=self._dim)
        weight = v.positive_weight(total_weight, "total_weight")
        with np.errstate(over="ignore", invalid="ignore"):
            delta = summed / weight
            new_x, slots = self._step(params, delta, self._slots)
        if not (np.isfinite(delta).all() and np.isfinite(new_x).all()
                and all(np.isfinite(s).all() for s in slots.values())):
            raise InvalidInput("the update overflows float64")
        self._slots, self._rounds = slots, self._rounds + 1
        return new_x

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": self.name.value,
            "hyperparameters": dict(self.hyperparameters),
            "dim": self._dim,
            "rounds": self._rounds,
            "slots": {k: s.copy() for k, s in self._slots.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved state. The strategy and its hyper-parameters must be the ones that
        saved it (resuming with different ones would silently change the optimiser)."""
        try:
            version, name, hyper = state["version"], state["name"], state["hyperparameters"]
            dim, rounds, raw_slots = state["dim"], state["rounds"], state["slots"]
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"not a strategy state: {exc}") from exc
        v.same_value(version, STATE_VERSION, "version")
        v.same_value(name, self.name.value, "name")
        v.same_value(dict(hyper) if isinstance(hyper, Mapping) else hyper,
                     self.hyperparameters, "hyperparameters")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ConfigurationError(f"rounds must be an integer >= 0, got {rounds!r}")
        if dim is None:
            if rounds or raw_slots:
                raise ConfigurationError("an uninitialised state has no rounds or slots")
            self._dim, self._rounds, self._slots = None, 0, {}
            return
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigurationError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(raw_slots, Mapping) or set(raw_slots) != set(self._slot_names):
            raise ConfigurationError(f"slots must be exactly {sorted(self._slot_names)}")
        try:
            slots = {k: v.vector(raw_slots[k], f"slot {k}", dim=dim) for k in self._slot_names}
        except InvalidInput as exc:
            raise ConfigurationError(str(exc)) from exc
        self._check_slots(slots)
        self._dim, self._rounds, self._slots = dim, rounds, slots


class FedAvg(Strategy):
    """x <- x + eta * (weighted average delta); eta = 1 is McMahan et al.'s FedAvg."""

    name = StrategyName.FEDAVG

    def __init__(self, *, eta: float = 1.0) -> None:
        super().__init__()
        self._eta = v.hyperparameter(eta, "eta", low=0.0, low_open=True)

    @property
    def hyperparameters(self) -> dict[str, float]:
        return {"eta": self._eta}

    def _step(self, x: np.ndarray, delta: np.ndarray, slots: Slots) -> tuple[np.ndarray, Slots]:
        return x + self._eta * delta, {}


class FedProx(FedAvg):
    """FedAvg's server step; carries the proximal ``mu`` that the clients' local training uses."""

    name = StrategyName.FEDPROX

    def __init__(self, *, mu: float = 0.01, eta: float = 1.0) -> None:
        super().__init__(eta=eta)
        self._mu = v.hyperparameter(mu, "mu", low=0.0)

    @property
    def mu(self) -> float:
        return self._mu

    @property
    def hyperparameters(self) -> dict[str, float]:
        return {"eta": self._eta, "mu": self._mu}

    def client_config(self) -> ClientConfig:
        return ClientConfig(proximal_mu=self._mu)


class FedAvgM(Strategy):
    """Server momentum: m <- beta1 * m + Delta; x <- x + eta * m."""

    name = StrategyName.FEDAVGM
    _slot_names = ("m",)

    def __init__(self, *, eta: float = 1.0, beta1: float = 0.9) -> None:
        super().__init__()
        self._eta = v.hyperparameter(eta, "eta", low=0.0, low_open=True)
        self._beta1 = v.hyperparameter(beta1, "beta1", low=0.0, high=1.0)

    @property
    def hyperparameters(self) -> dict[str, float]:
        return {"eta": self._eta, "beta1": self._beta1}

    def _fresh_slots(self, dim: int) -> Slots:
        return {"m": np.zeros(dim)}

    def _step(self, x: np.ndarray, delta: np.ndarray, slots: Slots) -> tuple[np.ndarray, Slots]:
        m = self._beta1 * slots["m"] + delta
        return x + self._eta * m, {"m": m}


class _Adaptive(Strategy):
    """Reddi et al. 2021, Algorithm 2; subclasses give the second-moment update."""

    _slot_names = ("m", "v")

    def __init__(self, *, eta: float, beta1: float, beta2: float, tau: float) -> None:
        super().__init__()
        self._eta = v.hyperparameter(eta, "eta", low=0.0, low_open=True)
        self._beta1 = v.hyperparameter(beta1, "beta1", low=0.0, high=1.0)
        self._beta2 = v.hyperparameter(beta2, "beta2", low=0.0, high=1.0)
        self._tau = v.hyperparameter(tau, "tau", low=0.0, low_open=True)

    @property
    def hyperparameters(self) -> dict[str, float]:
        return {"eta": self._eta, "beta1": self._beta1, "beta2": self._beta2, "tau": self._tau}

    def _fresh_slots(self, dim: int) -> Slots:
        # The paper's v_{-1} >= tau^2, taken with equality.
        return {"m": np.zeros(dim), "v": np.full(dim, self._tau ** 2)}

    def _check_slots(self, slots: Slots) -> None:
        if (slots["v"] < 0).any():
            raise ConfigurationError("the second-moment slot v must be non-negative")

    @abc.abstractmethod
    def _second_moment(self, v_prev: np.ndarray, sq: np.ndarray) -> np.ndarray:
        """v_t from v_{t-1} and Delta_t^2."""

    def _step(self, x: np.ndarray, delta: np.ndarray, slots: Slots) -> tuple[np.ndarray, Slots]:
        m = self._beta1 * slots["m"] + (1.0 - self._beta1) * delta
        v_new = self._second_moment(slots["v"], delta * delta)
        return x + self._eta * m / (np.sqrt(v_new) + self._tau), {"m": m, "v": v_new}


class FedAdagrad(_Adaptive):
    """v <- v + Delta^2."""

    name = StrategyName.FEDADAGRAD

    def __init__(self, *, eta: float = 1e-2, beta1: float = 0.9, tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta1=beta1, beta2=0.0, tau=tau)

    @property
    def hyperparameters(self) -> dict[str, float]:
        return {"eta": self._eta, "beta1": self._beta1, "tau": self._tau}

    def _second_moment(self, v_prev: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return v_prev + sq


class FedAdam(_Adaptive):
    """v <- beta2 * v + (1 - beta2) * Delta^2."""

    name = StrategyName.FEDADAM

    def __init__(self, *, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta1=beta1, beta2=beta2, tau=tau)

    def _second_moment(self, v_prev: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return self._beta2 * v_prev + (1.0 - self._beta2) * sq


class FedYogi(_Adaptive):
    """v <- v - (1 - beta2) * Delta^2 * sign(v - Delta^2): additive, so v changes slowly."""

    name = StrategyName.FEDYOGI

    def __init__(self, *, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta1=beta1, beta2=beta2, tau=tau)

    def _second_moment(self, v_prev: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return v_prev - (1.0 - self._beta2) * sq * np.sign(v_prev - sq)


_CLASSES: dict[StrategyName, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedAvgM, FedAdagrad, FedAdam, FedYogi)
}


assert set(_CLASSES) == SERVER_OPTIMISERS


def make_strategy(name: StrategyName, **hyperparameters: float) -> Strategy:
    """The strategy ``name`` (one of the contract's ``SERVER_OPTIMISERS``) with the given
    keyword hyper-parameters (the rest default)."""
    if not isinstance(name, StrategyName):
        raise ConfigurationError(f"name must be a StrategyName, got {name!r}")
    if name not in SERVER_OPTIMISERS:
        raise ConfigurationError(f"{name.value} is not a server optimiser (one of "
                                 f"{sorted(s.value for s in SERVER_OPTIMISERS)})")
    try:
        return _CLASSES[name](**hyperparameters)
    except TypeError as exc:  # an unknown or positional hyper-parameter
        raise ConfigurationError(f"{name.value}: {exc}") from exc
