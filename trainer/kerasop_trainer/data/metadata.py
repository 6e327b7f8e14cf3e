"""The data's part of ``metadata.json``: what the model takes and what it outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kerasop.store import CategoricalMetadata, TensorMetadata, TextMetadata

if TYPE_CHECKING:
    from kerasop_trainer.data.loaded import LoadedData, TableInput, TextInput


def input_metadata(data: LoadedData) -> TensorMetadata:
    meta = TensorMetadata.model_input(data.input_kind, data.input_shape)
    if data.table is not None:
        _describe_table(meta, data.table)
    if data.text is not None:
        meta.text = _text(data.text)
    return meta


def _describe_table(meta: TensorMetadata, table: TableInput) -> None:
    meta.feature_names = table.feature_names
    meta.standardized = table.standardize
    if table.categorical_columns:
        # Several named inputs: the numeric columns as one float vector, each
        # categorical column as one raw string.
        names = table.feature_names or []
        meta.feature_names = [n for n in names if n not in table.categorical_columns]
        meta.columns = list(names)
        meta.categorical = [
            CategoricalMetadata(column=c, input=table.input_name(c), values=len(v))
            for c, v in zip(table.categorical_columns, table.vocabularies, strict=True)
        ]


def _text(text: TextInput) -> TextMetadata:
    return TextMetadata(
        column=text.column,
        sequence_length=text.sequence_length,
        sequence_length_fitted=text.sequence_length_fitted,
        vocabulary_size=len(text.vocabulary),
    )


def output_metadata(data: LoadedData) -> TensorMetadata:
    labels = data.labels
    return TensorMetadata(kind=labels.kind, shape=[labels.units], class_names=labels.class_names)
