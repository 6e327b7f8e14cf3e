"""A real GCS server for the gs:// object-storage tests: fake-gcs-server, which speaks GCS's JSON
API (uploads, listings, ``ifGenerationMatch`` preconditions) over plain HTTP.

The binary comes from ``cluster/build-fake-gcs.sh`` (built from the Go module on demand, cached
in ``${KERASOP_CACHE:-~/.cache/kerasop}/tools/bin``; ``make tools`` builds it). The server keeps
its objects in memory, on a free port, with one bucket. It checks no credentials (any token, or
none, is accepted), so refused credentials are tested against S3 only.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.gotools import ServerProcess, built_binary
from tests.support.kube import free_port


@dataclass
class GCSServer(ServerProcess):
    workdir: Path
    bucket: str = "kerasop"
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        self.log = self.workdir / "fake-gcs-server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uri(self, key: str = "") -> str:
        return f"gs://{self.bucket}/{key}".rstrip("/") if key else f"gs://{self.bucket}"

    def store_spec(self, secret_name: str | None = None) -> dict[str, Any]:
        """The ``store`` field of a spec that reaches this server."""
        spec: dict[str, Any] = {"endpoint": self.endpoint}
        if secret_name:
            spec["gcsSecretName"] = secret_name
        return spec

    def filesystem(self) -> Any:
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(
            endpoint_url=self.endpoint,
            token="anon",
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def start(self) -> None:
        cmd = [
            str(built_binary("build-fake-gcs.sh", "fake-gcs-server")),
            "-scheme=http",
            "-host=127.0.0.1",
            f"-port={self.port}",
            # where resumable uploads (files of 5 MiB and more) continue
            f"-external-url={self.endpoint}",
            "-backend=memory",
            "-log-level=warn",
        ]
        self.spawn(cmd, cwd=self.workdir)
        self.wait_ready("fake-gcs-server", self._answers, timeout=30, interval=0.2)

    def _answers(self) -> None:
        fs = self.filesystem()
        fs.mkdir(self.bucket)
        fs.pipe_file(f"{self.bucket}/.ready", b"ok")


@contextlib.contextmanager
def gcs_server(workdir: Path) -> Iterator[GCSServer]:
    server = GCSServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
