"""Example-level DP-SGD at the site: Opacus clipping and noise really happen, every catalogue
model trains under it, the event is the one planned, and a site's policy refuses before training.

Each privacy check is shown to fail on a planted defect (``privacy.dpsgd._TEST_ONLY_DEFECTS``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from clients import (
    DatasetName,
    DPSGDConfig,
    DPSGDRule,
    ModelKind,
    Optimizer,
    Part,
    PartitionScheme,
    PersonalMode,
    PolicyRule,
    RoundRequest,
    Site,
    SitePolicy,
    StrategyName,
    get_flat_params,
    load_dataset,
    make_model,
    make_site_data,
    split_dataset,
    train_local,
)
from privacy import GaussianEvent, dpsgd
from privacy.dpsgd import _Defect, dpsgd_event, private_training
from clients import PolicyViolation
from secagg.errors import ConfigurationError

BC = split_dataset(load_dataset(DatasetName.BREAST_CANCER), seed=0)
DIGITS = split_dataset(load_dataset(DatasetName.DIGITS), seed=0)
SITES = make_site_data(BC, n_sites=3, scheme=PartitionScheme.IID, seed=0)
DP = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0)


def _mlp(seed: int = 0) -> torch.nn.Module:
    return make_model(ModelKind.MLP, input_shape=BC.feature_shape, n_outputs=2, hidden=8,
                      seed=seed)


def _request(**changes: object) -> RoundRequest:
    fields: dict[str, object] = {"round_number": 1, "strategy": StrategyName.FEDAVG,
                                 "n_participants": 5, "secure_aggregation": True}
    fields.update(changes)
    return RoundRequest(**fields)  # type: ignore[arg-type]


def _site(policy: SitePolicy | None = None, seed: int = 1) -> Site:
    return Site("h1", data=SITES[0], model=_mlp(), policy=policy, seed=seed)


# -- Opacus at the privacy layer: clipping and noise ------------------------------------------
N, LR, CLIP = 24, 0.5, 0.05  # one full batch (q = 1): one deterministic step


def _one_step(model: torch.nn.Module, *, z: float, noise_seed: int = 7) -> np.ndarray:
    X = torch.from_numpy(np.array(BC.pool.X[:N], dtype=np.float32))
    y = torch.from_numpy(np.array(BC.pool.y[:N], dtype=np.int64))
    loader = DataLoader(TensorDataset(X, y), batch_size=N, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    with private_training(model, opt, loader, noise_multiplier=z, max_grad_norm=CLIP,
                          noise_generator=torch.Generator().manual_seed(noise_seed)) as s:
        for features, labels in s.loader:
            s.optimizer.zero_grad()
            F.cross_entropy(s.model(features), labels).backward()
            s.step()
    return get_flat_params(model)


def _clipped_step(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """What one DP-SGD step with z = 0 must give, computed here without Opacus: per-example
    gradients one record at a time, each scaled to norm <= CLIP, averaged over N."""
    X = torch.from_numpy(np.array(BC.pool.X[:N], dtype=np.float32))
    y = torch.from_numpy(np.array(BC.pool.y[:N], dtype=np.int64))
    grads = []
    for i in range(N):
        model.zero_grad()
        F.cross_entropy(model(X[i:i + 1]), y[i:i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().numpy())
    per_example = np.stack(grads)
    norms = np.linalg.norm(per_example, axis=1)
    clipped = per_example * np.minimum(1.0, CLIP / norms)[:, None]
    return get_flat_params(model) - LR * clipped.sum(axis=0) / N, norms


def _assert_clipped(after: np.ndarray, expected: np.ndarray) -> None:
    assert np.allclose(after, expected, atol=1e-6), "the step is not the clipped mean"


def _assert_noise_calibrated(noisy: np.ndarray, clean: np.ndarray, z: float) -> None:
    # noisy − clean = −LR · N(0, (z·CLIP)²) / N per coordinate (≈340 of them).
    sigma = np.std(noisy - clean) * N / LR
    assert abs(sigma / (z * CLIP) - 1) < 0.15, f"noise std {sigma:.4g}, expected {z * CLIP:.4g}"


def test_each_example_is_clipped_to_max_grad_norm() -> None:
    model = _mlp()
    expected, norms = _clipped_step(copy.deepcopy(model))
    assert (norms > 4 * CLIP).all()  # clipping binds for every record here
    _assert_clipped(_one_step(model, z=0.0), expected)


def test_clipping_check_catches_unclipped_gradients(monkeypatch) -> None:
    monkeypatch.setattr(dpsgd, "_TEST_ONLY_DEFECTS", frozenset({_Defect.NO_CLIPPING}))
    model = _mlp()
    expected, _ = _clipped_step(copy.deepcopy(model))
    with pytest.raises(AssertionError):
        _assert_clipped(_one_step(model, z=0.0), expected)


def test_noise_is_gaussian_with_std_z_times_clip() -> None:
    clean = _one_step(_mlp(), z=0.0)
    noisy = _one_step(_mlp(), z=2.0)
    assert not np.array_equal(clean, noisy)  # z = 0 and z > 0 train differently
    _assert_noise_calibrated(noisy, clean, 2.0)
    assert not np.array_equal(noisy, _one_step(_mlp(), z=2.0, noise_seed=8))


def test_noise_check_catches_noise_switched_off(monkeypatch) -> None:
    clean = _one_step(_mlp(), z=0.0)
    monkeypatch.setattr(dpsgd, "_TEST_ONLY_DEFECTS", frozenset({_Defect.NOISE_OFF}))
    with pytest.raises(AssertionError):
        _assert_noise_calibrated(_one_step(_mlp(), z=2.0), clean, 2.0)


def test_per_example_gradients_never_leave_the_model_and_it_is_plain_again() -> None:
    model = _mlp()
    _one_step(model, z=1.0)
    assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    assert not model._forward_hooks and not model.body[2]._forward_hooks
    _one_step(model, z=1.0)  # hooks were removed: a second session wraps it again


# -- DP-SGD in the clients' trainers ----------------------------------------------------------
@pytest.mark.parametrize("kind, splits", [(ModelKind.LOGISTIC, BC), (ModelKind.MLP, BC),
                                          (ModelKind.CNN, BC), (ModelKind.CNN, DIGITS)])
def test_every_catalogue_model_trains_under_dp_sgd(kind: ModelKind, splits) -> None:
    X, y = splits.pool.X[:90], splits.pool.y[:90]
    model = make_model(kind, input_shape=splits.feature_shape, n_outputs=splits.n_outputs,
                       hidden=8, seed=0)
    before = get_flat_params(model)
    stats = train_local(model, X, y, epochs=2, lr=0.1, batch_size=32, seed=3, dp_sgd=DP)
    after = get_flat_params(model)
    assert np.isfinite(after).all() and not np.array_equal(before, after)
    assert stats.dp_event == dpsgd_event(n_samples=90, batch_size=32, epochs=2,
                                         noise_multiplier=1.0)
    assert stats.dp_event == GaussianEvent(noise_multiplier=1.0, sample_rate=1 / 3, steps=6)
    assert stats.steps == 6


def test_dp_sgd_is_reproducible_from_the_seed_and_differs_without_it() -> None:
    runs = []
    for seed in (3, 3, 4):
        model = _mlp()
        train_local(model, BC.pool.X[:64], BC.pool.y[:64], epochs=1, lr=0.1, seed=seed,
                    dp_sgd=DP)
        runs.append(get_flat_params(model))
    plain = _mlp()
    train_local(plain, BC.pool.X[:64], BC.pool.y[:64], epochs=1, lr=0.1, seed=3)
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    assert not np.allclose(runs[0], get_flat_params(plain))
    state = torch.random.get_rng_state()
    train_local(_mlp(), BC.pool.X[:64], BC.pool.y[:64], epochs=1, lr=0.1, seed=3, dp_sgd=DP)
    assert torch.equal(state, torch.random.get_rng_state())  # torch's global RNG untouched


def test_fedprox_pull_survives_dp_sgd() -> None:
    flats = []
    for mu in (0.0, 5.0):
        model = _mlp()
        train_local(model, BC.pool.X[:64], BC.pool.y[:64], epochs=2, lr=0.1, seed=3,
                    prox_mu=mu, optimizer=Optimizer.ADAM, dp_sgd=DP)
        flats.append(get_flat_params(model))
    start = get_flat_params(_mlp())
    # Same samples and noise; the pull toward the start only shortens the way travelled.
    assert np.linalg.norm(flats[1] - start) < np.linalg.norm(flats[0] - start)


# -- the site ---------------------------------------------------------------------------------
def test_site_fit_with_dp_sgd_reports_the_planned_event() -> None:
    site = _site()
    flat = get_flat_params(site.model)
    request = _request(dp_sgd=DP)
    planned = site.check_fit(flat, request=request, epochs=2, lr=0.1, batch_size=16)
    update = site.fit(flat, request=request, epochs=2, lr=0.1, batch_size=16)
    batches = -(-site.n_train // 16)
    assert update.example_event == planned == GaussianEvent(
        noise_multiplier=1.0, sample_rate=1 / batches, steps=2 * batches)
    assert site.fit(flat, request=_request(), epochs=1, lr=0.1).example_event is None


def test_fedrep_charges_both_phases() -> None:
    site = _site()
    body = get_flat_params(site.model, part=Part.BODY)
    request = _request(strategy=StrategyName.FEDREP, dp_sgd=DP)
    update = site.fit(body, request=request, epochs=2, lr=0.1, batch_size=16, part=Part.BODY,
                      personal=PersonalMode.FEDREP, head_epochs=3)
    batches = -(-site.n_train // 16)
    assert update.example_event.steps == (2 + 3) * batches


def test_site_noise_changes_training(monkeypatch) -> None:
    runs = []
    for defects in (frozenset(), frozenset({_Defect.NOISE_OFF})):
        monkeypatch.setattr(dpsgd, "_TEST_ONLY_DEFECTS", defects)
        site = _site()
        runs.append(site.fit(get_flat_params(site.model), request=_request(dp_sgd=DP),
                             epochs=1, lr=0.1).delta)
    assert not np.allclose(runs[0], runs[1])


@pytest.mark.parametrize("policy, request_changes, rule", [
    (SitePolicy(dp_sgd=DPSGDRule.REFUSE), {"dp_sgd": DP}, PolicyRule.DP_SGD_REFUSED),
    (SitePolicy(dp_sgd=DPSGDRule.REQUIRE), {}, PolicyRule.DP_SGD_REQUIRED),
])
def test_site_policy_on_dp_sgd_refuses_before_training(policy: SitePolicy, request_changes,
                                                       rule: PolicyRule) -> None:
    site = _site(policy)
    state = {k: t.clone() for k, t in site.model.state_dict().items()}
    request = _request(**request_changes)
    with pytest.raises(PolicyViolation) as info:
        site.fit(get_flat_params(site.model) + 1.0, request=request, epochs=1, lr=0.1)
    assert info.value.rule is rule
    assert all(torch.equal(t, site.model.state_dict()[k]) for k, t in state.items())
    assert site.state_dict()["last_round"] is None
    # The other way round the same policies agree.
    other = {"dp_sgd": DP} if not request_changes else {}
    site.fit(get_flat_params(site.model), request=_request(**other), epochs=1, lr=0.1)


def test_dp_sgd_vocabulary_is_typed() -> None:
    with pytest.raises(ConfigurationError):
        DPSGDConfig(noise_multiplier=0.0, max_grad_norm=1.0)  # no noise is no DP-SGD
    with pytest.raises(ConfigurationError):
        DPSGDConfig(noise_multiplier=1.0, max_grad_norm=float("inf"))
    with pytest.raises(ConfigurationError):
        _request(dp_sgd={"noise_multiplier": 1.0, "max_grad_norm": 1.0})
    from clients import RoundTask
    with pytest.raises(ConfigurationError):
        _request(dp_sgd=DP, task=RoundTask.EVALUATE)
    with pytest.raises(ConfigurationError):
        SitePolicy(dp_sgd="refuse")  # type: ignore[arg-type]


def test_example_cap_refuses_before_training_and_leaves_both_tracks_alone(tmp_path) -> None:
    from privacy import Budget, BudgetExceeded, LedgerTrack, SiteLedger

    path = tmp_path / "l.sqlite"
    site_track = SiteLedger(path, site_id="h1", budget=Budget(epsilon=50.0, delta=1e-5))
    example = SiteLedger(path, site_id="h1", track=LedgerTrack.EXAMPLE,
                         budget=Budget(epsilon=0.2, delta=1e-5))
    site = Site("h1", data=SITES[0], model=_mlp(), ledger=site_track, example_ledger=example,
                seed=1)
    assert site.policy.example_budget == example.budget  # the cap is the example track's
    state = {k: t.clone() for k, t in site.model.state_dict().items()}
    request = _request(dp_sgd=DP, privacy_charge=GaussianEvent(noise_multiplier=5.0))
    for call in (site.check_fit, site.fit):
        with pytest.raises(BudgetExceeded, match="example"):
            call(get_flat_params(site.model) + 1.0, request=request, epochs=1, lr=0.1)
    assert all(torch.equal(t, site.model.state_dict()[k]) for k, t in state.items())
    assert example.entries() == [] and site_track.entries() == []
    with pytest.raises(PolicyViolation):  # a capped site trains only with DP-SGD
        site.fit(get_flat_params(site.model), request=_request(
            privacy_charge=GaussianEvent(noise_multiplier=5.0)), epochs=1, lr=0.1)
    with pytest.raises(ConfigurationError):  # tracks are not interchangeable
        Site("h1", data=SITES[0], model=_mlp(), ledger=example)
    with pytest.raises(ConfigurationError):
        Site("h1", data=SITES[0], model=_mlp(), example_ledger=site_track)
