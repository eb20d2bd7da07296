"""An answer other than success, shared by the HTTP and gRPC sides of the receiver."""

from __future__ import annotations


class RequestError(Exception):
    """A request refused with an HTTP status (gRPC maps it to a code) and a short safe message."""

    def __init__(
        self, status: int, message: str, *, retry_after: int | None = None, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.close = close  # the connection cannot be reused (the body was not read to its end)
