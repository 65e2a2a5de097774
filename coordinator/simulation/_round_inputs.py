"""Checking one aggregation round's inputs before anything is encoded, sent or charged.

Sites are named by ``int`` or ``str`` ids; the secure sum numbers them 0..n-1 in a fixed
order (ints first, then strings, each sorted). Every check raises a typed error and changes
nothing: ``InvalidInput`` for the sites' data, ``ConfigurationError`` for the dropout plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cohort.contract import SiteId
from privacy import _validate as v
from secagg import Stage, dropout_plan
from secagg.errors import ConfigurationError, InvalidInput

__all__ = ["Site", "check_dropouts", "check_seed", "check_updates"]


@dataclass(frozen=True)
class Site:
    site_id: SiteId
    index: int  # the site's client id in the secure sum
    update: np.ndarray
    weight: float


def _site_key(site: SiteId) -> tuple[bool, Any]:
    return (isinstance(site, str), site)


def _check_site_id(site: object) -> SiteId:
    if isinstance(site, bool) or not isinstance(site, (int, str)):
        raise InvalidInput(f"site ids must be int or str, got {site!r}")
    return site


def check_updates(updates: Mapping[SiteId, tuple[Any, float]], *, max_weight: float,
                  integer_weights: bool) -> list[Site]:
    """The sites in secure-sum order, with clean float64 updates of one common length."""
    if not isinstance(updates, Mapping) or len(updates) < 2:
        raise InvalidInput("a secure sum needs a mapping of at least two sites to "
                           "(update, weight)")
    ids = sorted((_check_site_id(s) for s in updates), key=_site_key)
    sites: list[Site] = []
    dim = None
    for index, site in enumerate(ids):
        entry = updates[site]
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise InvalidInput(f"site {site!r}: expected an (update, weight) pair")
        update = v.vector(entry[0], f"site {site!r}'s update", dim=dim)
        dim = update.size
        weight = v.weight(entry[1], site, max_weight=max_weight, integral=integer_weights)
        sites.append(Site(site, index, update, weight))
    return sites


def check_dropouts(dropouts: Mapping[Stage | str, Iterable[SiteId]] | None, sites: list[Site],
                   *, malicious: bool) -> dict[Stage, frozenset[SiteId]]:
    """Stage -> sites that stop before sending that stage's message (every stage present)."""
    return dropout_plan(dropouts, [s.site_id for s in sites], malicious=malicious, what="sites")


def check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer or None, got {seed!r}")
    return seed
