"""TensorFlow Serving's REST API (v1): ``:predict``, status and metadata bodies.

Row format ``{"instances": [...]}`` and columnar format ``{"inputs": ...}``;
rows may name the input or every feature, images come as ``{"b64": ...}``
or pixel arrays. Models that take strings (raw.py) take raw rows: lists in
column order or ``{column: value}`` objects, and plain strings for text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import check_rows, numeric_array
from ..errors import ClientError
from ..images import image_batch
from ..signature import Signature

V1_SIGNATURES = ("", "serving_default", "serve")

_NUMPY_TO_TF = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "float16": "DT_HALF",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
}


def _batch(rows: Any, sig: Signature, what: str) -> np.ndarray:
    if not isinstance(rows, list):
        raise ClientError(f"{what} must be a list with one item per row")
    if not rows:
        raise ClientError(f"{what} is empty")
    if sig.image is not None:
        return image_batch(rows, sig, what)
    return check_rows(numeric_array(rows, what), sig, what)


@dataclass
class V1Request:
    batch: np.ndarray
    columnar: bool


def parse_v1_predict(body: Any, sig: Signature) -> V1Request:
    """``{"instances": [...]}`` (row) or ``{"inputs": ...}`` (columnar)."""
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", "")
    if signature not in V1_SIGNATURES:
        raise ClientError(
            f"unknown signature_name {signature!r}; this model has 'serving_default'", 400
        )
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise ClientError(
            "send exactly one of 'instances' (row format) and 'inputs' (columnar format)"
            if has_rows
            else "missing 'instances' (row format) or 'inputs' (columnar format)"
        )
    if sig.raw is not None:
        if has_rows:
            return V1Request(sig.raw.rows(body["instances"], "instances"), columnar=False)
        inputs = body["inputs"]
        if isinstance(inputs, dict):
            return V1Request(sig.raw.from_columns(inputs, "inputs"), columnar=True)
        return V1Request(sig.raw.rows(inputs, "inputs"), columnar=True)
    if has_rows:
        instances = body["instances"]
        if isinstance(instances, list) and any(isinstance(i, dict) for i in instances):
            instances = [_v1_instance(inst, sig, i) for i, inst in enumerate(instances)]
        return V1Request(_batch(instances, sig, "instances"), columnar=False)
    return V1Request(_batch(_v1_columns(body["inputs"], sig), sig, "inputs"), columnar=True)


def _v1_instance(inst: Any, sig: Signature, i: int) -> Any:
    """One row of the row format, named inputs resolved."""
    if not isinstance(inst, dict) or set(inst) == {"b64"}:
        return inst
    if len(inst) == 1:
        (key,) = inst
        if key in sig.input_names:
            return inst[key]
    if sig.feature_names and set(inst) == set(sig.feature_names):
        return [inst[name] for name in sig.feature_names]
    raise ClientError(f"instances[{i}]: {_unknown_names(sorted(map(str, inst)), sig)}")


def _v1_columns(inputs: Any, sig: Signature) -> Any:
    """The columnar value: a batch, ``{name: batch}`` or ``{feature: column}``."""
    if not isinstance(inputs, dict) or set(inputs) == {"b64"}:
        return inputs
    if len(inputs) == 1:
        (key,) = inputs
        if key in sig.input_names:
            return inputs[key]
    if sig.feature_names and set(inputs) == set(sig.feature_names):
        columns = [numeric_array(inputs[n], f"inputs.{n}") for n in sig.feature_names]
        if any(c.ndim != 1 for c in columns) or len({len(c) for c in columns}) != 1:
            raise ClientError("inputs: feature columns must be flat lists of one length")
        return np.stack(columns, axis=1).tolist()
    raise ClientError(f"inputs: {_unknown_names(sorted(map(str, inputs)), sig)}")


def _unknown_names(names: list[str], sig: Signature) -> str:
    text = f"unknown input name(s) {names}; this model has one input named '{sig.input_name}'"
    if sig.feature_names:
        text += " (or name every feature: " + ", ".join(sig.feature_names[:5])
        text += ", ...)" if len(sig.feature_names) > 5 else ")"
    return text


def v1_predict_response(out: np.ndarray, columnar: bool) -> dict[str, Any]:
    # orjson writes the array itself (dump_json); it needs C order.
    return {"outputs" if columnar else "predictions": np.ascontiguousarray(out)}


def v1_status(version: int | None, state: str) -> dict[str, Any]:
    """``GET /v1/models/M[/versions/V]``."""
    status = {"error_code": "OK", "error_message": ""}
    return {
        "model_version_status": [
            {
                "version": str(version) if version is not None else "",
                "state": state,
                "status": status,
            }
        ]
    }


def _tf_tensor(name: str, shape: tuple[int | None, ...], dtype: np.dtype[Any]) -> dict[str, Any]:
    dims = [{"size": "-1", "name": ""}] + [
        {"size": str(-1 if d is None else d), "name": ""} for d in shape
    ]
    return {
        "dtype": _NUMPY_TO_TF.get(dtype.name, "DT_INVALID"),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": name,
    }


def _v1_inputs(sig: Signature) -> dict[str, Any]:
    if sig.raw is None:
        return {sig.input_name: _tf_tensor(sig.input_name, sig.input_shape, sig.input_dtype)}
    # One tensor per raw column (string or number), in request order.
    return {
        c.name: {
            **_tf_tensor(c.name, (), np.dtype("float32")),
            **({"dtype": "DT_STRING"} if c.string else {}),
        }
        for c in sig.raw.columns
    }


def v1_metadata(model: str, version: int, sig: Signature, info: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/models/M/metadata``: TF Serving's shape, plus ``kerasop`` details."""
    signature = {
        "inputs": _v1_inputs(sig),
        "outputs": {
            sig.output_name: _tf_tensor(sig.output_name, sig.output_shape, sig.output_dtype)
        },
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        "kerasop": info,
    }
