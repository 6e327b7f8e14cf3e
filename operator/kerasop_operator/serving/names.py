"""Names, labels and constants of a KerasModelService's children."""

from __future__ import annotations

from typing import Any

from kerasop.contracts import SERVER_GRPC_PORT, SERVER_PORT
from kerasop.spec import KerasModelService

from ..common import (
    LABEL_COMPONENT,
    LABEL_MODEL_SERVICE,
    child_name,
    common_labels,
    label_value,
    parse_resource,
)

KIND = "KerasModelService"
PLURAL = "kerasmodelservices"
CONTAINER = "server"
COMPONENT = "server"
PRESTOP_SECONDS = 5  # endpoint removal reaches kube-proxy well within this
PORT = SERVER_PORT
SERVICE_PORT = 80
# OIP v2 over gRPC (spec.server.grpcPort): the Service's port 'grpc', whatever the pod's.
GRPC_SERVICE_PORT = SERVER_GRPC_PORT
DEFAULT_SERVICE_ACCOUNT = "kerasop-server"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/healthz"
ROLLOUT_VOLUME = "rollout"
ROLLOUT_DIR = "/etc/kerasop/rollout"
ROLLOUT_KEY = "rollout.json"
# The servers' gauge an HPA scales on (as a custom metric of the same name).
IN_FLIGHT_METRIC = "kerasop_server_requests_in_flight"


def deployment_name(svc_name: str) -> str:
    return child_name(svc_name, "-server")


def rollout_config_name(svc_name: str) -> str:
    return child_name(svc_name, "-rollout")


def parse(body: dict[str, Any]) -> KerasModelService:
    """The typed service; raises ``SpecError`` when the spec does not validate."""
    return parse_resource(KerasModelService, KIND, body)


def selector_labels(svc_name: str) -> dict[str, str]:
    """The Deployment's selector (immutable once created: never change these)."""
    return {LABEL_MODEL_SERVICE: label_value(svc_name), LABEL_COMPONENT: COMPONENT}


def selector_string(svc_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(svc_name).items()))


def service_labels(svc_name: str) -> dict[str, str]:
    return {**common_labels(COMPONENT), LABEL_MODEL_SERVICE: label_value(svc_name)}


def service_url(name: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    return f"http://{name}.{namespace}.svc.{cluster_domain}"
