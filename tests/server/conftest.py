"""Fixtures of the model server tests (helpers in serverkit.py).

Every server listens on 127.0.0.1 on a free port and is called over real HTTP.
Models are built here, not by the trainer, and published with
``ModelStore.new_version`` in the documented layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import pytest
from serverkit import (
    DENSE,
    IMAGES,
    dense_metadata,
    dense_model,
    free_port,
    image_metadata,
    image_model,
    running_server,
    write_version,
)

from kerasop_server.runner import BackgroundServer

# --------------------------------------------------------------------------
# Session fixtures (built once: exports and model loads cost seconds)
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dense_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store-dense")
    write_version(root, DENSE, dense_model(), dense_metadata())
    return root


@pytest.fixture(scope="session")
def dense_local(dense_store: Path) -> keras.Model:
    """The served dense model, loaded locally: the reference for predictions."""
    return keras.saving.load_model(dense_store / DENSE / "1" / "model.keras", compile=False)


@pytest.fixture(scope="session")
def dense_server(dense_store: Path) -> Iterator[BackgroundServer]:
    """Default engine (auto), default batching; gRPC on."""
    with running_server(
        dense_store, DENSE, max_request_bytes=256 * 1024, grpc_port=free_port()
    ) as server:
        yield server


@pytest.fixture(scope="session")
def dense_server_keras(dense_store: Path) -> Iterator[BackgroundServer]:
    with running_server(dense_store, DENSE, engine="keras") as server:
        yield server


@pytest.fixture(scope="session")
def image_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store-images")
    write_version(root, IMAGES, image_model(), image_metadata())
    return root


@pytest.fixture(scope="session")
def image_local(image_store: Path) -> keras.Model:
    return keras.saving.load_model(image_store / IMAGES / "1" / "model.keras", compile=False)


@pytest.fixture(scope="session")
def image_server(image_store: Path) -> Iterator[BackgroundServer]:
    with running_server(image_store, IMAGES, grpc_port=free_port()) as server:
        yield server
