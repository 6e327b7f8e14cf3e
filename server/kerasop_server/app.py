"""The HTTP layer: routes of both protocols, errors as JSON, metrics (and, with
``grpc_port``, the gRPC front end of grpc_app.py on the same event loop).

Every answer to a client mistake is ``4xx {"error": "..."}``; a failure of the
model itself is ``500 {"error": "..."}``; the server keeps serving either way.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from aiohttp import web

from .arrays import dump_json, parse_json
from .config import ServerConfig
from .engines import load_engine
from .errors import ClientError, failure
from .loader import EngineFactory
from .manager import ModelManager, NotReady
from .metrics import CONTENT_TYPE, Metrics
from .protocol.v1 import parse_v1_predict, v1_metadata, v1_predict_response, v1_status
from .protocol.v2 import (
    BINARY_HEADER,
    encode_v2_infer_response,
    parse_v2_infer,
    served_metadata,
    v2_server_metadata,
)

if TYPE_CHECKING:
    from .grpc_app import GrpcFrontEnd

CONFIG = web.AppKey("config", ServerConfig)
MANAGER = web.AppKey("manager", ModelManager)
METRICS = web.AppKey("metrics", Metrics)
GRPC: web.AppKey[GrpcFrontEnd] = web.AppKey("grpc")

# The metrics label of a request, set by handlers that route by hand.
ENDPOINT: Any = web.RequestKey("endpoint", str) if hasattr(web, "RequestKey") else "endpoint"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
P = ParamSpec("P")


def create_app(
    config: ServerConfig, *, engine_factory: EngineFactory = load_engine
) -> web.Application:
    """The aiohttp application serving ``config.model``.

    The model is loaded in the background once the application starts; the
    readiness endpoints answer 503 until a version is loaded and warmed up.
    """
    metrics = Metrics(config.model)
    manager = ModelManager(config, metrics, engine_factory)
    app = web.Application(client_max_size=config.max_request_bytes, middlewares=[_middleware])
    app[CONFIG] = config
    app[MANAGER] = manager
    app[METRICS] = metrics
    app.cleanup_ctx.append(_manager_lifecycle)
    if config.grpc_port:
        from .grpc_app import GrpcFrontEnd  # grpcio is imported only when gRPC is on

        app[GRPC] = GrpcFrontEnd(config, manager, metrics)
        app.cleanup_ctx.append(_grpc_lifecycle)  # stopped before the manager
        app.on_shutdown.append(_grpc_shutdown)
    app.router.add_routes(
        [
            web.get("/healthz", healthz, name="healthz"),
            web.get("/metrics", metrics_handler, name="metrics"),
            web.get("/v2/health/live", v2_live, name="v2_live"),
            web.get("/v2/health/ready", v2_ready, name="v2_ready"),
            web.get("/v2", v2_server_metadata_handler, name="v2_server_metadata"),
            web.get("/v2/models/{model}", v2_model_metadata_handler, name="v2_model_metadata"),
            web.get(
                "/v2/models/{model}/versions/{version}",
                v2_model_metadata_handler,
                name="v2_model_version_metadata",
            ),
            web.get("/v2/models/{model}/ready", v2_model_ready, name="v2_model_ready"),
            web.get(
                "/v2/models/{model}/versions/{version}/ready",
                v2_model_ready,
                name="v2_model_version_ready",
            ),
            web.post("/v2/models/{model}/infer", v2_infer, name="v2_infer"),
            web.post(
                "/v2/models/{model}/versions/{version}/infer", v2_infer, name="v2_version_infer"
            ),
            # TF Serving puts the verb after a colon in the last segment
            # (M:predict); one route parses those paths itself.
            web.route("*", "/v1/models/{tail:.*}", v1_dispatch, name="v1"),
        ]
    )
    return app


async def _manager_lifecycle(app: web.Application) -> AsyncIterator[None]:
    manager = app[MANAGER]
    await manager.start()
    yield
    await manager.stop()


async def _grpc_shutdown(app: web.Application) -> None:
    app[GRPC].begin_stop()  # as the HTTP listener closes; awaited in _grpc_lifecycle


async def _grpc_lifecycle(app: web.Application) -> AsyncIterator[None]:
    front_end = app[GRPC]
    await front_end.start()
    yield
    await front_end.stop()


# --------------------------------------------------------------------------
# Errors and metrics
# --------------------------------------------------------------------------


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dump_json(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


def _http_error_text(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"not found: {request.method} {request.path}"
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return f"method {request.method} is not allowed on {request.path}" + (
            f" (allowed: {allowed})" if allowed else ""
        )
    if exc.status == 413:
        limit = request.app[CONFIG].max_request_bytes
        return f"request body too large: the limit is {limit} bytes"
    return exc.reason or "error"


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = error_response(exc.status, _http_error_text(request, exc), headers)
    except Exception as exc:
        response = error_response(*failure(exc, f"{request.method} {request.path}"))
    endpoint = request.get(ENDPOINT) or _route_name(request)
    request.app[METRICS].observe_request(endpoint, response.status, started)
    return response


def _route_name(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    name = getattr(route, "name", None) if route is not None else None
    return name or "unmatched"


def counted_in_flight(
    handler: Callable[Concatenate[web.Request, P], Awaitable[web.Response]],
) -> Callable[Concatenate[web.Request, P], Awaitable[web.Response]]:
    """A prediction handler counted in the in-flight gauge (an HPA may scale on it)."""

    @functools.wraps(handler)
    async def counted(request: web.Request, /, *args: P.args, **kwargs: P.kwargs) -> web.Response:
        with request.app[METRICS].in_flight_request():
            return await handler(request, *args, **kwargs)

    return counted


# --------------------------------------------------------------------------
# Health, metrics, server metadata
# --------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def v2_live(request: web.Request) -> web.Response:
    return json_response({"live": True})


async def v2_ready(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    if manager.ready:
        return json_response({"ready": True})
    return json_response({"ready": False, "error": manager.not_ready_reason()}, status=503)


async def v2_server_metadata_handler(request: web.Request) -> web.Response:
    return json_response(v2_server_metadata())


# --------------------------------------------------------------------------
# Open Inference Protocol (v2)
# --------------------------------------------------------------------------


def _resolve(request: web.Request) -> tuple[ModelManager, int | None]:
    manager = request.app[MANAGER]
    info = request.match_info
    return manager, manager.resolve(info["model"], info.get("version"))


async def v2_model_metadata_handler(request: web.Request) -> web.Response:
    manager, version = _resolve(request)
    return json_response(served_metadata(manager.get(version)))


async def v2_model_ready(request: web.Request) -> web.Response:
    manager, version = _resolve(request)
    try:
        served = manager.get(version)
    except NotReady:
        return json_response({"name": manager.name, "ready": False}, status=503)
    return json_response({"name": manager.name, "version": str(served.version), "ready": True})


@counted_in_flight
async def v2_infer(request: web.Request) -> web.Response:
    manager, version = _resolve(request)

    async def read() -> tuple[Any, bytes | None]:
        body = await request.read()
        header = request.headers.get(BINARY_HEADER)
        if header is None:
            return parse_json(body), None
        if not header.isdigit() or not 0 < int(header) <= len(body):
            raise ClientError(f"{BINARY_HEADER} must be a length between 1 and the body size")
        return parse_json(body[: int(header)]), body[int(header) :]

    served, parsed, out = await manager.infer(
        version, read, lambda body, sig: parse_v2_infer(body[0], sig, body[1]), lambda r: r.batch
    )
    answer, header_length = encode_v2_infer_response(
        manager.name, served.version, served.signature, out, parsed
    )
    if header_length is None:
        return web.Response(body=answer, content_type="application/json")
    return web.Response(
        body=answer,
        content_type="application/octet-stream",
        headers={BINARY_HEADER: str(header_length)},
    )


# --------------------------------------------------------------------------
# TF Serving REST (v1)
# --------------------------------------------------------------------------

_V1_PATH = re.compile(
    r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
    r"(?:(?P<verb>:[A-Za-z]+)|(?P<metadata>/metadata))?$"
)


async def v1_dispatch(request: web.Request) -> web.Response:
    match = _V1_PATH.match(request.match_info["tail"])
    if match is None:
        request[ENDPOINT] = "v1_unmatched"
        raise web.HTTPNotFound()
    verb, is_metadata = match["verb"], match["metadata"] is not None
    if verb is not None:
        request[ENDPOINT] = "v1_predict" if verb == ":predict" else "v1_other"
        allowed = "POST"
    elif is_metadata:
        request[ENDPOINT] = "v1_metadata"
        allowed = "GET"
    else:
        request[ENDPOINT] = "v1_status"
        allowed = "GET"
    if request.method != allowed and not (allowed == "GET" and request.method == "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, [allowed])
    manager = request.app[MANAGER]
    version = manager.resolve(match["model"], match["version"])
    if verb is not None:
        if verb != ":predict":
            raise ClientError(
                f"'{verb[1:]}' is not supported: this server has the predict API only", 400
            )
        return await _v1_predict(request, manager, version)
    if is_metadata:
        served = manager.get(version)
        return json_response(
            v1_metadata(manager.name, served.version, served.signature, served.info())
        )
    return _v1_status(manager, version)


def _v1_status(manager: ModelManager, version: int | None) -> web.Response:
    current = manager.current
    if version is None:
        if current is not None:
            return json_response(v1_status(current.version, "AVAILABLE"))
        if manager.loading is not None:
            return json_response(v1_status(manager.loading, "LOADING"))
        manager.get()  # raises NotReady with the reason
    if version in manager.loaded_versions():
        return json_response(v1_status(version, "AVAILABLE"))
    if version is not None and version == manager.loading:
        return json_response(v1_status(version, "LOADING"))
    raise ClientError(f"version {version} of model '{manager.name}' not found", 404)


@counted_in_flight
async def _v1_predict(
    request: web.Request, manager: ModelManager, version: int | None
) -> web.Response:
    async def read() -> Any:
        return parse_json(await request.read())

    _, parsed, out = await manager.infer(version, read, parse_v1_predict, lambda r: r.batch)
    return json_response(v1_predict_response(out, parsed.columnar))
