"""A site's side of a deployed job: each round's work turned into a :class:`~.round.SiteRound`.

The site agent (:mod:`.agent`) hands :meth:`SiteWorker.begin` the body of a round's step 0, a
:class:`cohort.contract.RoundWork`. The worker checks that the announcement names this site,
builds the catalogue model the job names (no code travels: only a name from
``clients.ModelKind``), and makes the round's :class:`SiteRound` with the site's own
:class:`~.site.Site` (policy, ledger, data), identity key and the consortium's signed key
directory. It then judges (policy, budget, the local work can run), trains, encodes with the
site's own randomness and reserves the worst case, all before anything leaves. The returned
participant speaks the secure round's messages and, at the end, settles the ledger from the
coordinator's :class:`cohort.contract.RoundOutcome` and acknowledges it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cohort.contract import OUTCOME_ACK, LocalTraining, RoundOutcome, RoundWork
from privacy import Mechanism
from secagg.errors import ConfigurationError, InvalidMessage

from .round import SiteRound
from .partition import SiteData
from .site import Site
from .training import Optimizer

__all__ = ["ACK", "DeployedParticipant", "LocalData", "RoundLog", "SiteWorker", "load_site_data"]

log = logging.getLogger("cohort.site")

ACK = OUTCOME_ACK
_OUTCOME_MAGIC = b"cohort/contract/v1/outcome\n"


@dataclass
class RoundLog:
    """What the site agreed to in one round and how it ended for it."""

    round: int
    strategy: str
    mechanism: str
    cohort: int
    worst_charge: str | None
    epsilon_if_worst: float | None = None  # the site's epsilon after the round's worst case
    included: bool | None = None
    aborted: bool = False
    note: str | None = None


@dataclass
class SiteWorker:
    """Builds each round's participant for site ``name``. ``site_for`` makes the site's
    :class:`Site` for the job's local training (called once, on the first round: the model is
    the catalogue's); ``directory`` is every cohort site's identity key by site name, from the
    CA-signed roster."""

    name: str
    site_for: Callable[[LocalTraining], Site]
    identity: Ed25519PrivateKey
    directory: Mapping[str, Ed25519PublicKey]
    site: Site | None = None
    training: LocalTraining | None = None
    log: list[RoundLog] = field(default_factory=list)

    def begin(self, round_id: bytes, body: bytes) -> "DeployedParticipant":
        work = RoundWork.from_bytes(body)
        a = work.announcement
        if a.round_id != round_id:
            raise InvalidMessage("the round's work is for another round")
        a.client_id(self.name)  # NotEnrolled before anything else
        if self.training is not None and work.training != self.training:
            raise ConfigurationError("the job's local training changed between rounds")
        if self.site is None:
            self.site = self.site_for(work.training)
            self.training = work.training
        site = self.site
        t = work.training
        dp = a.privacy.mechanism is not Mechanism.NONE
        args = dict(request=a.request, epochs=t.epochs, lr=t.lr, batch_size=t.batch_size,
                    optimizer=Optimizer(t.optimizer), prox_mu=t.prox_mu)
        params = work.params

        def fit():
            update = site.fit(params, **args)
            return update.delta, 1.0 if dp else float(update.n_samples)

        directory = ({s: self.directory[s] for s in a.cohort} if a.malicious else None)
        sr = SiteRound(a, site_id=self.name, site=site, work=fit,
                       check_work=lambda: site.check_fit(params, **args),
                       identity=self.identity, directory=directory,
                       simulation_seed=work.seed)
        charge = a.request.privacy_charge
        entry = RoundLog(round=a.request.round_number, strategy=a.request.strategy.value,
                         mechanism=a.privacy.mechanism.value, cohort=len(a.cohort),
                         worst_charge=None if charge is None else type(charge).__name__)
        after = sr.check()  # policy, budget, the local work: nothing computed if refused
        entry.epsilon_if_worst = None if after is None else float(after)
        self.log.append(entry)
        sr.train()
        sr.reserve()
        return DeployedParticipant(sr, entry)

    def spent(self) -> float | None:
        if self.site is None or self.site.ledger is None:
            return None
        return float(self.site.ledger.spent())


class DeployedParticipant:
    """The agent's ``RoundParticipant`` over one :class:`SiteRound`, with the outcome step."""

    def __init__(self, site_round: SiteRound, entry: RoundLog) -> None:
        self.round = site_round
        self.entry = entry

    def start(self) -> bytes:
        return self.round.start()

    def wants_outcome(self) -> bool:
        """True while the ledger waits for an outcome this site has not been told."""
        return self.round.input_sent and self.round.state.value not in ("settled", "abandoned")

    def finished(self, how: str, outcome: bytes | None = None) -> None:
        """The round ended for this site (the agent's word for how). A site that was not told
        the round's outcome settles from the one it fetched (checked like any outcome), or
        from what it knows for itself: if its masked input never left, no sum can hold it and
        the reservation is settled to nothing; if it left, the worst case stays charged (an
        unknown outcome is charged in full)."""
        if self.round.state.value in ("settled", "abandoned"):
            return
        self.entry.aborted = how.startswith("aborted")
        if not self.round.input_sent:
            self.round.abandon()
            self.entry.included = False
            return
        if outcome is not None and outcome.startswith(_OUTCOME_MAGIC):
            try:
                self._settle(RoundOutcome.from_bytes(outcome))
            except InvalidMessage as exc:
                log.warning("%s: the round's outcome was refused (%s); the worst case stays "
                            "charged", self.round.site_id, exc)

    def _settle(self, outcome: RoundOutcome) -> None:
        if self.round.outcome(outcome):
            self.entry.aborted = outcome.aborted
            self.entry.included = self.round.site_id in outcome.included
        else:
            self.entry.note = "outcome not verifiable here: the worst case stays charged"

    def on_message(self, data: bytes) -> bytes | None:
        if data.startswith(_OUTCOME_MAGIC):
            self._settle(RoundOutcome.from_bytes(data))
            return ACK
        return self.round.on_message(data)


@dataclass(frozen=True)
class LocalData:
    """A site's data for a job: its local train/test split and the model's shapes."""

    data: SiteData
    feature_shape: tuple[int, ...]
    n_outputs: int
    source: str


def load_site_data(spec: str, *, seed: int = 0, label_column: str | None = None) -> LocalData:
    """``builtin:NAME:I/N`` — the I-th (1-based) of N IID shares of a bundled data set's
    private pool, split and standardised exactly as a simulation with ``seed`` does (tests and
    demos) — or the path of a CSV file with a header row (the whole file is this site's data,
    standardised with its own statistics, cut into local train/test)."""
    import numpy as np

    from .data import DatasetName, load_dataset
    from .partition import PartitionScheme, make_site_data, split_local
    from .splits import LabelledArrays, split_dataset

    if spec.startswith("builtin:"):
        try:
            _, name, share = spec.split(":")
            index, total = (int(x) for x in share.split("/"))
        except ValueError:
            raise ConfigurationError(f"--data {spec!r}: expected builtin:NAME:I/N") from None
        if not 1 <= index <= total:
            raise ConfigurationError(f"--data {spec!r}: I must be in 1..N")
        splits = split_dataset(load_dataset(DatasetName(name)), seed=seed)
        parts = make_site_data(splits, n_sites=total, scheme=PartitionScheme.IID, seed=seed)
        return LocalData(parts[index - 1], splits.feature_shape, splits.n_outputs, spec)
    dataset = load_dataset(spec, label_column=label_column)
    X = np.asarray(dataset.X, dtype=np.float64)
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    data = split_local(LabelledArrays(X, dataset.y), seed=seed)
    return LocalData(data, tuple(dataset.feature_shape),
                     dataset.n_classes if dataset.n_classes else 1, spec)
