"""What the trainer tells its user: the one exception type for failures a user can act on,
and notes on what it works around."""

from __future__ import annotations

import sys

from kerasop.events import EXIT_BAD_DATA, EXIT_INTERNAL, FAILURE_REASONS
from kerasop.objstore import ObjectStoreError, StoreUnreachable


class TrainerError(Exception):
    """A failure with a readable message, a distinct exit code and a reason.

    ``exit_code`` is one of the ``kerasop.events.EXIT_*`` codes; ``reason`` is the
    CamelCase word reported in the ``failed`` event (defaults to the code's
    standard reason, e.g. ``BadData``).
    """

    def __init__(self, message: str, exit_code: int = EXIT_BAD_DATA, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.reason = reason or FAILURE_REASONS.get(exit_code, "TrainerError")

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"TrainerError({self.message!r}, exit_code={self.exit_code}, reason={self.reason!r})"


def store_error(exc: ObjectStoreError) -> TrainerError:
    """An object store failure as the job's failure: refused credentials, a missing or a
    corrupted object are permanent; a store that did not answer is retried (a pod restart
    resumes from the checkpoint)."""
    code = EXIT_INTERNAL if isinstance(exc, StoreUnreachable) else EXIT_BAD_DATA
    return TrainerError(str(exc), code, reason=exc.reason)


def note(message: str) -> None:
    """A human-readable line on stderr (event readers ignore it)."""
    print(f"kerasop-train: note: {message}", file=sys.stderr, flush=True)
