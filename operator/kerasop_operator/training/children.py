"""A KerasTrainingJob's desired children (Job, PVC, workers Service, ServiceAccount) and Job drift."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from kerasop import contracts
from kerasop import events as ev
from kerasop.contracts import DATA_ROOT, STORE_ROOT, TERMINATION_LOG
from kerasop.spec import (
    API_VERSION,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    KerasTrainingJob,
    ObjectStoreSpec,
    SpecError,
    StorageSpec,
    uri_scheme,
)

from ..common import (
    ANN_TEMPLATE_HASH,
    LABEL_MODEL_CLAIM,
    LABEL_TRAINING_JOB,
    child_metadata,
    common_labels,
    label_value,
    owner_reference,
    short_hash,
)
from ..conditions import find
from ..pods import (
    DATA_VOLUME,
    MODELS_VOLUME,
    apply_override,
    apply_scheduling,
    colocation_affinity,
    container_resources,
    container_security_context,
    needs_colocation,
    pod_security_context,
    scratch_volume,
    store_credentials_env,
    store_key_mounts,
    store_key_volumes,
    tmp_mount,
    tmp_volume,
)
from .names import (
    COMPONENT,
    CONTAINER,
    COORDINATOR_PORT,
    DEFAULT_SERVICE_ACCOUNT,
    JOB_MUTABLE_FIELDS,
    KIND,
    claim_name_of,
    job_labels,
    parse,
    trainer_job_name,
    workers_service_name,
)
from .tuning import ORACLE_PORT, distributed, pod_count, tuning_env

# --------------------------------------------------------------------------------------------
# desired children


@dataclass
class TrainingChildren:
    job: dict[str, Any]
    pvc: dict[str, Any] | None = None  # created when missing, never patched
    workers_service: dict[str, Any] | None = None
    service_account: dict[str, Any] | None = None  # shared: see apply.ensure_shared
    claim_name: str = ""  # "" for a model store in a bucket


def trainer_spec_document(body: dict[str, Any], job: KerasTrainingJob) -> str:
    """KERASOP_SPEC: the whole resource as the trainer parses it (compact, stable JSON).

    Job-level lifecycle fields (suspend, backoffLimit, deadlines, TTL) are left
    out: the trainer does not use them, and changing them must not change the
    (immutable) pod template.
    """
    meta = body.get("metadata") or {}
    spec = {
        k: copy.deepcopy(v)
        for k, v in (body.get("spec") or {}).items()
        if k not in JOB_MUTABLE_FIELDS
    }
    if job.spec.workers > 1:
        spec.setdefault("training", {})["backend"] = "jax"
    doc = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": KIND,
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if meta.get(k) is not None},
        "spec": spec,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def desired_children(
    body: dict[str, Any],
    *,
    default_image: str,
    image_pull_policy: str = "IfNotPresent",
    claim_access_modes: list[str] | None = None,
) -> TrainingChildren:
    """Every child object the job needs, fully rendered (owner references included).

    ``claim_access_modes``: access modes of an existing ``storage.claimName``
    (read from the cluster by the caller); for a PVC the operator creates, the
    spec's ``accessMode`` is used. Raises ``SpecError`` on an invalid spec.
    """
    job = parse(body)
    spec = job.spec
    meta = body["metadata"]
    name, namespace = meta["name"], meta.get("namespace")
    owner = owner_reference(body)
    labels = job_labels(name)
    claim = claim_name_of(job)
    image = spec.image or default_image
    if not image:
        raise SpecError("spec.image is not set and the operator has no KERASOP_RUNTIME_IMAGE")

    storage = spec.output.volume
    access_modes: list[str] = []
    if storage is not None:
        access_modes = [storage.access_mode] if storage.size else (claim_access_modes or [])
    container = trainer_container(body, job, image, image_pull_policy)
    template = trainer_pod_template(job, container, claim, colocate=needs_colocation(access_modes))
    job_spec = trainer_job_spec(job, template)
    immutable = {k: v for k, v in job_spec.items() if k not in JOB_MUTABLE_FIELDS}
    k8s_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(
            trainer_job_name(name),
            namespace,
            {**labels, **kueue_labels(job)},
            owner,
            {ANN_TEMPLATE_HASH: short_hash(immutable, 16)},
        ),
        "spec": job_spec,
    }

    out = TrainingChildren(job=k8s_job, claim_name=claim or "")
    if pod_count(job) > 1:
        out.workers_service = workers_service(name, namespace, labels, owner, job)
    if storage is not None and storage.size:
        assert claim is not None
        out.pvc = model_claim(job, storage, claim, namespace, owner)
    if not spec.scheduling.service_account_name:
        out.service_account = service_account(DEFAULT_SERVICE_ACCOUNT, namespace, COMPONENT)
    return out


def bucket_stores(job: KerasTrainingJob) -> list[tuple[str, ObjectStoreSpec | None]]:
    """The stores in a bucket the trainer reads or writes, by role (``DATA``, ``MODELS``):
    only these get their credentials."""
    spec = job.spec
    data = spec.data
    out: list[tuple[str, ObjectStoreSpec | None]] = []
    # An image CSV on the volume may still name its images by URI.
    if data.format == "imageCsv" or any(
        uri_scheme(p or "") for p in (data.path, data.validation_path)
    ):
        out.append(("DATA", data.store))
    if spec.output.uri is not None:
        out.append(("MODELS", spec.output.store))
    return out


def trainer_env(body: dict[str, Any], job: KerasTrainingJob) -> list[dict[str, Any]]:
    """The trainer's environment: its spec and roots, and with workers, where it stands."""
    spec, meta = job.spec, body["metadata"]
    workers = spec.workers
    env: list[dict[str, Any]] = [
        {"name": contracts.ENV_SPEC, "value": trainer_spec_document(body, job)},
        {"name": contracts.ENV_JOB_ID, "value": meta.get("uid", "")},
        {"name": contracts.ENV_DATA_ROOT, "value": DATA_ROOT},
        {"name": contracts.ENV_STORE_ROOT, "value": STORE_ROOT},
        {"name": contracts.ENV_TERMINATION_LOG, "value": TERMINATION_LOG},
        {"name": "KERAS_BACKEND", "value": "jax" if workers > 1 else spec.training.backend},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    for role, store in bucket_stores(job):
        env += store_credentials_env(role, store)
    if workers > 1:
        name, namespace = meta["name"], meta.get("namespace")
        host = f"{trainer_job_name(name)}-0.{workers_service_name(name)}.{namespace}.svc"
        env += [
            {"name": contracts.ENV_NUM_WORKERS, "value": str(workers)},
            {"name": contracts.ENV_COORDINATOR, "value": f"{host}:{COORDINATOR_PORT}"},
            # JOB_COMPLETION_INDEX is set by the Job controller for Indexed Jobs.
            {
                "name": contracts.ENV_WORKER_INDEX,
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            },
        ]
    if distributed(job):
        name, namespace = meta["name"], meta.get("namespace")
        env += tuning_env(
            f"{trainer_job_name(name)}-0.{workers_service_name(name)}.{namespace}.svc"
        )
    return env


def trainer_container(
    body: dict[str, Any], job: KerasTrainingJob, image: str, image_pull_policy: str
) -> dict[str, Any]:
    spec = job.spec
    mounts = [{"name": MODELS_VOLUME, "mountPath": STORE_ROOT}, tmp_mount()]
    if spec.data.volume is not None:
        mounts.append(
            {"name": DATA_VOLUME, "mountPath": DATA_ROOT, "readOnly": spec.data.volume.read_only}
        )
    for role, store in bucket_stores(job):
        mounts += store_key_mounts(role, store)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["kerasop-train"],
        "env": trainer_env(body, job),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.workers > 1:
        container["ports"] = [{"name": "coordinator", "containerPort": COORDINATOR_PORT}]
    if distributed(job):
        container["ports"] = [{"name": "oracle", "containerPort": ORACLE_PORT}]
    resources = container_resources(spec.resources)
    if resources:
        container["resources"] = resources
    return container


def trainer_pod_template(
    job: KerasTrainingJob, container: dict[str, Any], claim: str | None, *, colocate: bool
) -> dict[str, Any]:
    """The pod template: the model store and data claims, security, scheduling, override.
    A model store in a bucket (``claim`` None) has scratch space instead of its claim, and
    pins the pods to no node."""
    spec = job.spec
    name = job.metadata.name
    models = (
        {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": claim}}
        if claim is not None
        else scratch_volume(MODELS_VOLUME)
    )
    volumes: list[dict[str, Any]] = [models, tmp_volume()]
    if spec.data.volume is not None:
        volumes.append(
            {
                "name": DATA_VOLUME,
                "persistentVolumeClaim": {
                    "claimName": spec.data.volume.claim_name,
                    "readOnly": spec.data.volume.read_only,
                },
            }
        )
    for role, store in bucket_stores(job):
        volumes += store_key_volumes(role, store)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if pod_count(job) > 1:
        pod_spec["subdomain"] = workers_service_name(name)
    apply_scheduling(
        pod_spec,
        spec.scheduling,
        gpus=spec.resources.gpus,
        default_service_account=DEFAULT_SERVICE_ACCOUNT,
        extra_affinity=colocation_affinity(claim) if colocate and claim is not None else None,
    )
    pod_labels = job_labels(name)
    if claim is not None:
        pod_labels[LABEL_MODEL_CLAIM] = label_value(claim)
    return apply_override(
        {"metadata": {"labels": pod_labels}, "spec": pod_spec}, spec.scheduling.pod_template
    )


def kueue_labels(job: KerasTrainingJob) -> dict[str, str]:
    """The labels by which Kueue manages the trainer Job: its LocalQueue and priority.

    One Job holds every worker, so Kueue admits the workers together or not at all.
    """
    queue = job.queue_name
    if queue is None:
        return {}
    labels = {KUEUE_QUEUE_LABEL: queue}
    if job.spec.priority_class_name:
        labels[KUEUE_PRIORITY_LABEL] = job.spec.priority_class_name
    return labels


def job_patched_fields(job: KerasTrainingJob, *, kueue: bool) -> tuple[str, ...]:
    """The Job spec fields the operator keeps in line with the resource once the Job exists.

    A queued Job's ``suspend`` belongs to Kueue (it unsuspends on admission and suspends to
    preempt), so the operator leaves it alone; with Kueue support on, a pause by hand goes
    through the Workload (``queueing.workload_active_patch``), without it through the Job.
    """
    if job.queue_name is None or (job.spec.suspend and not kueue):
        return JOB_MUTABLE_FIELDS
    return tuple(f for f in JOB_MUTABLE_FIELDS if f != "suspend")


def trainer_job_spec(job: KerasTrainingJob, template: dict[str, Any]) -> dict[str, Any]:
    """The batch/v1 Job spec: one Indexed Job for all workers, permanent failures fail it.

    A queued job's Job is created suspended: Kueue starts it when it admits it.
    """
    spec = job.spec
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "suspend": spec.suspend or job.queue_name is not None,
        "completions": pod_count(job),
        "parallelism": pod_count(job),
        "podFailurePolicy": {
            "rules": [
                {
                    # Bad spec, bad data, model/data mismatch: retrying cannot help.
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": list(ev.PERMANENT_EXIT_CODES),
                    },
                },
                {
                    # Evictions and preemptions do not count against backoffLimit.
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        },
        "template": template,
    }
    if pod_count(job) > 1:
        job_spec["completionMode"] = "Indexed"
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return job_spec


def workers_service(
    name: str,
    namespace: str | None,
    labels: dict[str, str],
    owner: dict[str, Any],
    job: KerasTrainingJob,
) -> dict[str, Any]:
    """The headless Service that gives worker 0 (the JAX coordinator, or a search's
    keras-tuner chief) a stable DNS name."""
    port, port_name = (
        (ORACLE_PORT, "oracle") if distributed(job) else (COORDINATOR_PORT, "coordinator")
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(workers_service_name(name), namespace, labels, owner),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                LABEL_TRAINING_JOB: label_value(name),
                "app.kubernetes.io/component": COMPONENT,
            },
            "ports": [{"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def model_claim(
    job: KerasTrainingJob,
    storage: StorageSpec,
    claim: str,
    namespace: str | None,
    owner: dict[str, Any],
) -> dict[str, Any]:
    """The model store PVC the operator creates (``storage.size``); owned unless retained."""
    pvc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "namespace": namespace,
            "labels": {
                **common_labels("model-store"),
                LABEL_TRAINING_JOB: label_value(job.metadata.name),
            },
        },
        "spec": {
            "accessModes": [storage.access_mode],
            "resources": {"requests": {"storage": storage.size}},
        },
    }
    if storage.storage_class_name:
        pvc["spec"]["storageClassName"] = storage.storage_class_name
    if not storage.retain:
        pvc["metadata"]["ownerReferences"] = [owner]
    return pvc


def service_account(name: str, namespace: str | None, component: str) -> dict[str, Any]:
    """A token-less service account for trainer/server pods (they never call the API)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(component)},
        "automountServiceAccountToken": False,
    }


def template_drift(live_job: dict[str, Any], desired_job: dict[str, Any]) -> bool:
    """True if the live Job was made from a different (immutable) template."""
    live = ((live_job.get("metadata") or {}).get("annotations") or {}).get(ANN_TEMPLATE_HASH)
    want = desired_job["metadata"]["annotations"][ANN_TEMPLATE_HASH]
    return bool(live != want)


def job_is_idle_suspended(live_job: dict[str, Any]) -> bool:
    """Suspended with no pod left: safe to replace (training resumes from checkpoints)."""
    status = live_job.get("status") or {}
    return (
        bool((live_job.get("spec") or {}).get("suspend"))
        and not int(status.get("active") or 0)
        and not find(
            [c for c in status.get("conditions") or [] if c.get("status") == "True"], "Complete"
        )
    )
