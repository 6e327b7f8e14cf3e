"""The one error a client can cause.

Everything that decodes a request raises :class:`ClientError` for a problem
with what the client sent; the HTTP layer turns it into ``4xx {"error": ...}``.
Nothing a client sends may surface as any other exception.
"""

from __future__ import annotations


class ClientError(Exception):
    """A request the server cannot honour because of what the client sent."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
