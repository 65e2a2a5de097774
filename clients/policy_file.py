"""A site's policy file (``policy.toml`` in its kit) read into a :class:`~.policy.SitePolicy`.

The keys are SitePolicy's fields: ``allowed_strategies`` and ``allowed_tasks`` (arrays of the
enum values), ``min_participants``, ``require_secure_aggregation``, ``dp_sgd`` (``allow``,
``require`` or ``refuse``), and the optional tables ``[privacy_budget]`` and ``[example_budget]``
(``epsilon``, ``delta``). A key left out takes SitePolicy's default; an unknown key, a wrong
type or an unknown choice is a ``ConfigurationError`` naming the file and the key (a policy that
cannot be read never becomes a permissive one).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from privacy import Budget
from secagg.errors import ConfigurationError

from .policy import DPSGDRule, RoundTask, SitePolicy, StrategyName

__all__ = ["load_policy", "parse_policy"]

_KEYS = ("allowed_strategies", "allowed_tasks", "min_participants",
         "require_secure_aggregation", "dp_sgd", "privacy_budget", "example_budget")


def _choices(value: Any, enum: type, key: str, source: str) -> frozenset:
    if not isinstance(value, list):
        raise ConfigurationError(f"{source}: {key}: must be an array of strings")
    try:
        return frozenset(enum(v) for v in value)
    except ValueError as exc:
        raise ConfigurationError(f"{source}: {key}: {exc}; the choices are "
                                 f"{', '.join(m.value for m in enum)}") from exc


def _budget(value: Any, key: str, source: str) -> Budget:
    if not isinstance(value, dict) or set(value) != {"epsilon", "delta"}:
        raise ConfigurationError(f"{source}: {key}: a table with epsilon and delta")
    for name in ("epsilon", "delta"):
        if isinstance(value[name], bool) or not isinstance(value[name], int | float):
            raise ConfigurationError(f"{source}: {key}.{name}: must be a number")
    try:
        return Budget(epsilon=float(value["epsilon"]), delta=float(value["delta"]))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {key}: {exc}") from exc


def parse_policy(text: str, *, source: str = "policy.toml") -> SitePolicy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigurationError(f"{source}: {unknown[0]}: unknown key (a site policy takes "
                                 f"{', '.join(_KEYS)})")
    fields: dict[str, Any] = {}
    if "allowed_strategies" in data:
        fields["allowed_strategies"] = _choices(data["allowed_strategies"], StrategyName,
                                                "allowed_strategies", source)
    if "allowed_tasks" in data:
        fields["allowed_tasks"] = _choices(data["allowed_tasks"], RoundTask, "allowed_tasks",
                                           source)
    if "min_participants" in data:
        value = data["min_participants"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{source}: min_participants: must be an integer")
        fields["min_participants"] = value
    if "require_secure_aggregation" in data:
        if not isinstance(data["require_secure_aggregation"], bool):
            raise ConfigurationError(f"{source}: require_secure_aggregation: true or false")
        fields["require_secure_aggregation"] = data["require_secure_aggregation"]
    if "dp_sgd" in data:
        try:
            fields["dp_sgd"] = DPSGDRule(data["dp_sgd"])
        except ValueError as exc:
            raise ConfigurationError(f"{source}: dp_sgd: {data['dp_sgd']!r} is not allow, "
                                     f"require or refuse") from exc
    for key in ("privacy_budget", "example_budget"):
        if key in data:
            fields[key] = _budget(data[key], key, source)
    try:
        return SitePolicy(**fields)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc}") from exc


def load_policy(path: str | os.PathLike[str]) -> SitePolicy:
    """Read a site's ``policy.toml``; errors name ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the site policy ({exc})") from exc
    return parse_policy(text, source=str(path))
