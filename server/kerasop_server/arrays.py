"""JSON bodies and the numbers in them.

JSON is read and written with orjson (a request of a 96x96x3 image carries
~28,000 numbers: the standard library's ``json`` spends several times longer
on it). Numbers become one numpy array in one call, never element by element.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
import orjson

from .errors import ClientError
from .signature import Signature, shape_text


def parse_json(body: bytes) -> Any:
    """A request body as JSON; 400 for an empty or malformed one."""
    if not body.strip():
        raise ClientError("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8, NaN, nesting over 1024
        raise ClientError(f"invalid JSON: {exc}") from None


def dump_json(value: Any) -> bytes:
    """Compact JSON; numpy arrays and scalars are written directly."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def numeric_array(value: Any, what: str, *, floats: bool = False) -> np.ndarray:
    """A nested list of numbers as an array; 400 for ragged or non-numeric data.

    ``floats``: the numbers become floating point anyway (a v2 tensor of type FP*),
    so a flat list of them may take :func:`_flat_floats`.
    """
    if floats:
        flat = _flat_floats(value)
        if flat is not None:
            return flat
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


def _flat_floats(value: Any) -> np.ndarray | None:
    """A flat list of JSON numbers as float64 in one C loop, or None for anything else
    (nesting, strings, null, booleans), left to the general path and its errors.

    np.asarray first works out one type for all elements, then converts them: on a
    96x96x3 image that costs about as much as parsing the JSON. array.array converts
    straight to double and refuses what is not a number, except booleans (a kind of
    int), which can only be among the elements equal to 0 or 1.
    """
    if type(value) is not list:
        return None
    try:
        arr = np.frombuffer(array.array("d", value), dtype=np.float64)
    except (TypeError, OverflowError):
        return None
    maybe_bool = np.flatnonzero((arr == 0) | (arr == 1)).tolist()
    if maybe_bool and bool in set(map(type, map(value.__getitem__, maybe_bool))):
        return None
    return arr


def check_rows(arr: np.ndarray, sig: Signature, what: str) -> np.ndarray:
    shape = sig.input_shape
    if arr.ndim == 1 and shape == (1,):  # one scalar feature per row: accept [x1, x2, ...]
        arr = arr.reshape(-1, 1)
    if arr.ndim != len(shape) + 1 or any(
        d is not None and d != a for d, a in zip(shape, arr.shape[1:], strict=False)
    ):
        subject = "" if sig.input_name in what else f"input '{sig.input_name}' "
        raise ClientError(
            f"{what}: {subject}expects shape {shape_text(shape)}, got {list(arr.shape)}"
        )
    if arr.shape[0] == 0:
        raise ClientError(f"{what}: no rows")
    arr = cast(arr, sig.input_dtype, what)
    # After the cast: 1e40 is finite in JSON (and orjson reads huge integers
    # as floats) but infinite in float32.
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ClientError(f"{what}: values must be finite numbers within {arr.dtype}'s range")
    return arr


def cast(arr: np.ndarray, dtype: np.dtype[Any], what: str) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise ClientError(f"{what}: expected integers")
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ClientError(f"{what}: values out of range for {dtype}")
    with np.errstate(over="ignore"):  # a float beyond float32 becomes inf: a 400 once checked
        return arr.astype(dtype, copy=False)
