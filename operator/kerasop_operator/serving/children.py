"""The children a KerasModelService wants: Service, server Deployment, HPA, PDB, rollout ConfigMap."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kerasop.contracts import STORE_ROOT, server_flags
from kerasop.spec import AutoscalingSpec, KerasModelService, ObjectStoreSpec, SpecError

from ..common import (
    ANN_MODEL_NAME,
    ANN_MODEL_VERSION,
    ANN_ROLLOUT_PLAN,
    LABEL_MODEL_CLAIM,
    child_metadata,
    label_value,
    owner_reference,
)
from ..pods import (
    MODELS_VOLUME,
    apply_override,
    apply_scheduling,
    colocation_affinity,
    container_resources,
    container_security_context,
    needs_colocation,
    pod_security_context,
    scratch_volume,
    spread_over_nodes,
    store_credentials_env,
    store_key_mounts,
    store_key_volumes,
    tmp_mount,
    tmp_volume,
)
from ..training import service_account
from .model import ModelRef, Waiting
from .names import (
    COMPONENT,
    CONTAINER,
    DEFAULT_SERVICE_ACCOUNT,
    GRPC_SERVICE_PORT,
    IN_FLIGHT_METRIC,
    LIVE_PATH,
    PORT,
    PRESTOP_SECONDS,
    READY_PATH,
    ROLLOUT_DIR,
    ROLLOUT_KEY,
    ROLLOUT_VOLUME,
    SERVICE_PORT,
    deployment_name,
    parse,
    rollout_config_name,
    selector_labels,
    service_labels,
)


@dataclass
class ServingChildren:
    service: dict[str, Any]
    deployment: dict[str, Any] | None = None  # None while waiting for a model
    hpa: dict[str, Any] | None = None
    pdb: dict[str, Any] | None = None
    service_account: dict[str, Any] | None = None
    rollout_config: dict[str, Any] | None = None  # with spec.rollout


# The training job's codePath (on its data claim), for models with the user's classes.
USER_CODE_VOLUME = "user-code"
USER_CODE_ROOT = "/user-code"


def server_args(svc: KerasModelService, model: ModelRef, *, rollout: bool = False) -> list[str]:
    args = ["--store-root", STORE_ROOT, "--model", model.name]
    if model.uri is not None:  # the server mirrors the bucket into STORE_ROOT (an emptyDir)
        options = (model.store or ObjectStoreSpec()).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        args += ["--store-uri", model.uri, "--store-options", json.dumps(options, sort_keys=True)]
    if rollout:  # the plan names the versions; changing it restarts no pod
        args += ["--rollout-file", f"{ROLLOUT_DIR}/{ROLLOUT_KEY}"]
    elif model.version is not None:
        args += ["--version", str(model.version)]
    return [*args, "--host", "0.0.0.0", "--port", str(PORT), *server_flags(svc.spec.server)]


def plan_nudges(
    rollout_config: dict[str, Any], pods: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Pod name -> annotation patch for the server pods that have not seen this plan yet.

    The kubelet rewrites a mounted ConfigMap only when it syncs the pod: about a minute
    after the change on its own, at once when the pod itself changes. Annotating each pod
    with the plan's digest is that change, so a rollback reaches the pods in seconds.
    """
    text = json.dumps(rollout_config["data"], sort_keys=True).encode()
    digest = hashlib.sha256(text).hexdigest()[:16]
    patch = {"metadata": {"annotations": {ANN_ROLLOUT_PLAN: digest}}}
    return {
        pod["metadata"]["name"]: patch
        for pod in pods
        if (pod["metadata"].get("annotations") or {}).get(ANN_ROLLOUT_PLAN) != digest
        and not pod["metadata"].get("deletionTimestamp")
    }


def hpa_metrics(auto: AutoscalingSpec) -> list[dict[str, Any]]:
    """The HPA's metrics: CPU and/or in-flight requests per pod (the HPA takes the max)."""
    metrics: list[dict[str, Any]] = []
    cpu = auto.cpu_target()
    if cpu is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu},
                },
            }
        )
    if auto.target_in_flight_requests is not None:
        # Served by a custom-metrics adapter from the servers' gauge (docs/serving.md).
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": IN_FLIGHT_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(auto.target_in_flight_requests),
                    },
                },
            }
        )
    return metrics


def loaded_versions(model: ModelRef, rollout_plan: dict[str, Any] | None) -> list[int]:
    """The versions the server pods load: the plan's stable and candidate, or the pinned one.

    Empty when the pods pick a version themselves (the latest, or nothing promoted yet).
    """
    if rollout_plan is not None:
        return [v for v in (rollout_plan.get("stable"), rollout_plan.get("candidate")) if v]
    return [model.version] if model.version is not None else []


def server_image(
    spec_image: str | None,
    model: ModelRef,
    rollout_plan: dict[str, Any] | None,
    *,
    runtime_image: str,
    serving_image: str,
) -> str:
    """``spec.image``; else the slim serving image (ONNX Runtime only) when every version
    the pods load is known to hold model.onnx; else the runtime image (Keras/TensorFlow)."""
    if spec_image:
        return spec_image
    versions = loaded_versions(model, rollout_plan)
    if serving_image and versions and all(v in model.onnx_versions for v in versions):
        return serving_image
    return runtime_image


def desired_children(
    body: dict[str, Any],
    model: ModelRef | Waiting,
    *,
    default_image: str,
    serving_image: str = "",
    image_pull_policy: str = "IfNotPresent",
    claim_access_modes: list[str] | None = None,
    rollout_plan: dict[str, Any] | None = None,
) -> ServingChildren:
    """Every child the service needs; the Deployment/HPA/PDB only once a model is known.

    ``default_image`` is the runtime image; ``serving_image`` the slim one (``""``: none).
    ``rollout_plan`` (``rollout.routing(state)``, with spec.rollout): written into the
    rollout ConfigMap the server pods poll.
    """
    svc = parse(body)
    spec = svc.spec
    meta = body["metadata"]
    name, namespace = meta["name"], meta.get("namespace")
    owner = owner_reference(body)
    labels = service_labels(name)

    out = ServingChildren(
        service=model_service(name, namespace, labels, owner, grpc=bool(spec.server.grpc_port))
    )
    if not spec.scheduling.service_account_name:
        out.service_account = service_account(DEFAULT_SERVICE_ACCOUNT, namespace, COMPONENT)
    if isinstance(model, Waiting):
        return out
    rollout = spec.rollout is not None and rollout_plan is not None
    if rollout:
        out.rollout_config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": child_metadata(rollout_config_name(name), namespace, labels, owner),
            "data": {ROLLOUT_KEY: json.dumps(rollout_plan, sort_keys=True)},
        }

    image = server_image(
        spec.image,
        model,
        rollout_plan if rollout else None,
        runtime_image=default_image,
        serving_image=serving_image,
    )
    if not image:
        raise SpecError("spec.image is not set and the operator has no KERASOP_RUNTIME_IMAGE")
    modes = claim_access_modes or []
    single_pod_volume = "ReadWriteOncePod" in modes
    container = server_container(svc, model, image, image_pull_policy, rollout=rollout)
    model_annotations = {
        ANN_MODEL_NAME: model.name,
        ANN_MODEL_VERSION: (
            "rollout" if rollout else str(model.version) if model.version is not None else "latest"
        ),
    }
    template = server_pod_template(
        svc, model, container, model_annotations, colocate=needs_colocation(modes), rollout=rollout
    )
    out.deployment = server_deployment(
        svc, template, model_annotations, owner, single_pod_volume=single_pod_volume
    )
    if spec.autoscaling is not None:
        out.hpa = server_hpa(name, namespace, labels, owner, spec.autoscaling)
    wanted = spec.autoscaling.min_replicas if spec.autoscaling is not None else spec.replicas
    if wanted > 1 and not single_pod_volume:
        out.pdb = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": child_metadata(name, namespace, labels, owner),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector_labels(name)}},
        }
    return out


def model_service(
    name: str,
    namespace: str | None,
    labels: dict[str, str],
    owner: dict[str, Any],
    *,
    grpc: bool,
) -> dict[str, Any]:
    ports = [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]
    if grpc:
        # appProtocol: meshes and gateways speak HTTP/2 to it without TLS (h2c).
        ports.append(
            {
                "name": "grpc",
                "port": GRPC_SERVICE_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(name, namespace, labels, owner),
        "spec": {"type": "ClusterIP", "selector": selector_labels(name), "ports": ports},
    }


def server_container(
    svc: KerasModelService,
    model: ModelRef,
    image: str,
    image_pull_policy: str,
    *,
    rollout: bool,
) -> dict[str, Any]:
    """The model server: its flags, probes, drain delay and read-only mounts."""
    probe_port = "http"
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["kerasop-serve"],
        "args": server_args(svc, model, rollout=rollout),
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # the job's codePath: the engine imports what metadata.json userCode names
            *([{"name": "PYTHONPATH", "value": USER_CODE_ROOT}] if model.code else []),
            *(store_credentials_env("MODELS", model.store) if model.uri is not None else []),
        ],
        "ports": [
            {"name": "http", "containerPort": PORT, "protocol": "TCP"},
            *(
                [{"name": "grpc", "containerPort": svc.spec.server.grpc_port, "protocol": "TCP"}]
                if svc.spec.server.grpc_port
                else []
            ),
        ],
        # Probed every second, so a pod is Ready about a second after its model is loaded
        # (the period adds to every start); 10 misses in a row before it is taken out of
        # the Service, so a busy server is not flapped out.
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": probe_port},
            "periodSeconds": 1,
            "timeoutSeconds": 2,
            "failureThreshold": 10,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": probe_port},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # Loading a big model can take a while: no liveness kills during start-up.
        "startupProbe": {
            "httpGet": {"path": LIVE_PATH, "port": probe_port},
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "failureThreshold": 300,
        },
        # Keep serving while kube-proxy and endpoints catch up with the pod's removal:
        # without this, a rollout or a deleted pod refuses connections for a moment.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "volumeMounts": [
            {"name": MODELS_VOLUME, "mountPath": STORE_ROOT, "readOnly": model.uri is None},
            tmp_mount(),
            *(
                [{"name": ROLLOUT_VOLUME, "mountPath": ROLLOUT_DIR, "readOnly": True}]
                if rollout
                else []
            ),
            *(
                [
                    {
                        "name": USER_CODE_VOLUME,
                        "mountPath": USER_CODE_ROOT,
                        "subPath": model.code.path,
                        "readOnly": True,
                    }
                ]
                if model.code
                else []
            ),
            *(store_key_mounts("MODELS", model.store) if model.uri is not None else []),
        ],
        "securityContext": container_security_context(),
    }
    resources = container_resources(svc.spec.resources)
    if resources:
        container["resources"] = resources
    return container


def server_pod_template(
    svc: KerasModelService,
    model: ModelRef,
    container: dict[str, Any],
    model_annotations: dict[str, str],
    *,
    colocate: bool,
    rollout: bool,
) -> dict[str, Any]:
    """Volumes (model claim read-only, rollout plan, user code), spread, scheduling, override."""
    spec = svc.spec
    name = svc.metadata.name
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [
            (
                {
                    "name": MODELS_VOLUME,
                    "persistentVolumeClaim": {"claimName": model.claim_name, "readOnly": True},
                }
                if model.claim_name is not None
                else scratch_volume(MODELS_VOLUME)
            ),
            tmp_volume(),
            *(
                [{"name": ROLLOUT_VOLUME, "configMap": {"name": rollout_config_name(name)}}]
                if rollout
                else []
            ),
            *(
                [
                    {
                        "name": USER_CODE_VOLUME,
                        "persistentVolumeClaim": {
                            "claimName": model.code.claim_name,
                            "readOnly": True,
                        },
                    }
                ]
                if model.code
                else []
            ),
            *(store_key_volumes("MODELS", model.store) if model.uri is not None else []),
        ],
    }
    most = spec.autoscaling.max_replicas if spec.autoscaling is not None else spec.replicas
    if most > 1 and not colocate:
        pod_spec["topologySpreadConstraints"] = spread_over_nodes(selector_labels(name))
    apply_scheduling(
        pod_spec,
        spec.scheduling,
        gpus=spec.resources.gpus,
        default_service_account=DEFAULT_SERVICE_ACCOUNT,
        extra_affinity=(
            colocation_affinity(model.claim_name)
            if colocate and model.claim_name is not None
            else None
        ),
    )
    return apply_override(
        {
            "metadata": {
                "labels": {
                    **service_labels(name),
                    **selector_labels(name),
                    **(
                        {LABEL_MODEL_CLAIM: label_value(model.claim_name)}
                        if model.claim_name is not None
                        else {}
                    ),
                },
                "annotations": dict(model_annotations),
            },
            "spec": pod_spec,
        },
        spec.scheduling.pod_template,
    )


def server_deployment(
    svc: KerasModelService,
    template: dict[str, Any],
    model_annotations: dict[str, str],
    owner: dict[str, Any],
    *,
    single_pod_volume: bool,
) -> dict[str, Any]:
    name, namespace = svc.metadata.name, svc.metadata.namespace
    if single_pod_volume:
        # Only one pod may mount a ReadWriteOncePod claim: the old pod must go first.
        strategy: dict[str, Any] = {"type": "Recreate"}
    else:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": strategy,
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": 600,
        "template": template,
    }
    if svc.spec.autoscaling is None:
        dep_spec["replicas"] = svc.spec.replicas  # with an HPA, the HPA owns replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            deployment_name(name), namespace, service_labels(name), owner, model_annotations
        ),
        "spec": dep_spec,
    }


def server_hpa(
    name: str,
    namespace: str | None,
    labels: dict[str, str],
    owner: dict[str, Any],
    auto: AutoscalingSpec,
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(name, namespace, labels, owner),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(name),
            },
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": hpa_metrics(auto),
            **hpa_behavior(auto),
        },
    }


def hpa_behavior(auto: AutoscalingSpec) -> dict[str, Any]:
    """``behavior`` when the spec sets the scale-down window (else the HPA's defaults)."""
    window = auto.scale_down_stabilization_seconds
    if window is None:
        return {}
    return {"behavior": {"scaleDown": {"stabilizationWindowSeconds": window}}}
