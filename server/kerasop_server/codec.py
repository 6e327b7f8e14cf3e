"""Request decoding and response encoding for both serving protocols.

Everything here is pure (no I/O, no event loop): JSON values in, numpy batches
out, and back. Every problem with a request raises :class:`ClientError`, which
the HTTP layer turns into ``4xx {"error": "..."}``; nothing a client sends may
surface as any other exception.

The model's one input is called ``input`` (``metadata.json`` may name it with
``input.name``); the name of the Keras input tensor is accepted as well. Its
one output is called ``output`` (or ``output.name``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# An image is decoded fully before it is resized; refuse absurd sizes early
# (PIL reads the size from the header, before decoding any pixel).
MAX_IMAGE_PIXELS = 40_000_000

V1_SIGNATURES = ("", "serving_default", "serve")

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


class ClientError(Exception):
    """A request the server cannot honour because of what the client sent."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------
# What the model takes and gives
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTarget:
    height: int
    width: int
    channels: int  # 1 (decoded as "L") or 3 ("RGB")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


@dataclass(frozen=True)
class Signature:
    """The served model's input and output, from metadata.json and the engine."""

    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: np.dtype[Any]
    output_name: str
    output_shape: tuple[int | None, ...]
    output_dtype: np.dtype[Any]
    kind: str = "tabular"
    image: ImageTarget | None = None
    feature_names: tuple[str, ...] | None = None
    input_aliases: frozenset[str] = field(default_factory=frozenset)
    output_kind: str | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def input_names(self) -> frozenset[str]:
        return self.input_aliases | {self.input_name}

    @classmethod
    def build(
        cls,
        metadata: dict[str, Any],
        *,
        input_shape: tuple[int | None, ...],
        input_dtype: Any,
        output_shape: tuple[int | None, ...],
        output_dtype: Any,
        engine_input_name: str | None = None,
    ) -> Signature:
        """Combine metadata.json with the shapes the engine reports.

        Raises ``ValueError`` when metadata.json contradicts the model.
        """
        meta_in = metadata.get("input") or {}
        meta_out = metadata.get("output") or {}
        shape = _merge_shape(input_shape, meta_in.get("shape"), "input")
        kind = str(meta_in.get("kind") or "tabular")
        image = None
        if kind == "image":
            img = meta_in.get("image") or {}
            dims = [img.get("height"), img.get("width"), img.get("channels")]
            if len(shape) == 3:
                dims = [d if d is not None else s for d, s in zip(dims, shape, strict=True)]
            if any(d is None for d in dims) or len(shape) != 3:
                raise ValueError(
                    f"image model: cannot tell the image size (input shape {list(shape)},"
                    f" metadata image {img})"
                )
            image = ImageTarget(int(dims[0]), int(dims[1]), int(dims[2]))  # type: ignore[arg-type]
            if image.channels not in (1, 3):
                raise ValueError(f"image model: channels must be 1 or 3, not {image.channels}")
            shape = _merge_shape(shape, list(image.shape), "input")
        names = meta_in.get("featureNames")
        features = tuple(str(n) for n in names) if names else None
        if features and (len(shape) != 1 or shape[0] not in (None, len(features))):
            features = None  # names that do not describe a flat vector are only documentation
        aliases = {engine_input_name} if engine_input_name else set()
        classes = meta_out.get("classNames")
        return cls(
            input_name=str(meta_in.get("name") or "input"),
            input_shape=shape,
            input_dtype=np.dtype(input_dtype),
            output_name=str(meta_out.get("name") or "output"),
            output_shape=_merge_shape(output_shape, meta_out.get("shape"), "output"),
            output_dtype=np.dtype(output_dtype),
            kind=kind,
            image=image,
            feature_names=features,
            input_aliases=frozenset(aliases),
            output_kind=meta_out.get("kind"),
            class_names=tuple(str(c) for c in classes) if classes else None,
        )


def _merge_shape(engine: tuple[int | None, ...], meta: Any, what: str) -> tuple[int | None, ...]:
    if meta is None:
        return tuple(engine)
    meta_t = tuple(None if d is None or int(d) < 0 else int(d) for d in meta)
    if len(meta_t) != len(engine):
        raise ValueError(
            f"metadata.json {what} shape {list(meta)} does not match the model's {list(engine)}"
        )
    out = []
    for e, m in zip(engine, meta_t, strict=True):
        if e is not None and m is not None and e != m:
            raise ValueError(
                f"metadata.json {what} shape {list(meta)} does not match the model's {list(engine)}"
            )
        out.append(e if e is not None else m)
    return tuple(out)


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join(["N", *("?" if d is None else str(d) for d in shape)]) + "]"


# --------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    """A request body as JSON; 400 for an empty or malformed one."""
    if not body.strip():
        raise ClientError("the request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ClientError(f"invalid JSON: {exc}") from None


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------


def numeric_array(value: Any, what: str) -> np.ndarray:
    """A nested list of numbers as an array; 400 for ragged or non-numeric data."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise ClientError(
            f"{what}: ragged or malformed array (all rows must have the same shape)"
        ) from None
    kind = arr.dtype.kind
    if kind in "iuf":
        return arr
    if kind in "US":
        raise ClientError(f"{what}: expected numbers, got strings")
    if kind == "b":
        raise ClientError(f"{what}: expected numbers, got booleans")
    # object: None, dicts, mixed nesting depths, integers too large for int64
    raise ClientError(
        f"{what}: expected a (nested) list of numbers of one shape; got mixed or missing values"
    )


def _check_rows(arr: np.ndarray, sig: Signature, what: str) -> np.ndarray:
    shape = sig.input_shape
    if arr.ndim == 1 and shape == (1,):  # one scalar feature per row: accept [x1, x2, ...]
        arr = arr.reshape(-1, 1)
    if arr.ndim != len(shape) + 1 or any(
        d is not None and d != a for d, a in zip(shape, arr.shape[1:], strict=False)
    ):
        subject = "" if sig.input_name in what else f"input '{sig.input_name}' "
        raise ClientError(
            f"{what}: {subject}expects shape {_shape_text(shape)}, got {list(arr.shape)}"
        )
    if arr.shape[0] == 0:
        raise ClientError(f"{what}: no rows")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ClientError(f"{what}: values must be finite numbers")
    return _cast(arr, sig.input_dtype, what)


def _cast(arr: np.ndarray, dtype: np.dtype[Any], what: str) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise ClientError(f"{what}: expected integers")
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ClientError(f"{what}: values out of range for {dtype}")
    return arr.astype(dtype, copy=False)


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def b64decode(text: Any, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace and data: prefix ignored."""
    if not isinstance(text, str):
        raise ClientError(f"{what}: 'b64' must be a string")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split()).translate(str.maketrans("-_", "+/"))
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(f"{what}: invalid base64") from None
    if not data:
        raise ClientError(f"{what}: empty image")
    return data


def decode_image(data: bytes, target: ImageTarget, what: str) -> np.ndarray:
    """PNG/JPEG/... bytes -> float32 [H, W, C] pixels 0..255 at the target size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise ClientError(
                    f"{what}: image of {im.width}x{im.height} pixels is too large"
                    f" (at most {MAX_IMAGE_PIXELS} pixels)"
                )
            converted = im.convert("RGB" if target.channels == 3 else "L")
    except ClientError:
        raise
    except UnidentifiedImageError:
        raise ClientError(f"{what}: not an image in a format the server can read") from None
    except Exception as exc:
        raise ClientError(f"{what}: cannot decode image ({type(exc).__name__}: {exc})") from None
    return _resized(converted, target)


def _resized(im: Any, target: ImageTarget) -> np.ndarray:
    from PIL import Image

    if im.size != (target.width, target.height):
        im = im.resize((target.width, target.height), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def fit_pixels(arr: np.ndarray, target: ImageTarget, what: str) -> np.ndarray:
    """A raw pixel array [H, W, C] (or [H, W]) at the target size and channels."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ClientError(
            f"{what}: expected an image of shape [height, width, channels] with 1, 3 or 4"
            f" channels (model input {list(target.shape)}), got {list(arr.shape)}"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ClientError(f"{what}: pixel values must be finite numbers")
    if arr.shape == target.shape:
        return arr.astype(np.float32, copy=False)
    # Another size or channel count: convert and resize like a decoded image.
    if arr.size == 0 or arr.min() < 0 or arr.max() > 255:
        raise ClientError(
            f"{what}: pixels outside 0..255 cannot be resized or converted (model input"
            f" {list(target.shape)}, got {list(arr.shape)})"
        )
    if arr.shape[0] * arr.shape[1] > MAX_IMAGE_PIXELS:
        raise ClientError(f"{what}: image too large")
    from PIL import Image

    channels = arr.shape[2]
    pixels = np.rint(arr).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    im = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode=mode)
    im = im.convert("RGB" if target.channels == 3 else "L")
    return _resized(im, target)


def _image_row(value: Any, target: ImageTarget, what: str) -> np.ndarray:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ClientError(f'{what}: an encoded image is written {{"b64": "..."}}')
        return decode_image(b64decode(value["b64"], what), target, what)
    if isinstance(value, str | bytes):
        raise ClientError(
            f'{what}: send an encoded image as {{"b64": "..."}} or pixels as nested lists'
        )
    return fit_pixels(numeric_array(value, what), target, what)


def image_batch(rows: list[Any], sig: Signature, what: str) -> np.ndarray:
    """Rows of b64 objects and/or pixel arrays -> [N, H, W, C] in the model's dtype."""
    assert sig.image is not None
    if not rows:
        raise ClientError(f"{what}: no rows")
    # The common case, equally sized pixel arrays, in one conversion.
    if not any(isinstance(r, dict | str | bytes) for r in rows):
        try:
            arr = np.asarray(rows)
        except (ValueError, TypeError, RecursionError, OverflowError):
            arr = None
        if arr is not None and arr.dtype.kind in "iuf" and arr.shape[1:] == sig.image.shape:
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ClientError(f"{what}: pixel values must be finite numbers")
            return arr.astype(sig.input_dtype, copy=False)
    images = [_image_row(r, sig.image, f"{what}[{i}]") for i, r in enumerate(rows)]
    return np.stack(images).astype(sig.input_dtype, copy=False)


def _batch(rows: Any, sig: Signature, what: str) -> np.ndarray:
    if not isinstance(rows, list):
        raise ClientError(f"{what} must be a list with one item per row")
    if not rows:
        raise ClientError(f"{what} is empty")
    if sig.image is not None:
        return image_batch(rows, sig, what)
    return _check_rows(numeric_array(rows, what), sig, what)


# --------------------------------------------------------------------------
# TF Serving REST (v1)
# --------------------------------------------------------------------------


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
    return {"outputs" if columnar else "predictions": out.tolist()}


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


def v1_metadata(model: str, version: int, sig: Signature, info: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/models/M/metadata``: TF Serving's shape, plus ``kerasop`` details."""
    signature = {
        "inputs": {sig.input_name: _tf_tensor(sig.input_name, sig.input_shape, sig.input_dtype)},
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


# --------------------------------------------------------------------------
# Open Inference Protocol (v2)
# --------------------------------------------------------------------------


@dataclass
class V2Request:
    batch: np.ndarray
    id: str | None
    outputs: list[str]


def parse_v2_infer(body: Any, sig: Signature, binary: bytes | None = None) -> V2Request:
    """An inference request; ``binary`` holds the tensor data after the JSON header
    when the binary tensor data extension is used."""
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object with 'inputs'")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError("'id' must be a string")
    inputs = body.get("inputs")
    if inputs is None:
        raise ClientError("missing 'inputs'")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError("'inputs' must be a non-empty list of tensors")
    if len(inputs) != 1:
        raise ClientError(f"this model has one input, '{sig.input_name}'; got {len(inputs)}")
    chunks = _binary_chunks(inputs, binary)
    batch = _v2_tensor(inputs[0], sig, chunks[0])
    wanted = body.get("outputs")
    names: list[str] = []
    if wanted is not None:
        if not isinstance(wanted, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
        ):
            raise ClientError("'outputs' must be a list of {\"name\": ...} objects")
        names = [o["name"] for o in wanted]
        unknown = [n for n in names if n != sig.output_name]
        if unknown:
            raise ClientError(f"unknown output(s) {unknown}; this model has '{sig.output_name}'")
    return V2Request(batch=batch, id=request_id, outputs=names)


def _binary_chunks(inputs: list[Any], binary: bytes | None) -> list[bytes | None]:
    chunks: list[bytes | None] = []
    offset = 0
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            chunks.append(None)
            continue
        if binary is None:
            raise ClientError(
                f"inputs[{i}]: binary_data_size given but the request has no binary part"
                " (set the Inference-Header-Content-Length header)"
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


def _v2_tensor(tensor: Any, sig: Signature, chunk: bytes | None) -> np.ndarray:
    what = "inputs[0]"
    if not isinstance(tensor, dict):
        raise ClientError(f"{what} must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise ClientError(f"{what}: 'name' must be a string")
    if name not in sig.input_names:
        raise ClientError(
            f"{what}: unknown input '{name}'; this model's input is '{sig.input_name}'"
        )
    what = f"input '{name}'"
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ClientError(f"{what}: 'shape' must be a non-empty list of non-negative integers")
    datatype = tensor.get("datatype")
    if datatype == "BYTES":
        return _v2_bytes(tensor, shape, sig, chunk, what)
    if datatype not in V2_TYPES:
        raise ClientError(
            f"{what}: datatype {datatype!r} is not supported; use one of"
            f" {', '.join(V2_TYPES)} or BYTES (encoded images)"
        )
    count = math.prod(shape)
    if chunk is not None:
        dtype = np.dtype(V2_TYPES[datatype]).newbyteorder("<")
        if len(chunk) != count * dtype.itemsize:
            raise ClientError(
                f"{what}: {len(chunk)} bytes of binary data do not hold shape {shape} of {datatype}"
            )
        arr = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))
    else:
        if "data" not in tensor:
            raise ClientError(f"{what}: missing 'data'")
        arr = numeric_array(tensor["data"], what)
        if arr.size != count:
            raise ClientError(f"{what}: shape {shape} needs {count} values, 'data' has {arr.size}")
        arr = _cast(arr, np.dtype(V2_TYPES[datatype]), what)
    arr = arr.reshape(shape)
    if sig.image is not None:
        if arr.ndim >= 1 and arr.shape[1:] == sig.image.shape:
            if arr.shape[0] == 0:
                raise ClientError(f"{what}: no rows")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ClientError(f"{what}: pixel values must be finite numbers")
            return arr.astype(sig.input_dtype, copy=False)
        return image_batch(list(arr), sig, what)
    return _check_rows(arr, sig, what)


def _v2_bytes(
    tensor: dict[str, Any], shape: list[int], sig: Signature, chunk: bytes | None, what: str
) -> np.ndarray:
    if sig.image is None:
        raise ClientError(f"{what}: BYTES inputs are for image models; this model takes numbers")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise ClientError(f"{what}: BYTES images have shape [N] or [N, 1], got {shape}")
    count = math.prod(shape)
    if chunk is not None:
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
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ClientError(f"{what}: 'data' must be a list of base64 strings")
        flat = _flatten(data, what)
        items = []
        for i, item in enumerate(flat):
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


def v2_datatype(dtype: np.dtype[Any]) -> str:
    return _NUMPY_TO_V2.get(np.dtype(dtype), "FP32")


def v2_infer_response(
    model: str, version: int, sig: Signature, out: np.ndarray, request_id: str | None
) -> dict[str, Any]:
    response: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = [
        {
            "name": sig.output_name,
            "shape": list(out.shape),
            "datatype": v2_datatype(out.dtype),
            "data": out.ravel().tolist(),
        }
    ]
    return response


def v2_model_metadata(
    model: str, version: int, sig: Signature, platform: str, info: dict[str, Any]
) -> dict[str, Any]:
    def dims(shape: tuple[int | None, ...]) -> list[int]:
        return [-1, *(-1 if d is None else d for d in shape)]

    inputs = [
        {
            "name": sig.input_name,
            "datatype": v2_datatype(sig.input_dtype),
            "shape": dims(sig.input_shape),
        }
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
