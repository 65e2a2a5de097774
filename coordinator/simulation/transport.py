"""The in-memory transport: one secure round between the two halves, inside one process.

The simulation's path through a round is a deployment's path with the network taken out
(DESIGN section 5): :class:`InMemoryTransport` carries bytes, and only bytes, between a
``coordinator.AggregationRound`` and each site's ``clients.SiteRound`` — the announcement, every
protocol message (with the sender the transport knows it came from, as TLS would
authenticate it), and the outcome — and injects dropouts by stage as
``secagg.simulate_round`` does: a site listed at a stage stops before sending that stage's
message. It records every message the coordinator half was given (:attr:`received`), so a test
can check that nothing but masked vectors ever reached it.

The wrap rate is the one figure computed from the sites' side here: it needs their clear
encodings, which no coordinator holds (``SiteRound.signed_encoding``, read in process only).
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
        if set(sites) != set(cohort):
            raise ValueError("the transport needs exactly the cohort's sites")
        self._aggregation = aggregation
        self._sites = dict(sites)
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
        for site in [s for s in self._order if s in self._alive]:
            if outgoing is None:
                self._to_coordinator(stage, site, self._sites[site].start())
                continue
            reply = None
            message = outgoing.get(site)
            if message is not None:
                self.sent.append((stage, site, message))
                self.log.append((stage, False, site, message))
                try:
                    reply = self._sites[site].on_message(message)
                except ProtocolAbort as exc:
                    self.aborted[site] = str(exc)
                except InvalidMessage as exc:
                    self.rejected.append((site, type(exc).__name__, str(exc)))
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
        self._tell_outcome(agg.outcome())
        self._finish()
        return dataclasses.replace(result, wrap_rate=self._wrap_rate(result))

    def _finish(self) -> None:
        if self._on_finish is not None:
            self._on_finish(self)

    @property
    def aggregation(self) -> AggregationRound:
        return self._aggregation

    def _tell_outcome(self, outcome: RoundOutcome) -> None:
        data = outcome.to_bytes()
        for site in self._order:
            self._sites[site].outcome(RoundOutcome.from_bytes(data))

    def _wrap_rate(self, result: SecureSumResult) -> float:
        """From the sites' side (simulation only): how often the true sum left the window."""
        vectors = [self._sites[s].signed_encoding for s in self._order if s in result.included]
        return wrap_rate(_exact_sum(vectors), result.encoding.bits)


def run_secure_round(aggregation: AggregationRound, sites: Mapping[SiteId, SiteRound], *,
                     dropouts: Mapping[Stage | str, Iterable[SiteId]] | None = None,
                     observer: Observer | None = None,
                     on_finish: Callable[[InMemoryTransport], None] | None = None
                     ) -> SecureSumResult:
    """One round through a fresh :class:`InMemoryTransport` (the engine's one seam)."""
    return InMemoryTransport(aggregation, sites, dropouts=dropouts, observer=observer,
                             on_finish=on_finish).run()


def _exact_sum(vectors: list[np.ndarray]) -> np.ndarray:
    """The true integer sum, in int64 when it cannot overflow, else in Python integers."""
    largest = max(int(np.abs(z).max()) for z in vectors)
    if largest * len(vectors) < 2 ** 62:
        return np.sum(vectors, axis=0, dtype=np.int64)
    total = np.zeros(vectors[0].size, dtype=object)
    for z in vectors:
        total += z.astype(object)
    return total
