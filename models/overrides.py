"""A family's declared defaults with a user's overrides laid over them, field by field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel


def explicit_fields(given: Any) -> Any:
    """What a user actually set: a model's set fields (nested too), a mapping as given."""
    if isinstance(given, BaseModel):
        return given.model_dump(exclude_unset=True)
    return given


def merged(declared: Mapping[str, Any], given: Any) -> Any:
    """``given`` over ``declared``: a field given replaces that field alone, nested blocks merge.

    Why: settings arrive as JSON (``GAMESERVE_SERVING__FAMILIES='{"npc-behavior":
    {"max_batch_rows": 64}}'``); replacing the family's block with it would silently
    drop every other declared default (NPC's 20 ms deadline, its critical class).
    Anything that is not a mapping is returned as given, for pydantic to reject.
    """
    given = explicit_fields(given)
    if not isinstance(given, Mapping):
        return given
    out: dict[str, Any] = dict(declared)
    for field, value in given.items():
        below = out.get(field)
        value = explicit_fields(value)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            out[field] = merged(below, value)
        else:
            out[field] = value
    return out


def merged_each(given: Any, over: Callable[[str, Any], Any]) -> Any:
    """Each family's block of a ``families`` map through ``over`` (a map as given otherwise)."""
    if not isinstance(given, dict):
        return given
    return {name: over(name, block) for name, block in given.items()}
