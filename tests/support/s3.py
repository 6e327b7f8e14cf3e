"""A real S3 server for the object-storage tests: SeaweedFS's ``weed server -s3``.

The binary comes from ``cluster/build-seaweedfs.sh`` (built from the Go module on demand, cached
in ``${KERASOP_CACHE:-~/.cache/kerasop}/tools/bin``; ``make tools`` builds it). The server runs
on free ports in a temporary folder with one S3 identity, so wrong credentials are really
refused; :meth:`S3Server.stop` and :meth:`S3Server.start` take it away and bring it back (same
ports, same data) for the "store unreachable" tests.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.gotools import ServerProcess, built_binary
from tests.support.kube import free_port


def weed_binary() -> Path:
    """``weed``, built now if not cached yet."""
    return built_binary("build-seaweedfs.sh", "weed")


@dataclass
class S3Server(ServerProcess):
    workdir: Path
    bucket: str = "kerasop"
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        # weed's default gRPC port is port+10000: pin each one to a free port too.
        self.grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.log = self.workdir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/") if key else f"s3://{self.bucket}"

    def store_spec(self, secret_name: str = "s3-creds") -> dict[str, Any]:
        """The ``store`` field of a spec that reaches this server."""
        return {"secretName": secret_name, "endpoint": self.endpoint, "pathStyle": True}

    def env(self, role: str, *, secret_key: str | None = None) -> dict[str, str]:
        """The env the operator gives a pod for ``role`` (DATA, MODELS) from the Secret."""
        return {
            f"KERASOP_{role}_AWS_ACCESS_KEY_ID": self.access_key,
            f"KERASOP_{role}_AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
        }

    def filesystem(self, secret_key: str | None = None) -> Any:
        import fsspec

        return fsspec.filesystem(
            "s3",
            key=self.access_key,
            secret=secret_key or self.secret_key,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,
            config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}},
        )

    def start(self) -> None:
        weed = weed_binary()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "kerasop",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        p, g = self.ports, self.grpc
        cmd = [
            str(weed),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={g['master']}",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={g['volume']}",
            "-volume.max=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={g['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={g['s3']}",
            f"-s3.config={config}",
        ]
        self.spawn(cmd, cwd=self.workdir)
        self.wait_ready("weed (S3)", self._answers, timeout=90, interval=0.5)

    def _answers(self) -> None:
        fs = self.filesystem()
        if not fs.exists(self.uri()):
            fs.mkdir(self.uri())
        # A write proves the volume server has registered with the master.
        fs.pipe_file(self.uri(".ready"), b"ok")


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[S3Server]:
    server = S3Server(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
