"""Which model version is served, and swapping in new ones without a hiccup.

The manager polls the model store (unless a version is pinned). A new
version is loaded and warmed up on a loader thread *beside* the one being
served, with its own batcher and inference thread; then one assignment makes
it current. Requests that already hold the old version finish on it; the old
version is unloaded once it has no request left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasop.store import METADATA_FILE, ModelStore

from .batching import Batcher, BatcherClosed
from .config import ServerConfig
from .engines import Engine, load_engine
from .errors import ClientError
from .metrics import Metrics
from .signature import Signature

log = logging.getLogger(__name__)

EngineFactory = Callable[..., Engine]

MAX_BACKOFF_SECONDS = 300.0
RETIRE_TIMEOUT_SECONDS = 300.0
METADATA_SUMMARY_KEYS = ("name", "createdAt", "input", "output", "metrics", "epochsRun", "versions")


class NotReady(ClientError):
    """No version is loaded yet (HTTP 503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503)


@dataclass(eq=False)
class ServedModel:
    """One loaded, warmed-up version with its own batcher and inference thread."""

    name: str
    version: int
    metadata: dict[str, Any]
    engine: Engine
    signature: Signature
    batcher: Batcher
    executor: concurrent.futures.ThreadPoolExecutor
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    active: int = 0  # requests holding this version

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        self.active += 1
        try:
            return await self.batcher.submit(batch)
        finally:
            self.active -= 1

    def info(self) -> dict[str, Any]:
        """What metadata endpoints show besides the tensor signature."""
        summary = {k: self.metadata[k] for k in METADATA_SUMMARY_KEYS if k in self.metadata}
        return {
            "engine": self.engine.name,
            "engineDetail": self.engine.detail,
            "loadSeconds": round(self.load_seconds, 3),
            "maxBatchSize": self.batcher.max_batch_size,
            "batchTimeoutMs": self.batcher.timeout * 1000,
            "metadata": summary,
        }

    async def close(self) -> None:
        await self.batcher.close()
        self.executor.shutdown(wait=False)
        self.engine.close()


class ModelManager:
    def __init__(
        self,
        config: ServerConfig,
        metrics: Metrics,
        engine_factory: EngineFactory = load_engine,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.store = ModelStore(config.store_root)
        self.current: ServedModel | None = None
        self.loading: int | None = None
        self.last_error: str | None = None
        self._engine_factory = engine_factory
        self._failures: dict[int, tuple[int, float]] = {}  # version -> (count, retry at)
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._watch_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.model

    @property
    def ready(self) -> bool:
        return self.current is not None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name="store-watch")

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        for task in list(self._retiring):
            task.cancel()
        if self.current is not None:
            await self.current.close()
            self.current = None
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking the model store failed")
            if self.config.version is not None and self.current is not None:
                return  # pinned and loaded: nothing will change
            await asyncio.sleep(self.config.poll_seconds)

    # -- loading -----------------------------------------------------------

    def _target(self) -> int | None:
        if self.config.version is not None:
            pinned = self.config.version
            return pinned if pinned in self.store.versions(self.name) else None
        return self.store.latest(self.name)

    async def check(self) -> None:
        """Load the version that should be served, if it is not served yet."""
        async with self._lock:
            target = self._target()
            if target is None:
                if self.current is None:
                    self.last_error = self._missing_text()
                return
            current = self.current
            if current is not None and target <= current.version:
                return  # served already; never roll back on our own
            count, retry_at = self._failures.get(target, (0, 0.0))
            if count and time.monotonic() < retry_at:
                return
            await self._load(target)

    def _missing_text(self) -> str:
        where = self.store.model_dir(self.name)
        if self.config.version is not None:
            return f"version {self.config.version} of model '{self.name}' is not in {where}"
        return f"no version of model '{self.name}' in {where} yet"

    async def _load(self, version: int) -> None:
        loop = asyncio.get_running_loop()
        self.loading = version
        started = time.perf_counter()
        log.info("loading model %s version %d", self.name, version)
        try:
            engine, signature, metadata = await loop.run_in_executor(
                self._loader, self._load_blocking, version
            )
        except Exception as exc:
            count = self._failures.get(version, (0, 0.0))[0] + 1
            backoff = min(self.config.poll_seconds * 2**count, MAX_BACKOFF_SECONDS)
            self._failures[version] = (count, time.monotonic() + backoff)
            self.last_error = f"version {version}: {exc}"
            self.metrics.model_loads.labels(self.name, "error").inc()
            log.error(
                "loading model %s version %d failed (attempt %d, next in %.0fs): %s",
                self.name,
                version,
                count,
                backoff,
                exc,
            )
            return
        finally:
            self.loading = None
        seconds = time.perf_counter() - started
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"infer-v{version}")
        batcher = Batcher(
            engine.predict,
            max_batch_size=self.config.max_batch_size,
            timeout=self.config.batch_timeout_ms / 1000.0,
            executor=executor,
            observe=self.metrics.observe_batch,
        )
        batcher.start()
        served = ServedModel(
            name=self.name,
            version=version,
            metadata=metadata,
            engine=engine,
            signature=signature,
            batcher=batcher,
            executor=executor,
            load_seconds=seconds,
        )
        old, self.current = self.current, served  # the switch: one reference assignment
        self.last_error = None
        self._failures.pop(version, None)
        self.metrics.model_loads.labels(self.name, "ok").inc()
        self.metrics.set_served(version, engine.name, seconds)
        log.info(
            "serving model %s version %d (engine %s: %s), loaded and warmed up in %.2fs",
            self.name,
            version,
            engine.name,
            engine.detail,
            seconds,
        )
        if old is not None:
            task = loop.create_task(self._retire(old), name=f"retire-v{old.version}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _load_blocking(self, version: int) -> tuple[Engine, Signature, dict[str, Any]]:
        """Load + warm up (on the loader thread)."""
        vdir = self.store.version_dir(self.name, version)
        meta_file = vdir / METADATA_FILE
        metadata: dict[str, Any] = {}
        if meta_file.is_file():
            metadata = json.loads(meta_file.read_text())
            if not isinstance(metadata, dict):
                raise ValueError(f"{meta_file} does not hold a JSON object")
        else:
            log.warning("%s is missing; taking input and output shapes from the model", meta_file)
        engine = self._engine_factory(self.config.engine, vdir, threads=self.config.threads)
        try:
            signature = Signature.build(
                metadata,
                input_shape=engine.input_shape,
                input_dtype=engine.input_dtype,
                output_shape=engine.output_shape,
                output_dtype=engine.output_dtype,
                engine_input_name=engine.input_name,
            )
            row = tuple(1 if d is None else d for d in signature.input_shape)
            for rows in (1, 2):  # warm-up: the first call allocates and optimises
                out = np.asarray(engine.predict(np.zeros((rows, *row), signature.input_dtype)))
                if out.ndim == 0 or out.shape[0] != rows:
                    raise ValueError(
                        f"warm-up: the model returned shape {out.shape} for {rows} rows"
                    )
        except BaseException:
            engine.close()
            raise
        return engine, signature, metadata

    async def _retire(self, old: ServedModel) -> None:
        """Unload ``old`` once the requests holding it are answered."""
        deadline = time.monotonic() + RETIRE_TIMEOUT_SECONDS
        while (old.active or old.batcher.pending) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await old.close()
        log.info("unloaded model %s version %d", old.name, old.version)

    # -- lookup ------------------------------------------------------------

    def not_ready_reason(self) -> str:
        if self.loading is not None:
            detail = f"loading version {self.loading}"
        else:
            detail = self.last_error or "starting"
        return f"model '{self.name}' is not ready: {detail}"

    def get(self, version: int | None = None) -> ServedModel:
        """The served version (``version`` must be it when given)."""
        current = self.current
        if current is None:
            raise NotReady(self.not_ready_reason())
        if version is not None and version != current.version:
            raise ClientError(
                f"version {version} of model '{self.name}' is not loaded"
                f" (serving version {current.version})",
                status=404,
            )
        return current

    async def predict(
        self,
        version: int | None,
        parse: Callable[[Signature], Any],
        rows: Callable[[Any], np.ndarray],
    ) -> tuple[ServedModel, Any, np.ndarray]:
        """Parse a request against the served signature and run it.

        Returns the version that answered, the parsed request and the output
        rows. If the version is unloaded between lookup and queueing (it
        cannot be, as nothing awaits in between; this is a safety net) the
        request is retried once on the new version.
        """
        for attempt in (1, 2):
            served = self.get(version)
            request = parse(served.signature)
            try:
                return served, request, await served.predict(rows(request))
            except BatcherClosed:
                if attempt == 2 or version is not None:
                    raise NotReady(
                        f"model '{self.name}' version {served.version} was unloaded"
                    ) from None
        raise AssertionError("unreachable")
