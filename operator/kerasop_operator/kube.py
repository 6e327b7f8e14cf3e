"""Kubernetes access for the operator's reconcile code, on lightkube's synchronous client.

lightkube does the work (kubeconfig or in-cluster service account, HTTP,
server-side apply under a field manager); this module only keeps the
reconcile code and its builders on plain dicts, exactly as the API server
returns them, and turns lightkube's errors into one small ``ApiError``: an error
status of the API server, or no answer at all (a timeout, a refused or dropped
connection), which the handlers retry like any other failed API call.
The operator's handlers run in kopf's thread pool and call this client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import lightkube
from lightkube import codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core import generic_client
from lightkube.core.resource import NamespacedResource, api_info
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources import apps_v1, autoscaling_v2, batch_v1, core_v1, policy_v1
from lightkube.types import CascadeType, PatchType

from kerasop.spec import GROUP, VERSION

logger = logging.getLogger(__name__)

FIELD_MANAGER = "kerasop-operator"

# What lightkube's HTTP client raises when no answer came (timeout, connection refused or
# dropped); the client is httpx2 from lightkube 1.0 on, httpx before.
TransportError: type[Exception] = generic_client.httpx.TransportError  # type: ignore[attr-defined]
# An error answer that is no Kubernetes Status (lightkube passes it on as it is): e.g. the
# plain "404 page not found" for an API group nobody serves (Kueue's, when it is not installed).
HTTPStatusError: type[Exception] = generic_client.httpx.HTTPStatusError  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Kind:
    """One resource type: its lightkube class (``res``) and its ``kind`` name."""

    res: Any
    subresources: tuple[str, ...] = ("status",)

    @property
    def kind(self) -> str:
        return str(api_info(self.res).resource.kind)

    @property
    def api_version(self) -> str:
        r = api_info(self.res).resource
        return f"{r.group}/{r.version}" if r.group else str(r.version)

    @property
    def namespaced(self) -> bool:
        return issubclass(self.res, NamespacedResource)


NAMESPACE = Kind(core_v1.Namespace)
POD = Kind(core_v1.Pod)
SERVICE = Kind(core_v1.Service)
PVC = Kind(core_v1.PersistentVolumeClaim)
SERVICE_ACCOUNT = Kind(core_v1.ServiceAccount)
CONFIG_MAP = Kind(core_v1.ConfigMap)
EVENT = Kind(core_v1.Event)
JOB = Kind(batch_v1.Job)
DEPLOYMENT = Kind(apps_v1.Deployment)
HPA = Kind(autoscaling_v2.HorizontalPodAutoscaler)
PDB = Kind(policy_v1.PodDisruptionBudget)
TRAINING_JOB = Kind(
    create_namespaced_resource(GROUP, VERSION, "KerasTrainingJob", "kerastrainingjobs")
)
MODEL_SERVICE = Kind(
    create_namespaced_resource(GROUP, VERSION, "KerasModelService", "kerasmodelservices")
)
# Kueue's Workload (read only with the operator's Kueue support on: settings.kueue).
WORKLOAD = Kind(create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads"))

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
    """A failed API call: the API server's error status (``status`` is the HTTP code), or
    ``status`` 0 when no answer came (``reason`` then names the transport error)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_lightkube(cls, exc: lightkube.ApiError) -> ApiError:
        st = exc.status
        return cls(int(st.code or exc.response.status_code), st.reason or "", st.message or "")

    @classmethod
    def from_transport(cls, exc: Any) -> ApiError:
        """No answer from the API server (e.g. ``ReadTimeout``), with the request it was for."""
        try:
            what = f" to {exc.request.method} {exc.request.url}"
        except RuntimeError:  # raised without its request
            what = ""
        detail = str(exc) or "no detail"
        return cls(0, type(exc).__name__, f"no answer from the API server{what}: {detail}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def transient(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


@contextmanager
def _api_errors() -> Iterator[None]:
    """lightkube's and its HTTP client's errors raised as ``ApiError``."""
    try:
        yield
    except lightkube.ApiError as exc:
        raise ApiError.from_lightkube(exc) from None
    except TransportError as exc:
        raise ApiError.from_transport(exc) from None
    except HTTPStatusError as exc:
        response = exc.response  # type: ignore[attr-defined]
        raise ApiError(response.status_code, response.reason_phrase, response.text[:200]) from None


def _dict(obj: Any, kind: Kind | None = None) -> dict[str, Any]:
    out: dict[str, Any] = obj.to_dict()
    if kind is not None:  # list items come without apiVersion/kind
        out.setdefault("apiVersion", kind.api_version)
        out.setdefault("kind", kind.kind)
    return out


class Client(Protocol):
    """What the reconcile code needs (``Kube`` here; the unit tests use an in-memory fake)."""

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None: ...
    def list(
        self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...
    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]: ...
    def add_owner_reference(
        self, kind: Kind, namespace: str | None, name: str, ref: dict[str, Any]
    ) -> dict[str, Any]: ...
    def delete(self, kind: Kind, namespace: str | None, name: str) -> bool: ...
    def pod_log(self, namespace: str, name: str, *, container: str) -> str | None: ...


class Kube:
    """Dict-in, dict-out access to the API server (the subset the operator uses)."""

    def __init__(self, client: lightkube.Client) -> None:
        self.client = client

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, *, timeout: float = 30.0) -> Kube:
        """``kubeconfig`` if given, else the in-cluster service account or ``$KUBECONFIG``."""
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        # A number is a valid timeout for the HTTP client underneath (httpx or httpx2,
        # depending on the lightkube version), whose Timeout type the stubs name.
        client = lightkube.Client(config, field_manager=FIELD_MANAGER, timeout=timeout)  # type: ignore[arg-type]
        return cls(client)

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            with _api_errors():
                return _dict(self.client.get(kind.res, name, namespace=namespace))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        labels: dict[str, Any] | None = (
            dict(p.split("=", 1) for p in label_selector.split(",")) if label_selector else None
        )
        ns = namespace if namespace or not kind.namespaced else lightkube.ALL_NS
        with _api_errors():
            return [_dict(o, kind) for o in self.client.list(kind.res, namespace=ns, labels=labels)]

    def served(self, kind: Kind, namespace: str | None = None) -> bool:
        """Whether the API server serves ``kind`` (False: its CRD is not installed)."""
        ns = namespace or lightkube.ALL_NS
        try:
            with _api_errors():
                next(iter(self.client.list(kind.res, namespace=ns, chunk_size=1)), None)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        with _api_errors():
            return _dict(self.client.create(codecs.from_dict(obj)))

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, forced: the operator owns exactly the fields it sends.

        The API server writes nothing when the object already matches (the
        ``resourceVersion`` stays the same).
        """
        meta = obj["metadata"]
        with _api_errors():
            return _dict(
                self.client.patch(
                    kind_of(obj).res,
                    meta["name"],
                    obj,
                    namespace=meta.get("namespace"),
                    patch_type=PatchType.APPLY,
                    field_manager=FIELD_MANAGER,
                    force=True,
                )
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
        res = kind.res if subresource is None else getattr(kind.res, subresource.capitalize())
        with _api_errors():
            return _dict(
                self.client.patch(res, name, patch, namespace=namespace, patch_type=PatchType.MERGE)
            )

    def add_owner_reference(
        self, kind: Kind, namespace: str | None, name: str, ref: dict[str, Any]
    ) -> dict[str, Any]:
        """Add ``ref`` to an object's owner references, merged by uid on the server.

        A strategic merge patch: the API server merges the list, so the many owners of a
        shared object (a thousand jobs created at once) neither conflict nor overwrite
        each other's references, and none has to send the whole list.
        """
        with _api_errors():
            return _dict(
                self.client.patch(
                    kind.res,
                    name,
                    {"metadata": {"ownerReferences": [ref]}},
                    namespace=namespace,
                    patch_type=PatchType.STRATEGIC,
                )
            )

    def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        try:
            with _api_errors():
                self.client.delete(
                    kind.res, name, namespace=namespace, cascade=CascadeType.BACKGROUND
                )
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
        lines: list[str] = []
        size = 0
        try:
            for line in self.client.log(
                name, namespace=namespace, container=container, tail_lines=tail_lines
            ):
                lines.append(line)
                size += len(line)
                if size >= limit_bytes:
                    break
        except Exception as exc:  # ApiError, or a connection error to the kubelet proxy
            logger.debug("no log for pod %s/%s: %s", namespace, name, exc)
            return None
        return "".join(lines)
