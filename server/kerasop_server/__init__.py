"""The kerasop model server: TF Serving REST (v1) and Open Inference Protocol (v2)
over aiohttp, and OIP v2 over gRPC (grpc_app.py) on the same event loop, with dynamic
batching and hot swapping of model versions.

Entry point: ``kerasop-serve`` (:func:`kerasop_server.main.main`). To embed it,
``create_app(ServerConfig(...))`` returns the aiohttp application and
``BackgroundServer`` runs one on a thread (tests, benchmarks, notebooks).
Heavy imports (TensorFlow, ONNX Runtime) happen when a model is loaded.
"""

from typing import Any

from kerasop import __version__

__all__ = ["BackgroundServer", "ServerConfig", "__version__", "create_app"]


def __getattr__(name: str) -> Any:  # lazy: importing the package stays cheap
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    if name == "BackgroundServer":
        from .runner import BackgroundServer

        return BackgroundServer
    raise AttributeError(name)
