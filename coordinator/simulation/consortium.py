"""Building a simulated consortium: the data split, one :class:`clients.Site` per hospital with
its own model, policy and (in a DP run) ledger, and the coordinator's starting model."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from clients import (
    DataSplits,
    DPSGDRule,
    Site,
    SiteData,
    SitePolicy,
    load_backbone,
    load_dataset,
    make_model,
    make_site_data,
    pretrain_backbone,
    split_dataset,
)
from privacy import Budget, LedgerTrack, Mechanism, SiteLedger

from .config import SimulationConfig, Transfer

__all__ = ["Consortium", "build_consortium"]


@dataclass
class Consortium:
    splits: DataSplits
    site_data: list[SiteData]
    sites: list[Site]  # the sites built here (all of them, or a Ray actor's share, or none)
    global_model: nn.Module | None  # None for distillation: there is no shared model
    backbone: Path | None
    site_ids: list[str] = field(default_factory=list)  # every site of the consortium, in order

    @property
    def n_train(self) -> np.ndarray:
        """Every site's number of training samples (public to the simulation's driver)."""
        return np.array([len(d.train) for d in self.site_data])


def site_id(index: int) -> str:
    return f"hospital-{index + 1:02d}"


def _fresh_model(config: SimulationConfig, splits: DataSplits, index: int, seed: int) -> nn.Module:
    return make_model(config.model_for(index), input_shape=splits.feature_shape,
                      n_outputs=splits.n_outputs, hidden=config.hidden, seed=seed)


def build_consortium(config: SimulationConfig, *, work_dir: Path | None = None,
                     hosted: Sequence[int] | None = None,
                     fresh_ledgers: bool = True) -> Consortium:
    """Everything a run starts from, deterministic given ``config.seed``. ``hosted`` (indices)
    builds only those sites (a Ray actor's share; ``()`` for a driver that hosts none), each
    exactly as a full build would; ``fresh_ledgers`` False keeps the ledger file (the driver
    cleared it before the actors open it)."""
    dataset = load_dataset(config.dataset, label_column=config.label_column)
    splits = split_dataset(dataset, seed=config.seed)
    site_data = make_site_data(splits, n_sites=config.sites, scheme=config.partition,
                               alpha=config.alpha, seed=config.seed,
                               min_samples=config.min_site_samples)
    work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="cohort-"))
    backbone = None
    if config.transfer is not Transfer.NONE:
        backbone = pretrain_backbone(config.models[0], splits, path=work_dir / "backbone.pt",
                                     epochs=config.pretrain_epochs, seed=config.seed,
                                     hidden=config.hidden)
    freeze = config.transfer is Transfer.FROZEN
    # Every site of a shared-model run starts from the same weights (the coordinator's model).
    shared_seed = config.seed + 10_007
    global_model = None
    if not config.distillation:
        global_model = _fresh_model(config, splits, 0, shared_seed)
        if backbone is not None:
            load_backbone(global_model, backbone, freeze=freeze)
    # A simulated consortium is new every run: its sites' ledgers start empty.
    ledger_path = work_dir / "ledgers.sqlite"
    if config.dp is not Mechanism.NONE or config.dp_sgd is not None:
        work_dir.mkdir(parents=True, exist_ok=True)  # every DP run keeps its ledgers here
    if fresh_ledgers:
        for stale in work_dir.glob("ledgers.sqlite*"):
            stale.unlink()
    sites = []
    chosen = range(len(site_data)) if hosted is None else hosted
    for i in chosen:
        data = site_data[i]
        site_id_ = site_id(i)
        seed = shared_seed if global_model is not None else config.seed + 20_011 * (i + 1)
        model = _fresh_model(config, splits, i, seed)
        if backbone is not None:
            load_backbone(model, backbone, freeze=freeze)
        # Every DP run keeps its sites' ledgers, with a budget or without one (an infinite
        # budget records every release and refuses none): the audit recomputes every epsilon
        # the run prints from these events.
        ledger = None
        if config.dp is not Mechanism.NONE:
            cap = config.target_epsilon if config.target_epsilon is not None else math.inf
            ledger = SiteLedger(ledger_path, site_id=site_id_,
                                budget=Budget(epsilon=cap, delta=config.delta))
        example_ledger = None
        if config.dp_sgd is not None:  # the same file, its own track and budget
            cap = config.example_epsilon if config.example_epsilon is not None else math.inf
            example_ledger = SiteLedger(ledger_path, site_id=site_id_, track=LedgerTrack.EXAMPLE,
                                        budget=Budget(epsilon=cap, delta=config.example_delta))
        policy = SitePolicy(min_participants=2, require_secure_aggregation=config.secagg,
                            privacy_budget=None if ledger is None else ledger.budget,
                            dp_sgd=DPSGDRule.REQUIRE if config.dp_sgd else DPSGDRule.ALLOW,
                            example_budget=None if example_ledger is None
                            else example_ledger.budget)
        sites.append(Site(site_id_, data=data, model=model, policy=policy, ledger=ledger,
                          example_ledger=example_ledger, seed=config.seed + 31 * (i + 1)))
    return Consortium(splits=splits, site_data=site_data, sites=sites,
                      global_model=global_model, backbone=backbone,
                      site_ids=[site_id(i) for i in range(len(site_data))])


def site_sizes(consortium: Consortium) -> np.ndarray:
    return np.array([s.n_train for s in consortium.sites])
