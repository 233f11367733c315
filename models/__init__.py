"""The gameplay model families: declared here, pure torch → ONNX, no serving or tracking code.

``FAMILIES`` holds every family this process serves or trains: the built-in
ones, then those added with ``register``: from installed packages (the
``gameserve.families`` entry-point group, see ``models.catalog``) and from
spec files (``models.spec``).
"""

from __future__ import annotations

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

FAMILIES: dict[str, AnyFamily] = {
    family.name: family for family in (NpcBehavior(), DifficultyTuning(), Personalization())
}


def get_family(name: str) -> AnyFamily:
    """The family called ``name``; raises ``ModelNotFoundError`` otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ModelNotFoundError(f"unknown model family {name!r} (known: {known})") from None


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


def register(family: AnyFamily) -> AnyFamily:
    """Add ``family``; the same declaration again is a no-op, a different one an error."""
    known = FAMILIES.get(family.name)
    if known is None:
        FAMILIES[family.name] = family
        return family
    if known == family:
        return known
    raise InvalidInputError(
        f"family: {family.name!r} is declared twice, differently "
        f"({type(known).__name__} and {type(family).__name__})"
    )


__all__ = [
    "FAMILIES",
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
    "register",
    "trainable_families",
    "trainable_family",
]
