"""What a failed call raises: the server's status, stable code and message."""

from __future__ import annotations


class ApiError(Exception):
    """The server answered with an error (``{"error": {"code", "message"}}``), after retries."""

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(status, code, message, retry_after_s)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class ConnectionFailedError(ApiError):
    """No answer at all: the server could not be reached, or dropped the connection."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "connection_failed", message)
