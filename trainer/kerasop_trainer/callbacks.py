"""Optional Keras callbacks :func:`kerasop_trainer.train.run` adds on request.

- :func:`batch_progress`: reports every training step to a caller's hook (the local
  CLI draws its progress bar from it). Only added when a hook is given: a callback
  with batch methods makes Keras hand over the logs at every step.
- :func:`tensorboard`: Keras' TensorBoard logs (``training.tensorboard``) in
  :func:`tensorboard_dir`, on the model volume beside the model's versions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasop.store import ModelStore

# (epoch 1-based, epochs, step 1-based, steps per epoch or None, loss or None)
BatchHook = Callable[[int, int, int, "int | None", "float | None"], None]


def batch_progress(keras: Any, hook: BatchHook, epochs: int) -> Any:
    # keras ships no type information: its Callback is Any to mypy.
    class BatchProgress(keras.callbacks.Callback):  # type: ignore[misc]
        epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            hook(
                self.epoch,
                epochs,
                batch + 1,
                self.params.get("steps"),
                float(loss) if loss is not None else None,
            )

    return BatchProgress()


def tensorboard_dir(store: ModelStore, model_name: str, job_id: str) -> Path:
    """``<store>/<model>/tensorboard/<job-id>/``: one run per job, kept after the job."""
    return store.model_dir(model_name) / "tensorboard" / job_id


def tensorboard(keras: Any, log_dir: Path) -> Any:
    log_dir.mkdir(parents=True, exist_ok=True)
    return keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch")
