"""Open Inference Protocol (KServe v2) over REST, with the binary tensor data extension.

The request envelope is validated by pydantic models; a tensor's ``data`` is
left as parsed and converted by numpy in one call (validating 28,000 numbers
one by one would cost more than running the model). With the binary
extension the tensor bytes follow the JSON header and become an array
without any parsing; answers come back the same way when the client asks
for ``binary_data`` outputs.

Models that take strings (raw.py) take ``BYTES`` tensors of UTF-8 strings: text
models one tensor ``[N]`` (or ``[N, 1]``), tables one tensor per column, named
after it, ``BYTES`` for categorical columns and a numeric type for the others.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from kerasop import __version__

from ..arrays import cast, check_rows, dump_json, numeric_array
from ..errors import ClientError
from ..images import b64decode, decode_image, image_batch
from ..signature import Signature

if TYPE_CHECKING:
    from ..loader import ServedModel

BINARY_HEADER = "Inference-Header-Content-Length"
SERVER_NAME = "kerasop-server"

# Open Inference Protocol tensor types and the numpy types they carry.
V2_TYPES: dict[str, str] = {
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_NUMPY_TO_V2 = {np.dtype(v): k for k, v in V2_TYPES.items()}


# --------------------------------------------------------------------------
# The request envelope
# --------------------------------------------------------------------------


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RequestInput(_Envelope):
    name: StrictStr
    shape: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    data: Any = None  # numbers, nested or flat, or base64 strings: converted by numpy


class RequestOutput(_Envelope):
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Envelope):
    id: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = None


def _validation_text(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"])
        problems.append(f"'{where}': {error['msg']}" if where else error["msg"])
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "invalid inference request: " + "; ".join(problems) + more


@dataclass
class V2Request:
    batch: np.ndarray
    id: str | None
    outputs: list[str]
    binary_output: bool = False


def parse_v2_infer(body: Any, sig: Signature, binary: bytes | None = None) -> V2Request:
    """An inference request; ``binary`` holds the tensor data after the JSON header
    when the binary tensor data extension is used."""
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object with 'inputs'")
    request = validate_request(body)
    return v2_request(request, _binary_chunks(request.inputs, binary), sig)


def validate_request(body: dict[str, Any]) -> InferenceRequest:
    """The envelope of a request (REST's JSON, or gRPC's message as the same dict)."""
    try:
        return InferenceRequest.model_validate(body)
    except ValidationError as exc:
        raise ClientError(_validation_text(exc)) from None


def v2_request(request: InferenceRequest, chunks: list[bytes | None], sig: Signature) -> V2Request:
    """The batch of a validated request against ``sig``; ``chunks[i]`` holds the binary
    data of ``inputs[i]`` (``None``: its ``data``). REST and gRPC both end here."""
    if sig.raw is not None:
        batch = _v2_raw(request.inputs, chunks, sig)
    elif len(request.inputs) != 1:
        raise ClientError(
            f"this model has one input, '{sig.input_name}'; got {len(request.inputs)}"
        )
    else:
        batch = _v2_tensor(request.inputs[0], sig, chunks[0])
    names = [o.name for o in request.outputs or ()]
    unknown = [n for n in names if n != sig.output_name]
    if unknown:
        raise ClientError(f"unknown output(s) {unknown}; this model has '{sig.output_name}'")
    binary_output = bool((request.parameters or {}).get("binary_data_output")) or any(
        (o.parameters or {}).get("binary_data") for o in request.outputs or ()
    )
    return V2Request(batch=batch, id=request.id, outputs=names, binary_output=binary_output)


def _binary_chunks(inputs: list[RequestInput], binary: bytes | None) -> list[bytes | None]:
    chunks: list[bytes | None] = []
    offset = 0
    for i, tensor in enumerate(inputs):
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            chunks.append(None)
            continue
        if binary is None:
            raise ClientError(
                f"inputs[{i}]: binary_data_size given but the request has no binary part"
                f" (set the {BINARY_HEADER} header)"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ClientError(f"inputs[{i}]: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise ClientError(f"inputs[{i}]: binary_data_size runs past the end of the body")
        chunks.append(binary[offset : offset + size])
        offset += size
    if binary is not None and offset != len(binary):
        raise ClientError(f"the binary part has {len(binary)} bytes but the inputs claim {offset}")
    return chunks


def _v2_tensor(tensor: RequestInput, sig: Signature, chunk: bytes | None) -> np.ndarray:
    name, shape, datatype = tensor.name, tensor.shape, tensor.datatype
    if name not in sig.input_names:
        raise ClientError(
            f"inputs[0]: unknown input '{name}'; this model's input is '{sig.input_name}'"
        )
    what = f"input '{name}'"
    if datatype == "BYTES":
        return _v2_bytes(tensor, sig, chunk, what)
    if datatype not in V2_TYPES:
        raise ClientError(
            f"{what}: datatype {datatype!r} is not supported; use one of"
            f" {', '.join(V2_TYPES)} or BYTES (encoded images)"
        )
    count = math.prod(shape)
    if chunk is not None:
        arr = _binary_numbers(chunk, datatype, shape, what)
    else:
        if "data" not in tensor.model_fields_set:
            raise ClientError(f"{what}: missing 'data'")
        declared = np.dtype(V2_TYPES[datatype])
        arr = numeric_array(tensor.data, what, floats=declared.kind == "f")
        if arr.size != count:
            raise ClientError(f"{what}: shape {shape} needs {count} values, 'data' has {arr.size}")
        arr = cast(arr, declared, what)
    arr = arr.reshape(shape)
    if sig.image is not None:
        if arr.ndim >= 1 and arr.shape[1:] == sig.image.shape:
            if arr.shape[0] == 0:
                raise ClientError(f"{what}: no rows")
            arr = arr.astype(sig.input_dtype, copy=False)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ClientError(f"{what}: pixel values must be finite numbers")
            return arr
        return image_batch(list(arr), sig, what)
    return check_rows(arr, sig, what)


def _binary_numbers(chunk: bytes, datatype: str, shape: list[int], what: str) -> np.ndarray:
    """Numbers in binary form: flat, row-major, little-endian ``datatype``."""
    dtype = np.dtype(V2_TYPES[datatype]).newbyteorder("<")
    if len(chunk) != math.prod(shape) * dtype.itemsize:
        raise ClientError(
            f"{what}: {len(chunk)} bytes of binary data do not hold shape {shape} of {datatype}"
        )
    return np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)


def _v2_bytes(tensor: RequestInput, sig: Signature, chunk: bytes | None, what: str) -> np.ndarray:
    shape = tensor.shape
    if sig.image is None:
        raise ClientError(f"{what}: BYTES inputs are for image models; this model takes numbers")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise ClientError(f"{what}: BYTES images have shape [N] or [N, 1], got {shape}")
    count = math.prod(shape)
    if chunk is not None:
        items = _binary_bytes_elements(chunk, what)
    else:
        if not isinstance(tensor.data, list):
            raise ClientError(f"{what}: 'data' must be a list of base64 strings")
        items = []
        for i, item in enumerate(_flatten(tensor.data, what)):
            if isinstance(item, dict) and set(item) == {"b64"}:
                item = item["b64"]
            if not isinstance(item, str):
                raise ClientError(f"{what}[{i}]: BYTES data must be base64 strings")
            items.append(b64decode(item, f"{what}[{i}]"))
    if len(items) != count:
        raise ClientError(f"{what}: shape {shape} needs {count} images, got {len(items)}")
    if count == 0:
        raise ClientError(f"{what}: no rows")
    images = [decode_image(b, sig.image, f"{what}[{i}]") for i, b in enumerate(items)]
    return np.stack(images).astype(sig.input_dtype, copy=False)


def _v2_raw(inputs: list[RequestInput], chunks: list[bytes | None], sig: Signature) -> np.ndarray:
    """Raw columns (raw.py): one tensor per column, or one for text."""
    assert sig.raw is not None
    columns: dict[str, Any] = {}
    strings = {c.name: c.string for c in sig.raw.columns}
    for tensor, chunk in zip(inputs, chunks, strict=True):
        name, what = tensor.name, f"input '{tensor.name}'"
        if sig.raw.kind == "text" and name in sig.input_names:
            name = sig.raw.columns[0].name
        if name not in strings:
            raise ClientError(
                f"{what}: not a column of this model; send one tensor per column,"
                f" {list(sig.raw.names)}"
            )
        if name in columns:
            raise ClientError(f"{what}: given twice")
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise ClientError(f"{what}: a column has shape [N] or [N, 1], got {tensor.shape}")
        wanted = "BYTES" if strings[name] else "a numeric datatype (FP32, INT64, ...)"
        if (tensor.datatype == "BYTES") != strings[name]:
            raise ClientError(f"{what}: datatype {tensor.datatype!r}; this column takes {wanted}")
        if strings[name]:
            values = _v2_strings(tensor, chunk, what)
        elif chunk is not None:
            if tensor.datatype not in V2_TYPES:
                raise ClientError(f"{what}: datatype {tensor.datatype!r} is not supported")
            values = _binary_numbers(chunk, tensor.datatype, tensor.shape, what).tolist()
        else:
            values = _flatten(tensor.data if isinstance(tensor.data, list) else [None], what)
        if len(values) != math.prod(tensor.shape):
            raise ClientError(
                f"{what}: shape {tensor.shape} needs {math.prod(tensor.shape)}"
                f" values, got {len(values)}"
            )
        columns[name] = values
    return sig.raw.from_columns(columns, "inputs")


def _v2_strings(tensor: RequestInput, chunk: bytes | None, what: str) -> list[Any]:
    """A BYTES tensor's elements as strings: JSON strings, or binary elements in UTF-8."""
    if chunk is None:
        if not isinstance(tensor.data, list):
            raise ClientError(f"{what}: 'data' must be a list of strings")
        return _flatten(tensor.data, what)
    try:
        return [b.decode("utf-8") for b in _binary_bytes_elements(chunk, what)]
    except UnicodeDecodeError:
        raise ClientError(f"{what}: BYTES elements must be UTF-8 text") from None


def _binary_bytes_elements(chunk: bytes, what: str) -> list[bytes]:
    """BYTES elements in binary form: each a 4-byte little-endian length, then the bytes."""
    items: list[bytes] = []
    pos = 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise ClientError(f"{what}: truncated binary BYTES element")
        (length,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + length > len(chunk):
            raise ClientError(f"{what}: truncated binary BYTES element")
        items.append(chunk[pos : pos + length])
        pos += length
    return items


def _flatten(data: list[Any], what: str, depth: int = 0) -> list[Any]:
    if depth > 8:
        raise ClientError(f"{what}: 'data' nested too deeply")
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten(item, what, depth + 1))
        else:
            out.append(item)
    return out


# --------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------


def v2_datatype(dtype: np.dtype[Any]) -> str:
    return _NUMPY_TO_V2.get(np.dtype(dtype), "FP32")


def encode_v2_infer_response(
    model: str, version: int, sig: Signature, out: np.ndarray, request: V2Request
) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON header when the tensor
    follows in binary (``None``: all JSON)."""
    out = np.ascontiguousarray(out)
    tensor: dict[str, Any] = {
        "name": sig.output_name,
        "shape": list(out.shape),
        "datatype": v2_datatype(out.dtype),
    }
    if request.binary_output:
        tensor["parameters"] = {"binary_data_size": out.nbytes}
    else:
        tensor["data"] = out.ravel()
    response: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = [tensor]
    header = dump_json(response)
    if not request.binary_output:
        return header, None
    return header + out.astype(out.dtype.newbyteorder("<"), copy=False).tobytes(), len(header)


def v2_server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}


def served_metadata(served: ServedModel) -> dict[str, Any]:
    """The model metadata of a loaded version."""
    platform = {"onnx": "onnxruntime_onnx", "keras": "tensorflow_keras"}.get(
        served.engine.name, served.engine.name
    )
    return v2_model_metadata(served.name, served.version, served.signature, platform, served.info())


def v2_model_metadata(
    model: str, version: int, sig: Signature, platform: str, info: dict[str, Any]
) -> dict[str, Any]:
    def dims(shape: tuple[int | None, ...]) -> list[int]:
        return [-1, *(-1 if d is None else d for d in shape)]

    inputs: list[dict[str, Any]] = [
        {
            "name": sig.input_name,
            "datatype": v2_datatype(sig.input_dtype),
            "shape": dims(sig.input_shape),
        }
    ]
    if sig.raw is not None:  # one tensor per raw column
        inputs = [
            {"name": c.name, "datatype": "BYTES" if c.string else "FP32", "shape": [-1]}
            for c in sig.raw.columns
        ]
    if sig.image is not None:
        # The same input also takes encoded images, one BYTES element per image.
        inputs[0]["parameters"] = {"also_accepts": "BYTES [N] (base64 PNG/JPEG/...)"}
    return {
        "name": model,
        "versions": [str(version)],
        "platform": platform,
        "inputs": inputs,
        "outputs": [
            {
                "name": sig.output_name,
                "datatype": v2_datatype(sig.output_dtype),
                "shape": dims(sig.output_shape),
            }
        ],
        "parameters": info,
    }
