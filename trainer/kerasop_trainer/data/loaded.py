"""What :func:`~kerasop_trainer.data.load_data` returns: the splits, their labels, and one
input type per kind of data with what the model and ``metadata.json`` need of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kerasop.spec import ImageSpec
from kerasop.store import InputKind, TensorMetadata
from kerasop_trainer.data import metadata
from kerasop_trainer.data.labels import Labels
from kerasop_trainer.data.splits import ArraySplit, Split, StreamedSplit, TextSplit

NUMERIC_INPUT = "features"  # input of the numeric columns of a table with categorical ones


@dataclass
class TableInput:
    """A table's columns and the preprocessing the model does with them, from the
    statistics of the whole training split."""

    kind: ClassVar[InputKind] = InputKind.TABULAR
    feature_names: list[str] | None  # every feature column, in the file's order (npz: None)
    categorical_columns: list[str] = field(default_factory=list)
    vocabularies: list[list[str]] = field(default_factory=list)  # one per categorical column
    standardize: bool = False  # the numeric columns are standardized inside the model
    feature_mean: np.ndarray | None = None
    feature_variance: np.ndarray | None = None

    @staticmethod
    def input_name(column: str) -> str:
        """The model input of a categorical column (its name, made a valid identifier)."""
        safe = "".join(c if c.isalnum() or c == "_" else "_" for c in column)
        return safe if safe and not safe[0].isdigit() else f"c_{safe}"


@dataclass(frozen=True)
class ImageInput:
    kind: ClassVar[InputKind] = InputKind.IMAGE
    image: ImageSpec | None  # image files: the size they are decoded at (npz: as stored)


@dataclass(frozen=True)
class TextInput:
    """The model's ``TextVectorization`` settings, fitted to the training split."""

    kind: ClassVar[InputKind] = InputKind.TEXT
    column: str
    vocabulary: list[str]
    sequence_length: int
    sequence_length_fitted: bool  # data.text.sequenceLength unset: fitted to the data


ModelInput = TableInput | ImageInput | TextInput


@dataclass
class LoadedData:
    """Training (and validation) examples, their labels and what the model takes."""

    input: ModelInput
    input_shape: tuple[int, ...]
    labels: Labels
    train: Split
    validation: Split | None

    @property
    def input_kind(self) -> InputKind:
        return self.input.kind

    @property
    def table(self) -> TableInput | None:
        return self.input if isinstance(self.input, TableInput) else None

    @property
    def text(self) -> TextInput | None:
        return self.input if isinstance(self.input, TextInput) else None

    @property
    def categorical_columns(self) -> list[str]:
        """A table's categorical columns (none for other data)."""
        return self.table.categorical_columns if self.table is not None else []

    @property
    def image(self) -> ImageSpec | None:
        return self.input.image if isinstance(self.input, ImageInput) else None

    def features(self, split: ArraySplit | StreamedSplit | TextSplit) -> Any:
        """What the model takes for ``split``: an array, or a dict for mixed tables."""
        if isinstance(split, TextSplit):
            return split.text[:, None]
        if isinstance(split, StreamedSplit) or split.cat is None:
            return split.x
        assert self.table is not None  # categorical columns: a table
        out: dict[str, np.ndarray] = {}
        if split.x.shape[1] > 0:
            out[NUMERIC_INPUT] = split.x
        for j, column in enumerate(self.table.categorical_columns):
            out[self.table.input_name(column)] = split.cat[:, j : j + 1]
        return out

    def input_metadata(self) -> TensorMetadata:
        return metadata.input_metadata(self)

    def output_metadata(self) -> TensorMetadata:
        return metadata.output_metadata(self)
