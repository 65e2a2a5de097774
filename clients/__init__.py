"""A hospital site: private data, models, local trainers, the site policy and the site itself.

Build order of a simulation: :func:`load_dataset` → :func:`split_dataset` (public reference,
global test, private pool; standardised on the public split) → :func:`make_site_data` (non-IID
partitions) → :func:`make_model` → :class:`Site`. The public API is ``__all__``; modules whose
names start with ``_`` are internal. What crosses to the coordinator (:class:`RoundRequest`,
:class:`RoundTask`, :class:`DPSGDConfig`, :class:`StrategyName`, :class:`NotEnrolled`) is the
contract's (:mod:`cohort.contract`), re-exported here for the sites' callers.
"""

from __future__ import annotations

from cohort.contract import DPSGDConfig, NotEnrolled, RoundRequest, RoundTask, StrategyName

from .data import Dataset, DatasetName, TaskKind, load_dataset
from .distill import DistillStats, distill, distillation_loss, predict_soft
from .models import BodyHeadModel, ModelKind, make_model
from .params import Part, get_flat_params, param_count, set_flat_params
from .partition import (
    PartitionScheme,
    SiteData,
    label_skew,
    make_site_data,
    partition,
    site_floor,
    split_local,
)
from .personal import PersonalMode, PersonalStats, frozen, train_part, train_personal
from .policy import DPSGDRule, PolicyRule, PolicyViolation, SitePolicy, check_policy
from .round import SiteRound
from .site import Site, Update
from .splits import DataSplits, LabelledArrays, Scaler, split_dataset
from .training import EvalResult, Optimizer, TrainStats, evaluate, train_local
from .transfer import BackboneInfo, load_backbone, pretrain_backbone

__all__ = [
    "BackboneInfo",
    "BodyHeadModel",
    "DPSGDConfig",
    "DPSGDRule",
    "DataSplits",
    "Dataset",
    "DatasetName",
    "DistillStats",
    "EvalResult",
    "LabelledArrays",
    "ModelKind",
    "NotEnrolled",
    "Optimizer",
    "Part",
    "PartitionScheme",
    "PersonalMode",
    "PersonalStats",
    "PolicyRule",
    "PolicyViolation",
    "RoundRequest",
    "RoundTask",
    "Scaler",
    "Site",
    "SiteData",
    "SiteRound",
    "SitePolicy",
    "StrategyName",
    "TaskKind",
    "TrainStats",
    "Update",
    "check_policy",
    "distill",
    "distillation_loss",
    "evaluate",
    "frozen",
    "get_flat_params",
    "label_skew",
    "load_backbone",
    "load_dataset",
    "make_model",
    "make_site_data",
    "param_count",
    "partition",
    "predict_soft",
    "pretrain_backbone",
    "set_flat_params",
    "split_dataset",
    "site_floor",
    "split_local",
    "train_local",
    "train_part",
    "train_personal",
]
