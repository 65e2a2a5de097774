"""The in-memory transport: one secure round between the two halves, inside one process.

The simulation's path through a round is a deployment's path with the network taken out
(DESIGN section 5): :class:`InMemoryTransport` carries bytes, and only bytes, between a
``coordinator.AggregationRound`` and each site's ``clients.SiteRound`` — the announcement, every
protocol message (with the sender the transport knows it came from, as TLS would
authenticate it), and the outcome — and injects dropouts by stage as
``secagg.simulate_round`` does: a site listed at a stage stops before sending that stage's
message. It records every message the coordinator half was given (:attr:`received`), so a test
can check that nothing but masked vectors ever reached it.

The sites are either a table of ``clients.SiteRound`` (one per cohort site) or a pool of site
hosts (``coordinator.simulation.pool``: in this process, or Ray actors holding many sites
each); the transport hands each stage's messages to them as one batch and gives the replies
to the coordinator half in client-id order, so the coordinator sees the same sequence of
messages whichever backend the sites live in.

The wrap rate is the one figure computed from the sites' side here: it needs their clear
encodings, which no coordinator holds (``SiteRound.signed_encoding``, read on the sites' side
only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from clients.round import SiteRound
from cohort.contract import RoundAnnouncement, RoundOutcome, SiteId
from privacy import wrap_rate
from secagg import Stage, dropout_plan
from secagg.errors import InvalidMessage, ProtocolAbort

from ..aggregation import AggregationRound
from ..sum_result import SecureSumResult

__all__ = ["InMemoryTransport", "announce", "run_secure_round"]

Observer = Callable[[Stage, SiteId, bytes], None]


def announce(aggregation: AggregationRound) -> RoundAnnouncement:
    """The round's announcement as a site receives it: through its byte form."""
    return RoundAnnouncement.from_bytes(aggregation.announcement.to_bytes())


class InMemoryTransport:
    """Drives one round between ``aggregation`` and ``sites`` (each already trained, i.e.
    holding its encoded input; see ``SiteRound.train``). ``observer`` (tests) sees each
    message just before the coordinator half receives it; ``on_finish`` (the run's audit
    record) is called with the transport once the round has ended, aborted or not."""

    def __init__(self, aggregation: AggregationRound, sites: Mapping[SiteId, SiteRound], *,
                 dropouts: Mapping[Stage | str, Iterable[SiteId]] | None = None,
                 observer: Observer | None = None,
                 on_finish: Callable[["InMemoryTransport"], None] | None = None) -> None:
        cohort = aggregation.announcement.cohort
        endpoints = sites if hasattr(sites, "deliver") else _Rounds(sites)
        if set(endpoints.cohort) != set(cohort):
            raise ValueError("the transport needs exactly the cohort's sites")
        self._aggregation = aggregation
        self._sites = endpoints
        self._order = cohort  # client-id order, as the harness drives its clients
        chosen = None
        if isinstance(dropouts, Mapping):  # a full plan may list an empty consistency_check: no drop
            chosen = {stage: ids for stage, ids in ((k, list(v)) for k, v in dropouts.items())
                      if ids}
        self._drop = dropout_plan(chosen, cohort, malicious=aggregation.announcement.malicious,
                                  what="sites")
        self._observer = observer
        self._on_finish = on_finish
        self._alive = set(cohort)
        self.received: list[tuple[Stage, SiteId, bytes]] = []
        """Every message the coordinator half was given: (stage, sender, bytes)."""
        self.sent: list[tuple[Stage, SiteId, bytes]] = []
        """Every message the coordinator half addressed to a site: (stage, recipient, bytes)."""
        self.log: list[tuple[Stage, bool, SiteId, bytes]] = []
        """Both directions in the order they crossed: (stage, to_coordinator, site, bytes)."""
        self.rejected: list[tuple[SiteId, str, str]] = []
        """Messages refused on arrival, either side: (site, error type, reason)."""
        self.aborted: dict[SiteId, str] = {}
        """Sites whose secagg client refused to go on, with its reason."""

    def _to_coordinator(self, stage: Stage, site: SiteId, data: bytes) -> None:
        if self._observer is not None:
            self._observer(stage, site, data)
        self.received.append((stage, site, data))
        self.log.append((stage, True, site, data))
        try:
            self._aggregation.receive(site, data)
        except InvalidMessage as exc:
            self.rejected.append((site, type(exc).__name__, str(exc)))

    def _stage(self, stage: Stage, outgoing: Mapping[SiteId, bytes] | None, *,
               drops: bool = True) -> None:
        if drops:
            self._alive -= self._drop[stage]
        alive = [s for s in self._order if s in self._alive]
        if outgoing is None:
            started = self._sites.start(alive)
            for site in alive:
                self._to_coordinator(stage, site, started[site])
            return
        replies = self._sites.deliver({s: outgoing[s] for s in alive
                                       if outgoing.get(s) is not None})
        for site in alive:
            message = outgoing.get(site)
            if message is not None:  # what the coordinator sent, in the audit's order
                self.sent.append((stage, site, message))
                self.log.append((stage, False, site, message))
            answer = replies.get(site, ("ok", None))
            reply = None
            if answer[0] == "ok":
                reply = answer[1]
            elif answer[0] == "aborted":
                self.aborted[site] = answer[1]
            else:
                self.rejected.append((site, answer[1], answer[2]))
            if reply is None:
                self._alive.discard(site)
            else:
                self._to_coordinator(stage, site, reply)

    def run(self) -> SecureSumResult:
        """The round to its end; then every site is told the outcome and settles. Raises the
        coordinator's ``ProtocolAbort`` (after telling the sites) when the round aborts."""
        agg = self._aggregation
        try:
            self._stage(Stage.ADVERTISE_KEYS, None)
            # The second half of advertise_keys: the roster out, the nonces back (no drops).
            self._stage(Stage.ADVERTISE_KEYS, agg.close_stage(), drops=False)
            self._stage(Stage.SHARE_KEYS, agg.close_stage())
            self._stage(Stage.MASKED_INPUT, agg.close_stage())
            outgoing = agg.close_stage()
            if agg.announcement.malicious:
                self._stage(Stage.CONSISTENCY_CHECK, outgoing)
                outgoing = agg.close_stage()
            self._stage(Stage.UNMASK, outgoing)
            agg.close_stage()
        except ProtocolAbort:
            self._tell_outcome(agg.outcome())
            self._finish()
            raise
        result = agg.result()
        rate = self._wrap_rate(result)  # the sites' side, before they settle and close
        self._tell_outcome(agg.outcome())
        self._finish()
        return dataclasses.replace(result, wrap_rate=rate)

    def _finish(self) -> None:
        if self._on_finish is not None:
            self._on_finish(self)

    @property
    def aggregation(self) -> AggregationRound:
        return self._aggregation

    def _tell_outcome(self, outcome: RoundOutcome) -> None:
        self._sites.outcome(outcome.to_bytes())

    def _wrap_rate(self, result: SecureSumResult) -> float:
        """From the sites' side (simulation only): how often the true sum left the window."""
        total, _ = self._sites.exact_sum([s for s in self._order if s in result.included])
        return wrap_rate(total, result.encoding.bits)


def run_secure_round(aggregation: AggregationRound, sites: Mapping[SiteId, SiteRound], *,
                     dropouts: Mapping[Stage | str, Iterable[SiteId]] | None = None,
                     observer: Observer | None = None,
                     on_finish: Callable[[InMemoryTransport], None] | None = None
                     ) -> SecureSumResult:
    """One round through a fresh :class:`InMemoryTransport` (the engine's one seam)."""
    return InMemoryTransport(aggregation, sites, dropouts=dropouts, observer=observer,
                             on_finish=on_finish).run()


class _Rounds:
    """A table of ``SiteRound`` (one per cohort site) seen as one batch of endpoints."""

    def __init__(self, rounds: Mapping[SiteId, SiteRound]) -> None:
        self._rounds = dict(rounds)
        self.cohort = list(self._rounds)

    def start(self, site_ids):
        return {s: self._rounds[s].start() for s in site_ids}

    def deliver(self, messages):
        out = {}
        for site, data in messages.items():
            try:
                out[site] = ("ok", self._rounds[site].on_message(data))
            except ProtocolAbort as exc:
                out[site] = ("aborted", str(exc))
            except InvalidMessage as exc:
                out[site] = ("rejected", type(exc).__name__, str(exc))
        return out

    def outcome(self, data: bytes) -> None:
        for site_round in self._rounds.values():
            site_round.outcome(RoundOutcome.from_bytes(data))

    def exact_sum(self, included):
        vectors = [self._rounds[s].signed_encoding for s in included]
        largest = max(int(np.abs(z).max()) for z in vectors)
        return exact_sum(vectors, largest), largest * len(vectors)


def merge_sums(parts) -> np.ndarray:
    """The exact sum of several hosts' partial exact sums, each given with a bound on its
    magnitude (int64 while the total cannot overflow)."""
    parts = [(t, big) for t, big in parts if t is not None]
    if sum(big for _, big in parts) < 2 ** 62 and all(t.dtype != object for t, _ in parts):
        return np.sum([t for t, _ in parts], axis=0, dtype=np.int64)
    total = np.zeros(parts[0][0].size, dtype=object)
    for t, _ in parts:
        total += t.astype(object)
    return total


def exact_sum(vectors: list[np.ndarray], largest: int) -> np.ndarray:
    """The true integer sum, in int64 when it cannot overflow, else in Python integers."""
    if largest * len(vectors) < 2 ** 62:
        return np.sum(vectors, axis=0, dtype=np.int64)
    total = np.zeros(vectors[0].size, dtype=object)
    for z in vectors:
        total += z.astype(object)
    return total
