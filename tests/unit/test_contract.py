from __future__ import annotations

import numpy as np
import pytest

from models import FAMILIES, get_family, trainable_families, trainable_family
from models.contract import TensorSpec
from models.errors import InvalidInputError, ModelNotFoundError

NPC = trainable_family("npc-behavior").contract
PERSONALIZATION = FAMILIES["personalization"].contract


def test_valid_input_is_cast_to_the_contract_dtype() -> None:
    arrays = NPC.validate_inputs({"observation": np.zeros((2, 40), dtype=np.float64)})
    assert arrays["observation"].dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"observation": np.zeros((2, 39), np.float32)}, "observation: axis 1 must have size 40"),
        ({"observation": np.zeros((40,), np.float32)}, "observation: expected 2 dimensions"),
        ({"observation": np.zeros((0, 40), np.float32)}, "observation: the batch is empty"),
        ({"observation": np.full((1, 40), np.nan, np.float32)}, "observation: contains NaN"),
        ({"observation": np.full((1, 40), np.inf, np.float32)}, "observation: contains NaN"),
        ({"observation": np.array([["a"] * 40])}, "observation: expected numbers"),
        ({}, "missing input tensor(s): observation"),
        (
            {"observation": np.zeros((1, 40), np.float32), "extra": np.zeros(1)},
            "unknown input tensor(s): extra",
        ),
    ],
)
def test_invalid_input_names_the_tensor(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        NPC.validate_inputs(arrays)
    assert message in caught.value.message


def test_inputs_must_share_the_batch_size() -> None:
    with pytest.raises(InvalidInputError, match="batch size"):
        PERSONALIZATION.validate_inputs(
            {"player": np.zeros((2, 16), np.float32), "items": np.zeros((3, 5, 12), np.float32)}
        )


def test_dynamic_inner_axis_accepts_any_size() -> None:
    arrays = PERSONALIZATION.validate_inputs(
        {"player": np.zeros((2, 16), np.float32), "items": np.zeros((2, 77, 12), np.float32)}
    )
    assert arrays["items"].shape == (2, 77, 12)


def test_every_tensor_starts_with_a_dynamic_batch_axis() -> None:
    with pytest.raises(ValueError, match="dynamic batch axis"):
        TensorSpec("x", "float32", (3, 4))


def test_fingerprints_differ_between_families_and_are_stable() -> None:
    prints = {name: family.contract.fingerprint() for name, family in trainable_families().items()}
    assert len(set(prints.values())) == 3
    assert prints["npc-behavior"] == NPC.fingerprint()


def test_unknown_family_is_a_not_found_error() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model family 'dragons'"):
        get_family("dragons")
