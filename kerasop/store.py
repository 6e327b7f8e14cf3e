"""The model store: the contract between trainer, server and operator.

Layout (see docs/model-store.md)::

    <root>/<model-name>/<version>/      version = integer, increasing
        saved_model.pb, variables/      a SavedModel (TF Serving / KServe can load the base dir)
        model.keras                     the Keras model
        model.onnx                      the same graph for ONNX Runtime (when the export worked)
        metadata.json                   inputs, outputs, classes, metrics, spec, library versions
    <root>/<model-name>/.staging-*/     a version being written (never read by servers)
    <root>/<model-name>/.checkpoints/<job-id>/   per-epoch checkpoints for resume

A version directory appears only when complete: it is written under a
hidden staging name, then renamed. Versions are never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# File names inside a version directory (the contract with the server).
METADATA_FILE = "metadata.json"
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
SAVED_MODEL_FILE = "saved_model.pb"
STAGING_PREFIX = ".staging-"
CHECKPOINTS_DIR = ".checkpoints"


def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk before it is renamed into place: after a node crash a
    rename must not reveal an empty or torn file. Best effort (some volumes refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON so that readers see the old file or the whole new one.

    Servers poll these files (metadata, rollout plans) while they are being replaced.
    """
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}.json")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def model_formats(directory: Path) -> list[str]:
    """What a version directory holds: ``keras``, ``savedmodel``, ``onnx``.

    The trainer reports it (``done`` event, job status): the operator, which never reads
    the volume, serves versions with ``onnx`` from the slim serving image.
    """
    files = {"keras": KERAS_FILE, "savedmodel": SAVED_MODEL_FILE, "onnx": ONNX_FILE}
    return [fmt for fmt, name in files.items() if (directory / name).is_file()]


class _Camel(BaseModel):
    """camelCase on disk; fields a reader does not know are kept, not refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object as written to disk."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ImageSize(_Camel):
    height: int
    width: int
    channels: int


class InputKind(StrEnum):
    """What a model takes; the server picks how to read a request's rows from it."""

    TABULAR = "tabular"
    IMAGE = "image"
    TEXT = "text"


class TextMetadata(_Camel):
    """The ``TextVectorization`` inside a text model (optional fields: older versions)."""

    column: str | None = None
    sequence_length: int | None = None
    sequence_length_fitted: bool | None = None  # data.text.sequenceLength unset: fitted
    vocabulary_size: int | None = None


class CategoricalMetadata(_Camel):
    """One categorical column of a table: a string input of its own."""

    column: str
    input: str | None = None  # the model input it feeds (older versions: the column's name)
    values: int | None = None  # vocabulary size


class TensorMetadata(_Camel):
    """The model's input or output, per row (no batch dimension).

    Fields in the order they are written: a version's ``metadata.json`` keeps its bytes.
    """

    kind: str | None = None  # input: an InputKind; output: binary | multiclass | regression
    shape: list[int | None] | None = None
    dtype: str | None = None
    feature_names: list[str] | None = None  # tables with categorical columns: the numeric ones
    image: ImageSize | None = None
    class_names: list[str] | None = None
    text: TextMetadata | None = None
    standardized: bool | None = None  # tables: a Normalization layer standardizes the numbers
    columns: list[str] | None = None  # tables with categorical columns: all, in the CSV's order
    categorical: list[CategoricalMetadata] | None = None

    @classmethod
    def model_input(
        cls, kind: InputKind, shape: Sequence[int | None], **fields: Any
    ) -> TensorMetadata:
        """A model's input: text models take raw strings, others numbers; an image's size
        is its shape."""
        image = None
        if kind is InputKind.IMAGE:
            height, width, channels = shape
            assert height is not None and width is not None and channels is not None
            image = ImageSize(height=height, width=width, channels=channels)
        dtype = "string" if kind is InputKind.TEXT else "float32"
        return cls(kind=kind, shape=list(shape), dtype=dtype, image=image, **fields)


class UserCodeMetadata(_Camel):
    """The user's modules a version's ``model.keras`` needs (registered custom classes)."""

    modules: list[str] = Field(default_factory=list)
    code_path: str | None = None  # the job's model.codePath, relative to its data volume


class ModelMetadata(_Camel):
    """``metadata.json`` of a model version (docs/model-store.md); every field optional
    so that a version written by an older trainer still loads."""

    name: str | None = None
    created_at: str | None = None
    input: TensorMetadata = Field(default_factory=TensorMetadata)
    output: TensorMetadata = Field(default_factory=TensorMetadata)
    metrics: dict[str, float] = Field(default_factory=dict)
    epochs_run: int | None = None
    spec: dict[str, Any] | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    saved_model_signature: str | None = None
    user_code: UserCodeMetadata | None = None
    lineage: dict[str, Any] | None = None  # the job, spec and data that made the version


def read_metadata(version_dir: Path) -> ModelMetadata:
    """A version's ``metadata.json`` (raises ``ValueError`` when it is not valid)."""
    return ModelMetadata.model_validate_json((version_dir / METADATA_FILE).read_text())


class ModelStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def versions(self, name: str) -> list[int]:
        """Complete versions of a model, ascending."""
        base = self.model_dir(name)
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / str(version)

    def metadata(self, name: str, version: int) -> ModelMetadata:
        return read_metadata(self.version_dir(name, version))

    def checkpoint_dir(self, name: str, job_id: str) -> Path:
        return self.model_dir(name) / CHECKPOINTS_DIR / job_id

    @contextlib.contextmanager
    def new_version(self, name: str) -> Iterator[PendingVersion]:
        """Yield a staging directory; on success publish it as the next version.

        On an exception the staging directory is removed and nothing appears.
        The publish is an atomic rename; if another writer took the number in
        the meantime the next free number is used. After the block,
        ``pending.version`` holds the published number.
        """
        base = self.model_dir(name)
        base.mkdir(parents=True, exist_ok=True)
        pending = PendingVersion(base / f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        pending.path.mkdir()
        try:
            yield pending
            pending.version = publish(pending.path, base)
        except BaseException:
            shutil.rmtree(pending.path, ignore_errors=True)
            raise


class PendingVersion:
    """A version being written: ``path`` until published, then ``version``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version: int | None = None


def publish(staging: Path, base: Path) -> int:
    """Rename ``staging`` to the next free integer version under ``base``."""
    while True:
        existing = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
        version = max(existing, default=0) + 1
        try:
            # os.rename onto a missing name is atomic; onto an existing
            # non-empty directory it fails, so a version is never overwritten.
            os.rename(staging, base / str(version))
            return version
        except OSError:
            if not (base / str(version)).exists():
                raise
