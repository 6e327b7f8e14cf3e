"""The data's part of ``metadata.json``: what the model takes and what it outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kerasop.store import CategoricalMetadata, InputKind, TensorMetadata, TextMetadata

if TYPE_CHECKING:
    from kerasop_trainer.data.loaded import LoadedData


def input_metadata(data: LoadedData) -> TensorMetadata:
    kind = data.input_kind
    meta = TensorMetadata.model_input(kind, data.input_shape)
    if kind is InputKind.TEXT:
        meta.text = TextMetadata(
            column=data.text_column,
            sequence_length=data.sequence_length,
            sequence_length_fitted=data.sequence_length_fitted,
            vocabulary_size=len(data.text_vocabulary or []),
        )
    if kind is InputKind.TABULAR:
        meta.feature_names = data.feature_names
        meta.standardized = data.standardize
    if data.categorical_columns:
        # Several named inputs: the numeric columns as one float vector, each
        # categorical column as one raw string.
        names = data.feature_names or []
        meta.feature_names = [n for n in names if n not in data.categorical_columns]
        meta.columns = list(names)
        meta.categorical = [
            CategoricalMetadata(column=c, input=data.input_name(c), values=len(v))
            for c, v in zip(data.categorical_columns, data.vocabularies, strict=True)
        ]
    return meta


def output_metadata(data: LoadedData) -> TensorMetadata:
    labels = data.labels
    return TensorMetadata(kind=labels.kind, shape=[labels.units], class_names=labels.class_names)
