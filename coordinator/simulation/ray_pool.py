"""The sites in a pool of Ray actors (``--backend ray``, DESIGN 5a).

Each actor hosts many sites (a :class:`~coordinator.simulation.pool.SiteHost`, built in the
actor exactly as the in-process run builds them, from the same configuration and seed), as a
virtual client engine does: there is no actor per site. Site ``i`` lives in actor
``i mod n_actors``. The site-side half of every round runs in the actors; the coordinator-side
half (the secagg server, decoding, the strategy) stays in the driver, and each stage of the
protocol is one call per actor carrying that actor's sites' messages as bytes. With the same
seed the run gives the same model as in process.

Ray is an optional extra (``pip install -e ".[ray]"``); this module imports it only when a
pool is made. ``ray_address`` None starts a local Ray for the run (and stops it at the end);
an address joins an existing cluster (left running), whose workers must be able to import
this version of Cohort (installed there, or this checkout at the same path: the actors are
given it on their PYTHONPATH).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cohort.contract import SiteId
from secagg.errors import ConfigurationError

from .config import SimulationConfig
from .pool import FitJob, Reply, SiteHost
from .transport import merge_sums

__all__ = ["RayPool", "ray_available"]


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class _HostActor:
    """One actor: a share of the consortium's sites on a :class:`SiteHost`."""

    def __init__(self, config: SimulationConfig, work_dir: str, indices: list[int]) -> None:
        import torch

        from .consortium import build_consortium

        torch.set_num_threads(1)  # as in process: tiny models, one thread each
        consortium = build_consortium(config, work_dir=Path(work_dir), hosted=indices,
                                      fresh_ledgers=False)
        self._host = SiteHost(consortium.sites)

    def call(self, method: str, *args, **kwargs):
        return getattr(self._host, method)(*args, **kwargs)


class RayPool:
    """The driver's view of the actors: each call goes to the actors that hold sites of the
    round's cohort, in parallel, and their answers are merged."""

    def __init__(self, config: SimulationConfig, *, work_dir: Path) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigurationError(
                "the Ray backend needs Ray: pip install -e \".[ray]\"") from exc
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            if config.ray_address is None:
                ray.init(num_cpus=max(config.ray_actors, 1), include_dashboard=False,
                         log_to_driver=False, configure_logging=False,
                         runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
            else:
                ray.init(address=config.ray_address, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
            self._owns = True
        n = min(config.ray_actors, config.sites)
        work_dir = Path(work_dir)
        for stale in work_dir.glob("ledgers.sqlite*"):  # the run's ledgers start empty
            stale.unlink()
        actor = ray.remote(num_cpus=1)(_HostActor)
        shares = [list(range(a, config.sites, n)) for a in range(n)]
        self._actors = [actor.remote(config, str(work_dir), share) for share in shares]
        self._where: dict[SiteId, int] = {}
        from .consortium import site_id

        for a, share in enumerate(shares):
            for i in share:
                self._where[site_id(i)] = a
        self._cohort: list[SiteId] = []
        self._involved: list[int] = []
        self._get([a.call.remote("ping") for a in self._actors])  # built, or fail now

    @property
    def cohort(self) -> list[SiteId]:
        return self._cohort

    @property
    def n_actors(self) -> int:
        return len(self._actors)

    # -- fan-out --------------------------------------------------------------------------
    def _get(self, refs):
        from ray.exceptions import RayTaskError

        try:
            return self._ray.get(refs)
        except RayTaskError as exc:  # the site's own error (BudgetExceeded, PolicyViolation...)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def _by_actor(self, site_ids: Iterable[SiteId]) -> dict[int, list[SiteId]]:
        out: dict[int, list[SiteId]] = {}
        for s in site_ids:
            out.setdefault(self._where[s], []).append(s)
        return out

    def _each(self, method: str, *args, **kwargs) -> list:
        return self._get([self._actors[a].call.remote(method, *args, **kwargs)
                          for a in self._involved])

    # -- the round --------------------------------------------------------------------------
    def open(self, job: FitJob, site_ids: Sequence[SiteId], *, announcement: bytes | None,
             seed: int) -> None:
        self._cohort = list(site_ids)
        groups = self._by_actor(site_ids)
        self._involved = sorted(groups)
        job_ref = self._ray.put(job)  # one copy of the global model for every actor
        self._get([self._actors[a].call.remote("open", job_ref, groups[a],
                                               announcement=announcement, seed=seed)
                   for a in self._involved])

    def check(self) -> None:
        self._each("check")

    def train(self):
        events: dict = {}
        updates: dict | None = None
        for ev, up in self._each("train"):
            events.update(ev)
            if up is not None:
                updates = {**(updates or {}), **up}
        if updates is not None:
            updates = {s: updates[s] for s in self._cohort}  # consortium order, as in process
        return events, updates

    def reserve(self) -> None:
        refs = [self._actors[a].call.remote("reserve") for a in self._involved]
        self._get(refs)  # on BudgetExceeded the caller abandons every host's round

    def abandon(self) -> None:
        if self._involved:
            self._each("abandon")

    def start(self, site_ids: Sequence[SiteId]) -> dict[SiteId, bytes]:
        groups = self._by_actor(site_ids)
        out: dict[SiteId, bytes] = {}
        for part in self._get([self._actors[a].call.remote("start", ids)
                               for a, ids in groups.items()]):
            out.update(part)
        return out

    def deliver(self, messages: Mapping[SiteId, bytes]) -> dict[SiteId, Reply]:
        groups = self._by_actor(messages)
        out: dict[SiteId, Reply] = {}
        for part in self._get([self._actors[a].call.remote(
                "deliver", {s: messages[s] for s in ids}) for a, ids in groups.items()]):
            out.update(part)
        return out

    def outcome(self, data: bytes) -> None:
        self._each("outcome", data)

    def exact_sum(self, included: Iterable[SiteId]) -> tuple[np.ndarray, int]:
        included = list(included)
        parts = self._each("exact_sum", included)
        total = merge_sums(parts)
        return total, sum(b for _, b in parts)

    def settle_clear(self, event, included: Iterable[SiteId]) -> None:
        self._each("settle_clear", event, list(included))

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def _pythonpath() -> str:
    """The actors import this checkout of Cohort, whatever the driver's working directory."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root if not rest else f"{root}{os.pathsep}{rest}"
