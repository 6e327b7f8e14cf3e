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

Given an ``on_stop`` hook (a single-worker fit), the callback first hands it the model and
where training stands, so a checkpoint saved there loses no finished batch: at the next
training batch, or at the end of the epoch when the signal came during its validation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

# (model, epochs done, batches done in the next epoch) -> what was saved, for the failed
# event: called once, before the run unwinds.
StopHook = Callable[[Any, int, int], str]


class Terminated(BaseException):
    """SIGTERM arrived: unwind so nothing half-written stays. Its text: the checkpoint saved
    on the way out, if any."""


_deferring = False
_pending = False


def on_sigterm(signum: int, frame: Any) -> None:
    """The SIGTERM handler (``signal.signal(signal.SIGTERM, on_sigterm)``)."""
    global _pending
    if _deferring:
        _pending = True
        return
    raise Terminated()


def raise_if_pending(saved: str = "") -> None:
    global _pending
    if _pending:
        _pending = False
        raise Terminated(saved)


@contextlib.contextmanager
def between_batches(keras: Any, on_stop: StopHook | None = None) -> Iterator[Any]:
    """Defer SIGTERM inside the block; yields the Keras callback that raises it (after
    calling ``on_stop``, when given)."""
    global _deferring

    # keras ships no type information: its Callback is Any to mypy.
    class StopBetweenBatches(keras.callbacks.Callback):  # type: ignore[misc]
        epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._stop(self.epoch, batch)

        def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if on_stop is None:  # else the epoch's end saves it whole
                raise_if_pending()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._stop(epoch + 1, 0)

        def _stop(self, epochs_done: int, batches_done: int) -> None:
            if _pending and on_stop is not None:
                raise_if_pending(on_stop(self.model, epochs_done, batches_done))
            raise_if_pending()

    _deferring = True
    try:
        yield StopBetweenBatches()
    finally:
        _deferring = False
    raise_if_pending()  # arrived after the last batch
