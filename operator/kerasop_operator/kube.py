"""A small, synchronous Kubernetes REST client on top of the ``kubernetes`` package.

Only transport and authentication come from ``kubernetes`` (kubeconfig,
in-cluster service account, token refresh); objects stay plain dicts, exactly
as the API server returns them, so nothing is lost or renamed on the way.
The operator's handlers run in kopf's thread pool and call this client.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

logger = logging.getLogger(__name__)

FIELD_MANAGER = "kerasop-operator"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        parts = [self.prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if sub:
            parts.append(sub)
        return "/".join(parts)


NAMESPACE = Kind("v1", "Namespace", "namespaces", namespaced=False)
POD = Kind("v1", "Pod", "pods")
SERVICE = Kind("v1", "Service", "services")
PVC = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
EVENT = Kind("v1", "Event", "events")
JOB = Kind("batch/v1", "Job", "jobs")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
TRAINING_JOB = Kind("kerasop.io/v1alpha1", "KerasTrainingJob", "kerastrainingjobs")
MODEL_SERVICE = Kind("kerasop.io/v1alpha1", "KerasModelService", "kerasmodelservices")

KINDS = {
    (k.api_version, k.kind): k
    for k in (
        NAMESPACE,
        POD,
        SERVICE,
        PVC,
        SERVICE_ACCOUNT,
        CONFIG_MAP,
        EVENT,
        JOB,
        DEPLOYMENT,
        HPA,
        PDB,
        TRAINING_JOB,
        MODEL_SERVICE,
    )
}


def kind_of(obj: dict[str, Any]) -> Kind:
    return KINDS[(obj["apiVersion"], obj["kind"])]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def transient(self) -> bool:
        return self.status in (409, 429) or self.status >= 500


class Kube:
    """Dict-in, dict-out access to the API server (the subset the operator uses)."""

    def __init__(self, api_client: Any, *, timeout: float = 30.0) -> None:
        self.api = api_client
        self.timeout = timeout

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster service account if present, else ``$KUBECONFIG`` / ``~/.kube/config``."""
        from kubernetes import client, config

        cfg = client.Configuration()
        if (
            kubeconfig is None
            and os.environ.get("KUBERNETES_SERVICE_HOST")
            and os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
        ):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        return cls(client.ApiClient(configuration=cfg))

    # ---- transport -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = [
            (k, str(v).lower() if isinstance(v, bool) else v)
            for k, v in (query or {}).items()
            if v is not None
        ]
        req = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*req, _request_timeout=self.timeout)
        data = resp.read()
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else (data or "")
        if not 200 <= resp.status < 300:
            reason, message = resp.reason or "", text
            try:
                doc = json.loads(text)
                reason = doc.get("reason") or reason
                message = doc.get("message") or message
            except ValueError:
                doc = None
            raise ApiError(resp.status, reason, message, doc)
        if raw:
            return text
        return json.loads(text) if text else None

    # ---- verbs -----------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", kind.path(namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        doc = self.request("GET", kind.path(namespace), query={"labelSelector": label_selector})
        items = doc.get("items") or []
        for item in items:  # list items lack apiVersion/kind
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        ns = obj["metadata"].get("namespace")
        return self.request("POST", kind.path(ns), query={"fieldManager": FIELD_MANAGER}, body=obj)

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply: the operator owns exactly the fields it sends."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            query={"fieldManager": FIELD_MANAGER, "force": force},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            kind.path(namespace, name, subresource),
            query={"fieldManager": FIELD_MANAGER},
            body=patch,
            content_type="application/merge-patch+json",
        )

    def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", kind.path(namespace, name), body=body)
            return True
        except ApiError as exc:
            if exc.not_found:
                return False
            raise

    def pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str,
        tail_lines: int = 300,
        limit_bytes: int = 256 * 1024,
    ) -> str | None:
        """The tail of a container's log, or None when it cannot be read (no kubelet, gone)."""
        try:
            return self.request(
                "GET",
                POD.path(namespace, name, "log"),
                query={"container": container, "tailLines": tail_lines, "limitBytes": limit_bytes},
                raw=True,
            )
        except Exception as exc:  # ApiError, or a connection error to the kubelet proxy
            logger.debug("no log for pod %s/%s: %s", namespace, name, exc)
            return None
