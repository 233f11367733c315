"""The one exception family of gameserve.

Every error carries its HTTP status and a stable machine-readable code, so the
serving layer turns any of them into ``{"error": {"code", "message"}}`` with a
single handler. The classes live here, at the bottom of the dependency graph,
because model contracts, the registry and the serving layer all raise them.

Exceptions must survive pickling: Ray ships them between processes. Each class
therefore stores only its constructor arguments in ``args``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar


class GameserveError(Exception):
    """Base of every error gameserve raises on purpose."""

    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[GameserveError], tuple[str]]:
        return (type(self), (self.message,))

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The JSON body every error response carries."""
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInputError(GameserveError):
    """A request or tensor does not match the model's contract."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "invalid_input"


class ModelNotFoundError(GameserveError):
    """No model family, version or alias of that name exists."""

    status = HTTPStatus.NOT_FOUND
    code = "model_not_found"


class ModelNotReadyError(GameserveError):
    """The model exists but cannot serve yet (loading, or no champion)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "model_not_ready"


class ModelArtifactError(GameserveError):
    """A registered artifact is missing, corrupt or fails its checksum."""

    status = HTTPStatus.BAD_GATEWAY
    code = "model_artifact_invalid"


class RegistryUnavailableError(GameserveError):
    """The model registry cannot be reached and nothing usable is cached."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "registry_unavailable"


class OverloadedError(GameserveError):
    """The queue is full; the client should retry after ``retry_after_s``."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[OverloadedError], tuple[str, float]]:  # type: ignore[override]
        return (type(self), (self.message, self.retry_after_s))


class RateLimitedError(OverloadedError):
    """This client has spent its request budget; retry after ``retry_after_s``."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate_limited"


class UseLocalError(OverloadedError):
    """No answer can arrive within this request's deadline: the caller should decide with
    its own local behaviour now (and may ask again after ``retry_after_s``). Sent at
    once, by HAProxy or the replica, instead of an answer that would come too late."""

    code = "use_local"


class UnauthorizedError(GameserveError):
    """No API key, or one that is unknown, revoked or expired."""

    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"


class ForbiddenError(GameserveError):
    """A valid API key without the scope the route needs."""

    status = HTTPStatus.FORBIDDEN
    code = "forbidden"


class ConflictError(GameserveError):
    """What was asked for collides with something already running (a stack, a held port)."""

    status = HTTPStatus.CONFLICT
    code = "conflict"


class PayloadTooLargeError(GameserveError):
    """The request body is larger than the configured limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class InferenceError(GameserveError):
    """The model ran but failed or produced an invalid output."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "inference_failed"


class InvalidOutputError(InferenceError):
    """The model answered, but its outputs break the family's checks (NaN, out of range)."""

    code = "invalid_output"


class DeadlineExceededError(GameserveError):
    """No answer within the request's deadline, and no fallback was asked for."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "deadline_exceeded"


def error_for(code: str, message: str) -> GameserveError:
    """The error a server answered with ``{"error": {"code", "message"}}``, rebuilt."""
    pending: list[type[GameserveError]] = [GameserveError]
    while pending:
        kind = pending.pop()
        if kind.code == code:
            return kind(message)
        pending.extend(kind.__subclasses__())
    return GameserveError(f"{code}: {message}")
