"""Helpers of the model server tests: small Keras models written to a model
store with the documented layout, and servers on 127.0.0.1 (free ports).

The trainer is not used: models are built here and published with
``ModelStore.new_version`` exactly as docs/model-store.md describes
(``saved_model.pb`` + ``variables/``, ``model.keras``, ``metadata.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from kerasop.store import ModelStore
from kerasop_server.config import ServerConfig
from kerasop_server.runner import BackgroundServer

DENSE = "dense-classifier"
IMAGES = "shapes"
IMAGE_H, IMAGE_W, IMAGE_C = 20, 24, 3  # not square: catches height/width mix-ups
IMAGE_CLASSES = ["circle", "square", "triangle"]
FEATURES = 784


# --------------------------------------------------------------------------
# Models and versions
# --------------------------------------------------------------------------


def dense_model(seed: int = 1, bias: float = 0.0) -> keras.Model:
    """The article's dense network: 784 -> Dense(10, relu) -> Dense(1, sigmoid).

    ``bias`` is added to the last layer's bias so two versions give clearly
    different outputs.
    """
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,), name="features"),
            keras.layers.Dense(10, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    if bias:
        kernel, b = model.layers[-1].get_weights()
        model.layers[-1].set_weights([kernel, b + bias])
    return model


def image_model(seed: int = 2, channels: int = IMAGE_C) -> keras.Model:
    """A tiny CNN over 0..255 pixels; the scaling is inside the model."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((IMAGE_H, IMAGE_W, channels)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(IMAGE_CLASSES), activation="softmax"),
        ]
    )


def dense_metadata(name: str = DENSE) -> dict[str, Any]:
    return {
        "name": name,
        "createdAt": "2026-11-26T10:00:00Z",
        "input": {
            "kind": "tabular",
            "shape": [FEATURES],
            "dtype": "float32",
            "featureNames": [f"pixel{i}" for i in range(FEATURES)],
        },
        "output": {"kind": "binary", "shape": [1], "classNames": ["no", "yes"]},
        "metrics": {"loss": 0.5, "accuracy": 0.8},
        "epochsRun": 1,
        "spec": {},
        "versions": {"keras": keras.__version__},
        "savedModelSignature": "serve",
    }


def image_metadata(name: str = IMAGES, channels: int = IMAGE_C) -> dict[str, Any]:
    return {
        "name": name,
        "createdAt": "2026-11-26T10:00:00Z",
        "input": {
            "kind": "image",
            "shape": [IMAGE_H, IMAGE_W, channels],
            "dtype": "float32",
            "image": {"height": IMAGE_H, "width": IMAGE_W, "channels": channels},
        },
        "output": {"kind": "multiclass", "shape": [3], "classNames": IMAGE_CLASSES},
        "metrics": {"loss": 1.0, "accuracy": 0.4},
        "epochsRun": 1,
        "spec": {},
        "versions": {"keras": keras.__version__},
        "savedModelSignature": "serve",
    }


def write_version(root: Path, name: str, model: keras.Model, metadata: dict[str, Any]) -> int:
    """Publish ``model`` as the next version of ``name`` in the store at ``root``."""
    store = ModelStore(root)
    with store.new_version(name) as pending:
        model.export(str(pending.path), format="tf_saved_model", verbose=False)
        model.save(pending.path / "model.keras")
        (pending.path / "metadata.json").write_text(json.dumps(metadata))
    assert pending.version is not None
    return pending.version


@contextlib.contextmanager
def running_server(store_root: Path, model: str, **settings: Any) -> Iterator[BackgroundServer]:
    """A server on 127.0.0.1 (free port), ready (model loaded and warmed up)."""
    engine_factory = settings.pop("engine_factory", None)
    config = ServerConfig(store_root=store_root, model=model, host="127.0.0.1", port=0, **settings)
    kwargs = {"engine_factory": engine_factory} if engine_factory else {}
    server = BackgroundServer(config, **kwargs)
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()


def rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random dense-model rows (0..1, float32)."""
    return np.random.default_rng(seed).uniform(0, 1, size=(n, FEATURES)).astype("float32")


def encode_image(pixels: np.ndarray, fmt: str = "PNG", **save: Any) -> bytes:
    """uint8 pixels [H, W, C] or [H, W] as PNG/JPEG bytes."""
    import io

    from PIL import Image

    arr = np.asarray(pixels, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **save)
    return buf.getvalue()


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def random_pixels(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, size=(height, width, channels), dtype=np.uint8
    )


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of metric family ``name`` in a Prometheus text page, by sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def batch_histogram(text: str) -> tuple[float, float, float]:
    """(model calls, rows, calls of exactly one row) from the batch-size histogram."""
    count = sum(metric_samples(text, "kerasop_server_batch_size_count").values())
    total = sum(metric_samples(text, "kerasop_server_batch_size_sum").values())
    ones = sum(
        v
        for labels, v in metric_samples(text, "kerasop_server_batch_size_bucket").items()
        if dict(labels)["le"] == "1.0"
    )
    return count, total, ones


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
