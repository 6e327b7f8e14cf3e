"""What :func:`~kerasop_trainer.data.load_data` returns: the splits and what the model and
``metadata.json`` need of the data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasop.spec import ImageSpec
from kerasop.store import InputKind, TensorMetadata
from kerasop_trainer.data import metadata, pipeline
from kerasop_trainer.data.labels import Labels
from kerasop_trainer.data.splits import ArraySplit, Split, StreamedSplit, TextSplit

NUMERIC_INPUT = "features"  # input of the numeric columns of a table with categorical ones


@dataclass
class LoadedData:
    """Training (and validation) examples plus what the model and metadata need."""

    input_kind: InputKind
    input_shape: tuple[int, ...]
    labels: Labels
    train: Split
    validation: Split | None
    feature_names: list[str] | None = None
    image: ImageSpec | None = None
    # Tables: preprocessing the model does (statistics of the whole training split).
    standardize: bool = False
    feature_mean: np.ndarray | None = None
    feature_variance: np.ndarray | None = None
    categorical_columns: list[str] = field(default_factory=list)
    vocabularies: list[list[str]] = field(default_factory=list)
    # Text: the TextVectorization settings.
    text_vocabulary: list[str] | None = None
    sequence_length: int = 0
    sequence_length_fitted: bool = False  # data.text.sequenceLength unset: fitted to the data
    text_column: str | None = None

    def input_name(self, column: str) -> str:
        """The model input of a categorical column (its name, made a valid identifier)."""
        safe = "".join(c if c.isalnum() or c == "_" else "_" for c in column)
        return safe if safe and not safe[0].isdigit() else f"c_{safe}"

    def features(self, split: ArraySplit | StreamedSplit | TextSplit) -> Any:
        """What the model takes for ``split``: an array, or a dict for mixed tables."""
        if isinstance(split, TextSplit):
            return split.text[:, None]
        if isinstance(split, StreamedSplit) or split.cat is None:
            return split.x
        out: dict[str, np.ndarray] = {}
        if split.x.shape[1] > 0:
            out[NUMERIC_INPUT] = split.x
        for j, column in enumerate(self.categorical_columns):
            out[self.input_name(column)] = split.cat[:, j : j + 1]
        return out

    def shard(self, index: int, count: int, seed: int) -> LoadedData:
        """This worker's share of the training rows (:func:`.pipeline.shard`)."""
        return pipeline.shard(self, index, count, seed)

    def dataset(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
    ) -> Any:
        """A batched ``tf.data.Dataset`` of ``(features, label)`` (:func:`.pipeline.dataset`)."""
        return pipeline.dataset(
            self, split, batch_size, shuffle=shuffle, seed=seed, drop_remainder=drop_remainder
        )

    def input_metadata(self) -> TensorMetadata:
        return metadata.input_metadata(self)

    def output_metadata(self) -> TensorMetadata:
        return metadata.output_metadata(self)
