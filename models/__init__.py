"""The gameplay model families: declared here, pure torch → ONNX, no serving or tracking code.

``FAMILIES`` is a read-only view of the catalog this process installed
(``models.catalog``): the built-in families until the process installs
another, with installed packages' and spec files' families, at start. It
cannot be changed in place (``FAMILIES[name] = ...`` raises TypeError); a
process replaces its whole catalog with ``install_catalog``, in one step.
"""

from __future__ import annotations

from models.catalog import FAMILIES, Catalog, install_catalog, installed_catalog
from models.contract import FamilyContract, TensorSpec
from models.difficulty import DifficultyTuning
from models.errors import InvalidInputError, ModelNotFoundError
from models.family import (
    AnyFamily,
    AnyTrainableFamily,
    GameRoute,
    ModelFamily,
    TrainableFamily,
    TrainedModel,
)
from models.npc import NpcBehavior
from models.personalization import Personalization


def get_family(name: str) -> AnyFamily:
    """The family called ``name``; raises ``ModelNotFoundError`` otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ModelNotFoundError(
            f"unknown model family {name!r} (known: {known}); families from spec files "
            "and packages are known once the process loads them "
            "(pipelines.registry.connect_to_stack does)"
        ) from None


def trainable_family(name: str) -> AnyTrainableFamily:
    """The family called ``name`` if gameserve trains it; its versions arrive built otherwise."""
    family = get_family(name)
    if not isinstance(family, TrainableFamily):
        raise InvalidInputError(
            f"family: {name!r} is not trained by gameserve (declared by "
            f"{type(family).__name__}); register versions built elsewhere instead"
        )
    return family


def trainable_families() -> dict[str, AnyTrainableFamily]:
    """The registered families gameserve trains, by name."""
    return {name: f for name, f in FAMILIES.items() if isinstance(f, TrainableFamily)}


__all__ = [
    "FAMILIES",
    "Catalog",
    "DifficultyTuning",
    "FamilyContract",
    "GameRoute",
    "ModelFamily",
    "NpcBehavior",
    "Personalization",
    "TensorSpec",
    "TrainableFamily",
    "TrainedModel",
    "get_family",
    "install_catalog",
    "installed_catalog",
    "trainable_families",
    "trainable_family",
]
