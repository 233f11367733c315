"""The family catalog: every family a process serves or trains, frozen once built.

Families come from three places, loaded together by ``load_catalog``: the
built-in ones, installed packages (the ``gameserve.families`` entry-point
group; each entry names a ``ModelFamily`` subclass or instance), and spec
files (``models/spec.py``), which need no package::

    [project.entry-points."gameserve.families"]
    matchmaking = "studio_models.matchmaking:SkillModel"

A ``Catalog`` cannot be changed: ``with_families`` returns a new one. A
process installs one explicitly (``models.install_catalog``): the CLI and the
stack at start, each replica from the specs its settings carry. A spec file
added while the stack runs is seen only when a process loads the catalog
again, never half-way through a request or a rollout.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from models.difficulty import DifficultyTuning
from models.errors import InvalidInputError
from models.family import AnyFamily, ModelFamily
from models.npc import NpcBehavior
from models.personalization import Personalization
from models.spec import FamilySpec, SpecFamily, read_spec_folder

ENTRY_POINT_GROUP = "gameserve.families"

logger = logging.getLogger(__name__)


class Catalog(Mapping[str, AnyFamily]):
    """Families by name. Immutable: assigning, deleting or updating raises TypeError."""

    __slots__ = ("_families",)
    _families: Mapping[str, AnyFamily]

    def __init__(self, families: Iterable[AnyFamily] = ()) -> None:
        found: dict[str, AnyFamily] = {}
        for family in families:
            known = found.get(family.name)
            if known is not None and known != family:
                raise InvalidInputError(
                    f"family: {family.name!r} is declared twice, differently "
                    f"({type(known).__name__} and {type(family).__name__})"
                )
            found.setdefault(family.name, family)
        object.__setattr__(self, "_families", MappingProxyType(found))

    def __getitem__(self, name: str) -> AnyFamily:
        return self._families[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._families)

    def __len__(self) -> int:
        return len(self._families)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError("a Catalog cannot change; build a new one with with_families")

    def __reduce__(self) -> tuple[type[Catalog], tuple[tuple[AnyFamily, ...]]]:
        return Catalog, (tuple(self._families.values()),)

    def __repr__(self) -> str:
        return f"Catalog({', '.join(self._families)})"

    def with_families(self, families: Iterable[AnyFamily]) -> Catalog:
        """This catalog and ``families``; the same declaration again changes nothing."""
        return Catalog([*self._families.values(), *families])


@functools.cache
def builtin_catalog() -> Catalog:
    """The families this codebase declares; one instance each per process (a built-in
    family is its class, so every catalog holds the same objects and compares equal)."""
    return Catalog([NpcBehavior(), DifficultyTuning(), Personalization()])


# The process's catalog: replaced whole by install_catalog, never changed in place.
_installed: Catalog = builtin_catalog()


class _InstalledCatalog(Mapping[str, AnyFamily]):
    """What ``install_catalog`` last installed, read-only (``models.FAMILIES``)."""

    def __getitem__(self, name: str) -> AnyFamily:
        return _installed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_installed)

    def __len__(self) -> int:
        return len(_installed)


FAMILIES: Mapping[str, AnyFamily] = _InstalledCatalog()


def installed_catalog() -> Catalog:
    return _installed


def install_catalog(catalog: Catalog) -> Catalog:
    """Make ``catalog`` this process's families, whole; the one it replaces."""
    global _installed
    previous, _installed = _installed, catalog
    return previous


def entry_point_families() -> list[AnyFamily]:
    """The families installed packages declare."""
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        declared = entry.load()
        family = declared() if isinstance(declared, type) else declared
        if not isinstance(family, ModelFamily):
            raise InvalidInputError(
                f"entry point {entry.name!r} ({entry.value}) in {ENTRY_POINT_GROUP}: "
                f"not a ModelFamily but {type(family).__name__}"
            )
        found.append(family)
    return found


def catalog_of(specs: Iterable[FamilySpec]) -> Catalog:
    """Built-in, installed and ``specs``' families: what a replica serves, from its settings."""
    spec_families = [SpecFamily(spec) for spec in specs]
    return builtin_catalog().with_families([*entry_point_families(), *spec_families])


def load_catalog(spec_folder: Path | None) -> tuple[Catalog, list[FamilySpec]]:
    """The catalog with the spec files of ``spec_folder``; the specs, for processes started
    later (replicas get them in their settings, not from the folder)."""
    specs = read_spec_folder(spec_folder) if spec_folder is not None else []
    catalog = catalog_of(specs)
    added = sorted(set(catalog) - set(builtin_catalog()))
    if added:
        logger.info("families beyond the built-in ones: %s", ", ".join(added))
    return catalog, specs


def load_families(spec_folder: Path | None) -> list[FamilySpec]:
    """Install the catalog with ``spec_folder``'s spec files (``load_catalog``); the specs."""
    catalog, specs = load_catalog(spec_folder)
    install_catalog(catalog)
    return specs
