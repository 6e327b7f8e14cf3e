"""Fixtures shared by several tiers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.gcs import GCSServer, gcs_server
from tests.support.s3 import S3Server, s3_server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) with bucket ``kerasop`` and one identity; tests that
    mark themselves ``component`` use it (tests/support/s3.py)."""
    with s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """A real GCS server (fake-gcs-server) with bucket ``kerasop``; tests that mark
    themselves ``component`` use it (tests/support/gcs.py)."""
    with gcs_server(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server
