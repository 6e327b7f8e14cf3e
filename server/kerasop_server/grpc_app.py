"""The gRPC front end: Open Inference Protocol v2's ``GRPCInferenceService``.

grpcio's asyncio server runs on the event loop of the REST application, started and
stopped with it (app.py), on a port of its own. Its handlers are thin: decode the
message, call what the REST handlers call (``ModelManager.resolve``/``infer``: routing,
batching, shadow copies), encode the answer. Errors get the REST answer's message
(``errors.failure``) under the matching gRPC status code, and every call is counted in
the same request metrics, labelled with its HTTP status equivalent so that dashboards and
alerts on ``code`` cover both protocols.

The standard health service (``grpc.health.v1.Health``, from grpcio-health-checking) answers
for the server ("") and for ``inference.GRPCInferenceService``: SERVING once a model is loaded,
NOT_SERVING before and from the start of a shutdown, what Kubernetes' gRPC probes and gRPC
load balancers read.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from .config import ServerConfig
from .errors import ClientError, failure
from .manager import ModelManager, NotReady
from .metrics import Metrics
from .protocol.v2 import served_metadata, v2_server_metadata
from .protocol.v2_grpc import (
    MESSAGES,
    SERVICE,
    as_message,
    encode_grpc_infer_response,
    parse_grpc_infer,
)

# The gRPC status of each HTTP status the shared error path answers.
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}

Handler = Callable[[Any], Awaitable[Any]]

# How often the health service follows the manager's readiness (a flag read, no I/O).
HEALTH_INTERVAL_S = 0.25


def grpc_code(status: int) -> grpc.StatusCode:
    return GRPC_CODES.get(status, grpc.StatusCode.INTERNAL)


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcFrontEnd:
    """The inference service of one server; :meth:`start` binds ``config.grpc_port``."""

    def __init__(self, config: ServerConfig, manager: ModelManager, metrics: Metrics) -> None:
        self.config = config
        self.manager = manager
        self.metrics = metrics
        self.port: int | None = None  # the bound port, once started
        self._server: Any = None
        self._stopping: asyncio.Future[None] | None = None
        self.health = health_aio.HealthServicer()
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                # Larger messages are refused by gRPC itself with RESOURCE_EXHAUSTED before
                # they are read: the REST body limit, for the same reason.
                ("grpc.max_receive_message_length", self.config.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                # A port in use fails the start instead of being shared with its holder.
                ("grpc.so_reuseport", 0),
            ]
        )
        rpcs: dict[str, Handler] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }
        handlers = {name: self._rpc(name, handler) for name, handler in rpcs.items()}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self._set_health(self.manager.ready)
        self.port = server.add_insecure_port(
            listen_address(self.config.host, self.config.grpc_port)
        )
        await server.start()
        self._server = server
        self._health_task = asyncio.get_running_loop().create_task(
            self._follow_readiness(), name="grpc-health"
        )

    async def _set_health(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def _follow_readiness(self) -> None:
        ready = self.manager.ready
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            if self.manager.ready != ready:
                ready = self.manager.ready
                await self._set_health(ready)

    def begin_stop(self) -> None:
        """Refuse new calls; those in flight get ``shutdown_timeout`` (drained while the
        REST side drains its own, not after it)."""
        if self._stopping is None and self._server is not None:
            self._stopping = asyncio.ensure_future(self._shut_down(self._server))

    async def _shut_down(self, server: Any) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        await self.health.enter_graceful_shutdown()  # NOT_SERVING: balancers move away
        await server.stop(self.config.shutdown_timeout)

    async def stop(self) -> None:
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping

    def _rpc(self, method: str, handler: Handler) -> Any:
        """The unary handler of ``method`` around ``handler``: bytes in (decoded here, so
        that a malformed message is a client error like malformed JSON), bytes out, errors
        and metrics (endpoint ``grpc_model_infer`` for ``ModelInfer``, ...)."""
        request_type = f"{method}Request"
        decode = MESSAGES[request_type].FromString
        endpoint = "grpc" + re.sub(r"([A-Z])", r"_\1", method).lower()

        async def call(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            started = time.perf_counter()
            try:
                try:
                    request = decode(data)
                except DecodeError:
                    raise ClientError(f"malformed {request_type} message") from None
                answer: bytes = (await handler(request)).SerializeToString()
            except Exception as exc:
                status, message = failure(exc, f"gRPC {endpoint}")
                self.metrics.observe_request(endpoint, status, started)
                await context.abort(grpc_code(status), message)
            self.metrics.observe_request(endpoint, 200, started)
            return answer

        return grpc.unary_unary_rpc_method_handler(call)

    # -- the RPCs: each the REST handler's counterpart (app.py) ----------------

    async def server_live(self, request: Any) -> Any:
        return as_message("ServerLiveResponse", {"live": True})

    async def server_ready(self, request: Any) -> Any:
        return as_message("ServerReadyResponse", {"ready": self.manager.ready})

    async def server_metadata(self, request: Any) -> Any:
        return as_message("ServerMetadataResponse", v2_server_metadata())

    async def model_ready(self, request: Any) -> Any:
        version = self.manager.resolve(request.name, request.version or None)
        try:
            self.manager.get(version)
        except NotReady:
            return as_message("ModelReadyResponse", {"ready": False})
        return as_message("ModelReadyResponse", {"ready": True})

    async def model_metadata(self, request: Any) -> Any:
        version = self.manager.resolve(request.name, request.version or None)
        return as_message("ModelMetadataResponse", served_metadata(self.manager.get(version)))

    async def model_infer(self, request: Any) -> Any:
        manager = self.manager
        version = manager.resolve(request.model_name, request.model_version or None)

        async def read() -> Any:  # gRPC has read and decoded the message already
            return request

        with self.metrics.in_flight_request():
            served, parsed, out = await manager.infer(
                version, read, parse_grpc_infer, lambda r: r.batch
            )
        return encode_grpc_infer_response(
            manager.name, served.version, served.signature, out, parsed
        )
