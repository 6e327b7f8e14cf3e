"""Training one ``KerasTrainingJob``: data -> model -> fit -> evaluate -> publish.

:func:`run` is what ``kerasop-train`` (and the local CLI) calls. It

1. picks the Keras backend from ``spec.training.backend`` (JAX when several workers)
   and sets ``KERAS_BACKEND`` before Keras is first imported,
2. reads and checks the data (fails fast, before any training),
3. builds and compiles the model, or resumes it from this job's latest per-epoch
   checkpoint (``<store>/<model>/.checkpoints/<job-id>/``),
4. fits, printing one ``epoch`` event per epoch; an epoch is checkpointed (before its
   event) when ``training.checkpointIntervalSeconds`` have passed since the last
   checkpoint, and the last epoch always, so a killed trainer loses at most that
   interval plus the epoch in progress,
5. takes the final metrics from the last epoch's validation pass when it measured the
   final weights (else evaluates on the validation data, the training data when there
   is none),
6. publishes ``model.keras``, the exports ``spec.output.formats`` asks for
   (``model.onnx`` by default, ``saved_model.pb``+``variables/``) and ``metadata.json``
   as the next version through :meth:`kerasop.store.ModelStore.new_version`
   (atomic: nothing half-written ever appears), deletes the checkpoints, and
   prints the ``done`` event.

Multi-worker data parallel training (``KERASOP_NUM_WORKERS`` > 1) uses Keras'
``DataParallel`` on the JAX backend; every worker reads its own equal shard of the
training rows, and only worker 0 writes checkpoints and the version.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kerasop import contracts, events
from kerasop.events import EXIT_BAD_DATA, EXIT_BAD_SPEC, EXIT_INTERNAL, EXIT_USER_CODE
from kerasop.export import ExportError, convert_to_onnx
from kerasop.metric_direction import lower_is_better
from kerasop.spec import KerasTrainingJob, TrainingSpec
from kerasop.status import now_rfc3339
from kerasop.store import (
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    ModelMetadata,
    ModelStore,
    fsync_file,
    model_formats,
    write_json_atomic,
)
from kerasop_trainer import callbacks as optional_callbacks
from kerasop_trainer import termination
from kerasop_trainer.errors import TrainerError
from kerasop_trainer.lineage import lineage

if TYPE_CHECKING:
    from kerasop_trainer.data import LoadedData

CHECKPOINT_STATE = "state.json"
SAVED_MODEL_SIGNATURE = "serve"


def _print_line(line: str) -> None:
    print(line, flush=True)


def note(message: str) -> None:
    """A human-readable line on stderr (event readers ignore it)."""
    print(f"kerasop-train: note: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Workers and environment
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    """Which worker this process is (``KERASOP_NUM_WORKERS`` and friends)."""

    count: int = 1
    index: int = 0
    coordinator: str | None = None

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerConfig:
        env = os.environ if environ is None else environ
        try:
            count = int(env.get(contracts.ENV_NUM_WORKERS) or 1)
            raw_index = env.get(contracts.ENV_WORKER_INDEX) or env.get("JOB_COMPLETION_INDEX") or 0
            index = int(raw_index)
        except ValueError as exc:
            raise TrainerError(f"bad worker environment: {exc}", EXIT_BAD_SPEC) from None
        if count < 1 or not 0 <= index < count:
            raise TrainerError(
                f"worker index {index} is outside 0..{count - 1} ({contracts.ENV_NUM_WORKERS}={count})",
                EXIT_BAD_SPEC,
            )
        coordinator = env.get(contracts.ENV_COORDINATOR) or None
        if count > 1 and not coordinator:
            raise TrainerError(
                f"{contracts.ENV_COORDINATOR} (host:port of worker 0) is required with several workers",
                EXIT_BAD_SPEC,
            )
        return cls(count=count, index=index, coordinator=coordinator)


def resolve_backend(job: KerasTrainingJob, workers: WorkerConfig) -> str:
    backend = job.spec.training.backend
    if workers.count > 1 and backend != "jax":
        note(f"{workers.count} workers: data parallel training uses the jax backend, not {backend}")
        backend = "jax"
    return backend


def prepare_environment(
    job: KerasTrainingJob, store_root: str | os.PathLike[str], backend: str
) -> None:
    """Set ``KERAS_BACKEND`` (and ``KERAS_HOME`` for ImageNet downloads).

    Has an effect only before Keras is first imported in this process.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        return
    os.environ["KERAS_BACKEND"] = backend
    transfer = job.spec.model.transfer if job.spec.model is not None else None
    if transfer is not None and transfer.weights == "imagenet" and "KERAS_HOME" not in os.environ:
        cache = Path(store_root) / ".cache" / "keras"
        try:
            cache.mkdir(parents=True, exist_ok=True)
            os.environ["KERAS_HOME"] = str(cache)
        except OSError as exc:
            note(f"cannot create the weights cache {cache} ({exc}); using Keras' default")


def _import_keras(backend: str, workers: WorkerConfig) -> tuple[Any, str]:
    if backend == "jax" and importlib.util.find_spec(backend) is None:
        raise TrainerError(
            f"training.backend {backend} is not installed in this trainer image",
            EXIT_BAD_SPEC,
            reason="BackendUnavailable",
        )
    if backend != "jax":
        import_tensorflow_without_jax()
    import keras

    actual = keras.backend.backend()
    if actual != backend:
        if workers.count > 1:
            raise TrainerError(
                f"multi-worker training needs the jax backend, but Keras was already imported "
                f"with {actual} in this process",
                EXIT_INTERNAL,
            )
        note(
            f"Keras was already imported with the {actual} backend; training with it, not {backend}"
        )
    if actual != "tensorflow":
        # TensorFlow only feeds data (tf.data): keep it off the accelerators.
        try:
            import tensorflow as tf

            tf.config.set_visible_devices([], "GPU")
        except Exception as exc:
            note(f"could not hide GPUs from TensorFlow: {exc}")
    return keras, actual


def import_tensorflow_without_jax() -> None:
    """Import TensorFlow with JAX hidden from it, when JAX is not loaded yet.

    TensorFlow imports JAX when it is installed (``tensorflow/lite/python/util.py``, for
    TFLite's JAX converter, which the trainer never uses), and with it a second XLA runtime:
    about 100 MB of RSS and part of the start-up, for nothing when Keras runs on TensorFlow.
    JAX is hidden only during this import: code that imports it later still gets it.
    """
    if "tensorflow" in sys.modules or "jax" in sys.modules:
        return
    sys.modules["jax"] = None  # type: ignore[assignment]  # "import jax" -> ImportError
    try:
        import tensorflow  # noqa: F401
    finally:
        del sys.modules["jax"]


def _has_gpu(backend: str) -> bool:
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
    except Exception:
        return False
    return False


def _init_distribution(keras: Any, workers: WorkerConfig) -> None:
    import jax

    # jax leaves Config.update unannotated.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # type: ignore[no-untyped-call]
    try:
        keras.distribution.initialize(
            job_addresses=workers.coordinator,
            num_processes=workers.count,
            process_id=workers.index,
        )
    except Exception as exc:
        raise TrainerError(
            f"worker {workers.index}/{workers.count} could not join the coordinator "
            f"{workers.coordinator}: {exc}",
            EXIT_INTERNAL,
        ) from None
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )


def _allgather_ints(values: list[int]) -> list[list[int]]:
    """Every worker's ``values`` (multi-worker JAX only)."""
    import numpy as np
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(values, dtype=np.int32))
    return np.asarray(gathered).reshape(-1, len(values)).tolist()


def _barrier(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


class Checkpoints:
    """Epoch checkpoints of one job: ``epoch-NNNNN.keras`` + ``state.json``.

    Each file is written under a temporary name and renamed into place, and
    ``state.json`` (which names the file to resume from) is replaced only after
    its file exists, so a kill at any moment leaves a usable checkpoint.
    Only the chief writes; other workers still run ``model.save`` into a
    temporary folder because, under a multi-process distribution, reading the
    variables is a collective operation every process must join.

    ``interval_s``: :meth:`due` once that many seconds have passed since the last save
    (or since this object was made): a save (``model.save`` + fsync) per short epoch
    costs a few percent of the training time.
    """

    def __init__(
        self, directory: Path, chief: bool = True, interval_s: float = 0, workers: int = 1
    ) -> None:
        self.dir = directory
        self.chief = chief
        self.interval_s = interval_s
        self.workers = workers
        self.saved_epoch: int | None = None  # saved (or marked) by this process
        self._saved_at = time.monotonic()

    def due(self) -> bool:
        """Whether to save the epoch that just ended. With several workers worker 0's
        clock decides for all of them: they must join the same saves."""
        due = time.monotonic() - self._saved_at >= self.interval_s
        if self.workers > 1:
            due = bool(_allgather_ints([int(due)])[0][0])
        return due

    def latest(self) -> dict[str, Any] | None:
        state_file = self.dir / CHECKPOINT_STATE
        try:
            state = json.loads(state_file.read_text())
            path = self.dir / state["file"]
            epoch = int(state["epoch"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            note(f"ignoring unreadable checkpoint state {state_file}: {exc}")
            return None
        if not path.is_file():
            note(f"checkpoint {path} named by {state_file} is missing; starting over")
            return None
        return {"epoch": epoch, "path": path, "finished": bool(state.get("finished", False))}

    def save(self, model: Any, epoch: int, finished: bool = False) -> None:
        self.saved_epoch = epoch
        if not self.chief:
            join_collective_save(model)
            self._saved_at = time.monotonic()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}.keras"
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}.keras"
        try:
            model.save(tmp)
            fsync_file(tmp)
            os.replace(tmp, self.dir / name)
        finally:
            tmp.unlink(missing_ok=True)
        write_json_atomic(
            self.dir / CHECKPOINT_STATE, {"epoch": epoch, "file": name, "finished": finished}
        )
        for old in self.dir.iterdir():
            if old.name != name and old.name.startswith(("epoch-", ".tmp-")):
                old.unlink(missing_ok=True)
        self._saved_at = time.monotonic()

    def mark_finished(self, epoch: int) -> None:
        """Record that training ended with the checkpoint of ``epoch`` (saved by :meth:`save`)."""
        latest = self.latest() if self.chief else None
        if latest is None or latest["epoch"] != epoch:
            return
        write_json_atomic(
            self.dir / CHECKPOINT_STATE,
            {"epoch": epoch, "file": latest["path"].name, "finished": True},
        )

    def clear(self) -> None:
        if not self.chief:
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.dir.parent.rmdir()  # .checkpoints/, when no other job has one


# --------------------------------------------------------------------------
# Run: prepare data -> build or resume -> fit -> publish
# --------------------------------------------------------------------------


@dataclass
class Prepared:
    """This worker's data and the settings derived from it."""

    data: Any  # kerasop_trainer.data.LoadedData
    train_rows: int  # before sharding
    seed: int | None  # the seed Keras uses (None: not seeded)
    data_seed: int
    local_batch: int


def run(
    job: KerasTrainingJob,
    data_root: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    job_id: str,
    emit: Callable[[str], None] = _print_line,
    workers: WorkerConfig | None = None,
    on_batch: optional_callbacks.BatchHook | None = None,
) -> dict[str, Any]:
    """Train ``job`` and publish a model version; return the ``done`` event.

    ``emit`` receives every event line (``start``, ``epoch``, ``done``);
    ``on_batch``, if given, every training step (for a progress bar). Raises
    :class:`TrainerError` (with an exit code) for failures a user can fix.
    ``workers`` defaults to the ``KERASOP_NUM_WORKERS`` environment.
    """
    check_job_id(job_id)
    if job.spec.model is None:
        raise TrainerError(
            "spec.script is set: the job runs the user's script (kerasop_trainer.script)",
            EXIT_BAD_SPEC,
        )
    workers = workers or WorkerConfig.from_env()
    data_root = Path(data_root)
    store_root = Path(store_root).absolute()
    training = job.spec.training

    backend = resolve_backend(job, workers)
    prepare_environment(job, store_root, backend)
    add_code_path(job, data_root)

    # Data first: bad data fails every worker fast, before they wait on each other.
    prepared = prepare_data(job, data_root, job_id, workers)
    keras, backend, mixed = start_keras(backend, training, workers, prepared.seed)

    store = ModelStore(store_root)
    checkpoints = Checkpoints(
        store.checkpoint_dir(job.model_name, job_id),
        chief=workers.is_chief,
        interval_s=training.checkpoint_interval_seconds,
        workers=workers.count,
    )
    model, metric_names, initial_epoch, finished = build_or_resume(
        keras, job, prepared.data, data_root, checkpoints, workers, mixed
    )

    data = prepared.data
    monitor = _early_stopping_monitor(training, metric_names, data.validation is not None)
    tensorboard_dir = None
    if training.tensorboard and workers.is_chief:
        tensorboard_dir = optional_callbacks.tensorboard_dir(store, job.model_name, job_id)
    start: dict[str, Any] = {
        "epochs": training.epochs,
        "resumedFromEpoch": initial_epoch,
        "workers": workers.count,
        "workerIndex": workers.index,
        "shardSize": len(data.train),
        "trainRows": prepared.train_rows,
        "validationRows": len(data.validation) if data.validation is not None else 0,
        "backend": backend,
        "modelName": job.model_name,
        "jobId": job_id,
    }
    if tensorboard_dir is not None:
        start["tensorboardPath"] = str(tensorboard_dir.relative_to(store_root))
    emit(events.encode("start", **start))
    extra_callbacks: list[Any] = []
    if tensorboard_dir is not None:
        extra_callbacks.append(optional_callbacks.tensorboard(keras, tensorboard_dir))
    if on_batch is not None:
        extra_callbacks.append(optional_callbacks.batch_progress(keras, on_batch, training.epochs))
    epochs_run, last_validation = fit(
        keras,
        model,
        job,
        prepared,
        workers,
        checkpoints,
        initial_epoch,
        finished,
        monitor,
        emit,
        extra_callbacks,
    )
    metrics = last_validation if last_validation is not None else evaluate(model, prepared)
    metadata = version_metadata(
        keras, job, data.input_metadata(), data.output_metadata(), metrics, epochs_run
    )
    metadata["lineage"] = lineage(job, job_id, data_root)
    version, version_path = publish(
        model, store, job.model_name, metadata, backend, workers, job.spec.output.formats
    )
    checkpoints.clear()

    done: dict[str, Any] = {
        "kerasop": "done",
        "modelName": job.model_name,
        "modelVersion": version,
        "modelPath": version_path,
        "metrics": metrics,
        "epochsRun": epochs_run,
        "dataFingerprint": metadata["lineage"]["dataFingerprint"],
    }
    if version_path is not None:
        done["modelFormats"] = model_formats(Path(version_path))
    if workers.count > 1:
        done["workerIndex"] = workers.index
    emit(events.encode("done", **{k: v for k, v in done.items() if k != "kerasop"}))
    return done


def check_job_id(job_id: str) -> None:
    if not job_id or "/" in job_id or job_id in (".", ".."):
        raise TrainerError(f"bad job id {job_id!r}", EXIT_BAD_SPEC)


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


def prepare_data(
    job: KerasTrainingJob, data_root: Path, job_id: str, workers: WorkerConfig
) -> Prepared:
    """Read and check the data, then keep this worker's shard."""
    from kerasop_trainer.data import load_data
    from kerasop_trainer.model import label_loss

    training = job.spec.training
    seed = training.seed
    if seed is None and workers.count > 1:
        seed = zlib.crc32(job_id.encode()) & 0x7FFFFFFF  # same on all workers
    data_seed = seed if seed is not None else 0
    assert job.spec.model is not None  # run() checked
    loss = label_loss(job.spec.model, training, data_root)
    data = load_data(job.spec.data, data_root, loss, seed=data_seed)
    train_rows = len(data.train)
    data = data.shard(workers.index, workers.count, seed=data_seed)
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


def start_keras(
    backend: str, training: TrainingSpec, workers: WorkerConfig, seed: int | None
) -> tuple[Any, str, bool]:
    """Import Keras, join the other workers, seed, set the precision policy.

    Returns ``(keras, backend actually used, mixed precision on)``.
    """
    keras, backend = _import_keras(backend, workers)
    keras.backend.clear_session()
    if workers.count > 1:
        _init_distribution(keras, workers)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    mixed = False
    if training.mixed_precision:
        if _has_gpu(backend):
            mixed = True
        else:
            note("mixedPrecision is set but no GPU is visible: training in float32")
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return keras, backend, mixed


def build_or_resume(
    keras: Any,
    job: KerasTrainingJob,
    data: LoadedData,
    data_root: Path,
    checkpoints: Checkpoints,
    workers: WorkerConfig,
    mixed: bool,
) -> tuple[Any, list[str] | None, int, bool]:
    """The compiled model and the epoch to start from.

    Returns ``(model, metric names, initial_epoch, finished)``; the metric names are None
    when a model file keeps its own compile settings.

    The model is always built from the spec first (this checks it against the data);
    this job's latest checkpoint, when there is one, then replaces it.
    """
    from kerasop_trainer.model import build_model, compile_model

    training = job.spec.training
    assert job.spec.model is not None  # run() checked
    model = build_model(
        job.spec.model, data, data_root=data_root, mixed_precision=mixed, name=job.model_name
    )
    metric_names = compile_model(model, training, data, job.spec.model)

    state = checkpoints.latest()
    initial_epoch, finished = (state["epoch"], state["finished"]) if state else (0, False)
    if workers.count > 1:
        everyone = _allgather_ints([initial_epoch, int(finished)])
        if any(row != everyone[0] for row in everyone):
            note(f"workers found different checkpoints {everyone}; starting from epoch 0")
            initial_epoch, finished, state = 0, False, None
    if state and initial_epoch > 0:
        try:
            model = keras.saving.load_model(state["path"])
        except Exception as exc:
            if workers.count > 1:
                raise TrainerError(
                    f"cannot load checkpoint {state['path']}: {exc}", EXIT_INTERNAL
                ) from None
            note(f"cannot load checkpoint {state['path']} ({exc}); starting from epoch 0")
            initial_epoch, finished = 0, False
    return model, metric_names, min(initial_epoch, training.epochs), finished


def fit(
    keras: Any,
    model: Any,
    job: KerasTrainingJob,
    prepared: Prepared,
    workers: WorkerConfig,
    checkpoints: Checkpoints,
    initial_epoch: int,
    finished: bool,
    monitor: str | None,
    emit: Callable[[str], None],
    extra_callbacks: list[Any] | None = None,
) -> tuple[int, dict[str, float] | None]:
    """Fit from ``initial_epoch``; return the number of epochs run in all and the last
    epoch's validation metrics when they describe the final weights (else None).

    Keras measures the validation data after every epoch: with the last epoch's weights
    kept (no early stopping restoring an older epoch) that is the final evaluation, and
    running it again would only cost time. ``extra_callbacks`` (TensorBoard, a progress
    bar) run after the progress reporter."""
    training = job.spec.training
    data = prepared.data
    train_ds = data.dataset(
        data.train,
        prepared.local_batch,
        shuffle=True,
        seed=prepared.data_seed + workers.index,
        drop_remainder=workers.count > 1,
    )
    progress = progress_callback(keras, emit, training.epochs, checkpoints, initial_epoch)
    callbacks: list[Any] = []
    if training.early_stopping is not None and monitor is not None:
        stopping = training.early_stopping
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=stopping.patience,
                min_delta=stopping.min_delta,
                restore_best_weights=stopping.restore_best_weights,
                mode="min" if lower_is_better(monitor) else "max",
            )
        )
    callbacks.append(progress)
    callbacks.extend(extra_callbacks or [])

    last_validation = None
    if initial_epoch < training.epochs and not finished:
        _fit(
            keras,
            model,
            train_ds,
            validation_data=_validation_dataset(prepared),
            epochs=training.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
        )
        es = training.early_stopping
        restored = es is not None and es.restore_best_weights  # maybe an older epoch's weights
        if restored or checkpoints.saved_epoch != progress.last_epoch:
            checkpoints.save(model, progress.last_epoch, finished=True)
        else:  # the last epoch's checkpoint already holds these weights
            checkpoints.mark_finished(progress.last_epoch)
        if not restored:
            last_validation = validation_metrics(progress.last_logs)
    return progress.last_epoch, last_validation


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
    return data.dataset(data.validation, prepared.local_batch)


def evaluate(model: Any, prepared: Prepared) -> dict[str, float]:
    """Final metrics on the validation data (the training data when there is none)."""
    eval_ds = _validation_dataset(prepared)
    if eval_ds is None:
        note(
            "no validation data (set data.validationPath or validationSplit): the reported "
            "metrics are measured on the training data"
        )
        eval_ds = prepared.data.dataset(prepared.data.train, prepared.local_batch)
    return float_metrics(_evaluate(model, eval_ds))


def version_metadata(
    keras: Any,
    job: KerasTrainingJob,
    input_meta: dict[str, Any],
    output_meta: dict[str, Any],
    metrics: dict[str, float],
    epochs_run: int,
) -> dict[str, Any]:
    """The version's ``metadata.json`` (docs/CONTRACTS.md)."""
    metadata = {
        "name": job.model_name,
        "createdAt": now_rfc3339(),
        "input": input_meta,
        "output": output_meta,
        "metrics": metrics,
        "epochsRun": epochs_run,
        "spec": job.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "versions": _versions(keras),
    }
    if "savedmodel" in job.spec.output.formats:
        metadata["savedModelSignature"] = SAVED_MODEL_SIGNATURE
    user_code = user_code_metadata(job)
    if user_code is not None:
        metadata["userCode"] = user_code
    return metadata


def user_code_metadata(job: KerasTrainingJob) -> dict[str, Any] | None:
    """The user's modules that ``model.keras`` may need to load (its registered classes).

    The server's Keras engine imports exactly these, and only because this says so.
    """
    model = job.spec.model
    if model is None or (model.builder is None and model.file is None):
        return None
    modules = [model.builder.module] if model.builder is not None else []
    modules += model.file.imports if model.file is not None else []
    if not modules:
        return None
    out: dict[str, Any] = {"modules": modules}
    if model.code_path is not None:
        out["codePath"] = model.code_path
    return out


def publish(
    model: Any,
    store: ModelStore,
    model_name: str,
    metadata: dict[str, Any],
    backend: str,
    workers: WorkerConfig,
    formats: Sequence[str],
) -> tuple[int | None, str | None]:
    """Write the next version atomically (chief only); ``(version, path)`` or ``(None, None)``."""
    version: int | None = None
    version_path: str | None = None
    if workers.is_chief:
        with store.new_version(model_name) as pending:
            write_version(model, pending.path, metadata, backend, formats)
        version = pending.version
        assert version is not None
        version_path = str(store.version_dir(model_name, version))
    else:
        join_collective_save(model)
    if workers.count > 1:
        _barrier("kerasop-published")
    return version, version_path


# --------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------


def progress_callback(
    keras: Any,
    emit: Callable[[str], None],
    epochs: int,
    checkpoints: Checkpoints,
    initial_epoch: int,
) -> Any:
    """Keras callback: checkpoint (the last epoch, or when :meth:`Checkpoints.due`), then
    print the ``epoch`` event (in that order)."""

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


def _fit(keras: Any, model: Any, train_ds: Any, callbacks: list[Any], **kwargs: Any) -> None:
    try:
        with termination.between_batches(keras) as stop_on_sigterm:
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


def _versions(keras: Any) -> dict[str, str]:
    import tensorflow as tf

    return {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


def write_version(
    model: Any, directory: Path, metadata: dict[str, Any], backend: str, formats: Sequence[str]
) -> None:
    """``model.keras``, the ``formats`` asked for (``savedmodel``: ``saved_model.pb`` and
    ``variables/``; ``onnx``: ``model.onnx``), then ``metadata.json``.

    ``model.keras`` is written first: under a multi-process distribution saving reads
    the variables collectively, and the other workers join exactly that step
    (:func:`join_collective_save`). Each export traces the model once, which is why
    only the ones asked for are written.
    """
    keras_file = directory / KERAS_FILE
    model.save(keras_file)
    if "savedmodel" in formats:
        try:
            model.export(str(directory), format="tf_saved_model", verbose=False)
        except Exception as exc:
            if backend == "tensorflow":
                raise
            # Some backends cannot export natively: export from model.keras under TF.
            note(f"native SavedModel export failed on {backend} ({exc}); exporting with tensorflow")
            _export_with_tensorflow(keras_file, directory)
    if "onnx" in formats and backend == "tensorflow":
        write_onnx(model, directory)
    write_json_atomic(
        directory / METADATA_FILE, ModelMetadata.model_validate(metadata).to_json_dict()
    )


def write_onnx(model: Any, directory: Path) -> None:
    """Also write ``model.onnx``: the server then starts in seconds without TensorFlow.

    Optional: when the conversion fails the server converts ``model.keras`` at load.
    """
    inputs = list(model.inputs)
    if len(inputs) != 1 or "string" in str(inputs[0].dtype):
        note(f"no {ONNX_FILE} written: the model takes several or string inputs")
        return
    try:
        (directory / ONNX_FILE).write_bytes(convert_to_onnx(model))
    except ExportError as exc:
        note(f"no {ONNX_FILE} written ({exc}); the server will convert model.keras")


def join_collective_save(model: Any) -> None:
    """What a non-chief worker does while the chief saves: the same ``model.save``."""
    with tempfile.TemporaryDirectory(prefix="kerasop-worker-") as tmp:
        model.save(Path(tmp) / KERAS_FILE)


def _export_with_tensorflow(keras_file: Path, directory: Path) -> None:
    code = (
        "import sys, keras\n"
        "m = keras.saving.load_model(sys.argv[1], compile=False)\n"
        "m.export(sys.argv[2], format='tf_saved_model', verbose=False)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", code, str(keras_file), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"SavedModel export failed: {result.stderr[-2000:]}")
