"""Building the Keras model that ``spec.model`` describes.

Two shapes of model:

- ``model.layers``: a ``keras.Sequential`` whose input shape comes from the data and
  whose last layer is the output layer exactly as the user wrote it (checked against
  the labels: units, rank).
- ``model.transfer``: a ``keras.applications`` base (``include_top=False``) with the
  application's own input preprocessing *inside* the model (so a server feeds raw
  0..255 pixels), the base frozen (optionally its top N layers unfrozen), a pooling
  layer, the user's head layers, and an output layer chosen from the loss.

Only built-in, serialisable layers are used (no ``Lambda``), so ``model.keras``
reloads with ``safe_mode=True``. Nothing from the spec is ever evaluated as code:
layer types map to classes through a fixed table.

Keras must already be imported with the right backend when these functions run
(``kerasop_trainer.distributed.start_keras`` takes care of that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kerasop.events import (
    EXIT_BAD_DATA,
    EXIT_BAD_SPEC,
    EXIT_INTERNAL,
    EXIT_MODEL_MISMATCH,
)
from kerasop.spec import LayerSpec, ModelSpec, TrainingSpec, TransferSpec
from kerasop.store import InputKind
from kerasop_trainer.data import NUMERIC_INPUT, LoadedData, TableInput
from kerasop_trainer.errors import TrainerError

# Input and StringLookup describe the model's raw input rather than transform a tensor:
# the spec allows them only at the start of model.layers (input_layers handles them).

# ImageNet channel means (BGR) of the "caffe" preprocessing (VGG16, ResNet50).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# application -> (module name in keras.applications, class name, preprocessing mode)
APPLICATIONS: dict[str, tuple[str, str, str]] = {
    "VGG16": ("vgg16", "VGG16", "caffe"),
    "ResNet50": ("resnet50", "ResNet50", "caffe"),
    "MobileNetV2": ("mobilenet_v2", "MobileNetV2", "tf"),
    # EfficientNet models rescale and normalise inside themselves (inputs 0..255).
    "EfficientNetB0": ("efficientnet", "EfficientNetB0", "none"),
}

_OPTIMIZERS = {
    "adam": "Adam",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
}
_CLASSIFICATION_METRICS = {"accuracy", "auc", "precision", "recall"}


def make_layer(spec: LayerSpec, where: str, data: LoadedData | None = None, **extra: Any) -> Any:
    """A Keras layer from one ``LayerSpec`` (a fixed type table; nothing evaluated).

    ``data`` fills what the data decides: ``Normalization``'s statistics, ``Embedding``'s
    vocabulary size for the text format.
    """
    import keras

    kwargs = spec.keras_kwargs()  # checked against kerasop.spec.LAYER_ARGS when parsed
    if spec.type == "Normalization":
        table = data.table if data is not None else None
        if table is None or table.feature_mean is None:
            raise TrainerError(
                f"{where} (Normalization) needs numeric table data to take its statistics from",
                EXIT_MODEL_MISMATCH,
            )
        return standardize_layer(table, name=None)
    text = data.text if data is not None else None
    if spec.type == "Embedding" and "input_dim" not in kwargs:
        if text is None:
            raise TrainerError(
                f"{where} (Embedding) needs inputDim (the vocabulary size) unless the data "
                "format is text",
                EXIT_BAD_SPEC,
            )
        kwargs["input_dim"] = len(text.vocabulary) + 2  # padding and unknown words
    if spec.type == "Embedding" and text is not None:
        # TextVectorization pads with id 0: masked, the pooling and recurrent layers skip it
        # instead of averaging or reading padding. An explicit maskZero is kept.
        kwargs.setdefault("mask_zero", True)
    if spec.type == "CategoryEncoding":
        if "num_tokens" not in kwargs:
            if text is None:
                raise TrainerError(
                    f"{where} (CategoryEncoding) needs numTokens unless the data format is text",
                    EXIT_BAD_SPEC,
                )
            kwargs["num_tokens"] = len(text.vocabulary) + 2  # padding and unknown words
        kwargs.setdefault("output_mode", "multi_hot")
    if spec.type == "Bidirectional":
        recurrent = getattr(keras.layers, kwargs.pop("cell"))(**kwargs)
        return keras.layers.Bidirectional(recurrent, **extra)
    cls = getattr(keras.layers, spec.type)
    try:
        return cls(**kwargs, **extra)
    except (ValueError, TypeError) as exc:
        raise TrainerError(f"{where} ({spec.type}): {exc}", EXIT_BAD_SPEC) from None


def build_model(
    spec: ModelSpec,
    data: LoadedData,
    *,
    data_root: str | Path,
    mixed_precision: bool = False,
    name: str = "model",
) -> Any:
    """The Keras model for ``spec`` and ``data`` (a file model comes compiled)."""
    if spec.layers is not None:
        return _build_stack(spec.layers, data, mixed_precision, name)
    if spec.transfer is not None:
        return _build_transfer(spec.transfer, data, Path(data_root), mixed_precision, name)
    from kerasop_trainer import usermodel

    if spec.file is not None:
        model = usermodel.load_model_file(spec.file, data, Path(data_root))
    else:
        assert spec.builder is not None
        model = usermodel.call_builder(spec.builder, data)
    return standardized_front(model, data, name)


STANDARDIZE_LAYER = "standardize"


def standardized_front(model: Any, data: LoadedData, name: str = "model") -> Any:
    """The user's model behind the table's standardization, on numeric tables.

    So a model file or builder model gets standardized features like ``model.layers``
    does, and the saved model still takes raw rows. Left as it is (and
    the table's ``standardize`` cleared, so the metadata tells the truth) when ``normalize`` is
    off, the table has categorical columns (the model gets the raw dict), or the data is
    not a table. A model that already has the trainer's ``standardize`` layer (a version
    this trainer published, fine-tuned) is not standardized twice.
    """
    import keras

    table = data.table
    if table is None:
        return model
    if not table.standardize or table.categorical_columns:
        table.standardize = False
        return model
    if any(layer.name == STANDARDIZE_LAYER for layer in model.layers):
        _note("the model already standardizes its input (a published version): kept as it is")
        return model
    inputs = keras.Input(shape=data.input_shape, name="inputs")
    outputs = model(standardize_layer(table)(inputs))
    front = keras.Model(inputs, outputs, name=_keras_name(name))
    compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if compile_config:
        front.compile_from_config(compile_config)  # a model file's own settings
    return front


# --------------------------------------------------------------------------
# Layer stacks, with the table's preprocessing in front
# --------------------------------------------------------------------------


def input_layers(layers: list[LayerSpec], data: LoadedData) -> tuple[int, LayerSpec | None]:
    """Check the leading ``Input`` and ``StringLookup`` layers against the data.

    Returns ``(how many layers they are, the StringLookup or None)``. ``Input`` only
    states the shape the data has (a mismatch fails the job); ``StringLookup`` sets how
    the categorical columns are looked up.
    """
    count = 0
    lookup = None
    if layers and layers[0].type == "Input":
        shape = layers[0].shape
        if shape is not None and tuple(shape) != tuple(data.input_shape):
            raise TrainerError(
                f"model.layers[0] (Input) has shape {_shape((None, *shape))}, but the "
                f"{data.input_kind} data gives {_shape((None, *data.input_shape))}",
                EXIT_MODEL_MISMATCH,
            )
        count = 1
    if len(layers) > count and layers[count].type == "StringLookup":
        if not data.categorical_columns:
            raise TrainerError(
                f"model.layers[{count}] (StringLookup) needs a table with categorical "
                "(string) columns",
                EXIT_MODEL_MISMATCH,
            )
        lookup = layers[count]
        count += 1
    return count, lookup


def _build_stack(layers: list[LayerSpec], data: LoadedData, mixed: bool, name: str) -> Any:
    import keras

    first, lookup = input_layers(layers, data)  # the spec checked their places
    if data.categorical_columns or data.input_kind is InputKind.TEXT:
        return _build_functional_stack(layers, first, lookup, data, mixed, name)
    model = keras.Sequential(name=_keras_name(name))
    model.add(keras.Input(shape=data.input_shape, name="inputs"))
    table = data.table
    if table is not None and table.standardize and not _has_normalization(layers):
        model.add(standardize_layer(table))
    before: tuple[int | None, ...] = (None, *data.input_shape)
    for i, layer_spec in enumerate(layers[first:], start=first):
        where = f"model.layers[{i}]"
        last = i == len(layers) - 1
        # The output layer computes in float32 under mixed precision (stable loss).
        extra = {"dtype": "float32"} if (mixed and last) else {}
        layer = make_layer(layer_spec, where, data, **extra)
        with _layer_fits(where, layer_spec, f"{_shape(before)} from the {data.input_kind} data"):
            model.add(layer)
            before = tuple(model.output_shape)
    _check_output(model, data, layers[-1])
    return model


def _has_normalization(layers: list[LayerSpec]) -> bool:
    return any(layer.type == "Normalization" for layer in layers)


def standardize_layer(table: TableInput, name: str | None = STANDARDIZE_LAYER) -> Any:
    """Per-feature standardization ``(x - mean) / std`` with the training data's statistics.

    The statistics come from the whole training split (computed before sharding), so
    every worker builds the same layer; they are what ``Normalization.adapt`` computes.
    The layer is a ``Rescaling`` (scale ``1/std``, offset ``-mean/std``), not a
    ``Normalization``: Keras' ONNX export turns ``Normalization``'s statistics into
    extra graph inputs, which ONNX Runtime (the server's engine) cannot feed.
    """
    import keras
    import numpy as np

    assert table.feature_mean is not None and table.feature_variance is not None
    std = np.sqrt(np.maximum(np.asarray(table.feature_variance, dtype="float64"), 1e-7))
    mean = np.asarray(table.feature_mean, dtype="float64")
    return keras.layers.Rescaling(
        scale=(1 / std).tolist(), offset=(-mean / std).tolist(), name=name
    )


def table_inputs(data: LoadedData, num_oov_indices: int = 1) -> tuple[dict[str, Any], Any]:
    """Inputs of a table with categorical columns and the features they become.

    ``features`` (float32, the numeric columns, standardized unless ``normalize: false``)
    and one string input per categorical column (``StringLookup``, one-hot; values not
    seen in training share ``num_oov_indices`` extra slots, by hash). Returns
    ``(inputs dict, concatenated tensor)``.
    """
    import keras

    table = data.table
    assert table is not None  # categorical columns: a table
    inputs: dict[str, Any] = {}
    parts = []
    if data.input_shape[0] > 0:
        numeric = keras.Input(shape=data.input_shape, name=NUMERIC_INPUT)
        inputs[NUMERIC_INPUT] = numeric
        parts.append(standardize_layer(table)(numeric) if table.standardize else numeric)
    for column, vocabulary in zip(table.categorical_columns, table.vocabularies, strict=True):
        name = table.input_name(column)
        raw = keras.Input(shape=(1,), dtype="string", name=name)
        inputs[name] = raw
        lookup = keras.layers.StringLookup(
            vocabulary=vocabulary,
            num_oov_indices=num_oov_indices,
            output_mode="one_hot",
            name=f"{name}_lookup",
        )
        parts.append(lookup(raw))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="table")(parts)
    return inputs, x


def text_inputs(data: LoadedData) -> tuple[Any, Any]:
    """The raw string input and ``TextVectorization`` with the training vocabulary."""
    import keras

    text = data.text
    assert text is not None
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(
        vocabulary=text.vocabulary,
        output_mode="int",
        output_sequence_length=text.sequence_length,
        name="vectorize",
    )
    return inputs, vectorize(inputs)


def _build_functional_stack(
    layers: list[LayerSpec],
    first: int,
    lookup: LayerSpec | None,
    data: LoadedData,
    mixed: bool,
    name: str,
) -> Any:
    """Layers after a preprocessing head with named or string inputs (tables, text)."""
    import keras

    if data.input_kind is InputKind.TEXT:
        inputs, x = text_inputs(data)
    else:
        oov = lookup.num_oov_indices if lookup is not None else None
        inputs, x = table_inputs(data, num_oov_indices=oov or 1)
    for i, layer_spec in enumerate(layers[first:], start=first):
        where = f"model.layers[{i}]"
        extra = {"dtype": "float32"} if (mixed and i == len(layers) - 1) else {}
        layer = make_layer(layer_spec, where, data, **extra)
        with _layer_fits(where, layer_spec, f"{_shape(tuple(x.shape))} from the {data.input_kind}"):
            x = layer(x)
    model = keras.Model(inputs, x, name=_keras_name(name))
    _check_output(model, data, layers[-1])
    return model


@contextmanager
def _layer_fits(where: str, layer_spec: LayerSpec, input_text: str) -> Iterator[None]:
    """Report a layer that Keras cannot connect to its input as a TrainerError."""
    try:
        yield
    except TrainerError:
        raise
    except Exception as exc:
        raise TrainerError(
            f"{where} ({layer_spec.type}) does not fit its input of shape "
            f"{input_text}: {_first_line(exc)}",
            EXIT_MODEL_MISMATCH,
        ) from None


def _check_output(model: Any, data: LoadedData, last: LayerSpec) -> None:
    out = tuple(model.output_shape)
    labels = data.labels
    where = f"model.layers[-1] ({last.type})"
    if len(out) != 2:
        raise TrainerError(
            f"the model's output has shape {_shape(out)}; it must be (batch, units): add "
            "Flatten or GlobalAveragePooling2D before the output Dense layer",
            EXIT_MODEL_MISMATCH,
        )
    units = out[-1]
    if labels.kind == "binary" and units != 1:
        raise TrainerError(
            f"{where} has {units} units, but binary_crossentropy with 2 classes "
            f"({', '.join(labels.class_names or [])}) needs 1 unit with sigmoid activation "
            "(or use sparse_categorical_crossentropy with 2 softmax units)",
            EXIT_MODEL_MISMATCH,
        )
    if labels.kind == "multiclass" and units != labels.units:
        shown = ", ".join((labels.class_names or [])[:10])
        raise TrainerError(
            f"{where} has {units} units, but the data has {labels.units} classes ({shown})",
            EXIT_MODEL_MISMATCH,
        )
    if labels.kind == "regression" and units != labels.units:
        raise TrainerError(
            f"{where} has {units} units, but the regression labels have {labels.units} "
            "value(s) per row",
            EXIT_MODEL_MISMATCH,
        )
    if labels.kind == "binary" and last.activation not in ("sigmoid",):
        _note(f"{where}: binary_crossentropy expects a sigmoid output, got {last.activation}")
    if labels.kind == "multiclass" and last.activation not in ("softmax",):
        _note(f"{where}: categorical losses expect a softmax output, got {last.activation}")


# --------------------------------------------------------------------------
# Transfer learning
# --------------------------------------------------------------------------


def _build_transfer(
    spec: TransferSpec, data: LoadedData, data_root: Path, mixed: bool, name: str
) -> Any:
    import keras

    if data.input_kind is not InputKind.IMAGE or len(data.input_shape) != 3:
        raise TrainerError(
            f"transfer learning from {spec.application} needs image data; "
            f"the data is {data.input_kind} with shape {_shape(data.input_shape)}",
            EXIT_MODEL_MISMATCH,
        )
    h, w, c = data.input_shape
    module_name, class_name, mode = APPLICATIONS[spec.application]
    module = getattr(keras.applications, module_name)
    app = getattr(module, class_name)

    weights_file: Path | None = None
    if spec.weights == "file":
        assert spec.weights_path is not None
        weights_file = data_root / spec.weights_path
        if not weights_file.is_file():
            raise TrainerError(f"transfer.weightsPath {weights_file} does not exist", EXIT_BAD_DATA)
    try:
        base = app(
            include_top=False,
            weights="imagenet" if spec.weights == "imagenet" else None,
            input_shape=(h, w, 3),
            pooling=None,
        )
    except ValueError as exc:
        raise TrainerError(
            f"{spec.application} cannot take {h}x{w} images: {_first_line(exc)}",
            EXIT_MODEL_MISMATCH,
        ) from None
    except Exception as exc:  # download failures: URLError, HTTPError, OSError, ...
        if spec.weights == "imagenet":
            raise TrainerError(
                f"could not get the ImageNet weights of {spec.application} (download needs "
                f"network access): {_first_line(exc)}. Put the weights file on the data "
                "volume and use weights: file with weightsPath",
                EXIT_INTERNAL,
                reason="WeightsUnavailable",
            ) from None
        raise
    if weights_file is not None:
        try:
            base.load_weights(str(weights_file))
        except Exception as exc:
            raise TrainerError(
                f"weights file {weights_file} does not fit {spec.application} "
                f"(include_top=False): {_first_line(exc)}",
                EXIT_MODEL_MISMATCH,
            ) from None

    _freeze(base, spec.fine_tune_layers)

    inputs = keras.Input(shape=(h, w, c), name="image")
    x = inputs
    if c == 1:  # the applications take RGB: repeat the grey channel
        x = keras.layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
    x = application_preprocessing(x, mode, spec.application)
    x = base(x, training=False)  # BatchNormalization stays in inference mode
    if spec.pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif spec.pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    else:
        x = keras.layers.Flatten(name="pool")(x)
    for i, layer_spec in enumerate(spec.head):
        where = f"model.transfer.head[{i}]"
        layer = make_layer(layer_spec, where)
        with _layer_fits(where, layer_spec, _shape(tuple(x.shape))):
            x = layer(x)
    outputs = output_layer(data, dtype="float32" if mixed else None)(x)
    return keras.Model(inputs, outputs, name=_keras_name(name))


def output_layer(data: LoadedData, dtype: str | None = None) -> Any:
    """The output layer the loss asks for: sigmoid(1), softmax(N) or linear."""
    import keras

    extra = {"dtype": dtype} if dtype else {}
    labels = data.labels
    if labels.kind == "binary":
        return keras.layers.Dense(1, activation="sigmoid", name="output", **extra)
    if labels.kind == "multiclass":
        return keras.layers.Dense(labels.units, activation="softmax", name="output", **extra)
    return keras.layers.Dense(labels.units, activation="linear", name="output", **extra)


def _freeze(base: Any, fine_tune_layers: int) -> None:
    import keras

    if fine_tune_layers <= 0:
        base.trainable = False
        return
    base.trainable = True
    layers = base.layers
    cut = max(0, len(layers) - fine_tune_layers)
    for i, layer in enumerate(layers):
        # BatchNormalization layers stay frozen: fine-tuning their statistics on a
        # small data set ruins the base.
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)


def application_preprocessing(x: Any, mode: str, application: str) -> Any:
    """The application's ``preprocess_input`` as serialisable layers (float32)."""
    import keras

    if mode == "tf":  # scale 0..255 to -1..1
        return keras.layers.Rescaling(
            1.0 / 127.5, offset=-1.0, dtype="float32", name=f"{application.lower()}_preprocess"
        )(x)
    if mode == "caffe":  # RGB -> BGR, minus the ImageNet mean, as a fixed 1x1 convolution
        layer = keras.layers.Conv2D(
            3,
            1,
            use_bias=True,
            trainable=False,
            dtype="float32",
            name=f"{application.lower()}_preprocess",
        )
        y = layer(x)
        kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
        for out_channel in range(3):
            kernel[0, 0, 2 - out_channel, out_channel] = 1.0
        layer.set_weights([kernel, -np.array(CAFFE_MEAN_BGR, dtype=np.float32)])
        return y
    return x


# --------------------------------------------------------------------------
# Compile
# --------------------------------------------------------------------------


def resolve_metrics(training: TrainingSpec, data: LoadedData) -> list[str]:
    """The metric names to report (as in Keras' logs, without ``val_``); checks the spec.

    Regression with the default metrics (``["accuracy"]``) reports ``mae`` instead.
    """
    names: list[str] = list(dict.fromkeys(training.metrics))
    if data.labels.kind == "regression":
        wrong = [m for m in names if m in _CLASSIFICATION_METRICS]
        if wrong and "metrics" not in training.model_fields_set:
            return ["mae"]
        if wrong:
            raise TrainerError(
                f"training.metrics {', '.join(wrong)} need a classification loss, not "
                f"{training.loss}; use mae or mse",
                EXIT_BAD_SPEC,
            )
    if data.labels.encoding == "sparse":
        wrong = [m for m in names if m in ("auc", "precision", "recall")]
        if wrong:
            raise TrainerError(
                f"training.metrics {', '.join(wrong)} need binary or one-hot labels; use "
                "categorical_crossentropy instead of sparse_categorical_crossentropy",
                EXIT_BAD_SPEC,
            )
    return names


COMPILE_FIELDS = frozenset({"optimizer", "learning_rate", "loss", "metrics"})


def keeps_own_compile(model: Any, training: TrainingSpec, model_spec: ModelSpec | None) -> bool:
    """A compiled model file keeps its own settings when the spec sets none of them."""
    return (
        model_spec is not None
        and model_spec.file is not None
        and getattr(model, "compiled", False)
        and not (COMPILE_FIELDS & training.model_fields_set)
    )


def compile_model(
    model: Any, training: TrainingSpec, data: LoadedData, model_spec: ModelSpec | None = None
) -> list[str] | None:
    """Compile with the spec's optimizer, learning rate, loss and metrics.

    Returns the metric names (see :func:`resolve_metrics`), or None when a model file
    keeps its own compile settings (:func:`keeps_own_compile`).
    """
    import keras

    if keeps_own_compile(model, training, model_spec):
        return None
    optimizer = getattr(keras.optimizers, _OPTIMIZERS[training.optimizer])(
        learning_rate=training.learning_rate
    )
    names = resolve_metrics(training, data)
    factories: dict[str, Callable[[], Any]] = {
        "accuracy": lambda: "accuracy",
        "auc": lambda: keras.metrics.AUC(name="auc"),
        "precision": lambda: keras.metrics.Precision(name="precision"),
        "recall": lambda: keras.metrics.Recall(name="recall"),
        "mae": lambda: keras.metrics.MeanAbsoluteError(name="mae"),
        "mse": lambda: keras.metrics.MeanSquaredError(name="mse"),
    }
    model.compile(optimizer=optimizer, loss=training.loss, metrics=[factories[n]() for n in names])
    return names


def label_loss(model_spec: ModelSpec, training: TrainingSpec, data_root: str | Path) -> str:
    """The loss the labels are encoded for: the spec's, or a model file's own."""
    if model_spec.file is None or "loss" in training.model_fields_set:
        return training.loss
    from kerasop_trainer import usermodel

    return usermodel.file_loss(Path(data_root) / model_spec.file.path) or training.loss


# --------------------------------------------------------------------------


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3])[:600]


def _keras_name(name: str) -> str:
    return name.replace("-", "_")


def _note(message: str) -> None:
    import sys

    print(f"kerasop-train: note: {message}", file=sys.stderr, flush=True)
