"""The operator's settings: one object, built once at start-up from the environment and flags.

Nothing reads the environment anywhere else; the handlers reach the settings
through the controller that kopf hands them in ``memo``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

# Setting -> environment variable (docs/operator.md lists them).
ENVIRONMENT = {
    "watch_namespaces": "KERASOP_WATCH_NAMESPACES",
    "metrics_port": "KERASOP_METRICS_PORT",
    "health_port": "KERASOP_HEALTH_PORT",
    "log_format": "KERASOP_LOG_FORMAT",
    "log_level": "KERASOP_LOG_LEVEL",
    "runtime_image": "KERASOP_RUNTIME_IMAGE",
    "serving_image": "KERASOP_SERVING_IMAGE",
    "image_pull_policy": "KERASOP_RUNTIME_IMAGE_PULL_POLICY",
    "cluster_domain": "KERASOP_CLUSTER_DOMAIN",
    "progress_interval": "KERASOP_PROGRESS_INTERVAL",
    "retry_delay": "KERASOP_RETRY_DELAY",
    "rollout_interval": "KERASOP_ROLLOUT_INTERVAL",
    "store_check_interval": "KERASOP_STORE_CHECK_INTERVAL",
    "max_workers": "KERASOP_MAX_WORKERS",
    "watch_timeout": "KERASOP_WATCH_TIMEOUT",
    "scan_crds": "KERASOP_SCAN_CRDS",
    "kueue": "KERASOP_KUEUE",
}


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    watch_namespaces: tuple[str, ...] = ()  # empty: all namespaces
    metrics_port: int = 9090  # 0 disables /metrics
    health_port: int = 8081  # liveness at /healthz, 0 disables
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    runtime_image: str = ""  # default trainer/server image
    serving_image: str = ""  # slim server image (ONNX Runtime only); empty: the runtime image
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    progress_interval: float = 10.0  # seconds between progress reads of an active job
    retry_delay: float = 30.0  # seconds before a failed reconcile is retried
    rollout_interval: float = 10.0  # seconds between rollout steps of a shadow or canary
    store_check_interval: float = 30.0  # seconds between model store reads of a bucket's servers
    max_workers: int = 8  # threads running reconciles
    watch_timeout: int = 300  # seconds of one watch request
    scan_crds: bool = False  # let kopf watch CRDs (needs a cluster-wide grant)
    kueue: bool = False  # read (and pause) queued jobs' Kueue Workloads (docs/queues.md)

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(ns.strip() for ns in value.split(",") if ns.strip())
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """The settings in ``environ`` (default: the process environment); unset or empty
        variables keep their defaults; ``overrides`` (command-line flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            name: env[var] for name, var in ENVIRONMENT.items() if env.get(var, "").strip()
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
