"""Families from outside this codebase: installed packages and spec files.

A package adds families through the ``gameserve.families`` entry-point group;
each entry names a ``ModelFamily`` subclass or instance::

    [project.entry-points."gameserve.families"]
    matchmaking = "studio_models.matchmaking:SkillModel"

Spec files (``models/spec.py``) need no package. Every process that serves or
rolls out a family loads the same set: the CLI and the stack at start, and
each replica from the specs its settings carry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from models import FAMILIES, register
from models.errors import InvalidInputError
from models.family import AnyFamily, ModelFamily
from models.spec import FamilySpec, SpecFamily, read_spec_folder

ENTRY_POINT_GROUP = "gameserve.families"

logger = logging.getLogger(__name__)


def load_entry_points() -> list[AnyFamily]:
    """Register the families installed packages declare."""
    added = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        declared = entry.load()
        family = declared() if isinstance(declared, type) else declared
        if not isinstance(family, ModelFamily):
            raise InvalidInputError(
                f"entry point {entry.name!r} ({entry.value}) in {ENTRY_POINT_GROUP}: "
                f"not a ModelFamily but {type(family).__name__}"
            )
        added.append(register(family))
    return added


def install_specs(specs: Iterable[FamilySpec]) -> list[AnyFamily]:
    """Register a family per spec; the same spec again changes nothing."""
    return [register(SpecFamily(spec)) for spec in specs]


def install_families(specs: Iterable[FamilySpec]) -> None:
    """In a replica: register what the stack that deployed it serves, before anything reads it."""
    load_entry_points()
    install_specs(specs)


def load_families(spec_folder: Path | None) -> list[FamilySpec]:
    """Register installed and spec-file families; the specs, for processes started later."""
    before = set(FAMILIES)
    load_entry_points()
    specs = read_spec_folder(spec_folder) if spec_folder is not None else []
    install_specs(specs)
    added = sorted(set(FAMILIES) - before)
    if added:
        logger.info("families beyond the built-in ones: %s", ", ".join(added))
    return specs
