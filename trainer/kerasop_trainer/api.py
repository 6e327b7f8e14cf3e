"""The public API of script mode (``spec.script``): your own training loop, with what the
built-in trainer offers. Use it from the script the job runs::

    import keras
    from kerasop_trainer import api

    job = api.job()                                    # the KerasTrainingJob being run
    model, initial_epoch = api.resume(build_my_model)  # this job's checkpoint, or a new model
    model.fit(x, y, epochs=api.epochs(), initial_epoch=initial_epoch,
              callbacks=[api.callback(initial_epoch)])  # progress per epoch, checkpoints
    api.publish(model, model.evaluate(xv, yv, return_dict=True))  # the next model version

- :func:`callback` checkpoints as the built-in trainer does (the last epoch, others when
  ``training.checkpointIntervalSeconds`` have passed) and then prints the same ``epoch``
  event, so the job's status shows the epoch and metrics;
- :func:`resume` loads this job's latest checkpoint (the job identity is
  ``KERASOP_JOB_ID``: a restarted pod continues where the last one stopped) and prints the
  ``start`` event;
- :func:`publish` writes ``model.keras``, the exports ``spec.output.formats`` asks for
  (``model.onnx`` where the model converts, by default; the SavedModel) and
  ``metadata.json`` as the next version, atomically, with the built-in
  trainer's own code, clears the checkpoints and prints the ``done`` event.

Several workers get the built-in trainer's environment (``KERASOP_NUM_WORKERS``,
``KERASOP_WORKER_INDEX``, ``KERASOP_COORDINATOR``; :func:`workers`); only worker 0 writes
checkpoints and the version. Everything is configured by the environment the operator
(or ``kerasop train``) sets; nothing here reads the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasop import contracts, events
from kerasop.events import EXIT_BAD_SPEC
from kerasop.spec import KerasTrainingJob
from kerasop.store import InputKind, TensorMetadata
from kerasop_trainer import distributed, train
from kerasop_trainer.checkpoints import Checkpoints
from kerasop_trainer.errors import TrainerError, note
from kerasop_trainer.publish import publish as publish_version
from kerasop_trainer.training_run import TrainingRun, check_job_id

__all__ = [
    "callback",
    "checkpoints",
    "data_root",
    "epochs",
    "job",
    "job_id",
    "publish",
    "resume",
    "store_root",
    "workers",
]


def job() -> KerasTrainingJob:
    """The job being run (``KERASOP_SPEC``)."""
    from kerasop_trainer.main import load_job

    return load_job(None)


def job_id() -> str:
    """The job's identity (``KERASOP_JOB_ID``): the same across restarts of the job."""
    value = os.environ.get(contracts.ENV_JOB_ID, "")
    check_job_id(value)
    return value


def data_root() -> Path:
    """The data volume (``KERASOP_DATA_ROOT``, ``/data`` in a pod)."""
    return Path(os.environ.get(contracts.ENV_DATA_ROOT, contracts.DATA_ROOT))


def store_root() -> Path:
    """The model store volume (``KERASOP_STORE_ROOT``, ``/models`` in a pod)."""
    return Path(os.environ.get(contracts.ENV_STORE_ROOT, contracts.STORE_ROOT)).absolute()


def workers() -> distributed.WorkerConfig:
    """This process's place among the job's workers."""
    return distributed.WorkerConfig.from_env()


def join_workers() -> distributed.WorkerConfig:
    """Join the job's other workers as the built-in trainer does; return this worker's place.

    With several workers (``spec.workers``; the pods get ``KERAS_BACKEND=jax``) this
    connects to the coordinator and sets Keras' ``DataParallel`` distribution; each
    worker then feeds its own share of the rows with a batch of ``batchSize / workers``.
    Call it before building the model. A single worker: nothing to join.
    """
    import keras

    place = workers()
    if place.count > 1:
        distributed.init_distribution(keras, place)
    return place


def epochs() -> int:
    """``spec.training.epochs``."""
    return job().spec.training.epochs


def checkpoints() -> Checkpoints:
    """This job's checkpoints (``<store>/<model>/.checkpoints/<job id>/``)."""
    return _run().checkpoints


def _run() -> TrainingRun:
    return TrainingRun(job(), job_id(), data_root(), store_root(), workers())


def resume(build: Callable[[], Any]) -> tuple[Any, int]:
    """``(model, initial_epoch)``: the latest checkpoint of this job, else ``build()``.

    Prints the ``start`` event. ``build`` returns a compiled Keras model; it is called
    only when there is no checkpoint to continue from.
    """
    import keras

    current = _run()
    epochs = current.training.epochs
    state = current.checkpoints.latest()
    model, initial_epoch = None, 0
    if state is not None:
        try:
            model = keras.saving.load_model(state["path"])
            initial_epoch = min(state["epoch"], epochs)
        except Exception as exc:
            note(f"cannot load checkpoint {state['path']} ({exc}); starting from epoch 0")
    if model is None:
        model = build()
    current.emit(
        events.encode(
            "start",
            epochs=epochs,
            resumedFromEpoch=initial_epoch,
            workers=current.workers.count,
            workerIndex=current.workers.index,
            backend=keras.backend.backend(),
            modelName=current.model_name,
            jobId=current.job_id,
            script=True,
        )
    )
    return model, initial_epoch


def callback(initial_epoch: int = 0) -> Any:
    """A Keras callback: after each epoch, save the checkpoint when it is due (the last epoch,
    or ``training.checkpointIntervalSeconds`` since the last one), then print the ``epoch``
    event."""
    import keras

    return train.progress_callback(keras, _run(), initial_epoch)


def publish(
    model: Any,
    metrics: dict[str, Any] | None = None,
    *,
    output_kind: str | None = None,
    class_names: list[str] | None = None,
    feature_names: list[str] | None = None,
    epochs_run: int | None = None,
) -> dict[str, Any]:
    """Write ``model`` as the next version of the job's model; return the ``done`` event.

    ``metrics``: the final validation metrics (numbers). ``output_kind`` (binary,
    multiclass or regression) defaults from the output layer: one sigmoid unit is
    binary, one other unit regression, several units multiclass.
    """
    import keras

    current = _run()
    tensors = _describe(model, output_kind, class_names, feature_names)
    ran = epochs_run if epochs_run is not None else current.training.epochs
    return publish_version(current, keras, model, tensors, train.float_metrics(metrics or {}), ran)


def _describe(
    model: Any,
    output_kind: str | None,
    class_names: list[str] | None,
    feature_names: list[str] | None,
) -> tuple[TensorMetadata, TensorMetadata]:
    """metadata.json's ``input`` and ``output`` from the model's own shapes."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TrainerError(
            "publish: the model must have one input and one output to be served",
            EXIT_BAD_SPEC,
            reason="UserCodeError",
        )
    shape = [None if d is None else int(d) for d in tuple(model.inputs[0].shape)[1:]]
    units = int(tuple(model.outputs[0].shape)[-1])
    looks_like_image = len(shape) == 3 and shape[-1] in (1, 3) and None not in shape
    kind = InputKind.IMAGE if looks_like_image else InputKind.TABULAR
    model_input = TensorMetadata.model_input(kind, shape, feature_names=feature_names)
    if output_kind is None:
        activation = getattr(getattr(model.layers[-1], "activation", None), "__name__", "")
        output_kind = (
            "multiclass" if units > 1 else ("binary" if activation == "sigmoid" else "regression")
        )
    output = TensorMetadata(kind=output_kind, shape=[units], class_names=class_names)
    return model_input, output
