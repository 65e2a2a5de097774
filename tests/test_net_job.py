"""A deployed job over real TLS on loopback: rounds of real model updates through the service,
each round's step 0 the announcement and the global model, the last message the outcome, every
site's ledger settled; the same seed gives the simulation's final model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from clients import Site, SitePolicy, get_flat_params, make_model
from clients.agent import SiteAgent, site_tls_context
from clients.deployed import SiteWorker, load_site_data
from clients.models import ModelKind
from cohort.contract import MODELS, Job, LocalTraining, RoundWork, StrategyName, parse_job
from coordinator.job import JobRunner
from net_deploy import Crash, dies_at_masked_input, scripted
from net_pki import make_consortium
from net_round import open_secagg_round, round_config, start_service
from privacy import Budget, Mechanism, ReleaseStatus, SiteLedger
from secagg.errors import ConfigurationError

SEED = 5


def test_the_contracts_model_names_are_the_catalogues() -> None:
    assert set(MODELS) == {m.value for m in ModelKind}


def test_a_job_file_error_names_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"job.toml: privacy.mode: "):
        parse_job('[data]\ndataset = "digits"\n[privacy]\nmode = "loud"\n')
    with pytest.raises(ConfigurationError, match=r"job.toml: training.lr: "):
        parse_job('[data]\ndataset = "digits"\n[training]\nlr = 0\n')
    with pytest.raises(ConfigurationError, match=r"job.toml: secagg.oops: unknown key"):
        parse_job('[secagg]\noops = 1\n')
    job = parse_job('[job]\nrounds = 2\nstrategy = "fedadam"\n[data]\ndataset = "digits"\n'
                    '[model]\nkind = "mlp"\nhidden = 8\n')
    assert (job.rounds, job.strategy, job.training.model) == (2, StrategyName.FEDADAM, "mlp")


def _job(**kw) -> Job:
    base = dict(name="t", rounds=2, dataset="breast_cancer", seed=SEED, stage_timeout=10.0,
                join_timeout=20.0, poll_hold=1.0, mode=Mechanism.DISTRIBUTED,
                noise_multiplier=0.5, clip_norm=2.0, modulus_bits=32,
                training=LocalTraining(model="logistic", epochs=1, lr=0.1, batch_size=32))
    base.update(kw)
    return Job(**base)


def _initial(data) -> np.ndarray:
    model = make_model(ModelKind.LOGISTIC, input_shape=data.feature_shape,
                       n_outputs=data.n_outputs, seed=SEED + 10_007)
    return get_flat_params(model)


def _worker(pki, c: int, tmp: Path, n: int, policy: SitePolicy | None = None) -> SiteWorker:
    kit = pki.sites[c]
    local = load_site_data(f"builtin:breast_cancer:{c}/{n}", seed=SEED)
    ledger = None if policy is not None else SiteLedger(
        tmp / f"{kit.name}.sqlite", site_id=kit.name, budget=Budget(epsilon=1e6, delta=1e-5))

    def site_for(t: LocalTraining) -> Site:
        model = make_model(ModelKind(t.model), input_shape=local.feature_shape,
                           n_outputs=local.n_outputs, hidden=t.hidden, seed=SEED)
        return Site(kit.name, data=local.data, model=model, ledger=ledger, seed=SEED + 31 * c,
                    policy=policy or SitePolicy(min_participants=2,
                                                privacy_budget=ledger.budget))

    directory = {k.name: k.identity.public_key() for k in pki.sites.values() if k.client_id <= n}
    return SiteWorker(kit.name, site_for, kit.identity, directory)


def _agent(pki, url, c, worker) -> SiteAgent:
    kit = pki.sites[c]
    tls = site_tls_context(certfile=kit.tls.cert, keyfile=kit.tls.key, cafile=pki.ca)
    return SiteAgent(base_url=url, tls=tls, identity=kit.identity, client_id=c,
                     rounds=worker.begin, poll_wait=1.0, run_seconds=60.0, max_polls=2000)


def _run(pki, tmp, job, n=3, policies=None, wrap=None, store=None):
    running = start_service(pki, poll_hold=1.0)
    try:
        sites = {c: pki.sites[c].name for c in range(1, n + 1)}
        data = load_site_data(f"builtin:breast_cancer:1/{n}", seed=SEED)
        runner = JobRunner(job, running.service, sites=sites,
                           directory={c: pki.sites[c].identity.public_key() for c in sites},
                           initial=_initial(data), store=store)
        workers = {c: _worker(pki, c, tmp, n, (policies or {}).get(c)) for c in sites}
        agents = {c: _agent(pki, running.url, c, w) for c, w in workers.items()}
        for c, make in (wrap or {}).items():
            agents[c].rounds = make(workers[c].begin)
        reports = {}

        def go(c):
            try:
                reports[c] = agents[c].run()
            except Crash:
                pass  # the site "died": no report
            finally:
                agents[c].close()

        threads = [threading.Thread(target=go, args=(c,), daemon=True) for c in agents]
        for t in threads:
            t.start()
        result = runner.run()
        for t in threads:
            t.join(30)
        return result, workers, agents, reports, running
    finally:
        running.stop()


def test_a_deployed_job_trains_real_updates_and_settles_every_ledger(pki, tmp_path) -> None:
    job = _job()
    result, workers, agents, reports, running = _run(pki, tmp_path, job)
    assert result.stopped is None
    assert [m.participants for m in result.rounds] == [3, 3], (result.rounds, reports)
    assert {c: r.outcome for c, r in reports.items()} == {c: "job_done" for c in reports}
    initial = _initial(load_site_data("builtin:breast_cancer:1/3", seed=SEED))
    assert not np.allclose(result.final_params, initial)
    for c, w in workers.items():
        assert [e.included for e in w.log] == [True, True]
        assert w.spent() == pytest.approx(w.site.ledger.spent()) and w.spent() > 0
        assert [how for _, how in agents[c].rounds_done] == ["done", "done"]
    assert result.epsilon is not None and result.epsilon > 0


def _scanned_run(pki, tmp_path, monkeypatch):
    """One round over TLS with everything the coordinator half was given recorded, and each
    site's round and update kept on the sites' side, for tests/test_round_split.py's scan."""
    from clients.site import Site as SiteClass
    from coordinator import job as job_module
    from secagg import Stage

    received, rounds, updates, announcements = [], {}, {}, []
    receive, begin, fit = (job_module.AggregationHost.receive, SiteWorker.begin,
                           SiteClass.fit)

    def spy_receive(self, sender, data):
        stage = self.stage
        if isinstance(stage, Stage):
            received.append((stage, self._names[sender], data))
            announcements.append(self._agg.announcement)
        return receive(self, sender, data)

    def spy_begin(self, round_id, body):
        p = begin(self, round_id, body)
        rounds[self.name] = p.round
        return p

    def spy_fit(self, *a, **kw):
        update = fit(self, *a, **kw)
        updates[self.site_id] = (update.delta, 1.0)
        return update

    monkeypatch.setattr(job_module.AggregationHost, "receive", spy_receive)
    monkeypatch.setattr(SiteWorker, "begin", spy_begin)
    monkeypatch.setattr(SiteClass, "fit", spy_fit)
    result, *_ = _run(pki, tmp_path, _job(rounds=1))
    return result, received, rounds, announcements[0], updates


def test_the_coordinator_only_ever_received_masked_vectors(pki, tmp_path, monkeypatch) -> None:
    """Scan everything the coordinator half was given over the network (the split's scan)."""
    from test_round_split import scan

    result, received, rounds, announcement, updates = _scanned_run(pki, tmp_path, monkeypatch)
    assert result.rounds[0].participants == 3
    assert sum(1 for st, _, _ in received if st.value == "masked_input") == 3
    assert scan(received, rounds, announcement, updates) == []


def test_the_network_scan_catches_a_site_that_sends_its_encoding_unmasked(
        pki, tmp_path, monkeypatch) -> None:
    import clients.round as site_round_module
    from test_round_split import scan

    monkeypatch.setattr(site_round_module, "_PLANT_SEND_UNMASKED", True)
    _, received, rounds, announcement, updates = _scanned_run(pki, tmp_path, monkeypatch)
    findings = scan(received, rounds, announcement, updates)
    assert len([f for f in findings if "is its encoding" in f]) == 3


def test_a_site_whose_policy_forbids_the_strategy_refuses_before_computing(pki,
                                                                          tmp_path) -> None:
    policy = SitePolicy(min_participants=2, allowed_strategies=frozenset({StrategyName.FEDADAM}))
    job = _job(rounds=1, stage_timeout=3.0, min_sites=4)
    result, workers, agents, reports, _ = _run(pki, tmp_path, job, n=4, policies={3: policy})
    assert reports[3].outcome == "refused" and "PolicyViolation" in reports[3].detail
    assert workers[3].log == []  # it judged and refused; it never trained
    assert result.rounds[0].dropouts == ["site-3"]
    assert result.rounds[0].participants == 3  # the round completed without it


def test_a_site_dying_mid_round_is_a_dropout_and_the_job_goes_on(pki, tmp_path) -> None:
    job = _job(rounds=2, stage_timeout=2.0, min_sites=4)
    result, workers, agents, reports, _ = _run(pki, tmp_path, job, n=4,
                                               wrap={4: dies_at_masked_input})
    first, second = result.rounds
    assert (first.participants, first.planned, first.dropouts) == (3, 4, ["site-4"])
    assert (second.participants, second.planned, second.dropouts) == (3, 3, [])
    assert 4 not in reports  # its thread died
    # its reservation stays at the worst case (an unknown outcome is charged in full)
    assert [e.included for e in workers[4].log] == [None]
    for c in (1, 2, 3):
        assert [e.included for e in workers[c].log] == [True, True]


# A corrupt site: it advertises its keys every round, then never opens its graph nonce (the
# reveal step gets nothing from it), and keeps polling for the next round.
_withholds_its_nonce = scripted(lambda n, inner, data: None if n == 1 else inner.on_message(data))


@pytest.mark.parametrize("planted", [False, True])
def test_a_site_that_withholds_its_nonce_sits_out_and_the_job_goes_on(pki, tmp_path,
                                                                      monkeypatch,
                                                                      planted) -> None:
    """A withheld graph nonce aborts its round (by design: the graph's seed needs every
    roster member's nonce, or the server could grind it). The site silent where the round
    aborted sits out the next round, then two, ...: with one corrupt site of four, every other
    round completes over the three honest ones, and after its second abort it sits out two.
    Planted: a runner that benches nobody. The site is then asked again as soon as it has
    polled since its last abort (the job's rule for dropouts), so it aborts at least every
    other round: three of five."""
    import coordinator.job as job_module

    monkeypatch.setattr(job_module, "_PLANT_NO_BENCH", planted)
    job = _job(rounds=5, stage_timeout=2.0, min_sites=4)
    result, *_ = _run(pki, tmp_path, job, n=4, wrap={4: _withholds_its_nonce})
    aborted = [m.aborted for m in result.rounds]
    if planted:
        assert sum(aborted) >= 3, aborted
    else:
        assert aborted == [True, False, True, False, False], result.rounds
        assert [m.planned for m in result.rounds] == [4, 3, 4, 3, 3]
        assert [m.participants for m in result.rounds] == [0, 3, 0, 3, 3]


def test_round_work_round_trips() -> None:
    from coordinator.aggregation import AggregationRound
    from coordinator.sum_config import SecureSumConfig
    from cohort.contract import RoundRequest

    req = RoundRequest(round_number=1, strategy=StrategyName.FEDAVG, n_participants=3,
                       secure_aggregation=True, release_id=b"\x01" * 32)
    agg = AggregationRound(SecureSumConfig(mode=Mechanism.NONE, clip_norm=1.0, max_weight=10.0),
                           request=req, cohort=["a", "b", "c"], dim=5, seed=1)
    params = np.arange(5, dtype=np.float64) / 3
    work = RoundWork(announcement=agg.announcement, params=params, training=LocalTraining(),
                     seed=3)
    back = RoundWork.from_bytes(work.to_bytes())
    assert np.array_equal(back.params, params) and back.announcement == agg.announcement
    assert back.seed == 3 and back.training == work.training


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("pki"), 4)


def test_the_deployed_job_and_the_simulation_with_one_seed_make_the_same_model(pki,
                                                                             tmp_path) -> None:
    """One code path: three sites over TLS and the in-process simulation, same test-only seed,
    the same final global model (to float tolerance)."""
    from clients import DatasetName, ModelKind as MK, PartitionScheme
    from coordinator.simulation import Simulation, SimulationConfig
    from clients.training import Optimizer

    result, *_ = _run(pki, tmp_path, _job())
    config = SimulationConfig(dataset=DatasetName.BREAST_CANCER, sites=3, rounds=2,
                              partition=PartitionScheme.IID, models=(MK.LOGISTIC,),
                              dp=Mechanism.DISTRIBUTED, noise_multiplier=0.5, clip=2.0,
                              local_epochs=1, lr=0.1, optimizer=Optimizer.SGD, batch_size=32,
                              modulus_bits=32, baselines=False, seed=SEED)
    sim = Simulation(config, work_dir=tmp_path / "sim")
    sim.run()
    simulated = get_flat_params(sim.consortium.global_model)
    np.testing.assert_allclose(result.final_params, simulated, rtol=1e-6, atol=1e-9)


def _late_at_unmask(delay: float):
    """A site that answers the unmask request only after its step has closed: its masked input
    is in the sum, but it drops out before it is told the outcome."""
    def wrap(begin):
        def make(round_id, body):
            inner = begin(round_id, body)

            class Late:
                calls = 0

                def __getattr__(self, name):  # finished, wants_outcome: the real participant's
                    return getattr(inner, name)

                def start(self):
                    return inner.start()

                def on_message(self, data):
                    Late.calls += 1
                    reply = inner.on_message(data)
                    if Late.calls == 4:  # the unmask request
                        time.sleep(delay)
                    return reply

            return Late()

        return make

    return wrap


def test_a_site_that_drops_after_its_input_left_fetches_the_outcome_and_settles(
        pki, tmp_path) -> None:
    job = _job(rounds=1, stage_timeout=2.0, min_sites=4)
    result, workers, agents, reports, _ = _run(pki, tmp_path, job, n=4,
                                               wrap={4: _late_at_unmask(3.0)})
    [first] = result.rounds
    assert (first.participants, first.dropouts) == (4, ["site-4"]), result.rounds
    assert [how for _, how in agents[4].rounds_done] == ["dropped"]
    # Its input is in the sum and it was not told so: it asked, and its ledger is exact.
    assert [e.included for e in workers[4].log] == [True]
    [entry] = workers[4].site.ledger.entries()
    assert entry.status is ReleaseStatus.SETTLED
    [peer] = workers[1].site.ledger.entries()
    assert entry.event == peer.event


def test_the_outcome_of_a_round_is_refused_to_a_site_outside_it(pki, tmp_path) -> None:
    running = start_service(pki, poll_hold=1.0)
    try:
        config = round_config(3, 4)
        _, session = open_secagg_round(running, config)
        kit = pki.sites[4]
        tls = site_tls_context(certfile=kit.tls.cert, keyfile=kit.tls.key, cafile=pki.ca)
        with httpx.Client(base_url=running.url, verify=tls) as http:
            r = http.get(f"/v1/rounds/{config.round_id.hex()}/outcome?wait=0")
            assert (r.status_code, r.json()["error"]) == (403, "NotEnrolled")
            r = http.get(f"/v1/rounds/{bytes(16).hex()}/outcome?wait=0")
            assert (r.status_code, r.json()["error"]) == (409, "NoRound")
        assert session.snapshot()["messages"] == 0
    finally:
        running.stop()


def test_a_job_is_malicious_server_mode_unless_it_says_otherwise() -> None:
    assert parse_job('[data]\ndataset = "digits"\n').malicious is True
    assert parse_job('[data]\ndataset = "digits"\n[secagg]\nmalicious = false\n').malicious \
        is False
    with pytest.raises(ConfigurationError, match=r"job.toml: secagg.malicious: wrong type"):
        parse_job('[data]\ndataset = "digits"\n[secagg]\nmalicious = "yes"\n')
    with pytest.raises(ConfigurationError, match=r"job.toml: secagg.threshold: wrong type"):
        parse_job('[data]\ndataset = "digits"\n[secagg]\nthreshold = true\n')


@pytest.mark.parametrize("malicious", [True, False])
def test_a_deployed_round_in_either_server_model_sums_every_site(pki, tmp_path,
                                                                 malicious) -> None:
    seen = []

    def spy(begin):
        def make(round_id, body):
            seen.append(RoundWork.from_bytes(body).announcement.malicious)
            return begin(round_id, body)
        return make

    job = _job(rounds=1, malicious=malicious)
    result, workers, agents, reports, _ = _run(pki, tmp_path, job, wrap={1: spy})
    assert seen == [malicious]
    assert [m.participants for m in result.rounds] == [3]
    for w in workers.values():
        [entry] = w.site.ledger.entries()
        assert entry.status is ReleaseStatus.SETTLED and w.log[0].included is True


def test_cohort_status_reads_the_state_file_of_a_job(pki, tmp_path) -> None:
    """The status of a finished job from its state file: every round, who was summed and who
    dropped, and each site's epsilon as the coordinator composes the rounds that summed it."""
    from coordinator._status_cli import job_status
    from coordinator.service.store import CoordinatorStore

    state = tmp_path / "state.sqlite"
    store = CoordinatorStore(state)
    store.begin_job('[job]\nname = "t"\nrounds = 2\n[data]\ndataset = "breast_cancer"\n'
                    '[privacy]\nmode = "distributed"\nnoise_multiplier = 0.5\n')
    job = _job(rounds=2, stage_timeout=2.0, min_sites=4)
    result, workers, agents, reports, _ = _run(pki, tmp_path, job, n=4, store=store,
                                               wrap={4: dies_at_masked_input})
    store.close()
    report = job_status(state)
    assert [r["state"] for r in report["rounds"]] == ["done", "done"]
    first, second = report["rounds"]
    assert first["dropouts"] == ["site-4"] and sorted(first["summed"]) == [
        "site-1", "site-2", "site-3"]
    assert second["cohort"] == ["site-1", "site-2", "site-3"]
    eps = report["epsilon_by_site"]
    assert set(eps) == {"site-1", "site-2", "site-3"}  # site-4 was never summed
    assert eps["site-1"] == pytest.approx(result.epsilon)
    for c in (1, 2, 3):  # the coordinator's account is what each site's own ledger says
        assert workers[c].spent() == pytest.approx(eps[f"site-{c}"])
