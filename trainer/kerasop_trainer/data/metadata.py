"""The data's part of ``metadata.json``: what the model takes and what it outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kerasop_trainer.data.loaded import LoadedData


def input_metadata(data: LoadedData) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": data.input_kind,
        "shape": list(data.input_shape),
        "dtype": "string" if data.input_kind == "text" else "float32",
    }
    if data.input_kind == "text":
        out["text"] = {
            "column": data.text_column,
            "sequenceLength": data.sequence_length,
            "sequenceLengthFitted": data.sequence_length_fitted,
            "vocabularySize": len(data.text_vocabulary or []),
        }
    if data.input_kind == "tabular" and data.feature_names is not None:
        out["featureNames"] = list(data.feature_names)
    if data.input_kind == "tabular":
        out["standardized"] = data.standardize
    if data.categorical_columns:
        # Several named inputs: the numeric columns as one float vector, each
        # categorical column as one raw string.
        numeric = [n for n in data.feature_names or [] if n not in data.categorical_columns]
        out["featureNames"] = numeric
        out["columns"] = list(data.feature_names or [])  # all, in the CSV's order
        out["categorical"] = [
            {"column": c, "input": data.input_name(c), "values": len(v)}
            for c, v in zip(data.categorical_columns, data.vocabularies, strict=True)
        ]
    if data.input_kind == "image":
        h, w, c = data.input_shape
        out["image"] = {"height": h, "width": w, "channels": c}
    return out


def output_metadata(data: LoadedData) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": data.labels.kind, "shape": [data.labels.units]}
    if data.labels.class_names is not None:
        out["classNames"] = list(data.labels.class_names)
    return out
