"""A site's half of one secure round: everything a hospital does, on its own side of the wire.

:class:`SiteRound` is the site-side half of DESIGN section 5's split (the coordinator's half is
``coordinator.AggregationRound``). Given the round the coordinator announced
(:class:`cohort.contract.RoundAnnouncement`) it runs, in this order and nowhere else:

1. :meth:`check` — the site is in the round's cohort (``NotEnrolled`` otherwise), the request
   passes its policy and its budget can afford the round's worst case, and the local work can
   run (e.g. its DP-SGD cap). Changes nothing.
2. :meth:`train` — the local work (training, or predictions on the public set), then the
   privacy encoding with the announced plan and the site's OWN randomness: the rounding and the
   discrete noise never leave the site unmasked. In a simulation that randomness is derived
   from the test seed (stream ``site-<client id>`` of ``privacy.RoundRandomness``, as the
   in-process secure sum always did); without a seed it is the OS CSPRNG.
3. :meth:`reserve` — the durable worst-case reservation on the site's ledger under the round's
   release id, before anything releasable leaves (``start`` reserves if nobody did).
4. :meth:`start` and :meth:`on_message` — the secagg client with the site's own keys, stage by
   stage, bytes in and bytes out, for any transport to carry.
5. :meth:`outcome` — the coordinator's announced outcome settles the reservation: the true
   event (which the site computes itself from the announced plan and the number summed) if
   its input is in the sum, nothing if not or if the round aborted. Without an outcome the
   worst case stays reserved (an unknown outcome is charged in full).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cohort.contract import RoundAnnouncement, RoundOutcome, RoundRequest, SiteId
from privacy import PrivacyEvent, RoundRandomness, WeightedSumCodec
from privacy import _validate as v
from secagg import SecAggClient
from secagg.client import ClientState
from secagg.errors import ConfigurationError, InvalidMessage

from .site import Site

__all__ = ["Release", "SiteRound", "SiteRoundState"]

# Test-only knob (CONVENTIONS 12): True plants the defect the coordinator-side scan must catch,
# a site that sends its encoded vector unmasked in place of its masked input
# (tests/test_round_split.py).
_PLANT_SEND_UNMASKED = False

# Test-only knob (CONVENTIONS 12): the site ids named here release without charging (no
# reservation, no settlement: the release is missing from their ledgers); the privacy audit's
# every-release-charged check proves it catches it (tests/test_audit_run.py).
_PLANT_SKIP_CHARGE: frozenset[str] = frozenset()


class Release:
    """A site's two-phase charge of one release on its own ledger (DESIGN 2a): :meth:`reserve`
    the request's worst case under its release id before anything releasable leaves, then
    :meth:`settle` exactly once with what really happened (an event, or None: in no released
    sum). Without a ledger, or for a request without a charge, both do nothing. Used by
    :class:`SiteRound`, and on its own by the clear comparison path (nothing masked there)."""

    def __init__(self, site: Site | None, request: RoundRequest) -> None:
        self._ledger = site.ledger if site is not None else None
        self._site_id = getattr(site, "site_id", None)
        self._request = request
        self._reserved = False

    @property
    def reserved(self) -> bool:
        return self._reserved

    def reserve(self) -> None:
        """``privacy.BudgetExceeded`` (nothing written) if the budget cannot take it."""
        request = self._request
        if self._site_id in _PLANT_SKIP_CHARGE:
            return
        if self._ledger is not None and request.privacy_charge is not None and \
                not self._reserved:
            self._ledger.reserve(request.release_id, request.privacy_charge,
                                 label=f"round-{request.round_number}")
            self._reserved = True

    def settle(self, event: PrivacyEvent | None) -> None:
        if self._reserved:
            self._ledger.settle(self._request.release_id, event)
            self._reserved = False

    def abandon(self) -> None:
        """Nothing releasable left: the reservation is settled to nothing."""
        self.settle(None)


class SiteRoundState(enum.Enum):
    NEW = "new"
    TRAINED = "trained"          # encoded, nothing sent
    RESERVED = "reserved"        # the worst case is on the ledger, nothing sent
    RUNNING = "running"          # the secagg client is talking
    SETTLED = "settled"          # the outcome is on the ledger
    ABANDONED = "abandoned"      # stopped before anything releasable left


class SiteRound:
    """One site's side of one announced secure round.

    ``work`` computes what the site contributes — ``(vector, weight)``, the vector of
    ``announcement.encoding.dim - 1`` floats — and ``check_work`` (optional) raises what
    ``work`` would raise before it computes anything. ``site`` (a :class:`clients.Site`) brings
    the policy and the ledger; without one the round is judged by nobody (a bare contribution,
    as in ``coordinator.secure_sum``). ``identity`` and ``directory`` (every cohort site's
    identity public key, from the consortium's signed roster, never from the coordinator) are
    required in malicious-server mode. ``simulation_seed`` is for simulations and tests only.
    """

    def __init__(self, announcement: RoundAnnouncement, *, site_id: SiteId,
                 work: Callable[[], tuple[Any, float]],
                 check_work: Callable[[], object] | None = None, site: Site | None = None,
                 identity: Ed25519PrivateKey | None = None,
                 directory: Mapping[SiteId, Ed25519PublicKey] | None = None,
                 simulation_seed: int | None = None) -> None:
        if not isinstance(announcement, RoundAnnouncement):
            raise ConfigurationError("announcement must be a cohort.contract.RoundAnnouncement")
        if site is not None and (not isinstance(site, Site) or site.site_id != site_id):
            raise ConfigurationError("site must be the clients.Site of site_id")
        if not callable(work) or (check_work is not None and not callable(check_work)):
            raise ConfigurationError("work (and check_work) must be callables")
        client_id = announcement.client_id(site_id)  # NotEnrolled: not this site's round
        keys = None
        if announcement.malicious:
            if identity is None or directory is None or set(directory) != set(
                    announcement.cohort):
                raise ConfigurationError("malicious-server mode needs the site's identity key "
                                         "and every cohort site's public key")
            keys = {announcement.client_id(s): k for s, k in directory.items()}
        self._announcement = announcement
        self._site_id = site_id
        self._client_id = client_id
        self._work = work
        self._check_work = check_work
        self._site = site
        self._release = Release(site, announcement.request)
        self._identity = identity
        self._keys = keys
        self._randomness = RoundRandomness(v.seed(simulation_seed, "simulation_seed"))
        self._state = SiteRoundState.NEW
        self._signed: np.ndarray | None = None
        self._input: np.ndarray | None = None
        self._client: SecAggClient | None = None
        self._input_sent = False

    # -- introspection -----------------------------------------------------------------------
    @property
    def site_id(self) -> SiteId:
        return self._site_id

    @property
    def client_id(self) -> int:
        return self._client_id

    @property
    def state(self) -> SiteRoundState:
        return self._state

    @property
    def announcement(self) -> RoundAnnouncement:
        return self._announcement

    @property
    def input_sent(self) -> bool:
        """Whether this site's masked input has left (its release can no longer be undone)."""
        return self._input_sent

    @property
    def signed_encoding(self) -> np.ndarray:
        """The site's own encoded vector before the wrap (signed integers). It never leaves the
        site; the in-process simulation reads it, on the sites' side, to report the round's
        wrap rate, which no coordinator can compute."""
        if self._signed is None:
            raise ConfigurationError("the site has not trained yet")
        return self._signed

    # -- 1. judge ----------------------------------------------------------------------------
    def check_request(self) -> float | None:
        """Raise if the site's policy or budget refuses the announced request
        (``PolicyViolation``, ``privacy.BudgetExceeded``); else the epsilon the site would have
        spent after the round's worst case (None without a ledger). Changes nothing."""
        if self._site is None:
            return None
        return self._site.check_round(self._announcement.request)

    def check(self) -> float | None:
        """:meth:`check_request`, then whatever ``check_work`` raises (the local work cannot
        run, e.g. its DP-SGD cap). Changes nothing."""
        after = self.check_request()
        if self._check_work is not None:
            self._check_work()
        return after

    # -- 2. compute --------------------------------------------------------------------------
    def train(self) -> None:
        """Check, run the local work, and encode its result with the round's plan."""
        self._expect(SiteRoundState.NEW)
        self.check()
        vector, weight = self._work()
        a = self._announcement
        delta = v.vector(vector, f"site {self._site_id!r}'s update", dim=a.encoding.dim - 1)
        weight = v.weight(weight, self._site_id, max_weight=a.max_weight,
                          integral=a.integer_weights)
        codec = WeightedSumCodec(a.encoding, rotation_seed=a.rotation_seed,
                                 max_weight=a.max_weight, simulation=self._randomness.simulation)
        signed = codec.encode_signed(delta, weight=weight,
                                     randomness=self._randomness.source(f"site-{self._client_id}"))
        self._signed = signed
        self._input = codec.encoder.wrap(signed)
        self._state = SiteRoundState.TRAINED

    # -- 3. reserve --------------------------------------------------------------------------
    def reserve(self) -> None:
        """Durably reserve the round's worst case (the request's ``privacy_charge``) under its
        release id, before anything releasable leaves. ``privacy.BudgetExceeded`` (nothing
        written) if the budget cannot take it."""
        self._expect(SiteRoundState.TRAINED)
        self._release.reserve()
        self._state = SiteRoundState.RESERVED

    # -- 4. the secure sum -------------------------------------------------------------------
    def start(self) -> bytes:
        """The site's first protocol message (its advertised keys); reserves first if needed."""
        if self._state is SiteRoundState.TRAINED:
            self.reserve()
        self._expect(SiteRoundState.RESERVED)
        client = SecAggClient(self._client_id, self._announcement.round_config(),
                              identity=self._identity, directory=self._keys)
        message = client.advertise_keys()
        self._client, self._state = client, SiteRoundState.RUNNING
        return message

    def on_message(self, data: bytes) -> bytes | None:
        """The reply to one message from the coordinator (None once the protocol is done).
        ``InvalidMessage`` for a message that does not fit (nothing changes); ``ProtocolAbort``
        when the site's secagg client detects a cheating server (it wipes its secrets)."""
        self._expect(SiteRoundState.RUNNING)
        client = self._client
        masking = client.state is ClientState.AWAIT_DELIVERY
        reply = client.respond(data, self._input)
        if masking:
            self._input_sent = True
            if _PLANT_SEND_UNMASKED:
                return _unmasked(self._client_id, self._input, self._announcement)
        return reply

    # -- 5. settle ---------------------------------------------------------------------------
    def outcome(self, outcome: RoundOutcome) -> bool:
        """Settle the reservation from the coordinator's announced ``outcome`` of this round:
        the true event if this site is in the sum, nothing if not or if it aborted. Returns
        whether it settled.

        The site checks the outcome against what it saw itself. Once it has given its shares
        for a sum, the outcome must name exactly that sum's sites, or it is refused
        (``InvalidMessage``). In malicious-server mode, the coordinator's word alone is not
        enough once the masked input has left: a server that says "aborted" or "not included"
        may still have unmasked the input with other clients' shares. So unless the outcome
        matches a view this site signed, the worst case stays charged and False is returned.
        In the semi-honest model the coordinator follows the protocol, and its outcome settles
        the reservation."""
        if not isinstance(outcome, RoundOutcome):
            raise ConfigurationError("outcome must be a cohort.contract.RoundOutcome")
        if outcome.release_id != self._announcement.round_id:
            raise InvalidMessage("the outcome is of another round")
        if self._state in (SiteRoundState.SETTLED, SiteRoundState.ABANDONED):
            raise InvalidMessage("this round is already settled")
        a = self._announcement
        if not outcome.included <= set(a.cohort):
            raise InvalidMessage("the outcome names sites outside the round's cohort")
        client = self._client
        unmasked = None if client is None else client.unmasked_view
        signed = None if client is None else client.signed_view
        view = unmasked or signed
        sites_of = lambda ids: {s for s in a.cohort if a.client_id(s) in set(ids)}  # noqa: E731
        if unmasked is not None and not outcome.aborted and \
                set(outcome.included) != sites_of(unmasked[0]):
            raise InvalidMessage("the outcome's sum is not the one this site unmasked")
        if a.malicious and self._input_sent and (
                outcome.aborted or view is None
                or set(outcome.included) != sites_of(view[0])):
            return False  # unverifiable: the worst case stays reserved
        event = None
        if not outcome.aborted and self._site_id in outcome.included:
            event = a.event(survivors=len(outcome.included))
        self._release.settle(event)
        self._state = SiteRoundState.SETTLED
        return True

    def abandon(self) -> None:
        """Stop before anything releasable left (another site could not reserve, the round
        was called off): the reservation is settled to nothing. Refused once the masked input
        has left: only the coordinator's outcome can settle that."""
        if self._input_sent:
            raise ConfigurationError("the masked input has left; wait for the round's outcome")
        if self._state in (SiteRoundState.SETTLED, SiteRoundState.ABANDONED):
            return
        self._release.abandon()
        if self._client is not None:
            self._client.wipe()
        self._state = SiteRoundState.ABANDONED

    def _expect(self, state: SiteRoundState) -> None:
        if self._state is not state:
            raise ConfigurationError(f"the site's round is {self._state.value}, "
                                     f"not {state.value}")


def _unmasked(client_id: int, values: np.ndarray, announcement: RoundAnnouncement) -> bytes:
    """The planted defect: a well-formed masked-input message carrying ``values`` unmasked."""
    from secagg.hazmat.packing import pack
    from secagg.messages import MaskedInput

    config = announcement.round_config()
    return MaskedInput(client_id, pack(values, config.modulus_bits)).encode(config)
