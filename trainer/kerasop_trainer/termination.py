"""SIGTERM: stop the run, between two batches while Keras trains.

Kubernetes sends SIGTERM before it kills a pod (deletion, preemption). The handler raises
:class:`Terminated` so the run unwinds and leaves nothing half-written (the model store's
staging folder is removed). But Python runs a signal handler wherever the interpreter next
runs Python code, and that includes TensorFlow's C++ calling back into Python (a hash or a
comparison while it converts a value to a tensor). An exception raised there aborted the
process about once in 12-40 kills under load, before the ``failed`` event: "Check failed:
!PyErr_Occurred()" in ``ConvertToEagerTensor`` under Keras' ``reset_metrics``, or glibc's
"free(): invalid next size" in a train step (exit -6 instead of 143). So while ``model.fit``
runs, the handler only records the signal and a callback raises at the next batch (training
or validation), from Keras' own loop; a batch takes well under the pod's grace period.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Terminated(BaseException):
    """SIGTERM arrived: unwind so nothing half-written stays."""


_deferring = False
_pending = False


def on_sigterm(signum: int, frame: Any) -> None:
    """The SIGTERM handler (``signal.signal(signal.SIGTERM, on_sigterm)``)."""
    global _pending
    if _deferring:
        _pending = True
        return
    raise Terminated()


def raise_if_pending() -> None:
    global _pending
    if _pending:
        _pending = False
        raise Terminated()


@contextlib.contextmanager
def between_batches(keras: Any) -> Iterator[Any]:
    """Defer SIGTERM inside the block; yields the Keras callback that raises it."""
    global _deferring

    # keras ships no type information: its Callback is Any to mypy.
    class StopBetweenBatches(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            raise_if_pending()

        def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            raise_if_pending()

    _deferring = True
    try:
        yield StopBetweenBatches()
    finally:
        _deferring = False
    raise_if_pending()  # arrived after the last batch
