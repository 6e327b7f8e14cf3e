"""Typed spec models of the two custom resources: the one source of truth.

The operator, the trainer, the model server and the local CLI all parse the
same YAML with these models, and the CRD schemas in ``crds/`` are generated
from them (``kerasop.crds``, written by ``tools/crdgen.py``). Field names are camelCase on the wire (as
Kubernetes users expect) and snake_case in Python.

Cross-field rules are written twice on purpose: once as a pydantic validator
(so the local CLI rejects a bad file with the same meaning) and once as a CEL
rule in ``x-kubernetes-validations`` (so the API server rejects it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

from kerasop.metric_direction import lower_is_better
from kerasop.spec_paths import PathError, set_path

GROUP = "kerasop.io"
VERSION = "v1alpha1"
API_VERSION: Final = "kerasop.io/v1alpha1"  # GROUP/VERSION, a literal for the apiVersion fields

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Kueue (docs/queues.md): the labels it reads on a batch/v1 Job. The queue-name label on a
# KerasTrainingJob itself means the same as its spec.queueName.
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL: Final = "kueue.x-k8s.io/priority-class"


def cel(
    rule: str, message: str, field_path: str | None = None, message_expression: str | None = None
) -> JsonDict:
    """One CEL validation rule for ``x-kubernetes-validations``."""
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if message_expression:
        out["messageExpression"] = message_expression
    return out


class SpecModel(BaseModel):
    """Base: camelCase aliases, unknown fields rejected (typos fail loudly)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

DataFormat = Literal["csv", "imageCsv", "imageFolder", "npz", "text"]


class ImageSpec(SpecModel):
    """How images are decoded and resized before they reach the model."""

    height: int = Field(64, ge=8, le=4096, description="Target height in pixels.")
    width: int = Field(64, ge=8, le=4096, description="Target width in pixels.")
    channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB.")


class TextSpec(SpecModel):
    """How the text format turns text into token sequences (TextVectorization)."""

    max_tokens: int = Field(
        10_000, ge=10, le=1_000_000, description="Vocabulary size: the most frequent words."
    )
    sequence_length: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description=(
            "Tokens per text (longer are cut, shorter padded). Default: fitted to the "
            "training split, the 95th percentile of its texts' word counts, at most 512 "
            "(metadata.json: input.text.sequenceLength, sequenceLengthFitted)."
        ),
    )


class VolumeSource(SpecModel):
    """An existing PersistentVolumeClaim mounted into the trainer pods."""

    claim_name: str = Field(
        ..., pattern=NAME_PATTERN, max_length=253, description="Name of the PVC."
    )
    read_only: bool = Field(True, description="Mount the claim read-only.")


# Object storage (docs/model-store.md, "Object storage"): data and model stores may be URIs.
DATA_URI_SCHEMES: Final = ("s3", "gs", "http", "https")  # data.path, data.validationPath
STORE_URI_SCHEMES: Final = ("s3", "gs")  # a model store: versions are written with conditional puts
_DATA_URI_CEL = "^((s3|gs)://[^/]+/.+|https?://[^/]+/.*)$"
# Bucket names: S3's rules; GCS also allows "_" (and up to 222 characters with dots).
_STORE_URI_CEL = (
    "^(s3://[a-z0-9][-a-z0-9.]{1,61}|gs://[a-z0-9][-a-z0-9_.]{1,220})[a-z0-9](/[^/]+)*/?$"
)


def uri_scheme(path: str) -> str | None:
    """``s3`` for ``s3://bucket/key``; None for a path on a volume (no ``://``)."""
    scheme, sep, _ = path.partition("://")
    return scheme.lower() if sep else None


_STORE_URI_MESSAGE = "a model store is s3://bucket[/prefix] or gs://bucket[/prefix]"


def _check_store_uri(uri: str | None) -> None:
    import re

    if uri is not None and not re.match(_STORE_URI_CEL, uri):
        raise ValueError(f"uri {uri!r}: {_STORE_URI_MESSAGE}")


_STORE_URI_RULE = cel(
    f"!has(self.uri) || self.uri.matches('{_STORE_URI_CEL}')",
    f"uri: {_STORE_URI_MESSAGE}",
    ".uri",
)


def _check_data_uri(field: str, path: str | None) -> None:
    import re

    scheme = uri_scheme(path or "")
    if scheme is None:
        return
    if scheme not in DATA_URI_SCHEMES or not re.match(_DATA_URI_CEL, path or ""):
        raise ValueError(
            f"{field} {path!r}: not a supported URI (use s3://bucket/key, gs://bucket/key,"
            " https://host/path, or a path on the data volume)"
        )


class ObjectStoreSpec(SpecModel):
    """How to reach an S3 (or S3-compatible) or GCS store: the Secret with its credentials,
    endpoint, region."""

    secret_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        max_length=253,
        description=(
            "s3://: Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optional"
            " AWS_SESSION_TOKEN), given as env (secretKeyRef) only to the pods that read or"
            " write the store. Unset: the pod's own identity (IRSA) or the default credential"
            " chain."
        ),
    )
    gcs_secret_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        max_length=253,
        description=(
            "gs://: Secret with key.json, a Google credentials file (a service-account key),"
            " mounted read-only only into the pods that read or write the store. Unset: the"
            " pod's own identity (GKE workload identity) or the default credential chain."
        ),
    )
    endpoint: str | None = Field(
        None,
        pattern=r"^https?://[^/]+/?$",
        max_length=2048,
        description=(
            "Endpoint of an S3-compatible store, e.g. http://seaweedfs:8333 (default: AWS), or"
            " of a GCS-compatible one (default: storage.googleapis.com)."
        ),
    )
    region: str | None = Field(None, max_length=64, description="Region of the bucket.")
    path_style: bool = Field(
        False,
        description=(
            "Path-style addressing (endpoint/bucket/key) instead of virtual hosts; most"
            " S3-compatible stores need it."
        ),
    )


class DataSpec(SpecModel):
    """Where the training data is and how to read it.

    Paths are relative to the data volume root: ``/data`` in a pod, the
    ``--data-dir`` folder in local mode.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.validationPath) && has(self.validationSplit))",
                    "set at most one of validationPath and validationSplit",
                ),
                cel(
                    "self.format != 'csv' || !has(self.image)",
                    "image settings apply only to image formats",
                    ".image",
                ),
                cel(
                    "self.format == 'text' || !has(self.text)",
                    "text settings apply only to the text format",
                    ".text",
                ),
                cel(
                    "self.format == 'csv' || !has(self.categoricalColumns)",
                    "categoricalColumns applies only to the csv format",
                    ".categoricalColumns",
                ),
                cel(
                    f"!self.path.contains('://') || self.path.matches('{_DATA_URI_CEL}')",
                    "path: not a supported URI (use s3://bucket/key, gs://bucket/key,"
                    " https://host/path, or a path on the data volume)",
                    ".path",
                ),
                cel(
                    "!has(self.validationPath) || !self.validationPath.contains('://')"
                    f" || self.validationPath.matches('{_DATA_URI_CEL}')",
                    "validationPath: not a supported URI (use s3://bucket/key,"
                    " gs://bucket/key, https://host/path, or a path on the data volume)",
                    ".validationPath",
                ),
            ]
        }
    )

    format: DataFormat = Field(
        ...,
        description=(
            "csv: feature columns (numeric or categorical) and a label column. imageCsv: a"
            " CSV of image paths (relative to the CSV, or s3://, gs:// and https:// URIs) and"
            " labels."
            " imageFolder: one subfolder per class. npz: arrays 'x' and 'y'. text: a CSV with a text column and a label"
            " column. An all-numeric csv is streamed: the trainer keeps a float32 copy (about"
            " the file's size) in its /tmp, an emptyDir on the node's ephemeral storage, and"
            " only the labels in memory; other tables are loaded into memory; images are read"
            " per batch."
        ),
    )
    path: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description=(
            "Training file or folder, relative to the data volume; or a URI: s3://bucket/key or"
            " gs://bucket/key (a file, or a prefix ending in /) or https://host/file, downloaded"
            " to the trainer's local disk first (store: credentials)."
        ),
    )
    validation_path: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Separate validation file or folder (same format), or a URI as path.",
    )
    validation_split: float | None = Field(
        None, gt=0, lt=1, description="Fraction of the training data held out for validation."
    )
    label_column: str = Field(
        "label", min_length=1, max_length=1024, description="CSV column holding the label."
    )
    feature_columns: list[str] | None = Field(
        None,
        max_length=100_000,
        description="csv: feature columns to use (default: every column but the label).",
    )
    categorical_columns: list[str] | None = Field(
        None,
        max_length=10_000,
        description=(
            "csv: feature columns holding categories (even if they look like numbers). A"
            " column where more than half of the training values are not numbers is"
            " categorical anyway. The model one-hot encodes them (StringLookup) and takes the"
            " raw strings."
        ),
    )
    normalize: bool = Field(
        True,
        description=(
            "Tables (csv, npz rows): standardize the numeric features inside the model with"
            " the training data's mean and variance (model.layers; builder and model-file"
            " models on tables without categorical columns get it in front of them)."
        ),
    )
    image_column: str = Field(
        "path", min_length=1, max_length=1024, description="imageCsv: column of image paths."
    )
    text_column: str = Field(
        "text", min_length=1, max_length=1024, description="text: column of texts."
    )
    text: TextSpec | None = Field(None, description="text: vocabulary size and sequence length.")
    image: ImageSpec | None = Field(None, description="Image formats: decoding and target size.")
    volume: VolumeSource | None = Field(
        None, description="PVC holding the data, mounted at /data (cluster only)."
    )
    store: ObjectStoreSpec | None = Field(
        None,
        description="Credentials and endpoint for s3:// and gs:// data paths and imageCsv image URIs.",
    )

    @model_validator(mode="after")
    def _one_validation_source(self) -> DataSpec:
        _check_data_uri("path", self.path)
        _check_data_uri("validationPath", self.validation_path)
        if self.validation_path is not None and self.validation_split is not None:
            raise ValueError("set at most one of validationPath and validationSplit")
        if self.format == "csv" and self.image is not None:
            raise ValueError("image settings apply only to image formats")
        if self.format != "csv" and self.categorical_columns is not None:
            raise ValueError("categoricalColumns applies only to the csv format")
        if self.format != "text" and self.text is not None:
            raise ValueError("text settings apply only to the text format")
        return self

    @property
    def is_image(self) -> bool:
        return self.format in ("imageCsv", "imageFolder")

    def image_or_default(self) -> ImageSpec:
        return self.image or ImageSpec()

    def text_or_default(self) -> TextSpec:
        return self.text or TextSpec()


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

LayerType = Literal[
    "Dense",
    "Dropout",
    "Conv2D",
    "MaxPooling2D",
    "AveragePooling2D",
    "Flatten",
    "BatchNormalization",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Rescaling",
    "Resizing",
    "Embedding",
    "LSTM",
    "GRU",
    "Bidirectional",
    "Conv1D",
    "MaxPooling1D",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "Normalization",
    "StringLookup",
    "CategoryEncoding",
    "Input",
]

Activation = Literal[
    "linear", "relu", "sigmoid", "softmax", "tanh", "elu", "selu", "gelu", "swish", "softplus"
]


@dataclass(frozen=True)
class LayerArgs:
    """The spec arguments (camelCase) one layer type requires and those it may also take."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self.required + self.optional)


# The one layer table: the pydantic validator, the CEL rules of the CRD and the trainer's
# layer factory all read it, so the API server rejects what the trainer would.
LAYER_ARGS: Final[dict[str, LayerArgs]] = {
    "Dense": LayerArgs(("units",), ("activation",)),
    "Dropout": LayerArgs(("rate",)),
    "Conv2D": LayerArgs(("filters", "kernelSize"), ("strides", "padding", "activation")),
    "MaxPooling2D": LayerArgs((), ("poolSize", "strides", "padding")),
    "AveragePooling2D": LayerArgs((), ("poolSize", "strides", "padding")),
    "Flatten": LayerArgs(),
    "BatchNormalization": LayerArgs(),
    "GlobalAveragePooling2D": LayerArgs(),
    "GlobalMaxPooling2D": LayerArgs(),
    "Rescaling": LayerArgs(("scale",), ("offset",)),
    "Resizing": LayerArgs(("height", "width")),
    "Embedding": LayerArgs(("outputDim",), ("inputDim", "maskZero")),
    "LSTM": LayerArgs(("units",), ("returnSequences",)),
    "GRU": LayerArgs(("units",), ("returnSequences",)),
    "Bidirectional": LayerArgs(("units", "cell"), ("returnSequences",)),
    "Conv1D": LayerArgs(("filters", "kernelSize"), ("strides", "padding", "activation")),
    "MaxPooling1D": LayerArgs((), ("poolSize", "strides", "padding")),
    "GlobalAveragePooling1D": LayerArgs(),
    "GlobalMaxPooling1D": LayerArgs(),
    "Normalization": LayerArgs(),
    "StringLookup": LayerArgs((), ("numOovIndices",)),
    "CategoryEncoding": LayerArgs((), ("numTokens", "outputMode")),
    "Input": LayerArgs((), ("shape",)),
}


def _layers_taking(arg: str) -> list[str]:
    return [layer for layer, args in LAYER_ARGS.items() if arg in args.allowed]


def _not_taken(layer: str, arg: str) -> str:
    return f"{layer} does not take {arg} ({arg} is for {', '.join(_layers_taking(arg))})"


def _layer_rules() -> list[JsonValue]:
    """CEL rules from LAYER_ARGS: required arguments per type, then one rule per argument."""
    required: list[JsonValue] = [
        cel(
            f"self.type != '{layer}' || " + " && ".join(f"has(self.{a})" for a in args.required),
            f"{layer} needs " + " and ".join(args.required),
        )
        for layer, args in LAYER_ARGS.items()
        if args.required
    ]
    arguments = sorted({a for args in LAYER_ARGS.values() for a in args.allowed})
    taken_only_by: list[JsonValue] = [
        cel(
            f"!has(self.{arg}) || self.type in {_layers_taking(arg)!r}",
            _not_taken("this layer", arg),
            message_expression=f"self.type + '{_not_taken('', arg)}'",
        )
        for arg in arguments
    ]
    return required + taken_only_by


class LayerSpec(SpecModel):
    """One layer of a Sequential stack, written as data (never as code)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": _layer_rules(),
        }
    )

    type: LayerType = Field(..., description="Keras layer class.")
    units: int | None = Field(None, ge=1, le=1_000_000, description="Dense, LSTM, GRU: units.")
    activation: Activation | None = Field(None, description="Dense, Conv1D, Conv2D: activation.")
    rate: float | None = Field(None, ge=0, lt=1, description="Dropout: fraction dropped.")
    filters: int | None = Field(
        None, ge=1, le=65536, description="Conv1D, Conv2D: output channels."
    )
    kernel_size: int | None = Field(None, ge=1, le=64, description="Conv1D, Conv2D: kernel size.")
    strides: int | None = Field(None, ge=1, le=64, description="Conv2D, pooling: stride.")
    padding: Literal["valid", "same"] | None = Field(None, description="Conv2D, pooling.")
    pool_size: int | None = Field(None, ge=1, le=64, description="Pooling: square window.")
    scale: float | None = Field(None, description="Rescaling: multiply inputs by this.")
    offset: float | None = Field(None, description="Rescaling: then add this.")
    height: int | None = Field(None, ge=1, le=4096, description="Resizing: target height.")
    width: int | None = Field(None, ge=1, le=4096, description="Resizing: target width.")
    output_dim: int | None = Field(None, ge=1, le=65536, description="Embedding: vector size.")
    input_dim: int | None = Field(
        None,
        ge=2,
        le=10_000_000,
        description="Embedding: vocabulary size (default: the text format's vocabulary).",
    )
    mask_zero: bool | None = Field(
        None,
        description=(
            "Embedding: padding (0) is masked, so layers that honour the mask "
            "(GlobalAveragePooling1D, LSTM, GRU, Bidirectional) skip it; Conv1D, Flatten "
            "and GlobalMaxPooling1D ignore it (Keras warns). Default: true on the text "
            "format (its word ids pad with 0), false otherwise."
        ),
    )
    return_sequences: bool | None = Field(
        None, description="LSTM, GRU, Bidirectional: output every step, not only the last."
    )
    cell: Literal["LSTM", "GRU"] | None = Field(
        None, description="Bidirectional: the recurrent layer."
    )
    num_oov_indices: int | None = Field(
        None, ge=1, le=1024, description="StringLookup: slots for values not seen in training."
    )
    num_tokens: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="CategoryEncoding: number of integer ids (default: the text vocabulary's size + 2).",
    )
    output_mode: Literal["one_hot", "multi_hot", "count"] | None = Field(
        None, description="CategoryEncoding: one_hot, multi_hot (default) or count."
    )
    shape: list[Annotated[int, Field(ge=1, le=1_000_000)]] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Input (first layer only): the input shape per example, checked against the data.",
    )

    @model_validator(mode="after")
    def _layer_args(self) -> LayerSpec:
        args = LAYER_ARGS[self.type]
        missing = [a for a in args.required if getattr(self, _snake(a)) is None]
        if missing:
            raise ValueError(f"{self.type} needs {' and '.join(missing)}")
        given = set(self.model_dump(exclude={"type"}, exclude_none=True, by_alias=True))
        unexpected = sorted(given - args.allowed)
        if unexpected:
            raise ValueError("; ".join(_not_taken(self.type, a) for a in unexpected))
        return self

    def keras_kwargs(self) -> dict[str, Any]:
        """The layer's constructor arguments, snake_case, unset ones left out."""
        return self.model_dump(exclude={"type"}, exclude_none=True, by_alias=False)


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


HEAD_NO_INPUT = "transfer.head takes no Input or StringLookup: the input is the base's"

Application = Literal["VGG16", "ResNet50", "MobileNetV2", "EfficientNetB0"]


class TransferSpec(SpecModel):
    """Transfer learning from a ``keras.applications`` base network."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(self.weights == 'file') == has(self.weightsPath)",
                    "weightsPath is required when weights is 'file', and only then",
                    ".weightsPath",
                ),
                cel(
                    "!has(self.head) || self.head.all(l, !(l.type in ['Input', 'StringLookup']))",
                    HEAD_NO_INPUT,
                    ".head",
                ),
            ]
        }
    )

    application: Application = Field(..., description="Base network from keras.applications.")
    weights: Literal["imagenet", "none", "file"] = Field(
        "imagenet",
        description=(
            "imagenet: downloaded once into a cache on the model volume (needs egress);"
            " none: random init; file: weightsPath on a volume."
        ),
    )
    weights_path: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="weights=file: .h5/.weights.h5 file on the data volume.",
    )
    pooling: Literal["avg", "max", "flatten"] = Field(
        "avg", description="How the base's feature map is reduced before the head."
    )
    fine_tune_layers: int = Field(
        0, ge=0, le=1000, description="Unfreeze this many top layers of the base (0 = frozen)."
    )
    head: list[LayerSpec] = Field(
        default_factory=list,
        max_length=64,
        description="Layers after the pooled base; the output layer is added from the loss.",
    )

    @model_validator(mode="after")
    def _weights_path(self) -> TransferSpec:
        if (self.weights == "file") != (self.weights_path is not None):
            raise ValueError("weightsPath is required when weights is 'file', and only then")
        if any(layer.type in ("Input", "StringLookup") for layer in self.head):
            raise ValueError(HEAD_NO_INPUT)
        return self


PYTHON_MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class ModelFileSpec(SpecModel):
    """A ``.keras`` file saved by Keras: trained further with the job's data and settings."""

    path: str = Field(
        ..., min_length=1, max_length=4096, description=".keras file, relative to the data volume."
    )
    imports: list[Annotated[str, Field(pattern=PYTHON_MODULE_PATTERN, max_length=512)]] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Python modules imported before loading (from model.codePath or the image), so"
            " classes registered with keras.saving.register_keras_serializable are known."
        ),
    )


class BuilderSpec(SpecModel):
    """A Python function returning a Keras model: ``function(input_shape, num_classes, **args)``."""

    module: str = Field(
        ...,
        pattern=PYTHON_MODULE_PATTERN,
        max_length=512,
        description="Module holding the function (from model.codePath or the image).",
    )
    function: str = Field(
        "build", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256, description="Function name."
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments passed to the function (free-form).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


MODEL_SOURCES = ("layers", "transfer", "file", "builder")
INPUT_FIRST = "Input can only be the first of model.layers"
LOOKUP_FIRST = "StringLookup can only start model.layers (after Input, once)"
OUTPUT_LAST = "model.layers needs an output layer after Input and StringLookup"


class ModelSpec(SpecModel):
    """The network: a layer list, transfer learning, a model file or a builder. Exactly one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[" + ", ".join(f"has(self.{s})" for s in MODEL_SOURCES) + "]"
                    ".filter(x, x).size() == 1",
                    "set exactly one of model.layers, model.transfer, model.file and model.builder",
                ),
                cel(
                    "!has(self.codePath) || has(self.file) || has(self.builder)",
                    "codePath applies only to model.file and model.builder",
                    ".codePath",
                ),
                cel(
                    "!has(self.layers) || !self.layers.exists(l, l.type == 'Input') ||"
                    " (self.layers[0].type == 'Input' &&"
                    " self.layers.filter(l, l.type == 'Input').size() == 1)",
                    INPUT_FIRST,
                    ".layers",
                ),
                cel(
                    "!has(self.layers) || !self.layers.exists(l, l.type == 'StringLookup') ||"
                    " (self.layers.filter(l, l.type == 'StringLookup').size() == 1 &&"
                    " (self.layers[0].type == 'StringLookup' || (size(self.layers) > 1 &&"
                    " self.layers[0].type == 'Input' && self.layers[1].type == 'StringLookup')))",
                    LOOKUP_FIRST,
                    ".layers",
                ),
                cel(
                    "!has(self.layers) ||"
                    " !(self.layers[size(self.layers) - 1].type in ['Input', 'StringLookup'])",
                    OUTPUT_LAST,
                    ".layers",
                ),
            ]
        }
    )

    layers: list[LayerSpec] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="A Sequential stack. The last layer is the output layer.",
    )
    transfer: TransferSpec | None = Field(None, description="Transfer learning from a base.")
    file: ModelFileSpec | None = Field(None, description="A saved .keras model to train further.")
    builder: BuilderSpec | None = Field(None, description="Python code that builds the model.")
    code_path: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description=(
            "Folder on the data volume put first on the trainer's Python path (the builder's"
            " module, a model file's imports). The code runs only in the trainer pods."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSpec:
        if sum(getattr(self, s) is not None for s in MODEL_SOURCES) != 1:
            raise ValueError(
                "set exactly one of model.layers, model.transfer, model.file and model.builder"
            )
        if self.code_path is not None and self.file is None and self.builder is None:
            raise ValueError("codePath applies only to model.file and model.builder")
        if self.layers is not None:
            types = [layer.type for layer in self.layers]
            if "Input" in types and (types[0] != "Input" or types.count("Input") > 1):
                raise ValueError(INPUT_FIRST)
            lookup_at = 1 if types[0] == "Input" else 0
            if "StringLookup" in types and (
                types.count("StringLookup") > 1
                or len(types) <= lookup_at
                or types[lookup_at] != "StringLookup"
            ):
                raise ValueError(LOOKUP_FIRST)
            if types[-1] in ("Input", "StringLookup"):
                raise ValueError(OUTPUT_LAST)
        return self


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


class EarlyStoppingSpec(SpecModel):
    monitor: str = Field(
        "val_loss", max_length=256, description="Metric watched, e.g. val_loss or val_accuracy."
    )
    patience: int = Field(3, ge=0, le=1000, description="Epochs without improvement before stop.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts.")
    restore_best_weights: bool = Field(True, description="Keep the best epoch's weights.")


Loss = Literal[
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "mean_squared_error",
    "mean_absolute_error",
]


class TrainingSpec(SpecModel):
    optimizer: Literal["adam", "sgd", "rmsprop", "adamw", "adagrad"] = Field(
        "adam", description="Optimizer."
    )
    learning_rate: float = Field(0.001, gt=0, le=10, description="Learning rate.")
    loss: Loss = Field("binary_crossentropy", description="Loss function.")
    metrics: list[Literal["accuracy", "auc", "precision", "recall", "mae", "mse"]] = Field(
        default_factory=lambda: ["accuracy"],  # type: ignore[arg-type]
        max_length=8,
        description="Metrics reported.",
    )
    epochs: int = Field(5, ge=1, le=100000, description="Passes over the training data.")
    batch_size: int = Field(32, ge=1, le=65536, description="Global batch size.")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when stalled.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Seed for reproducibility.")
    mixed_precision: bool = Field(False, description="float16 compute on GPUs.")
    backend: Literal["tensorflow", "jax"] = Field(
        "tensorflow", description="KERAS_BACKEND for the trainer (jax is used for several workers)."
    )
    checkpoint_interval_seconds: int = Field(
        60,
        ge=0,
        le=86400,
        description=(
            "Save the resume checkpoint after an epoch only when this many seconds have passed"
            " since the last one (0: after every epoch); the last epoch is always saved. A"
            " restarted trainer loses at most this much training plus the epoch in progress."
        ),
    )
    tensorboard: bool = Field(
        False,
        description=(
            "Write Keras TensorBoard logs to <model>/tensorboard/<job uid>/ on the model volume"
            " (status.tensorboardPath names it)."
        ),
    )


# --------------------------------------------------------------------------
# Output, storage, resources
# --------------------------------------------------------------------------


class StorageSpec(SpecModel):
    """The model store volume: an existing PVC, or one the operator creates."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.claimName) != has(self.size)",
                    "set exactly one of claimName (existing PVC) and size (new PVC)",
                )
            ]
        }
    )

    claim_name: str | None = Field(
        None, pattern=NAME_PATTERN, max_length=253, description="Existing PVC to use."
    )
    size: str | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$",
        description="Size of a PVC the operator creates, e.g. 5Gi.",
    )
    storage_class_name: str | None = Field(
        None, max_length=253, description="Storage class of a created PVC."
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        "ReadWriteOnce", description="Access mode of a created PVC."
    )
    retain: bool = Field(
        True, description="Keep a created PVC when the job is deleted (models survive)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> StorageSpec:
        if (self.claim_name is None) == (self.size is None):
            raise ValueError("set exactly one of claimName (existing PVC) and size (new PVC)")
        return self


ExportFormat = Literal["savedmodel", "onnx"]


class OutputSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.uri) && has(self.storage))",
                    "set at most one of storage (a volume) and uri (a bucket)",
                ),
                cel("has(self.uri) || !has(self.store)", "store applies only with uri", ".store"),
                _STORE_URI_RULE,
            ]
        }
    )

    model_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        max_length=63,
        description="Name in the model store (default: the job's name).",
    )
    formats: list[ExportFormat] = Field(
        default_factory=lambda: ["onnx"],  # type: ignore[arg-type]
        max_length=2,
        description=(
            "Exports written beside model.keras (always written): onnx (model.onnx where the"
            " model converts; served by the slim image without TensorFlow) and savedmodel (saved_model.pb + variables/"
            " for TF Serving or KServe; costs one more trace of the model). [] writes only"
            " model.keras, served by the runtime image. status.modelFormats says what a"
            " version holds."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    storage: StorageSpec | None = Field(
        None,
        description=(
            "The volume holding <modelName>/<version>/ (default without uri: a new 1Gi PVC)."
        ),
    )
    uri: str | None = Field(
        None,
        max_length=1024,
        description=(
            "A model store in a bucket instead of a volume: s3://bucket/prefix or"
            " gs://bucket/prefix holds <modelName>/<version>/ (docs/model-store.md); no PVC,"
            " pods on any node."
        ),
    )
    store: ObjectStoreSpec | None = Field(
        None, description="Credentials and endpoint of the uri's store."
    )

    @model_validator(mode="after")
    def _volume_or_uri(self) -> OutputSpec:
        _check_store_uri(self.uri)
        if self.uri is not None and self.storage is not None:
            raise ValueError("set at most one of storage (a volume) and uri (a bucket)")
        if self.uri is None and self.store is not None:
            raise ValueError("store applies only with uri")
        return self

    @property
    def volume(self) -> StorageSpec | None:
        """The model store volume: ``storage``, else a new 1Gi PVC; None with a ``uri``.

        The default is filled in here, not in the schema (a schema default would make every
        job name a volume, uri or not), so the stored object stays as the user wrote it.
        """
        if self.uri is not None:
            return None
        return self.storage or StorageSpec(size="1Gi")

    @field_validator("formats")
    @classmethod
    def _each_format_once(cls, formats: list[str]) -> list[str]:
        twice = sorted({f for f in formats if formats.count(f) > 1})
        if twice:  # the API server's set-typed list says the same
            raise ValueError(f"Duplicate value: {', '.join(twice)} (list each format once)")
        return formats


class ResourcesSpec(SpecModel):
    cpu: str | None = Field(None, description="CPU request and limit, e.g. '2' or '500m'.")
    memory: str | None = Field(None, description="Memory request and limit, e.g. 4Gi.")
    gpus: int = Field(0, ge=0, le=16, description="nvidia.com/gpu per pod.")


class PodSpecOverrides(SpecModel):
    """Scheduling knobs copied onto the pods."""

    node_selector: dict[str, str] | None = Field(
        None, description="Node labels the pods must match."
    )
    tolerations: list[dict[str, Any]] | None = Field(
        None,
        description="Pod tolerations (Kubernetes format).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description="Pod affinity (Kubernetes format).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(
        None, max_length=253, description="PriorityClass of the pods."
    )
    service_account_name: str | None = Field(
        None, max_length=253, description="ServiceAccount of the pods (default: a token-less one)."
    )
    pod_template: dict[str, Any] | None = Field(
        None,
        description="Strategic-merge override of the generated pod template (free-form).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class ScriptSpec(SpecModel):
    """Script mode: your own training loop, in your image, with ``kerasop_trainer.api``."""

    command: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        ...,
        min_length=1,
        max_length=256,
        description=(
            "Command run in the trainer container (e.g. [python, /app/train.py]); it reports"
            " progress and publishes the model with kerasop_trainer.api. Runs in the data"
            " volume's folder (/data)."
        ),
    )


# --------------------------------------------------------------------------
# Tuning (hyperparameter search over the job's own spec, docs/tuning.md)
# --------------------------------------------------------------------------

TUNABLE_SECTIONS: Final = ("model", "training")
_SCALARS: Final = (int, float, str, bool)


def _tunable_patterns(model: type[BaseModel], prefix: str) -> list[str]:
    """Regular expressions of every scalar field under ``model``, as space paths name them."""
    import types
    import typing

    out: list[str] = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        kind = field.annotation
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        origin = typing.get_origin(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += _tunable_patterns(kind, rf"{prefix}{alias}\.")
        elif origin is list:
            item = typing.get_args(kind)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                out += _tunable_patterns(item, rf"{prefix}{alias}\[[0-9]+\]\.")
        elif origin is dict:  # builder args: free-form keyword arguments
            out.append(rf"{prefix}{alias}\.[A-Za-z_][A-Za-z0-9_]*")
        elif origin is Literal or kind in _SCALARS:
            out.append(rf"{prefix}{alias}")
    return out


class SearchDimensionSpec(SpecModel):
    """One hyperparameter: exactly one of choice, uniform, logUniform and intRange."""

    model_config = ConfigDict(
        json_schema_extra={
            # Exactly one kind: CEL cannot name choice (its items have no type), a count can.
            "minProperties": 1,
            "maxProperties": 1,
            "x-kubernetes-validations": [
                cel(
                    "!has(self.uniform) || self.uniform[0] < self.uniform[1]",
                    "uniform is [low, high] with low < high",
                    ".uniform",
                ),
                cel(
                    "!has(self.logUniform) || (self.logUniform[0] > 0.0"
                    " && self.logUniform[0] < self.logUniform[1])",
                    "logUniform is [low, high] with 0 < low < high",
                    ".logUniform",
                ),
                cel(
                    "!has(self.intRange) || (self.intRange[0] < self.intRange[1]"
                    " && (size(self.intRange) == 2 || self.intRange[2] > 0))",
                    "intRange is [low, high] or [low, high, step] with low < high and step > 0",
                    ".intRange",
                ),
            ],
        }
    )

    choice: list[Any] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="The values to try (numbers, strings or booleans, all of one kind).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    uniform: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high]: a float drawn uniformly."
    )
    log_uniform: list[float] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[low, high], low > 0: a float drawn uniformly on a log scale (learning rates).",
    )
    int_range: list[int] | None = Field(
        None,
        min_length=2,
        max_length=3,
        description="[low, high] or [low, high, step]: an integer, both ends included.",
    )

    @field_validator("choice")
    @classmethod
    def _scalars_of_one_kind(cls, values: list[Any] | None) -> list[Any] | None:
        if values is None:
            return values
        if any(not isinstance(v, _SCALARS) for v in values):
            raise ValueError("choice values are numbers, strings or booleans")
        if len({type(v) for v in values}) > 1:  # keras-tuner's Choice takes one type
            raise ValueError(
                "choice values are all of one kind (integers, floats, strings or booleans)"
            )
        if len({repr(v) for v in values}) != len(values):
            raise ValueError("choice values are listed once each")
        return values

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimensionSpec:
        given = [k for k in ("choice", "uniform", "log_uniform", "int_range") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("set exactly one of choice, uniform, logUniform and intRange")
        if self.uniform is not None and not self.uniform[0] < self.uniform[1]:
            raise ValueError("uniform is [low, high] with low < high")
        lu = self.log_uniform
        if lu is not None and not 0 < lu[0] < lu[1]:
            raise ValueError("logUniform is [low, high] with 0 < low < high")
        ir = self.int_range
        if ir is not None and not (ir[0] < ir[1] and (len(ir) == 2 or ir[2] > 0)):
            raise ValueError(
                "intRange is [low, high] or [low, high, step] with low < high and step > 0"
            )
        return self

    def samples(self) -> list[Any]:
        """Values that stand for the whole dimension when it is checked against its field:
        every choice; the ends of a range (and a float between them for the float ranges,
        so an integer field refuses them)."""
        if self.choice is not None:
            return list(self.choice)
        if self.int_range is not None:
            return self.int_range[:2]
        low, high = self.uniform or self.log_uniform or [0.0, 0.0]
        return [low, high, low + (high - low) * 0.37]


class TuningObjectiveSpec(SpecModel):
    metric: str = Field(
        ...,
        min_length=1,
        max_length=256,
        description=(
            "A metric the trainer reports: loss or one of training.metrics, with or without"
            " the val_ prefix (both mean the final validation value, as in metadata.json)."
        ),
    )
    direction: Literal["min", "max"] | None = Field(
        None,
        description="min or max (default: min for losses and errors, max for the others).",
    )


class TrialStoppingSpec(SpecModel):
    """Median stopping: a trial worse than the median of finished trials at the same epoch stops."""

    after_epochs: int = Field(
        1, ge=1, le=100000, description="Epochs a trial always runs before it can be stopped."
    )
    min_trials: int = Field(
        3,
        ge=1,
        le=1000,
        description="Finished trials needed before any trial is stopped.",
    )


def _tunable_regex() -> str:
    return "|".join(
        p
        for section, model in (("model", ModelSpec), ("training", TrainingSpec))
        for p in _tunable_patterns(model, rf"{section}\.")
    )


HYPERBAND_STOPS = "hyperband stops bad trials by itself: earlyStopping is for random and bayesian"
TUNABLE_PATH_REGEX: Final = f"^({_tunable_regex()})$"


class TuningSpec(SpecModel):
    """A hyperparameter search over this job's own spec, on keras-tuner (docs/tuning.md).

    Each trial is the job's spec with the trial's values at their paths; the best
    trial's model is published as the job's next version.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.space.all(p, p.matches(r'{TUNABLE_PATH_REGEX}'))",
                    "tuning.space paths name a model or training field, e.g."
                    " training.learningRate or model.layers[0].units",
                    ".space",
                ),
                cel(
                    "!(self.algorithm == 'hyperband' && has(self.earlyStopping))",
                    HYPERBAND_STOPS,
                    ".earlyStopping",
                ),
            ]
        }
    )

    space: dict[str, SearchDimensionSpec] = Field(
        ...,
        min_length=1,
        max_length=32,
        description=(
            "Spec path -> values to search, e.g. training.learningRate: {logUniform: [1e-4,"
            " 1e-1]}, model.layers[0].units: {choice: [16, 32, 64]}. Paths name model and"
            " training fields (builder args too: model.builder.args.NAME)."
        ),
    )
    objective: TuningObjectiveSpec | None = Field(
        None,
        description=(
            "What the search optimizes (default: the first of training.metrics, else loss, on"
            " the validation data)."
        ),
    )
    algorithm: Literal["random", "bayesian", "hyperband"] = Field(
        "random",
        description=(
            "keras-tuner's oracle: random search, Bayesian optimization (Gaussian process) or"
            " Hyperband (trials of growing epochs up to training.epochs)."
        ),
    )
    max_trials: int = Field(
        10,
        ge=1,
        le=1000,
        description="Trials in all (hyperband: an upper bound; it stops when its brackets end).",
    )
    parallelism: int = Field(
        1, ge=1, le=64, description="Trials run at once (each in its own pod)."
    )
    early_stopping: TrialStoppingSpec | None = Field(
        None, description="Stop trials worse than the median of finished ones (not hyperband)."
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Seed of the search (the same seed, the same trials)."
    )

    @model_validator(mode="after")
    def _hyperband_stops_by_itself(self) -> TuningSpec:
        if self.algorithm == "hyperband" and self.early_stopping is not None:
            raise ValueError(HYPERBAND_STOPS)
        return self

    def objective_metric(self, training: TrainingSpec) -> str:
        """The objective's metric name without ``val_`` (the key of the trainer's metrics)."""
        if self.objective is not None:
            return self.objective.metric.removeprefix("val_")
        return training.metrics[0] if training.metrics else "loss"

    def objective_direction(self, training: TrainingSpec) -> Literal["min", "max"]:
        if self.objective is not None and self.objective.direction is not None:
            return self.objective.direction
        return "min" if lower_is_better(self.objective_metric(training)) else "max"


TUNING_NEEDS = (
    "tuning needs the built-in trainer (model, not script) and workers: 1 (parallelism"
    " runs trials at once)"
)


class KerasTrainingJobSpec(SpecModel):
    """What to train, on what data, with which resources; the result is a model version."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.data == oldSelf.data"
                    " && has(self.model) == has(oldSelf.model)"
                    " && (!has(self.model) || self.model == oldSelf.model)"
                    " && has(self.script) == has(oldSelf.script)"
                    " && (!has(self.script) || self.script == oldSelf.script)"
                    " && self.training == oldSelf.training && self.output == oldSelf.output"
                    " && self.workers == oldSelf.workers",
                    "data, model, script, training, output and workers are immutable; create a"
                    " new job to train something else",
                ),
                cel(
                    "has(self.queueName) == has(oldSelf.queueName)"
                    " && (!has(self.queueName) || self.queueName == oldSelf.queueName)"
                    " && has(self.priorityClassName) == has(oldSelf.priorityClassName)"
                    " && (!has(self.priorityClassName)"
                    " || self.priorityClassName == oldSelf.priorityClassName)",
                    "queueName and priorityClassName are immutable; create a new job to queue"
                    " it elsewhere",
                ),
                cel(
                    "has(self.model) != has(self.script)",
                    "set exactly one of model (the built-in trainer) and script (your own"
                    " training script)",
                ),
                cel(
                    "has(self.tuning) == has(oldSelf.tuning)"
                    " && (!has(self.tuning) || self.tuning == oldSelf.tuning)",
                    "tuning is immutable; create a new job to search something else",
                ),
                cel(
                    "!has(self.tuning) || (has(self.model) && self.workers == 1)",
                    TUNING_NEEDS,
                    ".tuning",
                ),
                cel(
                    "!has(self.tuning) || !has(self.tuning.objective) || !has(self.model)"
                    " || has(self.model.file) || self.tuning.objective.metric in ['loss',"
                    " 'val_loss'] + self.training.metrics"
                    " + self.training.metrics.map(m, 'val_' + m)",
                    "tuning.objective.metric is not reported: use loss or one of"
                    " training.metrics, with or without val_",
                    ".tuning.objective.metric",
                ),
            ]
        }
    )

    data: DataSpec
    model: ModelSpec | None = Field(None, description="The network the built-in trainer trains.")
    script: ScriptSpec | None = Field(
        None, description="Run your own training script instead of the built-in trainer."
    )
    training: TrainingSpec = Field(
        default_factory=TrainingSpec, description="Optimizer, loss, epochs and the like."
    )
    output: OutputSpec = Field(
        default_factory=OutputSpec, description="Model name and the model store volume."
    )
    workers: int = Field(
        1, ge=1, le=64, description="Trainer processes (data parallel, JAX backend if > 1)."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="CPU, memory and GPUs of each trainer pod."
    )
    scheduling: PodSpecOverrides = Field(
        default_factory=PodSpecOverrides, description="Where and how the pods are scheduled."
    )
    image: str | None = Field(None, description="Trainer image (default: the operator's).")
    backoff_limit: int = Field(3, ge=0, le=100, description="Pod restarts before Failed.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Wall-clock limit.")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the finished Job's pods after this long."
    )
    suspend: bool = Field(False, description="Pause: trainer pods are removed, resume later.")
    tuning: TuningSpec | None = Field(
        None,
        description=(
            "Search hyperparameters with keras-tuner: trials of this spec with other values,"
            " the best one published as the next version (docs/tuning.md)."
        ),
    )
    queue_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        max_length=63,
        description=(
            "Kueue LocalQueue (in the job's namespace) that admits the trainer: the Job is"
            " created suspended and labelled kueue.x-k8s.io/queue-name, and Kueue starts it"
            " when the queue's quota allows, all workers at once (docs/queues.md). The label"
            " kueue.x-k8s.io/queue-name on the KerasTrainingJob means the same. Immutable."
        ),
    )
    priority_class_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        max_length=253,
        description=(
            "Kueue WorkloadPriorityClass of the job (label kueue.x-k8s.io/priority-class on"
            " the Job): higher ones are admitted first and may preempt lower ones. Needs a"
            " queue (queueName or the label). Immutable."
        ),
    )

    @model_validator(mode="after")
    def _model_or_script(self) -> KerasTrainingJobSpec:
        if (self.model is None) == (self.script is None):
            raise ValueError(
                "set exactly one of model (the built-in trainer) and script (your own"
                " training script)"
            )
        if self.tuning is not None:
            if self.model is None or self.workers != 1:
                raise ValueError(TUNING_NEEDS)
            _check_space(self, self.tuning)
        return self

    def trial_spec(self, values: dict[str, Any]) -> KerasTrainingJobSpec:
        """This spec with ``values`` (space path -> value) applied, without ``tuning``."""
        document = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        document.pop("tuning", None)
        for path, value in values.items():
            document = set_path(document, path, value)
        return KerasTrainingJobSpec.model_validate(document)


def _check_space(spec: KerasTrainingJobSpec, tuning: TuningSpec) -> None:
    """Every path names a field of this spec and every value of its range fits the field;
    the objective is a metric the trainer reports."""
    from pydantic import ValidationError

    for path, dimension in tuning.space.items():
        if not re.match(TUNABLE_PATH_REGEX, path):
            raise ValueError(
                f"tuning.space: {path} names no model or training field (e.g."
                " training.learningRate, model.layers[0].units)"
            )
        for value in dimension.samples():
            try:
                spec.trial_spec({path: value})
            except PathError as exc:
                raise ValueError(f"tuning.space: {exc}") from None
            except ValidationError as exc:
                raise ValueError(
                    f"tuning.space: {path} = {value!r} does not fit: {describe_errors(exc)}"
                ) from None
    model = spec.model
    if model is not None and model.file is None:  # a model file keeps its own metrics
        reported = ["loss", *spec.training.metrics]
        metric = tuning.objective_metric(spec.training)
        if metric not in reported:
            choices = ", ".join(reported + [f"val_{m}" for m in reported])
            raise ValueError(
                f"tuning.objective.metric {metric} is not reported; choose one of {choices}"
            )


# --------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------


class ServedModelSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.trainingJob) ? !has(self.name) && !has(self.claimName)"
                    " && !has(self.uri) && !has(self.store)"
                    " : has(self.name) && has(self.claimName) != has(self.uri)",
                    "set either trainingJob, or name and one of claimName and uri",
                ),
                cel("has(self.uri) || !has(self.store)", "store applies only with uri", ".store"),
                _STORE_URI_RULE,
            ]
        }
    )

    training_job: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        max_length=253,
        description="Follow this job's latest succeeded version.",
    )
    name: str | None = Field(
        None, pattern=NAME_PATTERN, max_length=63, description="Model name in the store."
    )
    claim_name: str | None = Field(
        None, pattern=NAME_PATTERN, max_length=253, description="PVC holding the store."
    )
    uri: str | None = Field(
        None,
        max_length=1024,
        description=(
            "Model store in a bucket (s3://bucket/prefix or gs://bucket/prefix) instead of"
            " claimName."
        ),
    )
    store: ObjectStoreSpec | None = Field(
        None, description="Credentials and endpoint of the uri's store."
    )
    version: int | None = Field(
        None, ge=1, description="Pin this version (rollback = pin an older one)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ServedModelSpec:
        by_name = (self.name, self.claim_name, self.uri, self.store)
        if (self.training_job is not None and by_name != (None, None, None, None)) or (
            self.training_job is None
            and (self.name is None or (self.claim_name is None) == (self.uri is None))
        ):
            raise ValueError("set either trainingJob, or name and one of claimName and uri")
        _check_store_uri(self.uri)
        if self.uri is None and self.store is not None:
            raise ValueError("store applies only with uri")
        return self


DEFAULT_TARGET_CPU_UTILIZATION = 70


class AutoscalingSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas")
            ]
        }
    )

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest server pods.")
    max_replicas: int = Field(..., ge=1, le=1000, description="Most server pods.")
    target_cpu_utilization: int | None = Field(
        None,
        ge=1,
        le=100,
        description=(
            "Average CPU use, in percent of the pods' CPU request "
            f"({DEFAULT_TARGET_CPU_UTILIZATION} when no target is set)."
        ),
    )
    target_in_flight_requests: int | None = Field(
        None,
        ge=1,
        le=10000,
        description=(
            "Average prediction requests in flight per pod (the servers' "
            "kerasop_server_requests_in_flight gauge; needs a custom-metrics adapter). "
            "With both targets the HPA follows whichever wants more pods."
        ),
    )
    scale_down_stabilization_seconds: int | None = Field(
        None,
        ge=0,
        le=3600,
        description=(
            "How long the load must stay low before the HPA removes pods (its scaleDown "
            "stabilization window; Kubernetes' default when unset: 300)."
        ),
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self

    def cpu_target(self) -> int | None:
        """The CPU target the HPA gets: the default one when no target at all is set."""
        if self.target_cpu_utilization is None and self.target_in_flight_requests is None:
            return DEFAULT_TARGET_CPU_UTILIZATION
        return self.target_cpu_utilization


# The model server's ports in its pod (kerasop.contracts names the HTTP one SERVER_PORT).
HTTP_PORT: Final = 8080
GRPC_PORT: Final = 8081


class ServerSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    # has(): the parent's default object is checked before its own defaults
                    "!has(self.grpcPort) || self.grpcPort == 0"
                    f" || (self.grpcPort >= 1024 && self.grpcPort != {HTTP_PORT})",
                    f"grpcPort must be 0 (off) or an unprivileged port other than {HTTP_PORT} (HTTP)",
                    ".grpcPort",
                ),
            ]
        }
    )

    max_batch_size: int = Field(32, ge=1, le=4096, description="Dynamic batching: rows per batch.")
    batch_timeout_ms: float = Field(
        2.0, ge=0, le=1000, description="Dynamic batching: longest wait to fill a batch."
    )
    max_request_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="Larger request bodies get 413 (gRPC: larger messages get RESOURCE_EXHAUSTED).",
    )
    grpc_port: int = Field(
        GRPC_PORT,
        ge=0,
        le=65535,
        description=(
            "Open Inference Protocol v2 over gRPC (tritonclient.grpc, KServe's"
            " InferenceGRPCClient; docs/serving.md) on this port of the server pod, behind the"
            f" Service's port 'grpc' ({GRPC_PORT}); 0 turns gRPC off."
        ),
    )

    @model_validator(mode="after")
    def _grpc_port(self) -> ServerSpec:
        if self.grpc_port and (self.grpc_port < 1024 or self.grpc_port == HTTP_PORT):
            raise ValueError(
                f"grpcPort must be 0 (off) or an unprivileged port other than {HTTP_PORT} (HTTP)"
            )
        return self


class GateSpec(SpecModel):
    """Evaluation gate: a new version's validation metrics (its metadata.json) must pass.

    Metric names are those the trainer reports (``val_accuracy``, ``val_loss``,
    ... , or without the ``val_`` prefix as written in ``metadata.json``).
    """

    min: dict[str, float] | None = Field(
        None, max_length=16, description="Floors, e.g. {val_accuracy: 0.9}."
    )
    max: dict[str, float] | None = Field(
        None, max_length=16, description="Ceilings, e.g. {val_loss: 0.4}."
    )
    max_regression: dict[str, float] | None = Field(
        None,
        max_length=16,
        description=(
            "Largest allowed worsening against the serving version, per metric, in the"
            " metric's units, e.g. {val_accuracy: 0.01}. Losses/errors (names containing"
            " loss, error, mae, mse) are worse when higher, the others when lower."
        ),
    )


class CanarySpec(SpecModel):
    """Traffic steps for a new version, with limits that roll it back by themselves."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.steps.isSorted() && self.steps.all(x, self.steps.exists_one(y, y == x))",
                    "canary steps must increase",
                    ".steps",
                ),
                cel(
                    "self.steps[size(self.steps) - 1] == 100",
                    "the last canary step must be 100",
                    ".steps",
                ),
            ]
        }
    )

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100],
        min_length=1,
        max_length=10,
        description="Percent of requests sent to the new version, step by step; the last is 100.",
    )
    dwell_seconds: int = Field(
        60, ge=1, le=86400, description="Time spent at each step before the next."
    )
    min_requests: int = Field(
        1,
        ge=0,
        le=10**9,
        description=(
            "Requests the new version must answer at a step before it advances (so a version"
            " that answers nothing, e.g. fails to load, is never promoted by itself)."
        ),
    )
    max_error_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Roll back when the new version's error fraction exceeds this.",
    )
    max_p99_ms: float | None = Field(
        None, gt=0, description="Roll back when the new version's p99 latency exceeds this."
    )
    max_p99_ratio: float | None = Field(
        None, gt=0, description="Roll back when its p99 exceeds the stable version's times this."
    )

    @model_validator(mode="after")
    def _steps(self) -> CanarySpec:
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("canary steps must increase")
        if self.steps[-1] != 100:
            raise ValueError("the last canary step must be 100")
        return self


class ShadowSpec(SpecModel):
    """The new version answers a copy of live requests first; its answers are only compared."""

    duration_seconds: int = Field(
        60, ge=1, le=86400, description="How long the shadow phase lasts."
    )
    min_requests: int = Field(
        1, ge=0, le=10**9, description="Compared requests needed before the phase can end."
    )
    min_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Refuse the version when fewer answers than this fraction agree with stable.",
    )
    tolerance: float = Field(
        0.0,
        ge=0,
        description="Regression: answers agree when within this (absolute); classes must match.",
    )
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Refuse the version when more shadow copies than this fail."
    )


class RolloutSpec(SpecModel):
    """How a new version replaces the serving one: gate, shadow, canary; manual overrides."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.promote) && has(self.abort) && self.promote == self.abort)",
                    "promote and abort cannot name the same version",
                ),
            ]
        }
    )

    gate: GateSpec | None = Field(None, description="Metric checks before any traffic.")
    shadow: ShadowSpec | None = Field(None, description="Mirror live requests first.")
    canary: CanarySpec | None = Field(
        None, description="Weighted traffic steps (without it, a passed version takes all traffic)."
    )
    promote: int | None = Field(
        None, ge=1, description="Promote this candidate version now (skips the remaining steps)."
    )
    abort: int | None = Field(
        None, ge=1, description="Abort the rollout of this version now (all traffic to stable)."
    )

    @model_validator(mode="after")
    def _distinct(self) -> RolloutSpec:
        if self.promote is not None and self.promote == self.abort:
            raise ValueError("promote and abort cannot name the same version")
        return self


class KerasModelServiceSpec(SpecModel):
    """A served model: which version, how many replicas, how requests are batched."""

    model: ServedModelSpec = Field(..., description="The model to serve.")
    replicas: int = Field(
        1,
        ge=0,
        le=1000,
        description=(
            "Server pods (ignored with autoscaling). One is a single point of failure (a kubelet"
            " restart drops its endpoint for a moment): 2 or more, spread over nodes, for"
            " anything users call."
        ),
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="CPU, memory and GPUs of each server pod."
    )
    autoscaling: AutoscalingSpec | None = Field(
        None,
        description="A HorizontalPodAutoscaler on CPU and/or requests in flight (replaces replicas).",
    )
    server: ServerSpec = Field(default_factory=ServerSpec, description="Model server settings.")
    scheduling: PodSpecOverrides = Field(
        default_factory=PodSpecOverrides, description="Where and how the pods are scheduled."
    )
    image: str | None = Field(None, description="Server image (default: the operator's).")
    rollout: RolloutSpec | None = Field(
        None,
        description=(
            "Gate, shadow and canary for new versions (without it a new version takes all"
            " traffic at once). model.version pins a version and bypasses the rollout."
        ),
    )


# --------------------------------------------------------------------------
# Whole resources (as in YAML files)
# --------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(..., pattern=NAME_PATTERN, max_length=63)
    namespace: str | None = None
    labels: dict[str, str] | None = None


class KerasTrainingJob(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_version: Literal["kerasop.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["KerasTrainingJob"] = "KerasTrainingJob"
    metadata: ObjectMeta
    spec: KerasTrainingJobSpec

    @model_validator(mode="after")
    def _one_queue(self) -> KerasTrainingJob:
        label = (self.metadata.labels or {}).get(KUEUE_QUEUE_LABEL)
        if label is not None and self.spec.queue_name not in (None, label):
            raise ValueError(
                f"spec.queueName {self.spec.queue_name!r} and the label {KUEUE_QUEUE_LABEL}"
                f" {label!r} differ: set one of them"
            )
        if self.spec.priority_class_name is not None and self.queue_name is None:
            raise ValueError(
                "priorityClassName needs a queue (spec.queueName or the label"
                f" {KUEUE_QUEUE_LABEL}): it is Kueue's workload priority"
            )
        return self

    @property
    def model_name(self) -> str:
        return self.spec.output.model_name or self.metadata.name

    @property
    def queue_name(self) -> str | None:
        """The Kueue LocalQueue: spec.queueName, or the resource's queue-name label."""
        return self.spec.queue_name or (self.metadata.labels or {}).get(KUEUE_QUEUE_LABEL)


def spec_hash(spec: KerasTrainingJobSpec) -> str:
    """Identity of a training spec (defaults filled in): the lineage's ``specHash``."""
    import hashlib
    import json

    text = json.dumps(
        spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class KerasModelService(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_version: Literal["kerasop.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["KerasModelService"] = "KerasModelService"
    metadata: ObjectMeta
    spec: KerasModelServiceSpec


KINDS: dict[str, type[BaseModel]] = {
    "KerasTrainingJob": KerasTrainingJob,
    "KerasModelService": KerasModelService,
}


def load_documents(text: str) -> list[KerasTrainingJob | KerasModelService]:
    """Parse every kerasop document of a (multi-document) YAML string.

    Documents of other kinds are skipped, so one file can hold a PVC, a job and
    a service. Raises ``SpecError`` with the document's kind/name and the
    failing field path.
    """
    import yaml
    from pydantic import ValidationError

    out: list[Any] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
            continue
        try:
            out.append(KINDS[doc["kind"]].model_validate(doc))
        except ValidationError as exc:
            name = (doc.get("metadata") or {}).get("name", "?")
            raise SpecError(f"{doc['kind']} {name}: {describe_errors(exc)}") from None
    return out


def describe_errors(exc: Any) -> str:
    """Pydantic errors as 'spec.data.path: message; ...' (one line)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class SpecError(ValueError):
    """A resource file that does not match the spec models."""
