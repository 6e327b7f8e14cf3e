"""Publishing a trained model: the next version of ``<store>/<model>/`` with
``model.keras``, the exports ``spec.output.formats`` asks for (``model.onnx`` by default,
``saved_model.pb`` + ``variables/``) and ``metadata.json``, written atomically through
:meth:`kerasop.store.ModelStore.new_version` (nothing half-written ever appears); then the
checkpoints are deleted and the ``done`` event printed.

The built-in trainer and the script API (:func:`kerasop_trainer.api.publish`) both publish
through :func:`publish`.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kerasop import events
from kerasop.export import ExportError, convert_to_onnx
from kerasop.objstore import scratch
from kerasop.spec import KerasTrainingJob
from kerasop.status import now_rfc3339
from kerasop.store import (
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    ModelMetadata,
    TensorMetadata,
    UserCodeMetadata,
    model_formats,
    write_json_atomic,
)
from kerasop_trainer.distributed import barrier, join_collective_save
from kerasop_trainer.errors import note
from kerasop_trainer.lineage import lineage
from kerasop_trainer.training_run import TrainingRun

SAVED_MODEL_SIGNATURE = "serve"


def publish(
    run: TrainingRun,
    keras: Any,
    model: Any,
    tensors: tuple[TensorMetadata, TensorMetadata],
    metrics: dict[str, float],
    epochs_run: int,
) -> dict[str, Any]:
    """Write ``model`` as the next version (worker 0), delete the checkpoints, print the
    ``done`` event and return it. ``tensors``: what the model takes and outputs."""
    source: dict[str, Any] = dict(lineage(run.job, run.job_id, run.data_root))
    if run.search is not None:
        source["search"] = run.search
    metadata = _version_metadata(run.job, keras, tensors, metrics, epochs_run)
    metadata.lineage = source
    version, version_path, formats = _write_next_version(
        run, model, metadata, keras.backend.backend()
    )
    run.checkpoints.clear()
    done: dict[str, Any] = {
        "modelName": run.model_name,
        "modelVersion": version,
        "modelPath": version_path,
        "metrics": metrics,
        "epochsRun": epochs_run,
        "dataFingerprint": source["dataFingerprint"],
    }
    if formats is not None:
        done["modelFormats"] = formats
    if run.workers.count > 1:
        done["workerIndex"] = run.workers.index
    run.emit(events.encode("done", **done))
    return {"kerasop": "done", **done}


def _version_metadata(
    job: KerasTrainingJob,
    keras: Any,
    tensors: tuple[TensorMetadata, TensorMetadata],
    metrics: dict[str, float],
    epochs_run: int,
) -> ModelMetadata:
    """The version's ``metadata.json`` (docs/CONTRACTS.md)."""
    formats = job.spec.output.formats
    return ModelMetadata(
        name=job.model_name,
        created_at=now_rfc3339(),
        input=tensors[0],
        output=tensors[1],
        metrics=metrics,
        epochs_run=epochs_run,
        spec=job.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        versions=_versions(keras),
        saved_model_signature=SAVED_MODEL_SIGNATURE if "savedmodel" in formats else None,
        user_code=_user_code_metadata(job),
    )


def _user_code_metadata(job: KerasTrainingJob) -> UserCodeMetadata | None:
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
    return UserCodeMetadata(modules=modules, code_path=model.code_path)


def _write_next_version(
    run: TrainingRun, model: Any, metadata: ModelMetadata, backend: str
) -> tuple[int | None, str | None, list[str] | None]:
    """Write the next version atomically (chief only): ``(version, path, formats)``, or
    Nones on the other workers. With a bucket (``output.uri``) the version is written to
    local scratch, then uploaded (:meth:`kerasop.objstore.ObjectModelStore.publish`)."""
    workers = run.workers
    found: tuple[int | None, str | None, list[str] | None] = (None, None, None)
    formats = run.job.spec.output.formats
    if workers.is_chief and run.bucket is not None:
        with scratch(run.store_root) as local:
            _write_version(model, local, metadata, backend, formats)
            version = run.bucket.publish(run.model_name, local)
            found = (version, run.bucket.version_uri(run.model_name, version), model_formats(local))
    elif workers.is_chief:
        with run.store.new_version(run.model_name) as pending:
            _write_version(model, pending.path, metadata, backend, formats)
        assert pending.version is not None
        path = run.store.version_dir(run.model_name, pending.version)
        found = (pending.version, str(path), model_formats(path))
    else:
        join_collective_save(model)
    if workers.count > 1:
        barrier("kerasop-published")
    return found


def _versions(keras: Any) -> dict[str, str]:
    import tensorflow as tf

    return {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


def _write_version(
    model: Any, directory: Path, metadata: ModelMetadata, backend: str, formats: Sequence[str]
) -> None:
    """``model.keras``, the ``formats`` asked for (``savedmodel``: ``saved_model.pb`` and
    ``variables/``; ``onnx``: ``model.onnx``), then ``metadata.json``.

    ``model.keras`` is written first: under a multi-process distribution saving reads
    the variables collectively, and the other workers join exactly that step
    (:func:`.distributed.join_collective_save`). Each export traces the model once, which is why
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
        _write_onnx(model, directory)
    write_json_atomic(directory / METADATA_FILE, metadata.to_json_dict())


def _write_onnx(model: Any, directory: Path) -> None:
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
