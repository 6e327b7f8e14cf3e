"""The user's own model: a saved ``.keras`` file (``model.file``) or a Python function
that builds one (``model.builder``).

This is the only place the trainer runs code a user wrote (their builder, and the
modules a model file needs for its registered classes), and it runs only here, in the
trainer pod, never in the operator. What goes wrong in that code fails the job with
its own reason and the tail of the user's traceback:

- ``BadModel``: the file is missing, is not a Keras model, or does not load;
- ``UserCodeError``: a module is missing, the function is missing, raises, or returns
  something that is not a Keras model;
- ``ModelDataMismatch``: the model does not take the data's input, or its output does
  not fit the labels.

Preprocessing is the model's own business here: the trainer feeds the raw features
(``data.normalize`` and the built-in lookups apply to ``model.layers`` only).
"""

from __future__ import annotations

import importlib
import json
import traceback
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from kerasop.events import EXIT_BAD_MODEL, EXIT_MODEL_MISMATCH, EXIT_USER_CODE
from kerasop.spec import BuilderSpec, ModelFileSpec
from kerasop_trainer.data import ImageFileSplit, LoadedData, pipeline
from kerasop_trainer.errors import TrainerError

TRACEBACK_FRAMES = 6  # of the user's traceback kept in the failure message
EXCEPTION_CHARS = 600  # of the exception's own text (Keras puts whole configs there)

# Keras' names of the losses the trainer knows how to encode labels for.
_LOSS_NAMES = {
    "binary_crossentropy": "binary_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "mean_squared_error": "mean_squared_error",
    "mse": "mean_squared_error",
    "MeanSquaredError": "mean_squared_error",
    "mean_absolute_error": "mean_absolute_error",
    "mae": "mean_absolute_error",
    "MeanAbsoluteError": "mean_absolute_error",
}


def traceback_tail(exc: BaseException) -> str:
    """The last frames of ``exc``'s traceback (where the user's code failed) and its text."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    text = str(exc).strip()
    if len(text) > EXCEPTION_CHARS:
        text = text[:EXCEPTION_CHARS] + "..."
    return (
        "Traceback (most recent call last, last frames):\n"
        + "".join(traceback.format_list(frames))
        + f"{type(exc).__name__}: {text}"
    )


def _user_error(message: str, exc: BaseException, code: int, reason: str) -> TrainerError:
    return TrainerError(f"{message}\n{traceback_tail(exc)}", code, reason=reason)


def import_module(name: str, what: str) -> ModuleType:
    """Import the user's module ``name``; UserCodeError when it is missing or fails."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise TrainerError(
                f"{what}: module {name} not found (put it under model.codePath or in the "
                "trainer image)",
                EXIT_USER_CODE,
                reason="UserCodeError",
            ) from None
        raise _user_error(
            f"{what}: importing {name} failed", exc, EXIT_USER_CODE, "UserCodeError"
        ) from None
    except Exception as exc:
        raise _user_error(
            f"{what}: importing {name} failed", exc, EXIT_USER_CODE, "UserCodeError"
        ) from None


# --------------------------------------------------------------------------
# model.file
# --------------------------------------------------------------------------


def file_loss(path: Path) -> str | None:
    """The loss a ``.keras`` file was compiled with, if the trainer knows it; else None.

    Read from the archive's ``config.json`` without loading the model (the labels are
    encoded for the loss before Keras is imported).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # load_model_file reports the file itself
    loss = (config.get("compile_config") or {}).get("loss")
    if isinstance(loss, dict):
        loss = loss.get("class_name") or (loss.get("config") or {}).get("name")
    return _LOSS_NAMES.get(loss) if isinstance(loss, str) else None


def load_model_file(spec: ModelFileSpec, data: LoadedData, data_root: Path) -> Any:
    """The saved model, with its weights and (if it was compiled) its compile settings."""
    import keras

    path = data_root / spec.path
    for module in spec.imports:
        import_module(module, "model.file.imports")
    if not path.is_file():
        raise TrainerError(
            f"model.file.path {path} does not exist", EXIT_BAD_MODEL, reason="BadModel"
        )
    if not zipfile.is_zipfile(path):
        raise TrainerError(
            f"model file {path} is not a .keras archive (save it with model.save('x.keras'))",
            EXIT_BAD_MODEL,
            reason="BadModel",
        )
    try:
        model = keras.saving.load_model(path)
    except Exception as exc:
        raise _user_error(
            f"model file {path} does not load (custom classes must be registered with "
            "keras.saving.register_keras_serializable in a module listed in "
            "model.file.imports)",
            exc,
            EXIT_BAD_MODEL,
            "BadModel",
        ) from None
    check_fits(model, data, f"model file {spec.path}")
    return model


# --------------------------------------------------------------------------
# model.builder
# --------------------------------------------------------------------------


def call_builder(spec: BuilderSpec, data: LoadedData) -> Any:
    """``function(input_shape=..., num_classes=..., **args)`` from the user's module."""
    import keras

    what = f"model.builder {spec.module}.{spec.function}"
    module = import_module(spec.module, what)
    function = getattr(module, spec.function, None)
    if not callable(function):
        raise TrainerError(
            f"{what}: module {spec.module} has no function {spec.function}",
            EXIT_USER_CODE,
            reason="UserCodeError",
        )
    labels = data.labels
    num_classes = len(labels.class_names) if labels.class_names is not None else None
    try:
        model = function(input_shape=tuple(data.input_shape), num_classes=num_classes, **spec.args)
    except Exception as exc:
        raise _user_error(f"{what} raised", exc, EXIT_USER_CODE, "UserCodeError") from None
    if not isinstance(model, keras.Model):
        raise TrainerError(
            f"{what} returned {type(model).__name__}, not a keras.Model",
            EXIT_USER_CODE,
            reason="UserCodeError",
        )
    check_fits(model, data, what)
    return model


# --------------------------------------------------------------------------
# The model against the data
# --------------------------------------------------------------------------


def check_fits(model: Any, data: LoadedData, what: str) -> None:
    """Run two training rows through ``model`` and check the output against the labels."""
    sample = data.train.take(np.arange(min(2, len(data.train))))
    if isinstance(sample, ImageFileSplit):  # images: decode the two files like the dataset does
        batch = next(iter(pipeline.dataset(data, sample, len(sample))))[0]
    else:
        batch = data.features(sample)
    try:
        out = model(batch, training=False)
    except Exception as exc:
        raise _user_error(
            f"{what} does not take the data's input (shape {list(data.input_shape)}, "
            f"{data.input_kind})",
            exc,
            EXIT_MODEL_MISMATCH,
            "ModelDataMismatch",
        ) from None
    shape = tuple(getattr(out, "shape", ()))
    labels = data.labels
    want = 1 if labels.kind == "binary" else labels.units
    if len(shape) != 2 or shape[1] != want:
        expected = {
            "binary": "1 sigmoid unit (binary_crossentropy)",
            "multiclass": f"{labels.units} softmax units ({labels.units} classes)",
            "regression": f"{labels.units} linear unit(s)",
        }[labels.kind]
        raise TrainerError(
            f"{what} outputs shape {[None, *shape[1:]]}, the labels need {expected}",
            EXIT_MODEL_MISMATCH,
        )
