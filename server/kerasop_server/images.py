"""Images in requests: base64-encoded files and raw pixel arrays.

Encoded images (PNG, JPEG, ... read by Pillow, imported only when one comes)
and pixel arrays of another size or channel count are converted and resized
to the model's input like the trainer's image pipeline does.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from .arrays import numeric_array
from .errors import ClientError
from .signature import ImageTarget, Signature

# An image is decoded fully before it is resized; refuse absurd sizes early
# (PIL reads the size from the header, before decoding any pixel).
MAX_IMAGE_PIXELS = 40_000_000


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
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ClientError(f"{what}: pixel values must be finite numbers")
    if arr.shape == target.shape:
        return arr
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
            arr = arr.astype(sig.input_dtype, copy=False)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ClientError(f"{what}: pixel values must be finite numbers")
            return arr
    images = [_image_row(r, sig.image, f"{what}[{i}]") for i, r in enumerate(rows)]
    return np.stack(images).astype(sig.input_dtype, copy=False)
