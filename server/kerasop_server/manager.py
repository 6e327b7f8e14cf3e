"""Which model version is served, and swapping in new ones without a hiccup.

The manager polls the model store (unless a version is pinned). A new
version is loaded and warmed up (loader.py) on a loader thread *beside* the one being
served, with its own batcher and inference thread; then one assignment makes
it current. Requests that already hold the old version finish on it; the old
version is unloaded once it has no request left.

With a rollout file (``--rollout-file``, see routing.py) a second version, the
candidate, is loaded beside the stable one: it answers ``weight`` percent of
the requests (canary) or a copy of each (shadow, shadow.py), and explicit version
routes reach either version.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from kerasop.store import ModelStore

from .batching import BatcherClosed
from .config import ServerConfig
from .engines import load_engine
from .errors import ClientError
from .loader import EngineFactory, ServedModel, load_and_warm_up, serve
from .metrics import Metrics
from .routing import RolloutPlan, WeightedSplit, read_plan
from .shadow import Shadow
from .signature import Signature

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MAX_BACKOFF_SECONDS = 300.0
RETIRE_TIMEOUT_SECONDS = 300.0


class NotReady(ClientError):
    """No version is loaded yet (HTTP 503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503)


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
        self.candidate: ServedModel | None = None
        self.plan: RolloutPlan | None = None
        self.split = WeightedSplit()
        self.shadowing = False
        self.shadow = Shadow(
            metrics,
            config.max_batch_size,
            candidate=lambda: self.candidate,
            tolerance=lambda: self.plan.tolerance if self.plan is not None else 0.0,
        )
        self._shadow_task: asyncio.Task[None] | None = None
        self.loading: int | None = None
        self.last_error: str | None = None
        self._engine_factory = engine_factory
        self._failures: dict[int, tuple[int, float]] = {}  # version -> (count, retry at)
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._watch_task: asyncio.Task[None] | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._store_changed = asyncio.Event()  # the bucket mirror downloaded a version

    @property
    def name(self) -> str:
        return self.config.model

    @property
    def ready(self) -> bool:
        return self.current is not None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._watch_task = loop.create_task(self._watch(), name="store-watch")
        if self.config.store_uri is not None:
            from .mirror import BucketMirror, mirror_forever

            mirror = BucketMirror(
                self.config.store_uri,
                self.config.store_options,
                self.config.store_root,
                self.name,
                self.metrics,
                self.config.store_unused_seconds,
            )
            self._mirror_task = loop.create_task(
                mirror_forever(
                    mirror,
                    self.config.version,
                    self.config.rollout_file,
                    self.config.poll_seconds,
                    self._store_changed.set,
                ),
                name="bucket-mirror",
            )
        self._shadow_task = loop.create_task(self.shadow.run(), name="shadow")

    async def stop(self) -> None:
        for background in (self._watch_task, self._shadow_task, self._mirror_task):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        for task in list(self._retiring):
            task.cancel()
        for served in (self.current, self.candidate):
            if served is not None:
                await served.close()
        self.current = self.candidate = None
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking the model store failed")
            if (
                self.config.version is not None
                and self.current is not None
                and self.config.rollout_file is None
            ):
                return  # pinned and loaded: nothing will change
            with contextlib.suppress(TimeoutError):  # the next poll, or a version downloaded
                await asyncio.wait_for(self._store_changed.wait(), self.config.poll_seconds)
            self._store_changed.clear()

    # -- loading -----------------------------------------------------------

    def _target(self) -> int | None:
        # A plan without a stable version (the first one was refused) serves nothing.
        pinned = self.plan.stable if self.plan is not None else self.config.version
        if self.plan is not None and pinned is None:
            return None
        if pinned is not None:
            return pinned if pinned in self.store.versions(self.name) else None
        return self.store.latest(self.name)

    def _read_plan(self) -> None:
        if self.config.rollout_file is None:
            return
        try:
            self.plan = read_plan(self.config.rollout_file)
        except (OSError, ValueError) as exc:  # keep the last good plan
            log.error("rollout file %s: %s", self.config.rollout_file, exc)

    def _may_load(self, version: int) -> bool:
        count, retry_at = self._failures.get(version, (0, 0.0))
        return not count or time.monotonic() >= retry_at

    async def check(self) -> None:
        """Load the versions that should be served, if they are not served yet."""
        async with self._lock:
            self._read_plan()
            target = self._target()
            if target is None:
                if self.current is None:
                    self.last_error = self._missing_text()
            elif self.current is None or (
                target > self.current.version
                # a rollout plan may go back (never on our own)
                or (self.plan is not None and target != self.current.version)
            ):
                candidate = self.candidate
                if candidate is not None and candidate.version == target:
                    self.candidate = None  # promoted: already loaded and warm
                    self._make_current(candidate)
                elif self._may_load(target):
                    served = await self._load(target)
                    if served is not None:
                        self._make_current(served)
            await self._check_candidate()

    async def _check_candidate(self) -> None:
        plan, current = self.plan, self.current
        wanted = plan.candidate if plan is not None and current is not None else None
        if wanted is not None and wanted == current.version:  # type: ignore[union-attr]
            wanted = None
        old = self.candidate
        if old is not None and old.version != wanted:
            self.candidate = None
            self._retire_later(old)
        if (
            wanted is not None
            and self.candidate is None
            and wanted in self.store.versions(self.name)
            and self._may_load(wanted)
        ):
            self.candidate = await self._load(wanted)
        loaded = self.candidate is not None and plan is not None
        self.split.set_weight(plan.weight if loaded and plan is not None else 0)
        self.shadowing = bool(loaded and plan is not None and plan.shadow)
        self.metrics.set_rollout(
            self.candidate.version if self.candidate is not None else None,
            self.split.weight,
            self.shadowing,
        )

    def _missing_text(self) -> str:
        where = self.store.model_dir(self.name)
        if self.plan is not None:
            if self.plan.stable is None:
                return f"no version of model '{self.name}' has passed the rollout yet"
            return f"version {self.plan.stable} of model '{self.name}' is not in {where}"
        if self.config.version is not None:
            return f"version {self.config.version} of model '{self.name}' is not in {where}"
        return f"no version of model '{self.name}' in {where} yet"

    async def _load(self, version: int) -> ServedModel | None:
        """Load and warm up ``version`` beside what is served (``None``: it failed)."""
        loop = asyncio.get_running_loop()
        self.loading = version
        started = time.perf_counter()
        log.info("loading model %s version %d", self.name, version)
        try:
            loaded = await loop.run_in_executor(
                self._loader,
                load_and_warm_up,
                self.store,
                self.name,
                version,
                self._engine_factory,
                self.config.engine,
                self.config.threads,
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
            return None
        finally:
            self.loading = None
        seconds = time.perf_counter() - started
        served = serve(self.name, version, loaded, seconds, self.config, self.metrics)
        self._failures.pop(version, None)
        self.metrics.model_loads.labels(self.name, "ok").inc()
        log.info(
            "loaded model %s version %d (engine %s: %s), warmed up in %.2fs",
            self.name,
            version,
            served.engine.name,
            served.engine.detail,
            seconds,
        )
        return served

    def _make_current(self, served: ServedModel) -> None:
        old, self.current = self.current, served  # the switch: one reference assignment
        self.last_error = None
        self.metrics.set_served(served.version, served.engine.name, served.load_seconds)
        log.info("serving model %s version %d", self.name, served.version)
        if old is not None:
            self._retire_later(old)

    def _retire_later(self, old: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(
            self._retire(old), name=f"retire-v{old.version}"
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

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

    def loaded_versions(self) -> list[int]:
        return [s.version for s in (self.current, self.candidate) if s is not None]

    def resolve(self, model: str, version: str | None) -> int | None:
        """The version a request names (``None``: none), once its model is this server's:
        404 for another model or a version that is no version number."""
        if model != self.name:
            raise ClientError(f"model '{model}' not found (this server serves '{self.name}')", 404)
        if version is None:
            return None
        if not version.isdigit() or not version.isascii():
            raise ClientError(f"version '{version}' of model '{self.name}' not found", 404)
        return int(version)

    def get(self, version: int | None = None) -> ServedModel:
        """The stable version, or ``version`` when it is loaded (stable or candidate)."""
        current, candidate = self.current, self.candidate
        if current is None:
            raise NotReady(self.not_ready_reason())
        if version is None or version == current.version:
            return current
        if candidate is not None and version == candidate.version:
            return candidate
        loaded = " and ".join(str(v) for v in self.loaded_versions())
        raise ClientError(
            f"version {version} of model '{self.name}' is not loaded (serving version {loaded})",
            status=404,
        )

    def route(self, version: int | None) -> ServedModel:
        """Who answers a request: the named version, else the weighted split between
        stable and candidate. Called once per request as it arrives, before its body
        is read, so that the batcher of the version that will answer is told it is
        coming (``Batcher.arriving``) and no other batcher waits for it."""
        candidate = self.candidate
        if (
            version is None
            and candidate is not None
            and self.current is not None
            and self.split.to_candidate()
        ):
            return candidate
        return self.get(version)

    async def infer(
        self,
        version: int | None,
        read: Callable[[], Awaitable[T]],
        parse: Callable[[T, Signature], R],
        rows: Callable[[R], np.ndarray],
    ) -> tuple[ServedModel, R, np.ndarray]:
        """One prediction, whatever the protocol: route it (404/503 before its body is
        read), ``read`` its body while its batcher knows it is coming, then :meth:`predict`.
        Every front end (REST v1, REST v2, gRPC) comes through here."""
        served = self.route(version)
        with served.batcher.arriving():
            body = await read()
        return await self.predict(served, version, lambda sig: parse(body, sig), rows)

    async def predict(
        self,
        served: ServedModel,
        version: int | None,
        parse: Callable[[Signature], Any],
        rows: Callable[[Any], np.ndarray],
    ) -> tuple[ServedModel, Any, np.ndarray]:
        """Parse a request against the signature of ``served`` (from :meth:`route`)
        and run it there.

        Returns the version that answered, the parsed request and the output
        rows. If ``served`` was unloaded while the body was read, an
        unversioned request is routed again, once.
        """
        for attempt in (1, 2):
            try:
                request = parse(served.signature)
            except ClientError:
                if version is None and served is self.candidate:
                    # Stable takes this request; the candidate does not: the candidate's fault.
                    served.series.observe(False, 0.0)
                raise
            batch = rows(request)
            started = time.perf_counter()
            try:
                out = await served.predict(batch)
            except BatcherClosed:
                if attempt == 2 or version is not None:
                    raise NotReady(
                        f"model '{self.name}' version {served.version} was unloaded"
                    ) from None
                served = self.route(version)
                continue
            except Exception:
                served.series.observe(False, time.perf_counter() - started)
                raise
            served.series.observe(True, time.perf_counter() - started)
            if self.shadowing and version is None and served is self.current:
                self.shadow.offer(batch, out)
            return served, request, out
        raise AssertionError("unreachable")
