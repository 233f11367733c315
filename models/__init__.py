"""The gameplay model families: pure torch → ONNX, no serving or tracking code."""

from __future__ import annotations

from models.contract import FamilyContract, TensorSpec
from models.difficulty import DifficultyTuning
from models.errors import ModelNotFoundError
from models.family import ModelFamily, TrainedModel
from models.npc import NpcBehavior
from models.personalization import Personalization

FAMILIES: dict[str, ModelFamily] = {
    family.name: family for family in (NpcBehavior(), DifficultyTuning(), Personalization())
}


def get_family(name: str) -> ModelFamily:
    """The family called ``name``; raises ``ModelNotFoundError`` otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ModelNotFoundError(f"unknown model family {name!r} (known: {known})") from None


__all__ = [
    "FAMILIES",
    "DifficultyTuning",
    "FamilyContract",
    "ModelFamily",
    "NpcBehavior",
    "Personalization",
    "TensorSpec",
    "TrainedModel",
    "get_family",
]
