"""The model store: the contract between trainer, server and operator.

Layout (see docs/model-store.md)::

    <root>/<model-name>/<version>/      version = integer, increasing
        saved_model.pb, variables/      a SavedModel (TF Serving / KServe can load the base dir)
        model.keras                     the Keras model
        model.onnx                      the same graph for ONNX Runtime (when the export worked)
        metadata.json                   inputs, outputs, classes, metrics, spec, library versions
    <root>/<model-name>/.staging-*/     a version being written (never read by servers)
    <root>/<model-name>/.checkpoints/<job-id>/   per-epoch checkpoints for resume

A version directory appears only when complete: it is written under a
hidden staging name, then renamed. Versions are never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# File names inside a version directory (the contract with the server).
METADATA_FILE = "metadata.json"
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
STAGING_PREFIX = ".staging-"
CHECKPOINTS_DIR = ".checkpoints"


class ModelStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def versions(self, name: str) -> list[int]:
        """Complete versions of a model, ascending."""
        base = self.model_dir(name)
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / str(version)

    def metadata(self, name: str, version: int) -> dict[str, Any]:
        return json.loads((self.version_dir(name, version) / METADATA_FILE).read_text())

    def checkpoint_dir(self, name: str, job_id: str) -> Path:
        return self.model_dir(name) / CHECKPOINTS_DIR / job_id

    @contextlib.contextmanager
    def new_version(self, name: str) -> Iterator[PendingVersion]:
        """Yield a staging directory; on success publish it as the next version.

        On an exception the staging directory is removed and nothing appears.
        The publish is an atomic rename; if another writer took the number in
        the meantime the next free number is used. After the block,
        ``pending.version`` holds the published number.
        """
        base = self.model_dir(name)
        base.mkdir(parents=True, exist_ok=True)
        pending = PendingVersion(base / f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        pending.path.mkdir()
        try:
            yield pending
            pending.version = publish(pending.path, base)
        except BaseException:
            shutil.rmtree(pending.path, ignore_errors=True)
            raise


class PendingVersion:
    """A version being written: ``path`` until published, then ``version``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version: int | None = None


def publish(staging: Path, base: Path) -> int:
    """Rename ``staging`` to the next free integer version under ``base``."""
    while True:
        existing = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
        version = max(existing, default=0) + 1
        try:
            # os.rename onto a missing name is atomic; onto an existing
            # non-empty directory it fails, so a version is never overwritten.
            os.rename(staging, base / str(version))
            return version
        except OSError:
            if not (base / str(version)).exists():
                raise
