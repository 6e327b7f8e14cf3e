"""The examples of one split, one type per kind of input, and what a reader returns.

Every split holds its labels ``y`` (raw strings or numbers as read, encoded ones once
:func:`~kerasop_trainer.data.labels.encode_labels` has run) and its examples in the same
order. ``take`` selects rows (a validation split, a worker's shard).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Self

import numpy as np

from kerasop.spec import ImageSpec
from kerasop.store import InputKind

if TYPE_CHECKING:
    from kerasop_trainer.data.readers.csv_stream import CsvStream


@dataclass(frozen=True, eq=False)
class LabelledSplit:
    """What every split has: its labels, one per example."""

    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def with_labels(self, y: np.ndarray) -> Self:
        return replace(self, y=y)


@dataclass(frozen=True, eq=False)
class ArraySplit(LabelledSplit):
    """Features in memory: a table's numeric columns ``x`` (rows x columns, maybe none)
    plus its categorical columns as strings, or npz images (N x H x W x C)."""

    x: np.ndarray
    cat: np.ndarray | None = None  # csv: categorical columns as strings, rows x columns

    def take(self, index: np.ndarray) -> ArraySplit:
        cat = None if self.cat is None else self.cat[index]
        return ArraySplit(y=self.y[index], x=self.x[index], cat=cat)


@dataclass(frozen=True, eq=False)
class StreamedSplit(LabelledSplit):
    """Row numbers into a streamed CSV's scratch files: the split holds no features, so
    taking rows only selects row numbers."""

    stream: CsvStream
    rows: np.ndarray

    @property
    def x(self) -> np.ndarray:
        """These rows' features read back into a new array (small samples and tests; the
        trainer reads batches with :func:`~kerasop_trainer.data.pipeline.dataset`)."""
        return self.stream.read_rows(self.rows)

    def take(self, index: np.ndarray) -> StreamedSplit:
        return StreamedSplit(y=self.y[index], stream=self.stream, rows=self.rows[index])


@dataclass(frozen=True, eq=False)
class ImageFileSplit(LabelledSplit):
    """Image file paths, decoded per batch by the ``tf.data`` pipeline."""

    paths: np.ndarray

    def take(self, index: np.ndarray) -> ImageFileSplit:
        return ImageFileSplit(y=self.y[index], paths=self.paths[index])


@dataclass(frozen=True, eq=False)
class TextSplit(LabelledSplit):
    """One raw string per example; the model's ``TextVectorization`` tokenizes them."""

    text: np.ndarray

    def take(self, index: np.ndarray) -> TextSplit:
        return TextSplit(y=self.y[index], text=self.text[index])


Split = ArraySplit | StreamedSplit | ImageFileSplit | TextSplit


@dataclass
class Raw:
    """What a reader found in one file or folder: the examples with their raw labels
    (``examples.y``) and what the model and the label encoding need to know of them."""

    kind: InputKind
    shape: tuple[int, ...]  # one example's input shape
    examples: Split
    where: str  # for messages: the file or folder
    feature_names: list[str] | None = None  # tables
    image: ImageSpec | None = None  # images: the size they are read at
    classes: list[str] | None = None  # imageFolder: every class folder is a class
    categorical: list[str] = field(default_factory=list)  # csv: categorical columns' names

    @property
    def labels(self) -> np.ndarray:
        """The raw labels: strings, or numbers."""
        return self.examples.y
