"""``audit run``: verify, from its records, what a run did.

Per secure round (from the coordinator's transcript, not from what the run says about it):

1. *survivors >= t* — every unmask request lists at least the threshold (and the model's
   minimum) of survivors; a round that aborted before unmasking asked for no share.
2. *one view* — survivor and dropped lists disjoint, the same for every client (consistency and
   unmask requests alike), no client that uploaded its masked input called dropped, the
   outcome's summed sites equal to the survivors, every share a client revealed the kind the
   view asks of it (a seed share for a survivor, a mask-key share for a dropped client: what
   it revealed answers the view it was shown); in malicious mode a signature quorum.
3. *never both shares* — no request names a client both ways, no reply carries both shares of
   one client, and the server never held a threshold of both secrets of any client
   (``secagg.exposed_clients``).
4. *only masked vectors* — each stored upload passes a chi-square uniformity test on its
   top bits, Bonferroni-corrected over every upload of the run (an unmasked encoding sits
   near 0 mod 2^b and fails by hundreds of standard deviations).
5. *noise summed vs planned* — the noise in the released sum is that of the survivors; the
   shortfall from dropouts is reported, and the charged event may claim no more noise than
   was summed.

The privacy ledger:

6. *every release charged* — each summed site's ledger settles each release with the round's
   event (a summed site that was never told the outcome may instead keep the worst case
   reserved); each completed round is on the ledger of every site whose masked input left it
   (example track too with DP-SGD).
7. *epsilon recomputed* — every epsilon the run printed (per round: ``RunRecords.printed``,
   e.g. metrics.jsonl; the summary; each ledger row's epsilon after it) is recomputed from the
   logged events by an independent route (``recompute``) and must agree within 0.5%.
8. *within budget* — no site's recomputed spend exceeds its budget, no overrun flagged.

Site-level and example-level epsilons are reported apart (different neighbouring relations).
Records may add checks of their own authenticity (``RunRecords.integrity``: a state file's
signatures and replay), and say which checks they cannot support (``RunRecords.not_made``):
those are reported as not made, never as passed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import stats

from secagg import Stage
from secagg.hazmat.packing import unpack
from secagg.messages import Kind, decode, peek
from secagg.transcript import Direction, Transcript, exposed_clients

from .recompute import independent_epsilon, route_for
from .records import LedgerBook, RoundFacts, RunRecords
from .report import AuditReport, Check

__all__ = ["audit_run", "uniformity_pvalue", "TOLERANCE", "FAMILY_ALPHA"]

TOLERANCE = 0.005  # relative agreement asked of every printed epsilon
FAMILY_ALPHA = 1e-6  # false-alarm rate of the uniformity test over all uploads of a run


def uniformity_pvalue(values: np.ndarray, bits: int) -> float:
    """Chi-square p-value that ``values`` (residues mod 2^bits) are uniform, on their top
    bits: at most 64 bins and at least 5 expected per bin."""
    n = int(values.size)
    top = max(1, min(6, bits, int(math.log2(max(n / 5, 2)))))
    bins = 1 << top
    idx = (np.asarray(values, dtype=np.uint64) >> np.uint64(bits - top)).astype(np.int64)
    counts = np.bincount(idx, minlength=bins)
    if bins < 2 or n < 10:
        return 1.0
    return float(stats.chisquare(counts).pvalue)


def _rel_close(a: float, b: float, tol: float = TOLERANCE) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol * max(abs(a), abs(b)) + 1e-9


class _Epsilons:
    """Independent epsilons, cached per composition."""

    def __init__(self) -> None:
        self._cache: dict[tuple, float] = {}

    def __call__(self, events: Iterable[dict[str, Any]], delta: float) -> float:
        events = list(events)
        key = (delta, tuple(sorted(str(sorted(e.items())) for e in events)))
        if key not in self._cache:
            self._cache[key] = independent_epsilon(events, delta=delta)
        return self._cache[key]


_SHARE_RECORD = 4 + 1  # about (u32), kind (u8), then the share itself


def _received_shares(transcript: Transcript) -> list[tuple[int, list[tuple[int, int]]]]:
    """(sender, [(about, share kind)]) of every unmask reply the server received, read
    leniently: a reply the server's strict decoder refuses still handed it its bytes. Only
    the header must name this round and the sender; a body that cannot be read at all is an
    error (fails closed)."""
    from secagg.hazmat.shamir import SHARE_BYTES
    from secagg.messages import HEADER_BYTES

    config = transcript.config
    out = []
    size = _SHARE_RECORD + SHARE_BYTES
    for e in transcript.entries(Stage.UNMASK, Direction.TO_SERVER):
        kind, sender = peek(e.data, config)
        if kind is not Kind.UNMASK_SHARES:
            continue
        if sender != e.party:
            raise ValueError(f"an unmask reply from client {e.party} claims sender {sender}")
        body = e.data[HEADER_BYTES:]
        if len(body) < 4:
            raise ValueError(f"the unmask reply of client {e.party} is truncated")
        count = int.from_bytes(body[:4], "big")
        if len(body) != 4 + count * size:
            raise ValueError(f"the unmask reply of client {e.party} has a malformed body")
        records = []
        for i in range(count):
            rec = body[4 + i * size: 4 + (i + 1) * size]
            about, which = int.from_bytes(rec[:4], "big"), rec[4]
            if which > 1:
                raise ValueError(f"the unmask reply of client {e.party} has share kind {which}")
            records.append((about, int(which)))
        out.append((e.party, records))
    return out


def _decoded(transcript: Transcript, stage: Stage, direction: Direction, kind: Kind):
    """(party, message) for each entry of ``kind``; errors name the entry."""
    config = transcript.config
    out = []
    for e in transcript.entries(stage, direction):
        got, sender = peek(e.data, config)
        if got is not kind:
            continue
        message = decode(e.data, config, kind, checked=(got, sender))
        if direction is Direction.TO_SERVER and sender != e.party:
            raise ValueError(f"a {kind.name.lower()} message from client {e.party} claims "
                             f"sender {sender}")
        out.append((e.party, message))
    return out


def _round_checks(records: RunRecords, rounds: list[RoundFacts],
                  alpha: float) -> tuple[list[Check], list[dict[str, Any]]]:
    survivors_bad, view_bad, both_bad, masked_bad, noise_bad = [], [], [], [], []
    noise_rows: list[dict[str, Any]] = []
    uploads: list[tuple[str, int, float]] = []
    survivor_counts: list[int] = []
    uploaded_sites: dict[int, set[str]] = {}
    for facts in rounds:
        cfg = facts.config
        where = facts.label
        try:
            t = records.transcript(facts)
            requests = _decoded(t, Stage.UNMASK, Direction.FROM_SERVER, Kind.UNMASK_REQUEST)
            consistency = _decoded(t, Stage.CONSISTENCY_CHECK, Direction.FROM_SERVER,
                                   Kind.CONSISTENCY_REQUEST)
            signatures = _decoded(t, Stage.CONSISTENCY_CHECK, Direction.TO_SERVER,
                                  Kind.CONSISTENCY_SIGNATURE)
            replies = _received_shares(t)
            masked = _decoded(t, Stage.MASKED_INPUT, Direction.TO_SERVER, Kind.MASKED_INPUT)
        except Exception as exc:  # noqa: BLE001 - unreadable evidence fails every round check
            reason = f"{where}: transcript unreadable ({type(exc).__name__}: {exc})"
            for bucket in (survivors_bad, view_bad, both_bad, masked_bad, noise_bad):
                bucket.append(reason)
            continue
        uploaded = {p for p, _ in masked}
        if facts.task == "fit":
            uploaded_sites.setdefault(facts.round, set()).update(
                facts.sites[p] for p in uploaded if 0 <= p < len(facts.sites))
        # 1. survivors >= t
        if not requests:
            if replies:
                survivors_bad.append(f"{where}: shares were given without an unmask request")
            elif not facts.aborted and facts.ended:
                survivors_bad.append(f"{where}: released a sum without an unmask stage")
        for party, req in requests:
            n = len(req.survivors)
            if n < cfg.threshold or n < cfg.min_survivors:
                survivors_bad.append(f"{where}: client {party} was asked to unmask with {n} "
                                     f"survivors (threshold {cfg.threshold}, model minimum "
                                     f"{cfg.min_survivors})")
        # 2. one view
        views = {(tuple(r.survivors), tuple(r.dropped)) for _, r in requests + consistency}
        if len(views) > 1:
            view_bad.append(f"{where}: the server showed {len(views)} different survivor/"
                            "dropped views")
        for alive, gone in views:
            if set(alive) & set(gone):
                view_bad.append(f"{where}: clients {sorted(set(alive) & set(gone))} listed "
                                "both as survivor and as dropped")
            if set(gone) & uploaded:
                view_bad.append(f"{where}: clients {sorted(set(gone) & uploaded)} sent their "
                                "masked input but were called dropped")
            if not set(alive) <= uploaded:
                view_bad.append(f"{where}: survivors {sorted(set(alive) - uploaded)} never "
                                "sent a masked input")
        summed = ({facts.sites[c] for c in next(iter(views))[0]} if len(views) == 1
                  else set())
        if len(views) == 1:  # what each client revealed answers the view it was shown
            alive, gone = (set(x) for x in next(iter(views)))
            for party, shares in replies:
                for about, kind in shares:
                    if about == party and kind == 0:
                        continue  # its own self-mask seed
                    if (kind == 0 and about not in alive) or (kind == 1 and about not in gone):
                        listed = ("survivor" if about in alive else "dropped" if about in gone
                                  else "neither")
                        view_bad.append(
                            f"{where}: client {party} revealed a "
                            f"{'seed' if kind == 0 else 'mask-key'} share of client {about}, "
                            f"whom the view lists as {listed}")
        if not facts.aborted and facts.ended and requests and summed != set(facts.included):
            view_bad.append(f"{where}: the outcome names {sorted(facts.included)} as summed, "
                            f"the unmask view {sorted(summed)}")
        if cfg.malicious and requests:
            signers = {p for p, _ in signatures}
            if len(signers) < cfg.signature_quorum:
                view_bad.append(f"{where}: {len(signers)} signatures on the view, the quorum "
                                f"is {cfg.signature_quorum}")
        if requests:
            survivor_counts.append(len(requests[0][1].survivors))
        # 3. never both shares (what the server received, whether its decoder took it or not)
        holders: dict[int, dict[int, set[int]]] = {0: {}, 1: {}}
        for party, shares in replies:
            kinds: dict[int, set[int]] = {}
            for about, kind in shares:
                kinds.setdefault(about, set()).add(kind)
                holders[kind].setdefault(about, set()).add(party)
            both = sorted(a for a, k in kinds.items() if len(k) > 1)
            if both:
                both_bad.append(f"{where}: client {party} gave both shares of client(s) {both}")
        held_both = sorted(c for c in cfg.clients
                           if len(holders[0].get(c, ())) >= cfg.threshold
                           and len(holders[1].get(c, ())) >= cfg.threshold)
        if held_both:
            both_bad.append(f"{where}: the server received a threshold of seed shares and of "
                            f"mask-key shares of client(s) {held_both}")
        try:
            exposed = exposed_clients(t)
        except Exception as exc:  # noqa: BLE001 - fail closed
            both_bad.append(f"{where}: shares unreadable ({exc})")
        else:
            if exposed:
                both_bad.append(f"{where}: the server obtained both secrets of client(s) "
                                f"{sorted(exposed)} ({', '.join(facts.sites[c] for c in sorted(exposed))})")
        # 4. only masked vectors
        for party, message in masked:
            values = unpack(message.packed, cfg.modulus_bits, cfg.dim)
            uploads.append((where, party, uniformity_pvalue(values, cfg.modulus_bits)))
        # 5. noise summed vs planned
        if facts.mechanism in ("distributed", "local") and not facts.aborted and facts.ended \
                and requests:
            n_summed = len(requests[0][1].survivors)
            planned = facts.planned_clients * facts.local_variance
            summed_var = n_summed * facts.local_variance
            row = {"round": facts.round, "task": facts.task, "planned_clients":
                   facts.planned_clients, "summed_clients": n_summed,
                   "noise_planned": planned, "noise_summed": summed_var,
                   "shortfall": 1.0 - summed_var / planned if planned else 0.0}
            noise_rows.append(row)
            allowed = summed_var if facts.mechanism == "distributed" else facts.local_variance
            claim = _claimed_variance(facts.event)
            if claim is None:
                noise_bad.append(f"{where}: a noisy round with no event charged")
            elif claim > allowed * (1 + 1e-9):
                noise_bad.append(f"{where}: charged as if noise variance {claim:.6g} was "
                                 f"summed; the {n_summed} survivors summed {allowed:.6g}")
    checks = []
    checks.append(Check(
        "survivors >= threshold", not survivors_bad,
        (f"{len(rounds)} secure rounds; fewest survivors in an unmask request: "
         f"{min(survivor_counts) if survivor_counts else '—'} (threshold "
         f"{rounds[0].config.threshold if rounds else '—'})") if not survivors_bad
        else survivors_bad[0], survivors_bad,
        defect="a sum released from fewer clients than the threshold"))
    checks.append(Check(
        "one disjoint survivor/dropped view", not view_bad,
        "every client was shown the same disjoint survivor and dropped lists, matching who "
        "uploaded and who was summed" if not view_bad else view_bad[0], view_bad,
        defect="a server that shows clients different views or calls a live client dropped"))
    checks.append(Check(
        "never both shares of one client", not both_bad,
        "no request asked for, and no reply gave, both shares of one client; the server never "
        "held both secrets of anyone" if not both_bad else both_bad[0], both_bad,
        defect="a server that obtains both the self-mask seed and the mask key of a client"))
    per_test = alpha / max(1, len(uploads))
    bad_uploads = [f"{w}: upload of client {p} has uniformity p = {pv:.3g} < {per_test:.3g}"
                   for w, p, pv in uploads if pv < per_test]
    smallest = min((pv for _, _, pv in uploads), default=None)
    masked_bad += bad_uploads
    checks.append(Check(
        "only masked vectors received", not masked_bad and bool(uploads),
        (f"{len(uploads)} uploads, each uniform on its top bits (chi-square, Bonferroni "
         f"alpha {alpha:g} over the run: each p >= {per_test:.3g}; smallest "
         f"{smallest:.3g})" if uploads and not masked_bad else
         (masked_bad[0] if masked_bad else "no masked upload was recorded")), masked_bad,
        defect="a site's update reaching the coordinator unmasked"))
    if noise_rows:
        worst = max(noise_rows, key=lambda r: r["shortfall"])
        evidence = (f"{len(noise_rows)} noisy rounds; largest shortfall "
                    f"{100 * worst['shortfall']:.0f}% (round {worst['round']}: "
                    f"{worst['summed_clients']} of {worst['planned_clients']} summed); each "
                    "charged only for the noise summed")
    else:
        evidence = "no round carried distributed or local noise"
    checks.append(Check("noise summed vs planned", not noise_bad,
                        evidence if not noise_bad else noise_bad[0], noise_bad,
                        defect="a charge that counts the noise of clients who dropped out"))
    return checks, noise_rows, uploaded_sites


def _maybe_made(name: str, bad: list[str], evidence: str, not_made: str, *,
                defect: str) -> Check:
    """A check that fails on what it found, else is not made when the records could not
    support all of it (``not_made`` says why), else passes."""
    if bad:
        return Check(name, False, bad[0], bad, defect=defect)
    if not_made:
        return Check(name, False, not_made, defect=defect, made=False)
    return Check(name, True, evidence, defect=defect)


def _claimed_variance(event: dict[str, Any] | None) -> float | None:
    if event is None:
        return None
    if event.get("kind") == "skellam":
        return float(event["variance"]) * int(event.get("steps", 1)) / int(event.get("steps", 1))
    if event.get("kind") == "discrete_gaussian":
        return float(event["local_variance"]) * int(event["num_clients"])
    return None


def _books(records: RunRecords) -> dict[tuple[str, str], LedgerBook]:
    return {(b.site_id, b.track): b for b in (records.ledgers() or [])}


def _round_of(label: str) -> int | None:
    head = label.split("/")[0]
    if head.startswith("round-") and head[6:].isdigit():
        return int(head[6:])
    return None


def audit_run(records: RunRecords, *, alpha: float = FAMILY_ALPHA,
              tolerance: float = TOLERANCE, progress: bool = False) -> AuditReport:
    """Every check of the module docstring over ``records``."""
    start = time.perf_counter()
    summary = records.summary() or {}
    config = summary.get("config") or {}
    metrics = records.metrics()
    rounds = records.rounds()
    report = AuditReport(kind="run", title="Privacy audit of a run",
                         subject=f"{records.source} ({records.kind})")
    dp = config.get("dp", "none") != "none"
    dp_sgd = config.get("dp_sgd") is not None
    secure = bool(config.get("secagg", True))
    completed = [m for m in metrics if not m.get("aborted")]
    if not secure:
        report.checks.append(Check(
            "secure aggregation used", False,
            "the run summed updates in the clear (--no-secagg): the coordinator saw them",
            defect="a run whose updates were never masked"))
    elif not rounds and metrics:
        report.checks.append(Check(
            "secure rounds recorded", False,
            "the run kept no record of its secure rounds (secagg_rounds.jsonl, transcripts/)",
            defect="a run whose secure rounds cannot be checked"))
    uploaded: dict[int, set[str]] = {}
    if rounds:
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=1, desc="rounds", leave=False, disable=None)
        round_checks, noise_rows, uploaded = _round_checks(records, rounds, alpha)
        if bar is not None:
            bar.update()
            bar.close()
        report.checks += round_checks
        report.measured["noise_by_round"] = noise_rows
    report.checks += records.integrity()
    books = _books(records)
    ledgers = records.ledgers()
    eps = _Epsilons()
    if dp or dp_sgd:
        _ledger_checks(report, records, rounds, books, ledgers, completed, summary, config,
                       dp=dp, dp_sgd=dp_sgd, eps=eps, tolerance=tolerance, uploaded=uploaded)
    else:
        report.claimed["site-level epsilon"] = "none claimed (no differential privacy)"
        report.notes.append("The run used no differential privacy: it claims no epsilon, so "
                            "only the secure-aggregation checks apply.")
    # Last, so that it holds what reading every round turned up; listed first.
    problems = records.problems()
    report.checks.insert(0, Check("records readable", not problems,
                                  "every record of the run could be read" if not problems
                                  else problems[0], problems,
                                  defect="a record altered or truncated after the run"))
    report.notes += records.notes()
    report.notes += [
        "Round checks read the coordinator's own view of each secure round (its transcript, or "
        "its stored inbox with the server's messages replayed), not what the run reports "
        "about it.",
        "Every epsilon the run printed was recomputed from the logged events (the sites' "
        "ledgers, and the coordinator's record of each release) by an independent route "
        "(dp-accounting for Gaussian events, the papers' closed forms for Skellam and the "
        "distributed discrete Gaussian) and must agree within "
        f"{100 * tolerance:g}%.",
        "Site-level epsilon protects a whole hospital's data; example-level (DP-SGD) epsilon "
        "protects one record. They are different guarantees and are never added up.",
    ]
    report.seconds = time.perf_counter() - start
    return report


def _ledger_checks(report: AuditReport, records: RunRecords, rounds: list[RoundFacts],
                   books: dict[tuple[str, str], LedgerBook], ledgers, completed, summary,
                   config, *, dp: bool, dp_sgd: bool, eps: _Epsilons,
                   tolerance: float, uploaded: dict[int, set[str]]) -> None:
    sites = sorted({s for (s, _) in books} | {s for f in rounds for s in f.sites})
    not_made = records.not_made()
    held = records.ledger_sites()  # None: the records hold every site's ledger
    uncovered: set[str] = set()
    missing: list[str] = []
    if ledgers is None and "every release charged" not in not_made:
        missing.append("the run kept no ledgers (ledgers.sqlite is missing)")

    # 6. every release charged
    for facts in rounds:
        if facts.event is None or facts.aborted or not dp or ledgers is None:
            continue
        for site in facts.included:
            if held is not None and site not in held:
                uncovered.add(site)  # not given to the audit: neither charged nor missing
                continue
            book = books.get((site, "site"))
            row = next((r for r in (book.rows if book else ()) if r.release_id ==
                        facts.release_id), None)
            untold = facts.told is not None and site not in facts.told
            if row is None:
                missing.append(f"{facts.label}: release {facts.release_id[:12]}… is missing "
                               f"from {site}'s ledger")
            elif untold and row.status == "reserved":
                pass  # never told the outcome: the worst case stays charged (DESIGN 2a)
            elif row.status != "settled" or row.event != facts.event:
                missing.append(f"{facts.label}: {site}'s ledger has the release {row.status} "
                               f"with {row.event}, not the round's event")
    tracks = (["site"] if dp else []) + (["example"] if dp_sgd else [])
    for track in tracks if ledgers is not None else ():
        for m in completed:
            r = m["round"]
            # A release is owed by every site whose masked input left it (when the records
            # say who that was), else by every site.
            owing = sorted(uploaded[r]) if track == "site" and r in uploaded else sites
            for site in owing:
                if held is not None and site not in held:
                    uncovered.add(site)
                    continue
                book = books.get((site, track))
                if not any(_round_of(x.label) == r for x in (book.rows if book else ())):
                    missing.append(f"round {r}: no {track}-level release on {site}'s ledger")
    uncovered_note = (f"the ledgers of {', '.join(sorted(uncovered))} were not given"
                      if uncovered else "")
    charged_evidence = (f"every release of {len(completed)} completed rounds is on the ledger "
                        f"of every site it owed a charge ({', '.join(tracks)} "
                        f"track{'s' if len(tracks) > 1 else ''})")
    report.checks.append(_maybe_made(
        "every release charged", missing, charged_evidence,
        not_made.get("every release charged") or (uncovered_note and
                                                   f"not made for every site: {uncovered_note}"),
        defect="a release missing from a site's ledger"))
    # 7. epsilon recomputed
    mismatches: list[str] = []
    compared = 0
    delta = summary.get("delta") or config.get("delta")
    site_events: dict[int, dict[str, Any]] = {}
    if dp:
        for (site, track), book in books.items():
            if track != "site":
                continue
            for row in book.rows:
                r = _round_of(row.label)
                if row.status == "settled" and r is not None:
                    prev = site_events.setdefault(r, row.event)
                    if prev != row.event:
                        mismatches.append(f"round {r}: sites' ledgers settle different events")
        for facts in rounds:  # a round whose release is on no ledger still cost its event
            if facts.event is not None and not facts.aborted:
                site_events.setdefault(facts.round, facts.event)
    for where, printed_rounds in records.printed():
        for m in printed_rounds:
            r = m["round"]
            if dp and m.get("epsilon") is not None:
                want = eps([e for k, e in site_events.items() if k <= r], delta)
                compared += 1
                if not _rel_close(float(m["epsilon"]), want, tolerance):
                    mismatches.append(f"{where} round {r}: epsilon {m['epsilon']:.6g}, the "
                                      f"events give {want:.6g}")
    for m in records.metrics():
        r = m["round"]
        if dp_sgd and m.get("example_epsilon"):
            for site, printed in m["example_epsilon"].items():
                book = books.get((site, "example"))
                if book is None:
                    mismatches.append(f"metrics.jsonl round {r}: example epsilon of {site} "
                                      "has no ledger to come from")
                    continue
                events = [x.charged for x in book.rows if x.charged is not None
                          and (_round_of(x.label) or 0) <= r]
                want = eps(events, config.get("example_delta") or book.delta)
                compared += 1
                if not _rel_close(float(printed), want, tolerance):
                    mismatches.append(f"metrics.jsonl round {r}: example epsilon of {site} "
                                      f"{printed:.6g}, its events give {want:.6g}")
    site_claim = summary.get("epsilon")
    if dp:
        want = eps(list(site_events.values()), delta) if delta else None
        if site_claim is None and not site_events:
            want = None  # nothing was released (every round aborted): nothing to claim
        elif site_claim is None or want is None:
            mismatches.append(f"{records.summary_name} prints no site-level epsilon for a DP "
                              "run")
        else:
            compared += 1
            if not _rel_close(float(site_claim), want, tolerance):
                mismatches.append(f"{records.summary_name}: epsilon {site_claim:.6g}, the "
                                  f"logged events give {want:.6g}")
        report.claimed["site-level epsilon"] = site_claim
        report.claimed["site-level delta"] = delta
        report.measured["site-level epsilon recomputed"] = want
        report.measured["site-level route"] = route_for(list(site_events.values()) or
                                                        [{"kind": "gaussian",
                                                          "noise_multiplier": 1,
                                                          "sample_rate": 1, "steps": 1}])
    if dp_sgd:
        printed = summary.get("example_epsilon") or {}
        recomputed = {}
        for site in sites:
            book = books.get((site, "example"))
            if book is None:
                mismatches.append(f"{site} has no example-level ledger in a DP-SGD run")
                continue
            want = eps([x.charged for x in book.rows if x.charged is not None],
                       config.get("example_delta") or book.delta)
            recomputed[site] = want
            compared += 1
            if site not in printed or not _rel_close(float(printed[site]), want, tolerance):
                mismatches.append(f"summary.json: example epsilon of {site} "
                                  f"{printed.get(site)}, its events give {want:.6g}")
        report.claimed["example-level epsilon (per site)"] = printed
        report.claimed["example-level delta"] = summary.get("example_delta")
        report.measured["example-level epsilon recomputed"] = recomputed
    else:
        report.claimed["example-level epsilon"] = "none claimed (no DP-SGD in local training)"
    for (site, track), book in sorted(books.items()):
        if book.accountant != "rdp":
            mismatches.append(f"{site} ({track}): accountant {book.accountant!r} has no "
                              "independent route here")
            continue
        charged: list[dict[str, Any]] = []
        for row in book.rows:
            if row.charged is not None:
                charged.append(row.charged)
            want = eps(charged, book.delta)
            compared += 1
            if not _rel_close(row.epsilon_after, want, tolerance):
                mismatches.append(f"{site} ({track}) ledger {row.label or row.release_id[:12]}: "
                                  f"epsilon after {row.epsilon_after:.6g}, its events give "
                                  f"{want:.6g}")
    report.checks.append(Check(
        "every printed epsilon recomputed", not mismatches and compared > 0,
        f"{compared} printed epsilons (metrics, summary, ledgers) each within "
        f"{100 * tolerance:g}% of an independent recomputation" if not mismatches and compared
        else (mismatches[0] if mismatches else "no epsilon to compare"), mismatches,
        defect="an epsilon printed by the run that its own events do not support"))
    # 8. within budget
    over: list[str] = []
    spent: dict[str, Any] = {}
    for (site, track), book in sorted(books.items()):
        total = eps([x.charged for x in book.rows if x.charged is not None], book.delta) \
            if book.accountant == "rdp" else math.nan
        spent[f"{site} ({track})"] = total
        if any(x.overrun for x in book.rows):
            over.append(f"{site} ({track}): a release is flagged over budget")
        if math.isfinite(book.epsilon) and not total <= book.epsilon * (1 + 1e-9):
            over.append(f"{site} ({track}): spent {total:.6g} > budget {book.epsilon:.6g}")
    budgets = sorted({b.epsilon for b in books.values()})
    if ledgers is None and "no site over its budget" not in not_made:
        over.append("no ledgers to check")
    report.checks.append(_maybe_made(
        "no site over its budget", over,
        f"{len(books)} ledgers; budgets "
        f"{', '.join('none' if math.isinf(b) else f'{b:g}' for b in budgets)}",
        not_made.get("no site over its budget") or (uncovered_note and
                                                     f"not made for every site: {uncovered_note}"),
        defect="a site that released beyond its budget"))
    report.measured["spent per ledger (recomputed)"] = spent
