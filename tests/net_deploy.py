"""A deployed job in one process, laid out on disk as a deployment leaves it: a consortium
provisioned by ``coordinator.provision`` (its kits, CA and CA-signed roster), the coordinator
service over loopback mutual TLS with its durable state (``OUT/state.sqlite``), one site agent
per site with its ledger in its kit (``OUT/kits/SITE/ledger.sqlite``, as ``cohort join`` keeps
it), and the coordinator's ``metrics.jsonl`` and ``summary.json`` beside the state file (as
``cohort serve --out`` writes them).

Why threads and not processes (examples/three_hospitals runs processes): the state file is the
same — the same ``JobRunner`` with ``store=``, the same service and TLS, the same site agents,
workers and ledgers — at a fraction of the start-up cost, and a test can make one site die
mid-round (``die``) or plant a defect in the sites' code."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from clients import Site, SitePolicy, get_flat_params, make_model
from clients.agent import SiteAgent, site_tls_context
from clients.deployed import SiteWorker, load_site_data
from clients.models import ModelKind
from cohort.contract import parse_job
from cohort.enrolment import load_roster
from coordinator.job import JobRunner
from coordinator.provision import parse_consortium, provision
from coordinator.service import CoordinatorService, create_app, serve_in_thread, server_context
from coordinator.service.store import CoordinatorStore
from net_procs import consortium_toml
from privacy import Budget, SiteLedger

SEED = 5


def job_toml(*, rounds: int, sites: int, stage_timeout: float, malicious: bool = True,
             dp: bool = True, mode: str = "distributed") -> str:
    """``mode``: the DP mechanism when ``dp`` (distributed, or central_gaussian)."""
    privacy = (f'mode = "{mode}"\nnoise_multiplier = 0.5\nclip_norm = 2.0\ndelta = 1e-5\n'
               if dp else 'mode = "none"\n')
    return f"""\
[job]
name = "audit-job"
rounds = {rounds}
seed = {SEED}
min_sites = {sites}

[data]
dataset = "breast_cancer"

[model]
kind = "logistic"

[privacy]
{privacy}
[secagg]
modulus_bits = 32
malicious = {'true' if malicious else 'false'}

[timeouts]
stage = {stage_timeout}
join = 20
poll_hold = 1
"""


class Crash(Exception):
    """Not a CohortError: it ends a site agent's thread, as a killed process stops."""


def scripted(act: Callable) -> Callable:
    """A site whose participant answers each message (after ``start``) with ``act(n, inner,
    data)``: n counts the round's messages from 1, ``inner`` is the real participant. Anything
    else the agent asks of the participant is the real one's."""
    def wrap(begin: Callable) -> Callable:
        def make(round_id, body):
            inner = begin(round_id, body)

            class Scripted:
                calls = 0

                def start(self):
                    return inner.start()

                def on_message(self, data):
                    self.calls += 1
                    return act(self.calls, inner, data)

                def __getattr__(self, name):
                    return getattr(inner, name)

            return Scripted()

        return make

    return wrap


def _dies_third(n: int, inner, data):
    if n == 3:  # roster, nonces, then the delivery of the others' shares
        raise Crash("killed")
    return inner.on_message(data)


dies_at_masked_input = scripted(_dies_third)
"""A site that stops (for good) when it is handed the others' shares, before its masked input
leaves: a dropout the round must survive."""


def deploy(out: Path, *, sites: int = 3, rounds: int = 2, die: str | None = None,
           stage_timeout: float = 10.0, malicious: bool = True, dp: bool = True,
           mode: str = "distributed") -> Path:
    """Provision ``sites`` sites into ``out/kits``, run the job to its end, and return
    ``out/state.sqlite``. ``die`` names a site that dies in round 1 before its masked input;
    ``mode`` is the DP mechanism (with ``dp``)."""
    out.mkdir(parents=True, exist_ok=True)
    kits = out / "kits"
    provision(parse_consortium(consortium_toml(sites)), kits)
    spec = job_toml(rounds=rounds, sites=sites, stage_timeout=stage_timeout,
                    malicious=malicious, dp=dp, mode=mode)
    job = parse_job(spec)
    coordinator = kits / "coordinator"
    roster = load_roster(coordinator / "roster.json", coordinator / "ca.pem")
    service = CoordinatorService(roster, poll_hold=1.0)
    handle = serve_in_thread(create_app(service), server_context(
        certfile=coordinator / "server.pem", keyfile=coordinator / "server.key",
        cafile=coordinator / "ca.pem"))
    store = CoordinatorStore(out / "state.sqlite")
    store.begin_job(spec)
    names = {s.client_id: s.site_name for s in roster.sites}
    data = load_site_data(f"builtin:breast_cancer:1/{sites}", seed=SEED)
    initial = get_flat_params(make_model(ModelKind.LOGISTIC, input_shape=data.feature_shape,
                                         n_outputs=data.n_outputs, seed=SEED + 10_007))
    metrics = out / "metrics.jsonl"
    metrics.write_text("")

    def on_round(m) -> None:  # what cohort serve writes per round
        with metrics.open("a") as f:
            f.write(json.dumps(dataclasses.asdict(m)) + "\n")

    runner = JobRunner(job, service, sites=names,
                       directory={s.client_id: s.identity_public for s in roster.sites},
                       initial=initial, store=store, on_round=on_round)
    directory = {s.site_name: s.identity_public for s in roster.sites}

    def agent(c: int) -> SiteAgent:
        name, kit = names[c], kits / names[c]
        local = load_site_data(f"builtin:breast_cancer:{c}/{sites}", seed=SEED)
        # A site with a budget takes part in charged rounds only (its policy's rule).
        ledger = SiteLedger(kit / "ledger.sqlite", site_id=name,
                            budget=Budget(epsilon=1e6, delta=1e-5)) if dp else None

        def site_for(t) -> Site:
            model = make_model(ModelKind(t.model), input_shape=local.feature_shape,
                               n_outputs=local.n_outputs, hidden=t.hidden, seed=SEED)
            return Site(name, data=local.data, model=model, ledger=ledger, seed=SEED + 31 * c,
                        policy=SitePolicy(min_participants=2, privacy_budget=None if ledger
                                          is None else ledger.budget))

        identity = serialization.load_pem_private_key((kit / "identity.key").read_bytes(),
                                                      password=None)
        worker = SiteWorker(name, site_for, identity, directory)
        tls = site_tls_context(certfile=kit / "client.pem", keyfile=kit / "client.key",
                               cafile=kit / "ca.pem")
        begin = dies_at_masked_input(worker.begin) if name == die else worker.begin
        return SiteAgent(base_url=handle.url, tls=tls, identity=identity, client_id=c,
                         rounds=begin, poll_wait=1.0, run_seconds=60.0, max_polls=2000)

    agents = {c: agent(c) for c in names}

    def go(a: SiteAgent) -> None:
        try:
            a.run()
        except Crash:
            pass
        finally:
            a.close()

    threads = [threading.Thread(target=go, args=(a,), daemon=True) for a in agents.values()]
    try:
        for t in threads:
            t.start()
        result = runner.run()
        for t in threads:
            t.join(30)
    finally:
        handle.stop()
        store.close()
    (out / "summary.json").write_text(json.dumps({  # the fields of cohort serve's summary
        "job": job.name, "rounds_planned": job.rounds, "rounds": len(result.rounds),
        "dp": job.mode.value, "sites": result.sites, "stopped": result.stopped,
        "epsilon": result.epsilon, "delta": job.delta}, indent=2) + "\n")
    return out / "state.sqlite"
