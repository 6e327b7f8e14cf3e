"""Prometheus metrics of one server (its own registry, so several servers can
live in one process, as they do in the tests)."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from kerasop.objstore import ObjectStoreError
from kerasop.server_metrics import (
    SHADOW_COMPARISONS,
    STORE_ERROR,
    VERSION_LATENCY,
    VERSION_REQUESTS,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.requests = Counter(
            "kerasop_server_requests",
            "Requests answered (REST and gRPC), by endpoint and HTTP status code.",
            ["endpoint", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "kerasop_server_request_duration_seconds",
            "Time from request to response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Per pod by the scrape's pod label: what an HPA on in-flight requests reads.
        self.in_flight = Gauge(
            "kerasop_server_requests_in_flight",
            "Prediction requests being read, queued or computed right now.",
            ["model"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "kerasop_server_batch_size",
            "Rows per model call (dynamic batching merges requests into one call).",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "kerasop_server_inference_duration_seconds",
            "Time of one model call.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "kerasop_server_batch_queue_seconds",
            "How long the oldest request of a batch waited before the model call.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_version = Gauge(
            "kerasop_server_model_version",
            "Version of the model being served (0 until one is loaded).",
            ["model"],
            registry=registry,
        )
        self.model_ready = Gauge(
            "kerasop_server_model_ready",
            "1 when a version is loaded and warmed up.",
            ["model"],
            registry=registry,
        )
        self.model_loads = Counter(
            "kerasop_server_model_loads",
            "Attempts to load a model version, by result (ok, error).",
            ["model", "result"],
            registry=registry,
        )
        self.load_seconds = Gauge(
            "kerasop_server_model_load_seconds",
            "How long loading and warming up the served version took.",
            ["model"],
            registry=registry,
        )
        self.engine = Gauge(
            "kerasop_server_engine_info",
            "The inference engine of the served version (value 1).",
            ["model", "engine"],
            registry=registry,
        )
        # Per version (the canary's evidence, read by the operator and `kerasop serve`: kerasop/server_metrics.py).
        self.version_requests = Counter(
            VERSION_REQUESTS,
            "Predictions by the model version that answered and outcome (ok, error).",
            ["version", "outcome"],
            registry=registry,
        )
        self.version_latency = Histogram(
            VERSION_LATENCY,
            "Time of a prediction (queue + model call), by the version that answered.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow = Counter(
            SHADOW_COMPARISONS,
            "Shadow copies by candidate version and result (agree, disagree, error, dropped).",
            ["version", "result"],
            registry=registry,
        )
        self.shadow_latency = Histogram(
            "kerasop_server_shadow_duration_seconds",
            "Time of a shadow prediction on the candidate version.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rollout_weight = Gauge(
            "kerasop_server_rollout_weight",
            "Percent of requests sent to the candidate version.",
            ["model"],
            registry=registry,
        )
        self.candidate_version = Gauge(
            "kerasop_server_candidate_version",
            "Candidate version loaded beside the stable one (0 = none).",
            ["model", "mode"],
            registry=registry,
        )
        # Read by the operator into the service's ModelStoreReachable condition.
        self.store_error = Gauge(
            STORE_ERROR,
            "1 while the last poll of the model store's bucket failed, by reason and message.",
            ["model", "reason", "message"],
            registry=registry,
        )
        self._store_error_labels: tuple[str, str, str] | None = None
        self.model_version.labels(model).set(0)
        self._in_flight_now = self.in_flight.labels(model)  # the one series, looked up once
        self._in_flight_now.set(0)
        self.model_ready.labels(model).set(0)
        self.rollout_weight.labels(model).set(0)

    def in_flight_request(self) -> AbstractContextManager[None]:
        """Counts one prediction request while the ``with`` block runs."""
        return self._in_flight_now.track_inprogress()

    def observe_request(self, endpoint: str, status: int, started: float) -> None:
        """One answered request (REST or gRPC) by endpoint and HTTP status; ``started``
        is its ``time.perf_counter()`` on arrival."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - started)

    def observe_batch(self, rows: int, seconds: float, wait: float) -> None:
        self.batch_size.labels(self.model).observe(rows)
        self.inference.labels(self.model).observe(seconds)
        self.queue_wait.labels(self.model).observe(wait)

    def set_served(self, version: int, engine: str, load_seconds: float) -> None:
        self.model_version.labels(self.model).set(version)
        self.model_ready.labels(self.model).set(1)
        self.load_seconds.labels(self.model).set(load_seconds)
        self.engine.clear()
        self.engine.labels(self.model, engine).set(1)

    def set_rollout(self, candidate: int | None, weight: int, shadow: bool) -> None:
        self.rollout_weight.labels(self.model).set(weight if candidate else 0)
        self.candidate_version.clear()
        if candidate:
            self.candidate_version.labels(self.model, "shadow" if shadow else "canary").set(
                candidate
            )

    def set_store_error(self, error: ObjectStoreError | None) -> None:
        """The outcome of the last poll of the model store (None: it answered)."""
        labels = None if error is None else (self.model, error.reason, str(error))
        if labels == self._store_error_labels:
            return
        # The new series first, then the old one away: a scrape in between never sees
        # a failing store as answering.
        if labels is not None:
            self.store_error.labels(*labels).set(1)
        if self._store_error_labels is not None:
            self.store_error.remove(*self._store_error_labels)
        self._store_error_labels = labels

    def render(self) -> bytes:
        return generate_latest(self.registry)
