"""The same test seed gives the same final model: pins of tiny seeded runs, taken before the
round was split into a site-side and a coordinator-side half (issue 9), so the split is shown
to be one code path with the old one, bit for bit (the sha256 of the final parameters).

Each case exercises a different part of the round: plain FedAvg over the secure sum,
distributed DP with simulated dropouts (an aborted round, then rounds with survivors only),
central DP (the coordinator's ring noise) and distillation (predictions, not parameters).

The digests depend on the numerical libraries as well as on Cohort (a BLAS or numpy release may
change the last bits of a float). They were re-taken on 2026-12-01 (numpy 2.4.6, scipy 1.17.1,
torch 2.13.0, scikit-learn 1.9.1) by running the pre-split commit 677934c, whose code gives the
same digests as the split code in that environment. When a library upgrade moves them, re-take
them the same way (``git worktree add /tmp/pin 677934c`` and run this file there): never from the
code under test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from clients import StrategyName, get_flat_params
from coordinator.simulation import Simulation, SimulationConfig
from privacy import Mechanism

CASES = {
    "fedavg": (dict(sites=3, rounds=2, seed=3),
               0.8837209302325582, [3, 3], "56e79d4f25060871"),
    "distributed_dropout": (dict(sites=6, rounds=3, seed=4, dp=Mechanism.DISTRIBUTED,
                                 noise_multiplier=0.5, dropout_rate=0.2, modulus_bits=24),
                            0.5465116279069767, [0, 4, 5], "d875e2ea13116e36"),
    "central": (dict(sites=3, rounds=2, seed=5, dp=Mechanism.CENTRAL_GAUSSIAN, noise_multiplier=1.0,
                     modulus_bits=20),
                0.7209302325581395, [3, 3], "c342bc4613521d91"),
    "distill": (dict(sites=3, rounds=1, seed=6, algorithm=StrategyName.DISTILLATION,
                     distill_epochs=1),
                0.8604651162790699, [3], "0ae99879143f2ef0"),
}


def _digest(sim: Simulation) -> str:
    if sim.consortium.global_model is not None:
        flat = get_flat_params(sim.consortium.global_model)
    else:
        flat = np.concatenate([get_flat_params(s.model) for s in sim.consortium.sites])
    return hashlib.sha256(np.ascontiguousarray(flat, dtype=np.float64).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(CASES))
def test_seeded_run_gives_the_pinned_model(name: str, tmp_path: Path) -> None:
    kwargs, accuracy, participants, digest = CASES[name]
    sim = Simulation(SimulationConfig(local_epochs=1, baselines=False, **kwargs),
                     work_dir=tmp_path)
    result = sim.run()
    assert [r.participants for r in result.rounds] == participants
    assert result.final_accuracy == accuracy
    assert _digest(sim) == digest
