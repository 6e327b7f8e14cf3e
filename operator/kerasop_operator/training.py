"""KerasTrainingJob: spec -> desired children, observed children -> status.

Pure functions only (no API calls): the kopf handlers in ``handlers.py`` read
the cluster, call these, and write the results.

Children of a job ``<job>`` in its namespace:

- ``batch/v1 Job <job>-trainer``: one pod per worker; Indexed with a headless
  Service when ``spec.workers > 1``.
- ``v1 Service <job>-workers`` (workers > 1): stable DNS names
  ``<job>-trainer-<i>.<job>-workers`` for the JAX coordinator.
- ``v1 PersistentVolumeClaim <job>-models`` when ``spec.output.storage.size`` is
  set: owned by the job only when ``retain`` is false.
- ``v1 ServiceAccount kerasop-trainer`` (shared: each user job is a non-controller owner) when the job does
  not name its own service account.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kerasop import events as ev
from kerasop.spec import API_VERSION, KerasTrainingJob, SpecError
from kerasop.status import LOG_TAIL_LIMIT, KerasTrainingJobStatus, progress

from .common import (
    ANN_TEMPLATE_HASH,
    DATA_ROOT,
    LABEL_MODEL_CLAIM,
    LABEL_TRAINING_JOB,
    STORE_ROOT,
    TERMINATION_LOG,
    child_metadata,
    child_name,
    common_labels,
    label_value,
    owner_reference,
    parse_resource,
    short_hash,
)
from .conditions import Cond, find, merge_conditions
from .pods import (
    DATA_VOLUME,
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

KIND = "KerasTrainingJob"
PLURAL = "kerastrainingjobs"
CONTAINER = "trainer"
COMPONENT = "trainer"
COORDINATOR_PORT = 12345
DEFAULT_SERVICE_ACCOUNT = "kerasop-trainer"
LOG_TAIL_LINES = 20  # lines of the trainer's log kept in status.failure.logTail

# Job fields that may change after creation (everything in the pod template is
# immutable once the Job exists, unless the Job is suspended; see reconcile).
JOB_MUTABLE_FIELDS = ("suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "backoffLimit")

TERMINAL_PHASES = ("Succeeded", "Failed")
LIFECYCLE_FIELDS = ("suspend", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished")


# --------------------------------------------------------------------------------------------
# names


def trainer_job_name(job_name: str) -> str:
    # Indexed pods are called <job>-trainer-<index>; keep room for the index.
    return child_name(job_name, "-trainer", 63 - 3)


def workers_service_name(job_name: str) -> str:
    return child_name(job_name, "-workers")


def models_claim_name(job_name: str) -> str:
    return child_name(job_name, "-models", 253)


def parse(body: dict[str, Any]) -> KerasTrainingJob:
    """The typed job; raises ``SpecError`` when the spec does not validate."""
    return parse_resource(KerasTrainingJob, KIND, body)


def claim_name_of(job: KerasTrainingJob) -> str:
    """The PVC holding the job's model store (existing claim, or the one the operator makes)."""
    storage = job.spec.output.storage
    return storage.claim_name or models_claim_name(job.metadata.name)


def job_labels(job_name: str) -> dict[str, str]:
    return {**common_labels(COMPONENT), LABEL_TRAINING_JOB: label_value(job_name)}


# --------------------------------------------------------------------------------------------
# desired children


@dataclass
class TrainingChildren:
    job: dict[str, Any]
    pvc: dict[str, Any] | None = None  # created when missing, never patched
    workers_service: dict[str, Any] | None = None
    service_account: dict[str, Any] | None = None  # shared: see apply.ensure_shared
    claim_name: str = ""


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
        if k not in LIFECYCLE_FIELDS
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
    name, namespace, uid = meta["name"], meta.get("namespace"), meta.get("uid", "")
    owner = owner_reference(body)
    labels = job_labels(name)
    jname = trainer_job_name(name)
    workers = spec.workers
    storage = spec.output.storage
    claim = claim_name_of(job)
    image = spec.image or default_image
    if not image:
        raise SpecError("spec.image is not set and the operator has no KERASOP_RUNTIME_IMAGE")

    access_modes = [storage.access_mode] if storage.size else (claim_access_modes or [])
    colocate = needs_colocation(access_modes)

    pod_labels = {**labels, LABEL_MODEL_CLAIM: label_value(claim)}

    env: list[dict[str, Any]] = [
        {"name": "KERASOP_SPEC", "value": trainer_spec_document(body, job)},
        {"name": "KERASOP_JOB_ID", "value": uid},
        {"name": "KERASOP_DATA_ROOT", "value": DATA_ROOT},
        {"name": "KERASOP_STORE_ROOT", "value": STORE_ROOT},
        {"name": "KERASOP_TERMINATION_LOG", "value": TERMINATION_LOG},
        {"name": "KERAS_BACKEND", "value": "jax" if workers > 1 else spec.training.backend},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    ports: list[dict[str, Any]] = []
    if workers > 1:
        coordinator = f"{jname}-0.{workers_service_name(name)}.{namespace}.svc:{COORDINATOR_PORT}"
        env += [
            {"name": "KERASOP_NUM_WORKERS", "value": str(workers)},
            {"name": "KERASOP_COORDINATOR", "value": coordinator},
            # JOB_COMPLETION_INDEX is set by the Job controller for Indexed Jobs.
            {
                "name": "KERASOP_WORKER_INDEX",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            },
        ]
        ports.append({"name": "coordinator", "containerPort": COORDINATOR_PORT})

    mounts = [{"name": MODELS_VOLUME, "mountPath": STORE_ROOT}, tmp_mount()]
    volumes: list[dict[str, Any]] = [
        {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": claim}},
        tmp_volume(),
    ]
    if spec.data.volume is not None:
        mounts.append(
            {"name": DATA_VOLUME, "mountPath": DATA_ROOT, "readOnly": spec.data.volume.read_only}
        )
        volumes.append(
            {
                "name": DATA_VOLUME,
                "persistentVolumeClaim": {
                    "claimName": spec.data.volume.claim_name,
                    "readOnly": spec.data.volume.read_only,
                },
            }
        )

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["kerasop-train"],
        "env": env,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if ports:
        container["ports"] = ports
    resources = container_resources(spec.resources)
    if resources:
        container["resources"] = resources

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if workers > 1:
        pod_spec["subdomain"] = workers_service_name(name)
    apply_scheduling(
        pod_spec,
        spec.scheduling,
        gpus=spec.resources.gpus,
        default_service_account=DEFAULT_SERVICE_ACCOUNT,
        extra_affinity=colocation_affinity(claim) if colocate else None,
    )
    template = apply_override(
        {
            "metadata": {"labels": pod_labels},
            "spec": pod_spec,
        },
        spec.scheduling.pod_template,
    )

    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "suspend": spec.suspend,
        "completions": workers,
        "parallelism": workers,
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
    if workers > 1:
        job_spec["completionMode"] = "Indexed"
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished

    immutable = {k: v for k, v in job_spec.items() if k not in JOB_MUTABLE_FIELDS}
    k8s_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(
            jname, namespace, labels, owner, {ANN_TEMPLATE_HASH: short_hash(immutable, 16)}
        ),
        "spec": job_spec,
    }

    out = TrainingChildren(job=k8s_job, claim_name=claim)

    if workers > 1:
        out.workers_service = {
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
                "ports": [
                    {
                        "name": "coordinator",
                        "port": COORDINATOR_PORT,
                        "targetPort": COORDINATOR_PORT,
                        "protocol": "TCP",
                    }
                ],
            },
        }

    if storage.size:
        pvc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": claim,
                "namespace": namespace,
                "labels": {**common_labels("model-store"), LABEL_TRAINING_JOB: label_value(name)},
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
        out.pvc = pvc

    if not spec.scheduling.service_account_name:
        out.service_account = service_account(DEFAULT_SERVICE_ACCOUNT, namespace, COMPONENT)
    return out


def service_account(name: str, namespace: str | None, component: str) -> dict[str, Any]:
    """A token-less service account for trainer/server pods (they never call the API)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": common_labels(component)},
        "automountServiceAccountToken": False,
    }


# --------------------------------------------------------------------------------------------
# observed state -> status


@dataclass
class ObservedTraining:
    """What the handler read from the cluster for one job."""

    job: dict[str, Any] | None = None  # the batch/v1 Job, None if absent
    pods: list[dict[str, Any]] = field(default_factory=list)  # pods labelled with the job
    log_lines: list[str] | None = None  # tail of worker 0's trainer log, if read
    spec_error: str | None = None
    apply_error: str | None = None  # the API server refused a child (e.g. a bad podTemplate)


def _job_conditions(job: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    conds = ((job or {}).get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conds if c.get("status") == "True"}


def job_pods(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods of this incarnation of the Job (pods of a deleted older Job are dropped)."""
    if job is None:
        return []
    uid = (job.get("metadata") or {}).get("uid")
    out = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        owner = labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid")
        refs = [r.get("uid") for r in (pod.get("metadata") or {}).get("ownerReferences") or []]
        if uid and (owner or refs) and owner != uid and uid not in refs:
            continue
        out.append(pod)
    return out


def _pod_index(pod: dict[str, Any]) -> str | None:
    meta = pod.get("metadata") or {}
    return (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index") or (
        meta.get("labels") or {}
    ).get("batch.kubernetes.io/job-completion-index")


def worker0_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest pod of worker 0 (the one that writes the model and reports progress)."""
    candidates = [p for p in pods if _pod_index(p) in (None, "0")]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")


def trainer_state(pod: dict[str, Any] | None) -> dict[str, Any]:
    """``state`` of the trainer container of a pod (``{}`` if unknown)."""
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return cs.get("state") or {}
    return {}


def termination(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    return trainer_state(pod).get("terminated")


def _pod_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def progress_from_log(lines: list[str] | None) -> dict[str, Any]:
    """epoch, epochs, metrics from the trainer's JSON events in a log tail."""
    if not lines:
        return {}
    last = ev.last_events(lines)
    out: dict[str, Any] = {}
    if "start" in last and isinstance(last["start"].get("epochs"), int):
        out["epochs"] = last["start"]["epochs"]
    epoch = last.get("epoch")
    if epoch is not None:
        if isinstance(epoch.get("epoch"), int):
            out["epoch"] = epoch["epoch"]
        if isinstance(epoch.get("epochs"), int):
            out["epochs"] = epoch["epochs"]
        metrics = _float_metrics(epoch.get("metrics"))
        if metrics:
            out["metrics"] = metrics
    return out


def _float_metrics(value: Any) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    out = {}
    for k, v in value.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v:  # drop NaN
            out[str(k)] = float(v)
    return out or None


def _tail(text: str | None, lines: int = LOG_TAIL_LINES) -> str | None:
    if not text:
        return None
    kept = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return kept[-LOG_TAIL_LIMIT:] or None


def _model_path(event: dict[str, Any], name: str | None, version: int | None) -> str | None:
    path = event.get("modelPath")
    if isinstance(path, str) and path:
        prefix = STORE_ROOT.rstrip("/") + "/"
        return path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
    if name and version:
        return f"{name}/{version}"
    return None


def failure_info(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    log_lines: list[str] | None,
) -> dict[str, Any]:
    """status.failure from the Job's Failed condition, the pods' exit codes and messages.

    The trainer's own ``failed`` event (termination message) wins; then an
    OOM kill; then the exit code's class (kerasop.events); a deadline is
    reported as DeadlineExceeded whatever the killed pod's exit code was.
    """
    conds = _job_conditions(job)
    job_failed = conds.get("Failed") or conds.get("FailureTarget") or {}
    job_reason = job_failed.get("reason")
    job_message = job_failed.get("message") or ""

    failed = []
    for pod in pods:
        term = termination(pod)
        if term and term.get("exitCode", 0) != 0:
            failed.append((term.get("finishedAt") or "", term))
    failed.sort(key=lambda t: t[0])
    term = failed[-1][1] if failed else None

    out: dict[str, Any] = {}
    raw_message: str | None = None  # a termination message that is the log tail (fallback)
    if term is not None:
        exit_code = term.get("exitCode")
        out["exitCode"] = exit_code
        event = ev.decode(term.get("message") or "")
        if event and event.get("kerasop") == "failed":
            out["reason"] = str(
                event.get("reason") or ev.FAILURE_REASONS.get(exit_code, "TrainerError")
            )
            out["message"] = str(event.get("message") or "")
            if isinstance(event.get("exitCode"), int):
                out["exitCode"] = event["exitCode"]
        else:
            raw_message = term.get("message")
            if term.get("reason") == "OOMKilled":
                out["reason"] = "OOMKilled"
                out["message"] = "the trainer ran out of memory (raise spec.resources.memory)"
            else:
                out["reason"] = ev.FAILURE_REASONS.get(exit_code, "TrainerError")
                out["message"] = f"the trainer exited with code {exit_code}"
    if job_reason == "DeadlineExceeded":
        out["reason"] = "DeadlineExceeded"
        out["message"] = job_message or "the job ran longer than spec.activeDeadlineSeconds"
    elif "reason" not in out:
        out["reason"] = job_reason or "TrainerError"
        out["message"] = job_message or "the trainer failed"
    elif job_reason == "BackoffLimitExceeded" and job_message:
        out["message"] = f"{out['message']} ({job_message})" if out["message"] else job_message
    tail = _tail("\n".join(log_lines)) if log_lines else _tail(raw_message)
    if tail:
        out["logTail"] = tail
    return out


def _pending_detail(pods: list[dict[str, Any]]) -> tuple[str, str]:
    """Why trainer pods are not running yet (image pulls, scheduling), as (reason, message)."""
    for pod in pods:
        status = pod.get("status") or {}
        waiting = trainer_state(pod).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            return waiting["reason"], waiting.get("message") or waiting["reason"]
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return cond.get("reason") or "Unschedulable", cond.get("message") or ""
    if pods:
        return "PodsStarting", "trainer pods are starting"
    return "PodsPending", "waiting for the Job controller to create trainer pods"


def training_status(
    body: dict[str, Any],
    observed: ObservedTraining,
    *,
    now: str,
) -> dict[str, Any]:
    """The complete ``status`` of a KerasTrainingJob from what was observed.

    Pure: depends only on its arguments (the old status is ``body["status"]``),
    so the same observation always produces the same status.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    old = body.get("status") or {}
    generation = meta.get("generation")
    name = meta.get("name", "")
    workers_desired = int(spec.get("workers") or 1)

    st: dict[str, Any] = {
        k: old[k]
        for k in (
            "startTime",
            "completionTime",
            "epoch",
            "epochs",
            "metrics",
            "finalMetrics",
            "dataFingerprint",
            "modelName",
            "modelVersion",
            "modelPath",
            "modelClaimName",
            "failure",
        )
        if old.get(k) is not None
    }
    st["observedGeneration"] = generation
    storage = (spec.get("output") or {}).get("storage") or {}
    st["modelClaimName"] = storage.get("claimName") or models_claim_name(name)
    if "epochs" not in st and not observed.spec_error:
        try:
            st["epochs"] = parse(body).spec.training.epochs
        except SpecError:
            pass

    if observed.spec_error:
        st.update(
            phase="Failed",
            failure={"reason": "InvalidSpec", "message": observed.spec_error},
            completionTime=st.get("completionTime") or now,
        )
        st["conditions"] = merge_conditions(
            old.get("conditions"),
            [
                Cond.of("Created", False, "InvalidSpec", observed.spec_error),
                Cond.of("Running", False, "InvalidSpec", "the spec is invalid"),
                Cond.of("Succeeded", False, "InvalidSpec", "the spec is invalid"),
                Cond.of("Failed", True, "InvalidSpec", observed.spec_error),
                Cond.of("Suspended", False, "InvalidSpec", ""),
            ],
            now=now,
            generation=generation,
        )
        return KerasTrainingJobStatus.model_validate(st).to_status()

    job = observed.job
    pods = job_pods(job, observed.pods)
    jstatus = (job or {}).get("status") or {}
    jconds = _job_conditions(job)
    w0 = worker0_pod(pods)
    old_phase = old.get("phase")

    # ---- phase ------------------------------------------------------------------------------
    if job is None:
        # A finished job whose Job was cleaned up (ttlSecondsAfterFinished) keeps its result.
        phase = old_phase if old_phase in TERMINAL_PHASES else "Pending"
    elif "Complete" in jconds or "SuccessCriteriaMet" in jconds:
        phase = "Succeeded"
    elif "Failed" in jconds or "FailureTarget" in jconds:
        phase = "Failed"
    elif spec.get("suspend") or (job.get("spec") or {}).get("suspend"):
        phase = "Suspended"
    elif any(_pod_running(p) for p in pods) or int(jstatus.get("ready") or 0) > 0:
        phase = "Running"
    else:
        phase = "Pending"
    st["phase"] = phase

    # ---- workers ----------------------------------------------------------------------------
    if job is not None:
        st["workers"] = {
            "desired": workers_desired,
            "active": int(jstatus.get("active") or 0),
            "succeeded": int(jstatus.get("succeeded") or 0),
            "failed": int(jstatus.get("failed") or 0),
        }

    # ---- times ------------------------------------------------------------------------------
    if job is not None and jstatus.get("startTime") and not st.get("startTime"):
        st["startTime"] = jstatus["startTime"]
    if phase == "Running" and not st.get("startTime"):
        st["startTime"] = now
    if phase == "Succeeded" and job is not None:
        done_at = jstatus.get("completionTime") or (jconds.get("Complete") or {}).get(
            "lastTransitionTime"
        )
        st["completionTime"] = st.get("completionTime") or done_at or now
    if phase == "Failed" and job is not None:
        done_at = (jconds.get("Failed") or jconds.get("FailureTarget") or {}).get(
            "lastTransitionTime"
        )
        st["completionTime"] = st.get("completionTime") or done_at or now

    # ---- progress ---------------------------------------------------------------------------
    st.update(progress_from_log(observed.log_lines))

    # ---- result -----------------------------------------------------------------------------
    if phase == "Succeeded" and job is not None:
        term = termination(w0) or {}
        done = ev.decode(term.get("message") or "")
        if not (done and done.get("kerasop") == "done"):
            done = ev.last_events(observed.log_lines or []).get("done")
        if done:
            model_name = done.get("modelName") or st.get("modelName")
            version = done.get("modelVersion")
            if model_name:
                st["modelName"] = model_name
            if isinstance(version, int) and version >= 1:
                st["modelVersion"] = version
            path = _model_path(done, st.get("modelName"), st.get("modelVersion"))
            if path:
                st["modelPath"] = path
            metrics = _float_metrics(done.get("metrics"))
            if metrics:
                st["finalMetrics"] = metrics
            if isinstance(done.get("epochsRun"), int):
                st["epoch"] = done["epochsRun"]
            if isinstance(done.get("dataFingerprint"), str):  # lineage, for service history
                st["dataFingerprint"] = done["dataFingerprint"][:80]
    if phase == "Failed" and job is not None:
        st["failure"] = failure_info(job, pods, observed.log_lines)

    if phase != "Failed":
        st.pop("failure", None)
    if st.get("epochs") is not None:
        st["progress"] = progress(st.get("epoch"), st.get("epochs"))

    # ---- conditions -------------------------------------------------------------------------
    jname = trainer_job_name(name)
    if job is None:
        created = (
            Cond.of("Created", True, "JobCleanedUp", f"Job {jname} was removed after it finished")
            if phase in TERMINAL_PHASES
            else Cond.of("Created", False, "Creating", f"creating Job {jname}")
        )
    else:
        created = Cond.of("Created", True, "JobCreated", f"Job {jname} created")
    if observed.apply_error:
        created = Cond.of("Created", job is not None, "ApplyFailed", observed.apply_error)

    if phase == "Running":
        running = Cond.of("Running", True, "TrainerRunning", _progress_message(st))
    elif phase == "Pending":
        reason, message = _pending_detail(pods) if job is not None else ("Creating", "")
        running = Cond.of("Running", False, reason, message)
    elif phase == "Suspended":
        running = Cond.of("Running", False, "Suspended", "the job is suspended")
    elif phase == "Succeeded":
        running = Cond.of("Running", False, "Completed", "training finished")
    else:
        running = Cond.of("Running", False, "Failed", "training failed")

    if phase == "Succeeded":
        if st.get("modelVersion"):
            succeeded = Cond.of(
                "Succeeded",
                True,
                "ModelWritten",
                f"model {st.get('modelName')} version {st['modelVersion']} written"
                + (f" to claim {st['modelClaimName']}" if st.get("modelClaimName") else ""),
            )
        else:
            succeeded = Cond.of(
                "Succeeded", True, "Completed", "the trainer finished but reported no model version"
            )
    else:
        succeeded = Cond.of(
            "Succeeded", False, "NotCompleted" if phase != "Failed" else "Failed", ""
        )

    if phase == "Failed":
        fail = st.get("failure") or {}
        failed = Cond.of(
            "Failed", True, fail.get("reason") or "TrainerError", fail.get("message") or ""
        )
    else:
        failed = Cond.of("Failed", False, "NoFailure", "")

    suspended = (
        Cond.of(
            "Suspended",
            True,
            "JobSuspended",
            "trainer pods are stopped until spec.suspend is false",
        )
        if phase == "Suspended"
        else Cond.of("Suspended", False, "NotSuspended", "")
    )

    st["conditions"] = merge_conditions(
        old.get("conditions"),
        [created, running, succeeded, failed, suspended],
        now=now,
        generation=generation,
    )
    return KerasTrainingJobStatus.model_validate(st).to_status()


def _progress_message(st: dict[str, Any]) -> str:
    if st.get("epochs"):
        msg = f"epoch {st.get('epoch') or 0}/{st['epochs']}"
        metrics = st.get("metrics") or {}
        if metrics:
            msg += " " + " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        return msg
    return "training"


def phase_event(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[str, str, str] | None:
    """The Kubernetes Event (type, reason, message) for a phase transition, if any."""
    before = (old or {}).get("phase")
    after = new.get("phase")
    if before == after or after is None:
        return None
    if after == "Pending":
        return ("Normal", "Created", "trainer Job created, waiting for pods")
    if after == "Running":
        if before == "Suspended":
            return ("Normal", "Resumed", "training resumed")
        return ("Normal", "Running", "training started")
    if after == "Suspended":
        return ("Normal", "Suspended", "training suspended")
    if after == "Succeeded":
        metrics = new.get("finalMetrics") or {}
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        version = new.get("modelVersion")
        msg = (
            f"model {new.get('modelName')} version {version} written"
            if version
            else "training finished"
        )
        return ("Normal", "Succeeded", f"{msg}{' (' + shown + ')' if shown else ''}")
    fail = new.get("failure") or {}
    return ("Warning", "Failed", f"{fail.get('reason', 'TrainerError')}: {fail.get('message', '')}")


def template_drift(live_job: dict[str, Any], desired_job: dict[str, Any]) -> bool:
    """True if the live Job was made from a different (immutable) template."""
    live = ((live_job.get("metadata") or {}).get("annotations") or {}).get(ANN_TEMPLATE_HASH)
    want = desired_job["metadata"]["annotations"][ANN_TEMPLATE_HASH]
    return live != want


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
