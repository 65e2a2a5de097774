"""Where the simulated sites live, and the site-side half of a round run on a batch of them.

A :class:`SiteHost` holds many sites (``clients.Site``) and runs, for the sites of one round's
cohort that it holds, everything a site does in that round (DESIGN section 5): judge the
request, check the work, train, encode with the site's own randomness, reserve the worst case,
answer each protocol message with its own secagg client, settle from the announced outcome.
Everything that enters or leaves a host is picklable and, past training, only bytes: the
announcement, the protocol messages, the outcome. So a host can sit in this process
(:class:`LocalPool`, the default) or in a Ray actor (``coordinator.simulation.ray_pool``, many
sites per actor, as a virtual client engine keeps them), and the coordinator-side half in the
driver never sees a site's update.

A pool is the driver's view of its hosts: it fans each call out to the hosts that hold sites
of the round and merges their answers (the in-memory transport drives it like one site table).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients import Part, PersonalMode, Site
from clients.round import Release, SiteRound
from cohort.contract import RoundAnnouncement, RoundOutcome, RoundRequest, SiteId
from privacy import BudgetExceeded, GaussianEvent
from secagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort

from .transport import exact_sum

__all__ = ["FitJob", "LocalPool", "SiteHost", "Reply"]

Reply = tuple  # ("ok", bytes | None) | ("aborted", reason) | ("rejected", error type, reason)


@dataclass(frozen=True)
class FitJob:
    """What every site of a FIT round runs (picklable: it travels to the site's process)."""

    request: RoundRequest
    global_flat: np.ndarray
    epochs: int
    lr: float
    optimizer: Any
    batch_size: int
    prox_mu: float = 0.0
    part: Part | None = None
    personal: PersonalMode | None = None
    dp: bool = False  # with DP every site weighs the same (the public count is the denominator)

    def _args(self) -> dict[str, Any]:
        return dict(request=self.request, epochs=self.epochs, lr=self.lr,
                    optimizer=self.optimizer, batch_size=self.batch_size,
                    prox_mu=self.prox_mu, part=self.part, personal=self.personal)

    def check(self, site: Site) -> None:
        site.check_fit(self.global_flat, **self._args())

    def run(self, site: Site) -> tuple[np.ndarray, float, GaussianEvent | None]:
        update = site.fit(self.global_flat, **self._args())
        return update.delta, 1.0 if self.dp else float(update.n_samples), update.example_event


@dataclass
class _Open:
    """One round on one host: the cohort's sites it holds and their state."""

    job: FitJob
    order: list[SiteId]
    rounds: dict[SiteId, SiteRound] = field(default_factory=dict)     # secure
    releases: dict[SiteId, Release] = field(default_factory=dict)     # clear
    reserved: list[SiteId] = field(default_factory=list)
    events: dict[SiteId, GaussianEvent | None] = field(default_factory=dict)  # DP-SGD, per site


class SiteHost:
    """Many sites and the site-side half of the round in progress for those of its cohort."""

    def __init__(self, sites: Iterable[Site]) -> None:
        self._sites = {s.site_id: s for s in sites}
        self._open: _Open | None = None

    @property
    def site_ids(self) -> list[SiteId]:
        return list(self._sites)

    def site(self, site_id: SiteId) -> Site:
        return self._sites[site_id]

    def ping(self) -> int:
        return len(self._sites)

    # -- 1. judge (nothing computed yet) ------------------------------------------------------
    def open(self, job: FitJob, site_ids: Sequence[SiteId], *, announcement: bytes | None,
             seed: int) -> None:
        """A new round for ``site_ids`` (all held here): every one judges the request (policy,
        budget). ``announcement`` None: the clear comparison sum (nothing masked)."""
        unknown = [s for s in site_ids if s not in self._sites]
        if unknown:
            raise ConfigurationError(f"sites {unknown[:3]} are not hosted here")
        state = _Open(job=job, order=list(site_ids))
        if announcement is None:
            for sid in state.order:
                self._sites[sid].check_round(job.request)
                state.releases[sid] = Release(self._sites[sid], job.request)
        else:
            a = RoundAnnouncement.from_bytes(announcement)
            for sid in state.order:
                site = self._sites[sid]
                state.rounds[sid] = SiteRound(
                    a, site_id=sid, site=site, work=_work(job, site, state.events),
                    check_work=functools.partial(job.check, site), simulation_seed=seed)
            for sid in state.order:
                state.rounds[sid].check_request()
        self._open = state

    def check(self) -> None:
        """Every site of the round can do the work (before any site computes)."""
        state = self._state()
        for sid in state.order:
            if state.rounds:
                state.rounds[sid].check()
            else:
                state.job.check(self._sites[sid])

    # -- 2. compute ---------------------------------------------------------------------------
    def train(self) -> tuple[dict[SiteId, GaussianEvent | None],
                             dict[SiteId, tuple[np.ndarray, float]] | None]:
        """Train (and, secure, encode). Returns each site's example-level DP-SGD event, and for
        the clear comparison sum the updates themselves (secure: None, nothing leaves)."""
        state = self._state()
        events: dict[SiteId, GaussianEvent | None] = {}
        if state.rounds:
            for sid in state.order:
                site_round = state.rounds[sid]
                site_round.train()
                events[sid] = state.events.get(sid)
            return events, None
        updates = {}
        for sid in state.order:
            delta, weight, events[sid] = state.job.run(self._sites[sid])
            updates[sid] = (delta, weight)
        return events, updates

    # -- 3. reserve ---------------------------------------------------------------------------
    def reserve(self) -> None:
        """Each site reserves the worst case; if one cannot, those reserved here are settled to
        nothing and ``BudgetExceeded`` is raised (the driver abandons the other hosts')."""
        state = self._state()
        try:
            for sid in state.order:
                if state.rounds:
                    state.rounds[sid].reserve()
                else:
                    state.releases[sid].reserve()
                state.reserved.append(sid)
        except BudgetExceeded:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Nothing releasable left: every reservation of the round is settled to nothing."""
        state = self._open
        if state is None:
            return
        for sid in state.order:
            if state.rounds:
                state.rounds[sid].abandon()
            else:
                state.releases[sid].abandon()
        self._open = None

    # -- 4. the secure sum --------------------------------------------------------------------
    def start(self, site_ids: Sequence[SiteId]) -> dict[SiteId, bytes]:
        rounds = self._state().rounds
        return {sid: rounds[sid].start() for sid in site_ids}

    def deliver(self, messages: Mapping[SiteId, bytes]) -> dict[SiteId, Reply]:
        """Each site's reply to its message, in the order given."""
        rounds = self._state().rounds
        out: dict[SiteId, Reply] = {}
        for sid, data in messages.items():
            try:
                out[sid] = ("ok", rounds[sid].on_message(data))
            except ProtocolAbort as exc:
                out[sid] = ("aborted", str(exc))
            except InvalidMessage as exc:
                out[sid] = ("rejected", type(exc).__name__, str(exc))
        return out

    def outcome(self, data: bytes) -> None:
        """The coordinator's announced outcome: every site of the round settles from it."""
        state = self._state()
        for sid in state.order:
            state.rounds[sid].outcome(RoundOutcome.from_bytes(data))
        self._open = None

    def exact_sum(self, included: Iterable[SiteId]) -> tuple[np.ndarray | None, int]:
        """Simulation only (the wrap rate): the exact sum of the clear encodings of the
        included sites held here, and a bound on its magnitude. Read on the sites' side;
        no coordinator could compute it."""
        rounds = self._state().rounds
        vectors = [rounds[s].signed_encoding for s in included if s in rounds]
        if not vectors:
            return None, 0
        largest = max(int(np.abs(z).max()) for z in vectors)
        return exact_sum(vectors, largest), largest * len(vectors)

    # -- the clear comparison sum -----------------------------------------------------------
    def settle_clear(self, event, included: Iterable[SiteId]) -> None:
        state = self._state()
        inside = set(included)
        for sid in state.order:
            state.releases[sid].settle(event if sid in inside else None)
        self._open = None

    def _state(self) -> _Open:
        if self._open is None:
            raise ConfigurationError("no round is open on this host")
        return self._open


def _work(job: FitJob, site: Site, events: dict[SiteId, GaussianEvent | None]):
    """A SiteRound's work returns (vector, weight); the DP-SGD event the fit produced is kept
    beside it, for the driver's per-site example-level accounting."""
    def work() -> tuple[np.ndarray, float]:
        delta, weight, events[site.site_id] = job.run(site)
        return delta, weight
    return work


class LocalPool:
    """Every site in this process, on one host (the default backend)."""

    def __init__(self, sites: Iterable[Site]) -> None:
        self.host = SiteHost(sites)
        self._cohort: list[SiteId] = []

    @property
    def cohort(self) -> list[SiteId]:
        return self._cohort

    def open(self, job: FitJob, site_ids: Sequence[SiteId], *, announcement: bytes | None,
             seed: int) -> None:
        self._cohort = list(site_ids)
        self.host.open(job, site_ids, announcement=announcement, seed=seed)

    def check(self) -> None:
        self.host.check()

    def train(self):
        return self.host.train()

    def reserve(self) -> None:
        self.host.reserve()

    def abandon(self) -> None:
        self.host.abandon()

    def start(self, site_ids: Sequence[SiteId]) -> dict[SiteId, bytes]:
        return self.host.start(site_ids)

    def deliver(self, messages: Mapping[SiteId, bytes]) -> dict[SiteId, Reply]:
        return self.host.deliver(messages)

    def outcome(self, data: bytes) -> None:
        self.host.outcome(data)

    def exact_sum(self, included: Iterable[SiteId]) -> tuple[np.ndarray | None, int]:
        return self.host.exact_sum(included)

    def settle_clear(self, event, included: Iterable[SiteId]) -> None:
        self.host.settle_clear(event, included)

    def close(self) -> None:
        pass
