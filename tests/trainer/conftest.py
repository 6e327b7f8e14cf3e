"""Fixtures of the trainer tests (helpers in trainerkit.py).

Training runs for real on small generated data on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasop_trainer import sample_data


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Read-only sample data shared by the tests (tests that corrupt data make their own)."""
    root = tmp_path_factory.mktemp("data")
    sample_data.write_dense_csv(root / "dense.csv")
    sample_data.write_dense_csv(root / "small.csv", rows=400, features=32, seed=3)
    sample_data.write_image_csv(root / "shapes", per_class=12, size=32)
    sample_data.write_image_folder(
        root / "folder", per_class=10, size=32, classes=("circle", "square", "triangle")
    )
    sample_data.write_npz(root / "blobs.npz", rows=240, features=12, classes=3)
    return root


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"
