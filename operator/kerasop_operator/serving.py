"""KerasModelService: spec (+ followed training job) -> desired children, observed -> status.

Pure functions only. Children of a service ``<svc>``:

- ``apps/v1 Deployment <svc>-server`` running ``kerasop-serve`` on port 8080,
  pinned to one model version (a new version = a rolling update);
- ``v1 Service <svc>``: port 80 (``http``) -> 8080;
- ``autoscaling/v2 HorizontalPodAutoscaler <svc>`` when ``spec.autoscaling``;
- ``policy/v1 PodDisruptionBudget <svc>`` (minAvailable 1) when more than one
  server pod is wanted;
- ``v1 ConfigMap <svc>-rollout`` with spec.rollout: the rollout plan (rollout.py)
  the server pods poll, so canary steps and promotions need no pod restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kerasop.spec import KerasModelService, SpecError
from kerasop.status import KerasModelServiceStatus, ready

from .common import (
    ANN_MODEL_NAME,
    ANN_MODEL_VERSION,
    LABEL_COMPONENT,
    LABEL_MODEL_CLAIM,
    LABEL_MODEL_SERVICE,
    STORE_ROOT,
    child_metadata,
    child_name,
    common_labels,
    label_value,
    owner_reference,
    parse_resource,
)
from .conditions import Cond, merge_conditions
from .pods import (
    MODELS_VOLUME,
    apply_override,
    apply_scheduling,
    colocation_affinity,
    container_resources,
    container_security_context,
    needs_colocation,
    pod_security_context,
    tmp_mount,
    tmp_volume,
)
from .training import claim_name_of
from .training import parse as parse_training_job

KIND = "KerasModelService"
PLURAL = "kerasmodelservices"
CONTAINER = "server"
COMPONENT = "server"
PRESTOP_SECONDS = 5  # endpoint removal reaches kube-proxy well within this
PORT = 8080
SERVICE_PORT = 80
DEFAULT_SERVICE_ACCOUNT = "kerasop-server"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/healthz"
ROLLOUT_VOLUME = "rollout"
ROLLOUT_DIR = "/etc/kerasop/rollout"
ROLLOUT_KEY = "rollout.json"


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


# --------------------------------------------------------------------------------------------
# which model to serve


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what the server pods will load."""

    name: str
    claim_name: str
    version: int | None  # None = the latest, picked up by the server itself
    source: str  # human-readable origin, for messages


@dataclass(frozen=True)
class Waiting:
    """No model to serve yet."""

    reason: str
    message: str


def resolve_model(
    body: dict[str, Any],
    training_job: dict[str, Any] | None,
) -> ModelRef | Waiting:
    """Which model name/claim/version the service serves.

    ``training_job``: the KerasTrainingJob named in ``spec.model.trainingJob``
    (``None`` if it does not exist); ignored for a name + claimName model.
    """
    svc = parse(body)
    model = svc.spec.model
    if model.training_job is None:
        assert model.name is not None and model.claim_name is not None
        return ModelRef(model.name, model.claim_name, model.version, f"claim {model.claim_name}")
    if training_job is None:
        return Waiting(
            "TrainingJobNotFound",
            f"KerasTrainingJob {model.training_job} does not exist (yet)",
        )
    try:
        job = parse_training_job(training_job)
    except SpecError as exc:
        return Waiting("TrainingJobInvalid", f"KerasTrainingJob {model.training_job}: {exc}")
    jstatus = training_job.get("status") or {}
    name = jstatus.get("modelName") or job.model_name
    claim = jstatus.get("modelClaimName") or claim_name_of(job)
    version = model.version or jstatus.get("modelVersion")
    if not version:
        phase = jstatus.get("phase") or "Pending"
        detail = f", {jstatus['progress']} epochs" if jstatus.get("progress") else ""
        return Waiting(
            "WaitingForModel",
            f"KerasTrainingJob {model.training_job} has no model version yet (phase {phase}{detail})",
        )
    return ModelRef(name, claim, int(version), f"KerasTrainingJob {model.training_job}")


# --------------------------------------------------------------------------------------------
# desired children


@dataclass
class ServingChildren:
    service: dict[str, Any]
    deployment: dict[str, Any] | None = None  # None while waiting for a model
    hpa: dict[str, Any] | None = None
    pdb: dict[str, Any] | None = None
    service_account: dict[str, Any] | None = None
    rollout_config: dict[str, Any] | None = None  # with spec.rollout


def server_args(svc: KerasModelService, model: ModelRef, *, rollout: bool = False) -> list[str]:
    server = svc.spec.server
    args = ["--store-root", STORE_ROOT, "--model", model.name]
    if rollout:  # the plan names the versions; changing it restarts no pod
        args += ["--rollout-file", f"{ROLLOUT_DIR}/{ROLLOUT_KEY}"]
    elif model.version is not None:
        args += ["--version", str(model.version)]
    args += [
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--max-batch-size",
        str(server.max_batch_size),
        "--batch-timeout-ms",
        f"{server.batch_timeout_ms:g}",
        "--max-request-bytes",
        str(server.max_request_bytes),
    ]
    return args


def desired_children(
    body: dict[str, Any],
    model: ModelRef | Waiting,
    *,
    default_image: str,
    image_pull_policy: str = "IfNotPresent",
    claim_access_modes: list[str] | None = None,
    rollout_plan: dict[str, Any] | None = None,
) -> ServingChildren:
    """Every child the service needs; the Deployment/HPA/PDB only once a model is known.

    ``rollout_plan`` (``rollout.routing(state)``, with spec.rollout): written into the
    rollout ConfigMap the server pods poll.
    """
    svc = parse(body)
    spec = svc.spec
    meta = body["metadata"]
    name, namespace = meta["name"], meta.get("namespace")
    owner = owner_reference(body)
    labels = service_labels(name)

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(name, namespace, labels, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }
    out = ServingChildren(service=service)
    if not spec.scheduling.service_account_name:
        from .training import service_account

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

    image = spec.image or default_image
    if not image:
        raise SpecError("spec.image is not set and the operator has no KERASOP_RUNTIME_IMAGE")
    modes = claim_access_modes or []
    colocate = needs_colocation(modes)
    single_pod_volume = "ReadWriteOncePod" in modes

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
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": probe_port},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
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
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 60,
        },
        # Keep serving while kube-proxy and endpoints catch up with the pod's removal:
        # without this, a rollout or a deleted pod refuses connections for a moment.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "volumeMounts": [
            {"name": MODELS_VOLUME, "mountPath": STORE_ROOT, "readOnly": True},
            tmp_mount(),
            *([{"name": ROLLOUT_VOLUME, "mountPath": ROLLOUT_DIR, "readOnly": True}] if rollout else []),
        ],
        "securityContext": container_security_context(),
    }
    resources = container_resources(spec.resources)
    if resources:
        container["resources"] = resources

    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [
            {
                "name": MODELS_VOLUME,
                "persistentVolumeClaim": {"claimName": model.claim_name, "readOnly": True},
            },
            tmp_volume(),
            *(
                [{"name": ROLLOUT_VOLUME, "configMap": {"name": rollout_config_name(name)}}]
                if rollout
                else []
            ),
        ],
    }
    apply_scheduling(
        pod_spec,
        spec.scheduling,
        gpus=spec.resources.gpus,
        default_service_account=DEFAULT_SERVICE_ACCOUNT,
        extra_affinity=colocation_affinity(model.claim_name) if colocate else None,
    )
    model_annotations = {
        ANN_MODEL_NAME: model.name,
        ANN_MODEL_VERSION: (
            "rollout" if rollout else str(model.version) if model.version is not None else "latest"
        ),
    }
    template = apply_override(
        {
            "metadata": {
                "labels": {
                    **labels,
                    **selector_labels(name),
                    LABEL_MODEL_CLAIM: label_value(model.claim_name),
                },
                "annotations": dict(model_annotations),
            },
            "spec": pod_spec,
        },
        spec.scheduling.pod_template,
    )

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
    if spec.autoscaling is None:
        dep_spec["replicas"] = spec.replicas  # with an HPA, the HPA owns replicas
    out.deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            deployment_name(name), namespace, labels, owner, model_annotations
        ),
        "spec": dep_spec,
    }

    if spec.autoscaling is not None:
        auto = spec.autoscaling
        out.hpa = {
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
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": auto.target_cpu_utilization,
                            },
                        },
                    }
                ],
            },
        }

    wanted = spec.autoscaling.min_replicas if spec.autoscaling is not None else spec.replicas
    if wanted > 1 and not single_pod_volume:
        out.pdb = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": child_metadata(name, namespace, labels, owner),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector_labels(name)}},
        }
    return out


# --------------------------------------------------------------------------------------------
# observed state -> status


def _deployment_conditions(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (dep.get("status") or {}).get("conditions") or []}


def rollout_complete(dep: dict[str, Any]) -> bool:
    """The `kubectl rollout status` test: every pod runs the current template and is available."""
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    st = dep.get("status") or {}
    desired = int(spec.get("replicas", 1) or 0)
    updated = int(st.get("updatedReplicas") or 0)
    return (
        int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and updated >= desired
        and int(st.get("replicas") or 0) <= updated
        and int(st.get("availableReplicas") or 0) >= updated
    )


def template_version(dep: dict[str, Any]) -> int | None:
    annotations = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "annotations"
    ) or {}
    value = annotations.get(ANN_MODEL_VERSION)
    return int(value) if value and value.isdigit() else None


def service_url(name: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    return f"http://{name}.{namespace}.svc.{cluster_domain}"


def service_status(
    body: dict[str, Any],
    model: ModelRef | Waiting | SpecError,
    deployment: dict[str, Any] | None,
    *,
    now: str,
    cluster_domain: str = "cluster.local",
    apply_error: str | None = None,
) -> dict[str, Any]:
    """The complete ``status`` of a KerasModelService (pure; old status = ``body['status']``)."""
    meta = body.get("metadata") or {}
    old = body.get("status") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace") or "default"
    generation = meta.get("generation")
    st: dict[str, Any] = {
        "observedGeneration": generation,
        "url": service_url(name, namespace, cluster_domain),
        "selector": selector_string(name),
    }
    if old.get("servingVersion") is not None:
        st["servingVersion"] = old["servingVersion"]
    if old.get("modelName"):
        st["modelName"] = old["modelName"]
    for key in ("rollout", "history"):  # written by the rollout step (rollout.py)
        if old.get(key):
            st[key] = old[key]

    if isinstance(model, SpecError):
        st.update(phase="Failed", replicas=0, readyReplicas=0, ready=ready(0, 0))
        msg = str(model)
        st["conditions"] = merge_conditions(
            old.get("conditions"),
            [
                Cond.of("Ready", False, "InvalidSpec", msg),
                Cond.of("Progressing", False, "InvalidSpec", msg),
                Cond.of("Degraded", True, "InvalidSpec", msg),
                Cond.of("ModelAvailable", False, "InvalidSpec", msg),
            ],
            now=now,
            generation=generation,
        )
        return KerasModelServiceStatus.model_validate(st).to_status()

    if isinstance(model, ModelRef):
        st["modelName"] = model.name
        model_cond = Cond.of(
            "ModelAvailable",
            True,
            "VersionResolved",
            f"model {model.name} version {model.version if model.version is not None else 'latest'}"
            f" on claim {model.claim_name} ({model.source})",
        )
    else:
        model_cond = Cond.of("ModelAvailable", False, model.reason, model.message)

    if deployment is None:
        st.update(replicas=0, readyReplicas=0, ready=ready(0, 0), phase="Pending")
        if isinstance(model, Waiting):
            conds = [
                Cond.of("Ready", False, model.reason, model.message),
                Cond.of("Progressing", False, model.reason, model.message),
                Cond.of("Degraded", False, "AsExpected", ""),
            ]
        else:
            conds = [
                Cond.of("Ready", False, "Creating", "creating the server Deployment"),
                Cond.of("Progressing", True, "Creating", "creating the server Deployment"),
                Cond.of(
                    "Degraded",
                    bool(apply_error),
                    "ApplyFailed" if apply_error else "AsExpected",
                    apply_error or "",
                ),
            ]
        st["conditions"] = merge_conditions(
            old.get("conditions"), [*conds, model_cond], now=now, generation=generation
        )
        return KerasModelServiceStatus.model_validate(st).to_status()

    dspec = deployment.get("spec") or {}
    dstat = deployment.get("status") or {}
    desired = int(dspec.get("replicas", 1) or 0)
    current = int(dstat.get("replicas") or 0)
    ready_n = int(dstat.get("readyReplicas") or 0)
    available = int(dstat.get("availableReplicas") or 0)
    updated = int(dstat.get("updatedReplicas") or 0)
    st.update(replicas=current, readyReplicas=ready_n, ready=ready(ready_n, desired))

    complete = rollout_complete(deployment)
    target = template_version(deployment)
    stable = (st.get("rollout") or {}).get("stable")
    if stable is not None:
        target = stable  # the rollout plan names the stable version; no pod restart
    if complete and desired > 0:
        if target is not None:
            st["servingVersion"] = target
        else:
            st.pop("servingVersion", None)  # serving "latest": the server picks it
    dconds = _deployment_conditions(deployment)
    progressing = dconds.get("Progressing") or {}
    failure = dconds.get("ReplicaFailure") or {}
    deadline = (
        progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    )
    replica_failure = failure.get("status") == "True"

    target_text = f"version {target}" if target is not None else "the latest version"
    if desired == 0:
        ready_cond = Cond.of("Ready", False, "ScaledToZero", "spec.replicas is 0")
    elif available > 0:
        ready_cond = Cond.of(
            "Ready",
            True,
            "ServerAvailable",
            f"{available} of {desired} server pods available"
            + (f", serving version {st['servingVersion']}" if st.get("servingVersion") else ""),
        )
    else:
        ready_cond = Cond.of(
            "Ready", False, "NoServerAvailable", f"0 of {desired} server pods available"
        )

    if complete:
        progressing_cond = Cond.of(
            "Progressing", False, "RolloutComplete", f"serving {target_text}"
        )
    elif deadline:
        progressing_cond = Cond.of(
            "Progressing", False, "ProgressDeadlineExceeded", progressing.get("message") or ""
        )
    else:
        progressing_cond = Cond.of(
            "Progressing",
            True,
            "RollingOut",
            f"rolling out {target_text}: {updated} of {desired} pods updated, {available} available",
        )

    if deadline:
        degraded_cond = Cond.of(
            "Degraded",
            True,
            "ProgressDeadlineExceeded",
            progressing.get("message") or "rollout stuck",
        )
    elif replica_failure:
        degraded_cond = Cond.of(
            "Degraded",
            True,
            failure.get("reason") or "ReplicaFailure",
            failure.get("message") or "",
        )
    elif complete and desired > 0 and available < desired:
        degraded_cond = Cond.of(
            "Degraded",
            True,
            "ReplicasUnavailable",
            f"{available} of {desired} server pods available",
        )
    else:
        degraded_cond = Cond.of("Degraded", False, "AsExpected", "")
    if apply_error:
        degraded_cond = Cond.of("Degraded", True, "ApplyFailed", apply_error)

    if deadline or replica_failure:
        phase = "Failed" if available == 0 else "Progressing"
    elif complete and available >= desired and desired > 0:
        phase = "Ready"
    elif available > 0:
        phase = "Progressing"
    else:
        phase = "Pending"
    st["phase"] = phase
    st["conditions"] = merge_conditions(
        old.get("conditions"),
        [ready_cond, progressing_cond, degraded_cond, model_cond],
        now=now,
        generation=generation,
    )
    return KerasModelServiceStatus.model_validate(st).to_status()


def phase_event(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[str, str, str] | None:
    """Kubernetes Events for a service: phase transitions and a newly served version."""
    old = old or {}
    if new.get("servingVersion") and new.get("servingVersion") != old.get("servingVersion"):
        before = old.get("servingVersion")
        return (
            "Normal",
            "Serving",
            f"serving model {new.get('modelName')} version {new['servingVersion']}"
            + (f" (was {before})" if before else ""),
        )
    before, after = old.get("phase"), new.get("phase")
    if before == after or after is None:
        return None
    if after == "Failed":
        reason = next(
            (c.get("reason") for c in new.get("conditions") or [] if c.get("type") == "Degraded"),
            "",
        )
        return ("Warning", "Failed", f"model server failing: {reason}")
    if after == "Ready":
        return ("Normal", "Ready", f"model server ready ({new.get('ready')})")
    if after == "Progressing":
        return ("Normal", "RollingOut", "rolling out the model server")
    return None
