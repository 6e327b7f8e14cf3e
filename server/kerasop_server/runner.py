"""Run a server on a background thread with its own event loop.

Used by the tests and benchmarks (and handy in a notebook)::

    with BackgroundServer(ServerConfig(store_root="models", model="m", port=0)) as server:
        httpx.post(f"{server.url}/v1/models/m:predict", json={"instances": [[...]]})
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiohttp import web

from .app import GRPC, MANAGER, create_app
from .config import ServerConfig
from .engines import load_engine
from .loader import EngineFactory
from .manager import ModelManager


class BackgroundServer:
    def __init__(
        self, config: ServerConfig, *, engine_factory: EngineFactory = load_engine
    ) -> None:
        self.config = config
        self.app = create_app(config, engine_factory=engine_factory)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._thread_main, name="kerasop-server", daemon=True
        )

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC front end (a server with ``grpc_port``)."""
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"{host}:{self.app[GRPC].port}"

    @property
    def manager(self) -> ModelManager:
        return self.app[MANAGER]

    def start(self, *, wait_ready: bool = True, timeout: float = 120.0) -> BackgroundServer:
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the server did not start: {self._error}")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.manager.ready:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server stopped: {self._error}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"model not ready after {timeout:.0f}s: {self.manager.last_error}"
                )
            time.sleep(0.02)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` (a coroutine function) on the server's loop; returns its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result()

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=self.config.shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
            self.port = runner.addresses[0][1]
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
