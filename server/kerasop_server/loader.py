"""Loading a model version: engine, signature, warm-up, and the version as it is served.

The manager (manager.py) runs :func:`load_and_warm_up` on its loader thread, beside the
version being served, and wraps the result with :func:`serve` into a :class:`ServedModel`
that has its own batcher and inference thread.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasop.store import METADATA_FILE, ModelStore, read_metadata

from .batching import Batcher
from .config import ServerConfig
from .engines import Engine
from .metrics import Metrics
from .signature import Signature

log = logging.getLogger(__name__)

EngineFactory = Callable[..., Engine]

METADATA_SUMMARY_KEYS = (
    "name",
    "createdAt",
    "input",
    "output",
    "metrics",
    "epochsRun",
    "versions",
    "lineage",
)


@dataclass(frozen=True)
class VersionSeries:
    """A version's per-version metric series, looked up once at load (``labels()`` on
    every request takes a lock and builds a key)."""

    answered: Any
    failed: Any
    latency: Any

    @classmethod
    def of(cls, metrics: Metrics, version: int) -> VersionSeries:
        label = str(version)
        return cls(
            metrics.version_requests.labels(label, "ok"),
            metrics.version_requests.labels(label, "error"),
            metrics.version_latency.labels(label),
        )

    def observe(self, ok: bool, seconds: float) -> None:
        (self.answered if ok else self.failed).inc()
        self.latency.observe(seconds)


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
    series: VersionSeries
    loaded_at: float = field(default_factory=time.time)
    active: int = 0  # requests holding this version

    async def predict(self, batch: np.ndarray, *, background: bool = False) -> np.ndarray:
        self.active += 1
        try:
            return await self.batcher.submit(batch, background=background)
        finally:
            self.active -= 1

    def info(self) -> dict[str, Any]:
        """What metadata endpoints show besides the tensor signature."""
        summary = {k: self.metadata[k] for k in METADATA_SUMMARY_KEYS if k in self.metadata}
        return {
            "engine": self.engine.name,
            "engineDetail": self.engine.detail,
            "engineReason": self.engine.reason,
            "loadSeconds": round(self.load_seconds, 3),
            "maxBatchSize": self.batcher.max_batch_size,
            "batchTimeoutMs": self.batcher.timeout * 1000,
            "metadata": summary,
        }

    async def close(self) -> None:
        await self.batcher.close()
        self.executor.shutdown(wait=False)
        self.engine.close()


def load_and_warm_up(
    store: ModelStore,
    name: str,
    version: int,
    engine_factory: EngineFactory,
    engine_name: str,
    threads: int,
) -> tuple[Engine, Signature, dict[str, Any]]:
    """Load + warm up (blocking: the manager runs it on its loader thread)."""
    vdir = store.version_dir(name, version)
    meta_file = vdir / METADATA_FILE
    metadata: dict[str, Any] = {}
    if meta_file.is_file():
        metadata = read_metadata(vdir).to_json_dict()
    else:
        log.warning("%s is missing; taking input and output shapes from the model", meta_file)
    engine = engine_factory(engine_name, vdir, threads=threads)
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
                raise ValueError(f"warm-up: the model returned shape {out.shape} for {rows} rows")
    except BaseException:
        engine.close()
        raise
    freeze_long_lived()
    return engine, signature, metadata


def serve(
    name: str,
    version: int,
    loaded: tuple[Engine, Signature, dict[str, Any]],
    load_seconds: float,
    config: ServerConfig,
    metrics: Metrics,
) -> ServedModel:
    """The loaded version with its own inference thread and batcher, started."""
    engine, signature, metadata = loaded
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"infer-v{version}")
    batcher = Batcher(
        engine.predict,
        max_batch_size=config.max_batch_size,
        timeout=config.batch_timeout_ms / 1000.0,
        executor=executor,
        observe=metrics.observe_batch,
    )
    batcher.start()
    return ServedModel(
        name=name,
        version=version,
        metadata=metadata,
        engine=engine,
        signature=signature,
        batcher=batcher,
        executor=executor,
        load_seconds=load_seconds,
        series=VersionSeries.of(metrics, version),
    )


def freeze_long_lived() -> None:
    """Keep what exists once a version is loaded (modules, engines, signatures) out of the
    garbage collector's full passes, which otherwise walk every object the process holds
    and stall requests under load (docs/performance.md has the p99 figures). Unfreezing
    and collecting first frees the cycles of versions unloaded since the last load.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
