"""Server settings (the command line of docs/CONTRACTS.md, as a dataclass)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kerasop.contracts import SERVER_PORT
from kerasop.spec import ObjectStoreSpec, ServerSpec

_SPEC = ServerSpec()

DEFAULT_MAX_BATCH_SIZE: int = _SPEC.max_batch_size
DEFAULT_BATCH_TIMEOUT_MS: float = _SPEC.batch_timeout_ms
DEFAULT_MAX_REQUEST_BYTES: int = _SPEC.max_request_bytes


@dataclass
class ServerConfig:
    store_root: Path
    model: str
    version: int | None = None  # pinned version; None follows the latest
    host: str = "0.0.0.0"
    port: int = SERVER_PORT
    # The ServerSpec fields: their bounds are the spec's, checked by the CRD and by
    # the server's flags (kerasop.contracts.add_server_flags), not again here.
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # OIP v2 over gRPC (grpc_app.py); 0 = off. kerasop-serve's flag defaults to the spec's
    # port; an embedded server (tests, notebooks) opens no second port unless asked.
    grpc_port: int = 0
    poll_seconds: float = 2.0
    engine: str = "auto"  # auto | keras | onnx
    threads: int = 0  # intra-op threads of the engine; 0 = the engine's default
    shutdown_timeout: float = 30.0  # seconds in-flight requests get on SIGTERM
    rollout_file: Path | None = None  # stable/candidate/weight/shadow, polled (routing.py)
    # A model store in a bucket (mirror.py): store_root is then its local mirror.
    store_uri: str | None = None
    store_options: ObjectStoreSpec | None = None
    # The mirror deletes versions that no server on the node wanted for this long (mirror.py).
    store_unused_seconds: float = 3600.0

    def __post_init__(self) -> None:
        self.store_root = Path(self.store_root)
        if self.rollout_file is not None:
            self.rollout_file = Path(self.rollout_file)
        if self.poll_seconds <= 0:
            raise ValueError("poll_seconds must be > 0")
        if self.version is not None and self.version < 1:
            raise ValueError("version must be >= 1")
        if self.engine not in ("auto", "keras", "onnx"):
            raise ValueError("engine must be auto, keras or onnx")
