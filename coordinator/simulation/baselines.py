"""Reference points for a run: each site training alone, and one model trained centrally on the
union of the sites' data (which no real consortium could do; it bounds what federation can
reach). Both train for as many epochs as a site does over the whole run."""

from __future__ import annotations

import numpy as np

from clients import evaluate, make_model, train_local

from .config import SimulationConfig
from .consortium import Consortium

__all__ = ["local_only_scores", "centralized_score"]


def _score(result) -> float:
    return float(result.accuracy if result.accuracy is not None else result.r2)


def local_only_scores(config: SimulationConfig, consortium: Consortium
                      ) -> tuple[dict[str, float], dict[str, float]]:
    """(score on the site's own test split, score on the global test split) per site."""
    splits = consortium.splits
    own, overall = {}, {}
    for i, (site, data) in enumerate(zip(consortium.sites, consortium.site_data)):
        model = make_model(config.model_for(i), input_shape=splits.feature_shape,
                           n_outputs=splits.n_outputs, hidden=config.hidden,
                           seed=config.seed + 40_009 + i)
        train_local(model, data.train.X, data.train.y, epochs=config.rounds * config.local_epochs,
                    lr=config.local_lr, optimizer=config.local_optimizer,
                    batch_size=config.batch_size, seed=config.seed + i)
        own[site.site_id] = _score(evaluate(model, data.test.X, data.test.y))
        overall[site.site_id] = _score(evaluate(model, splits.test.X, splits.test.y))
    return own, overall


def centralized_score(config: SimulationConfig, consortium: Consortium) -> float:
    splits = consortium.splits
    X = np.concatenate([np.asarray(d.train.X) for d in consortium.site_data])
    y = np.concatenate([np.asarray(d.train.y) for d in consortium.site_data])
    model = make_model(config.models[0], input_shape=splits.feature_shape,
                       n_outputs=splits.n_outputs, hidden=config.hidden, seed=config.seed + 50_021)
    train_local(model, X, y, epochs=config.rounds * config.local_epochs, lr=config.local_lr,
                optimizer=config.local_optimizer, batch_size=config.batch_size, seed=config.seed)
    return _score(evaluate(model, splits.test.X, splits.test.y))
