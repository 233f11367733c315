from __future__ import annotations

import pickle
from http import HTTPStatus

import pytest

from models.errors import (
    GameserveError,
    InvalidInputError,
    ModelArtifactError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInputError("observation: bad"), HTTPStatus.UNPROCESSABLE_ENTITY),
        (ModelNotFoundError("no such family"), HTTPStatus.NOT_FOUND),
        (ModelNotReadyError("loading"), HTTPStatus.SERVICE_UNAVAILABLE),
        (ModelArtifactError("checksum"), HTTPStatus.BAD_GATEWAY),
        (OverloadedError("queue full", retry_after_s=0.5), HTTPStatus.SERVICE_UNAVAILABLE),
    ],
)
def test_errors_carry_status_and_survive_pickling(
    error: GameserveError, status: HTTPStatus
) -> None:
    assert error.status == status
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert clone.message == error.message
    assert clone.to_dict() == {"error": {"code": error.code, "message": error.message}}


def test_overloaded_keeps_retry_after_through_pickle() -> None:
    clone = pickle.loads(pickle.dumps(OverloadedError("full", retry_after_s=0.25)))
    assert clone.retry_after_s == 0.25
