"""Transfer learning: pretrain a backbone on the public split, load it at a site.

:func:`pretrain_backbone` trains a fresh model on the public reference split (which every site
may see) and saves a checkpoint: ``torch.save`` of ``{"meta": …, "state_dict": …}`` in the
``.pt`` file, plus the same metadata as readable JSON next to it (``<name>.json``): format
version, model kind, input shape, outputs, hidden width and data set. :func:`load_backbone`
copies the checkpoint's *body* into a model — every tensor's name and shape checked before
anything is loaded — and with ``freeze=True`` turns the body's gradients off, so only the head
is trained and federated (the flat vector of :mod:`clients.params` then holds only the head).
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privacy import _validate as v
from secagg.errors import ConfigurationError, InvalidInput

from .models import ModelKind, make_model
from .splits import DataSplits
from .training import Optimizer, train_local

__all__ = ["BackboneInfo", "load_backbone", "pretrain_backbone"]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True, kw_only=True)
class BackboneInfo:
    """What a checkpoint says about the model it came from."""

    kind: ModelKind
    input_shape: tuple[int, ...]
    n_outputs: int
    hidden: int
    dataset: str


def pretrain_backbone(kind: ModelKind, dataset: DataSplits, *, path: str | os.PathLike[str],
                      epochs: int, seed: int, lr: float = 0.01, batch_size: int = 32,
                      hidden: int = 64, optimizer: Optimizer = Optimizer.ADAM) -> Path:
    """Train a ``kind`` model on ``dataset.public`` and save it at ``path``; return the path."""
    if not isinstance(dataset, DataSplits):
        raise ConfigurationError("dataset must be a clients.DataSplits")
    seed = v.integer(seed, "seed", minimum=0)
    model = make_model(kind, input_shape=dataset.feature_shape, n_outputs=dataset.n_outputs,
                       hidden=hidden, seed=seed)
    train_local(model, dataset.public.X, dataset.public.y, epochs=epochs, lr=lr,
                batch_size=batch_size, optimizer=optimizer, seed=seed)
    meta: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "kind": kind.value,
                            "input_shape": list(model.input_shape), "n_outputs": model.n_outputs,
                            "hidden": model.hidden, "dataset": dataset.name}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": model.state_dict()}, out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def _read(path: Path) -> tuple[BackboneInfo, dict[str, torch.Tensor]]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise InvalidInput(f"cannot read the checkpoint {path}: {exc}") from exc
    try:
        meta, state = blob["meta"], dict(blob["state_dict"])
        if meta["format"] != CHECKPOINT_FORMAT:
            raise InvalidInput(f"checkpoint format {meta['format']} is not {CHECKPOINT_FORMAT}")
        info = BackboneInfo(kind=ModelKind(meta["kind"]),
                            input_shape=tuple(int(d) for d in meta["input_shape"]),
                            n_outputs=int(meta["n_outputs"]), hidden=int(meta["hidden"]),
                            dataset=str(meta["dataset"]))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"{path} is not a Cohort backbone checkpoint: {exc}") from exc
    return info, state


def load_backbone(model: nn.Module, path: str | os.PathLike[str], *,
                  freeze: bool) -> BackboneInfo:
    """Load the checkpoint's body into ``model.body`` (shapes checked first; ``InvalidInput``
    on any mismatch, model untouched) and freeze it if ``freeze``."""
    if not isinstance(freeze, bool):
        raise ConfigurationError("freeze must be a bool")
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Module):
        raise ConfigurationError("the model has no 'body' submodule")
    info, state = _read(Path(path))
    wanted = body.state_dict()
    prefix = "body."
    given = {k[len(prefix):]: t for k, t in state.items() if k.startswith(prefix)}
    if set(given) != set(wanted):
        raise InvalidInput(f"the checkpoint's body ({info.kind.value}) has parameters "
                           f"{sorted(given)}, the model's {sorted(wanted)}")
    for name, tensor in wanted.items():
        if not isinstance(given[name], torch.Tensor) or given[name].shape != tensor.shape:
            raise InvalidInput(f"body tensor {name!r}: checkpoint shape "
                               f"{tuple(getattr(given[name], 'shape', ()))}, "
                               f"model shape {tuple(tensor.shape)}")
    body.load_state_dict(given)
    if freeze:
        for p in body.parameters():
            p.requires_grad_(False)
    return info
