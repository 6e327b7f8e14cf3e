"""Training one ``KerasTrainingJob``: data -> model -> fit -> evaluate -> publish.

:func:`run` is what ``kerasop-train`` (and the local CLI) calls. It

1. picks the Keras backend from ``spec.training.backend`` (JAX when several workers)
   and sets ``KERAS_BACKEND`` before Keras is first imported (:mod:`.distributed`),
2. reads and checks the data (fails fast, before any training),
3. builds and compiles the model, or resumes it from this job's latest per-epoch
   checkpoint (:mod:`.checkpoints`),
4. fits, printing one ``epoch`` event per epoch; an epoch is checkpointed (before its
   event) when ``training.checkpointIntervalSeconds`` have passed since the last
   checkpoint, and the last epoch always, so a killed trainer loses at most that
   interval plus the epoch in progress,
5. takes the final metrics from the last epoch's validation pass when it measured the
   final weights (else evaluates on the validation data, the training data when there
   is none),
6. publishes the next model version and prints the ``done`` event (:mod:`.publish`).

With several workers every worker reads its own equal shard of the training rows, and
only worker 0 writes checkpoints and the version.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kerasop import events
from kerasop.events import EXIT_BAD_DATA, EXIT_BAD_SPEC, EXIT_INTERNAL, EXIT_USER_CODE
from kerasop.metric_direction import lower_is_better
from kerasop.spec import KerasTrainingJob, TrainingSpec
from kerasop_trainer import callbacks as optional_callbacks
from kerasop_trainer import termination
from kerasop_trainer.data import pipeline
from kerasop_trainer.distributed import (
    WorkerConfig,
    prepare_environment,
    resolve_backend,
    start_keras,
)
from kerasop_trainer.errors import TrainerError, note
from kerasop_trainer.publish import publish
from kerasop_trainer.training_run import TrainingRun, print_event

if TYPE_CHECKING:
    from kerasop_trainer.data import LoadedData


@dataclass
class Prepared:
    """This worker's data and the settings derived from it."""

    data: LoadedData
    train_rows: int  # before sharding
    seed: int | None  # the seed Keras uses (None: not seeded)
    data_seed: int
    local_batch: int


@dataclass
class Start:
    """The compiled model and where its training starts."""

    model: Any
    metric_names: list[str] | None  # None: a model file keeps its own compile settings
    initial_epoch: int
    finished: bool  # the checkpoint ends the training: only publishing is left
    initial_step: int = 0  # batches of epoch initial_epoch + 1 trained before a SIGTERM


def run(
    job: KerasTrainingJob,
    data_root: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    job_id: str,
    emit: Callable[[str], None] = print_event,
    workers: WorkerConfig | None = None,
    on_batch: optional_callbacks.BatchHook | None = None,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``job`` and publish a model version; return the ``done`` event.

    ``emit`` receives every event line (``start``, ``epoch``, ``done``);
    ``on_batch``, if given, every training step (for a progress bar). Raises
    :class:`TrainerError` (with an exit code) for failures a user can fix.
    ``workers`` defaults to the ``KERASOP_NUM_WORKERS`` environment. ``search``: the
    search and trial this job is (:mod:`.tuning`), recorded in the version's lineage.
    """
    current = TrainingRun(
        job, job_id, Path(data_root), Path(store_root).absolute(),
        workers or WorkerConfig.from_env(), emit, search,
    )  # fmt: skip
    trained = train(current, on_batch)
    data = trained.prepared.data
    tensors = (data.input_metadata(), data.output_metadata())
    return publish(current, trained.keras, trained.model, tensors, trained.metrics, trained.epochs)


@dataclass
class Trained:
    """A finished training (its last checkpoint marked finished), not yet published."""

    keras: Any
    model: Any
    prepared: Prepared
    metrics: dict[str, float]  # final validation metrics, without the val_ prefix
    epochs: int  # epochs run in all


def train(
    current: TrainingRun,
    on_batch: optional_callbacks.BatchHook | None = None,
    extra_callbacks: list[Any] | None = None,
) -> Trained:
    """Steps 1 to 5 of :func:`run`: everything but publishing. ``extra_callbacks``: more
    Keras callbacks for the fit (a search's trial stopping)."""
    job = current.job
    if job.spec.model is None:
        raise TrainerError(
            "spec.script is set: the job runs the user's script (kerasop_trainer.script)",
            EXIT_BAD_SPEC,
        )
    backend = resolve_backend(job, current.workers)
    prepare_environment(job, current.store_root, backend)
    add_code_path(job, current.data_root)

    # Data first: bad data fails every worker fast, before they wait on each other.
    prepared = prepare_data(current)
    keras, backend, mixed = start_keras(backend, current.training, current.workers, prepared.seed)
    start = build_or_resume(current, keras, prepared.data, mixed)
    has_validation = prepared.data.validation is not None
    monitor = _early_stopping_monitor(current.training, start.metric_names, has_validation)
    tensorboard_dir = _tensorboard_dir(current)
    current.emit(start_event(current, prepared, start, backend, tensorboard_dir))
    extra = _extra_callbacks(keras, current.training, tensorboard_dir, on_batch)
    extra += extra_callbacks or []
    epochs_run, last_validation = fit(current, keras, prepared, start, monitor, extra)
    metrics = last_validation if last_validation is not None else evaluate(start.model, prepared)
    return Trained(keras, start.model, prepared, metrics, epochs_run)


def start_event(
    current: TrainingRun, prepared: Prepared, start: Start, backend: str, tensorboard: Path | None
) -> str:
    workers, data = current.workers, prepared.data
    fields: dict[str, Any] = {
        "epochs": current.training.epochs,
        "resumedFromEpoch": start.initial_epoch,
        "resumedFromStep": start.initial_step,
        "stepsDone": steps_done(start.model),
        "workers": workers.count,
        "workerIndex": workers.index,
        "shardSize": len(data.train),
        "trainRows": prepared.train_rows,
        "validationRows": len(data.validation) if data.validation is not None else 0,
        "backend": backend,
        "modelName": current.model_name,
        "jobId": current.job_id,
    }
    if tensorboard is not None:
        fields["tensorboardPath"] = str(tensorboard.relative_to(current.store_root))
    return events.encode("start", **fields)


def _tensorboard_dir(current: TrainingRun) -> Path | None:
    """Where TensorBoard logs go when ``training.tensorboard`` asks for them (worker 0)."""
    if not (current.training.tensorboard and current.workers.is_chief):
        return None
    return optional_callbacks.tensorboard_dir(current.store, current.model_name, current.job_id)


def _extra_callbacks(
    keras: Any,
    training: TrainingSpec,
    tensorboard: Path | None,
    on_batch: optional_callbacks.BatchHook | None,
) -> list[Any]:
    """The callbacks asked for besides progress: TensorBoard, a caller's progress bar."""
    extra = []
    if tensorboard is not None:
        extra.append(optional_callbacks.tensorboard(keras, tensorboard))
    if on_batch is not None:
        extra.append(optional_callbacks.batch_progress(keras, on_batch, training.epochs))
    return extra


def add_code_path(job: KerasTrainingJob, data_root: Path) -> None:
    """Put ``model.codePath`` (a folder on the data volume) first on ``sys.path``."""
    code_path = job.spec.model.code_path if job.spec.model is not None else None
    if code_path is None:
        return
    folder = (data_root / code_path).absolute()
    if not folder.is_dir():
        raise TrainerError(
            f"model.codePath {folder} is not a folder", EXIT_USER_CODE, reason="UserCodeError"
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def prepare_data(current: TrainingRun) -> Prepared:
    """Read and check the data, then keep this worker's shard."""
    from kerasop_trainer.data import load_data
    from kerasop_trainer.model import label_loss

    job, training, workers = current.job, current.training, current.workers
    seed = training.seed
    if seed is None and workers.count > 1:
        seed = zlib.crc32(current.job_id.encode()) & 0x7FFFFFFF  # same on all workers
    data_seed = seed if seed is not None else 0
    assert job.spec.model is not None  # run() checked
    loss = label_loss(job.spec.model, training, current.data_root)
    data = load_data(job.spec.data, current.data_root, loss, seed=data_seed)
    train_rows = len(data.train)
    data = pipeline.shard(data, workers.index, workers.count, seed=data_seed)
    local_batch = max(1, training.batch_size // workers.count)
    if workers.count > 1:
        if training.batch_size % workers.count:
            note(
                f"batchSize {training.batch_size} is not a multiple of {workers.count} workers; "
                f"each worker uses {local_batch}"
            )
        if len(data.train) < local_batch:
            raise TrainerError(
                f"worker {workers.index} has {len(data.train)} training rows, fewer than one "
                f"batch of {local_batch}",
                EXIT_BAD_DATA,
            )
    return Prepared(data, train_rows, seed, data_seed, local_batch)


def build_or_resume(current: TrainingRun, keras: Any, data: LoadedData, mixed: bool) -> Start:
    """The compiled model and the epoch to start from.

    The model is always built from the spec first (this checks it against the data);
    this job's latest checkpoint, when there is one, then replaces it.
    """
    from kerasop_trainer.model import build_model, compile_model

    job = current.job
    assert job.spec.model is not None  # run() checked
    model = build_model(
        job.spec.model,
        data,
        data_root=current.data_root,
        mixed_precision=mixed,
        name=job.model_name,
    )
    metric_names = compile_model(model, current.training, data, job.spec.model)
    state = current.checkpoints.agreed_latest()
    if state is None or (state["epoch"], state["step"]) == (0, 0):
        return Start(model, metric_names, 0, False)
    try:
        model = keras.saving.load_model(state["path"])
    except Exception as exc:
        if current.workers.count > 1:
            raise TrainerError(
                f"cannot load checkpoint {state['path']}: {exc}", EXIT_INTERNAL
            ) from None
        note(f"cannot load checkpoint {state['path']} ({exc}); starting from epoch 0")
        return Start(model, metric_names, 0, False)
    epoch = min(state["epoch"], current.training.epochs)
    step = state["step"] if epoch == state["epoch"] < current.training.epochs else 0
    return Start(model, metric_names, epoch, state["finished"], step)


def fit(
    current: TrainingRun,
    keras: Any,
    prepared: Prepared,
    start: Start,
    monitor: str | None,
    extra_callbacks: list[Any],
) -> tuple[int, dict[str, float] | None]:
    """Fit from ``start.initial_epoch``; return the number of epochs run in all and the
    last epoch's validation metrics when they describe the final weights (else None).

    Keras measures the validation data after every epoch: with the last epoch's weights
    kept (no early stopping restoring an older epoch) that is the final evaluation, and
    running it again would only cost time. ``extra_callbacks`` (TensorBoard, a progress
    bar) run after the progress reporter."""
    training, workers, checkpoints = current.training, current.workers, current.checkpoints
    data = prepared.data
    train_ds = pipeline.dataset(
        data,
        data.train,
        prepared.local_batch,
        shuffle=True,
        seed=prepared.data_seed + workers.index,
        drop_remainder=workers.count > 1,
    )
    progress = progress_callback(keras, current, start.initial_epoch)
    callbacks = [*_early_stopping(keras, training, monitor), progress, *extra_callbacks]
    on_stop = save_on_stop(current, start) if workers.count == 1 else None

    last_validation = None
    if start.initial_epoch < training.epochs and not start.finished:
        # Resumed inside an epoch: first the rest of it (its batches past the first
        # initial_step of a new shuffle), then the other epochs.
        first = start.initial_epoch + 1 if start.initial_step else training.epochs
        for data_ds, initial, epochs in (
            (train_ds.skip(start.initial_step), start.initial_epoch, first),
            (train_ds, first, training.epochs),
        ):
            if initial < epochs and not getattr(start.model, "stop_training", False):
                _fit(
                    keras,
                    start.model,
                    data_ds,
                    on_stop,
                    validation_data=_validation_dataset(prepared),
                    epochs=epochs,
                    initial_epoch=initial,
                    callbacks=callbacks,
                )
        es = training.early_stopping
        restored = es is not None and es.restore_best_weights  # maybe an older epoch's weights
        if restored or checkpoints.saved_epoch != progress.last_epoch:
            checkpoints.save(start.model, progress.last_epoch, finished=True)
        else:  # the last epoch's checkpoint already holds these weights
            checkpoints.mark_finished(progress.last_epoch)
        if not restored:
            last_validation = validation_metrics(progress.last_logs)
    return progress.last_epoch, last_validation


def save_on_stop(current: TrainingRun, start: Start) -> termination.StopHook:
    """The SIGTERM hook of a single-worker fit: checkpoint where training stands (unless the
    epoch that just ended was saved), print the ``checkpoint`` event. (Several workers stop
    at different batches: they resume from the last epoch checkpoint.)"""
    checkpoints = current.checkpoints

    def save(model: Any, epochs_done: int, batches_done: int) -> str:
        if epochs_done == start.initial_epoch:  # the resumed epoch counts from initial_step
            batches_done += start.initial_step
        at = f"epoch {epochs_done}, step {batches_done}"
        if (epochs_done, batches_done) == (0, 0):
            return ""  # nothing trained yet
        if batches_done or checkpoints.saved_epoch != epochs_done:  # else saved at epoch end
            checkpoints.save(model, epochs_done, step=batches_done)
        current.emit(
            events.encode(
                "checkpoint", epoch=epochs_done, step=batches_done, stepsDone=steps_done(model)
            )
        )
        return f"the checkpoint at {at}"

    return save


def steps_done(model: Any) -> int | None:
    """The optimizer's step count (restored with a checkpoint), when it has one."""
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    try:
        return int(iterations) if iterations is not None else None
    except (TypeError, ValueError):
        return None


def validation_metrics(logs: dict[str, Any]) -> dict[str, float] | None:
    """An epoch's ``val_*`` metrics without the prefix; None when it had no validation."""
    found = {
        key.removeprefix("val_"): value
        for key, value in float_metrics(logs).items()
        if key.startswith("val_")
    }
    return found or None


def _validation_dataset(prepared: Prepared) -> Any:
    data = prepared.data
    if data.validation is None:
        return None
    return pipeline.dataset(data, data.validation, prepared.local_batch)


def evaluate(model: Any, prepared: Prepared) -> dict[str, float]:
    """Final metrics on the validation data (the training data when there is none)."""
    eval_ds = _validation_dataset(prepared)
    if eval_ds is None:
        note(
            "no validation data (set data.validationPath or validationSplit): the reported "
            "metrics are measured on the training data"
        )
        data = prepared.data
        eval_ds = pipeline.dataset(data, data.train, prepared.local_batch)
    return float_metrics(_evaluate(model, eval_ds))


# --------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------


def progress_callback(keras: Any, current: TrainingRun, initial_epoch: int) -> Any:
    """Keras callback: checkpoint (the last epoch, or when :meth:`Checkpoints.due`), then
    print the ``epoch`` event (in that order)."""
    epochs, checkpoints, emit = current.training.epochs, current.checkpoints, current.emit

    # keras ships no type information: its Callback is Any to mypy.
    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.last_epoch = initial_epoch
            self.last_logs: dict[str, Any] = {}

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.last_epoch = epoch + 1
            self.last_logs = dict(logs or {})
            if epoch + 1 == epochs or checkpoints.due():
                checkpoints.save(self.model, epoch + 1)
            emit(
                events.encode(
                    "epoch", epoch=epoch + 1, epochs=epochs, metrics=float_metrics(logs or {})
                )
            )

    return Progress()


def _early_stopping_monitor(
    training: TrainingSpec, metric_names: list[str] | None, has_validation: bool
) -> str | None:
    es = training.early_stopping
    if es is None:
        return None
    if metric_names is None:  # a model file's own metrics: Keras checks the name
        return es.monitor
    known = ["loss", *metric_names]
    base = es.monitor.removeprefix("val_")
    if base not in known:
        choices = ", ".join(known + [f"val_{m}" for m in known])
        raise TrainerError(
            f"training.earlyStopping.monitor {es.monitor} is not reported; choose one of {choices}",
            EXIT_BAD_SPEC,
        )
    if es.monitor.startswith("val_") and not has_validation:
        note(f"earlyStopping watches {base} (no validation data for {es.monitor})")
        return base
    return es.monitor


def _early_stopping(keras: Any, training: TrainingSpec, monitor: str | None) -> list[Any]:
    """Keras' ``EarlyStopping`` as ``training.earlyStopping`` asks (none when unset)."""
    stopping = training.early_stopping
    if stopping is None or monitor is None:
        return []
    return [
        keras.callbacks.EarlyStopping(
            monitor=monitor,
            patience=stopping.patience,
            min_delta=stopping.min_delta,
            restore_best_weights=stopping.restore_best_weights,
            mode="min" if lower_is_better(monitor) else "max",
        )
    ]


def _fit(
    keras: Any,
    model: Any,
    train_ds: Any,
    on_stop: termination.StopHook | None,
    callbacks: list[Any],
    **kwargs: Any,
) -> None:
    try:
        with termination.between_batches(keras, on_stop) as stop_on_sigterm:
            model.fit(
                train_ds,
                verbose=0,
                shuffle=False,
                callbacks=[*callbacks, stop_on_sigterm],
                **kwargs,
            )
    except TrainerError:
        raise
    except Exception as exc:
        _reraise_data_error(exc)
        raise


def _evaluate(model: Any, ds: Any) -> dict[str, Any]:
    try:
        metrics: dict[str, Any] = model.evaluate(ds, return_dict=True, verbose=0)
        return metrics
    except Exception as exc:
        _reraise_data_error(exc)
        raise


def _reraise_data_error(exc: BaseException) -> None:
    """Image decoding failures inside tf.data become BadData errors."""
    text = str(exc)
    if type(exc).__name__ == "InvalidArgumentError" and any(
        k in text.lower() for k in ("decode", "image", "png", "jpeg", "bmp", "gif")
    ):
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
        raise TrainerError(
            f"an image could not be decoded during training: {first[:500]}", EXIT_BAD_DATA
        ) from None


def float_metrics(logs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out
