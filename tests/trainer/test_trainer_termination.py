"""SIGTERM during model.fit stops at the next batch, from Keras' own loop."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from kerasop_trainer import termination


def test_sigterm_in_fit_stops_at_the_next_batch_and_raises_at_once_outside() -> None:
    import keras

    previous = signal.signal(signal.SIGTERM, termination.on_sigterm)
    ended: list[tuple[int, int] | str] = []

    class KillAtBatch2(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            ended.append((self.epoch, batch))
            if (self.epoch, batch) == (1, 2):
                os.kill(os.getpid(), signal.SIGTERM)  # handled before kill() returns
                ended.append("kill returned")  # not raised here: recorded for later

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    try:
        with (
            pytest.raises(termination.Terminated),
            termination.between_batches(keras) as stop,
        ):
            model.fit(
                x, x[:, :1], batch_size=8, epochs=3, verbose=0, callbacks=[KillAtBatch2(), stop]
            )
        # Epoch 0 whole, epoch 1 up to the batch the signal came in: no batch after it.
        assert ended == [(0, b) for b in range(8)] + [(1, 0), (1, 1), (1, 2), "kill returned"]
        with pytest.raises(termination.Terminated):  # outside fit: at once
            os.kill(os.getpid(), signal.SIGTERM)
        # After the last batch: on leaving the block.
        with pytest.raises(termination.Terminated), termination.between_batches(keras):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize(("where", "stopped_at"), [("train", (1, 3)), ("validation", (2, 0))])
def test_sigterm_hands_the_hook_where_training_stands(where, stopped_at) -> None:
    """With a hook (a single-worker fit), SIGTERM in a training batch stops at the next one
    with every finished batch counted; in validation, at the end of that epoch."""
    import keras

    previous = signal.signal(signal.SIGTERM, termination.on_sigterm)
    calls: list[tuple[int, int, int]] = []

    def on_stop(model, epochs_done: int, batches_done: int) -> str:
        calls.append((epochs_done, batches_done, int(model.optimizer.iterations)))
        return "saved here"

    class KillInEpoch1(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if where == "train" and (self.epoch, batch) == (1, 2):
                os.kill(os.getpid(), signal.SIGTERM)

        def on_test_batch_end(self, batch, logs=None):
            if where == "validation" and (self.epoch, batch) == (1, 0):
                os.kill(os.getpid(), signal.SIGTERM)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    try:
        with (
            pytest.raises(termination.Terminated, match="saved here"),
            termination.between_batches(keras, on_stop) as stop,
        ):
            model.fit(
                x,
                x[:, :1],
                batch_size=8,
                epochs=3,
                verbose=0,
                validation_data=(x[:16], x[:16, :1]),
                callbacks=[KillInEpoch1(), stop],
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    epochs_done, batches_done = stopped_at
    assert calls == [(epochs_done, batches_done, epochs_done * 8 + batches_done)]
