"""The one error a client can cause, and the answer every error gets.

Everything that decodes a request raises :class:`ClientError` for a problem
with what the client sent; the front ends turn it into ``4xx {"error": ...}``
(REST) or the matching gRPC status. Nothing a client sends may surface as any
other exception.
"""

from __future__ import annotations

import logging

from .batching import BatcherClosed, ModelError

log = logging.getLogger(__name__)


class ClientError(Exception):
    """A request the server cannot honour because of what the client sent."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def failure(exc: Exception, where: str) -> tuple[int, str]:
    """The HTTP status and message of the answer to ``exc``, raised while serving
    ``where``: the same for REST and gRPC (which maps the status to its own code)."""
    if isinstance(exc, ClientError):
        return exc.status, exc.message
    if isinstance(exc, ModelError):
        log.error("model failure on %s: %s", where, exc)
        return 500, f"the model failed: {exc}"
    if isinstance(exc, BatcherClosed):
        return 503, str(exc)
    log.error("unexpected error on %s", where, exc_info=exc)
    return 500, f"internal error: {type(exc).__name__}: {exc}"
