"""The operator process against a real kube-apiserver (no kubelet: the tests drive status)."""

from __future__ import annotations

import json

import pytest
from opcomponent import (
    RUNTIME_IMAGE,
    apply_yaml,
    children_versions,
    complete_job,
    cr,
    events_for,
    handled,
    job_yaml,
    no_child_writes,
    reconciles_settled,
    service_yaml,
    set_job_status,
    set_pod_state,
    start_trainer_pod,
    stays,
    trainer_job,
    wait_for,
)

from kerasop.status import KerasTrainingJobStatus
from kerasop_operator import kube as k

pytestmark = pytest.mark.component

T0 = "2026-11-26T10:00:00Z"
T1 = "2026-11-26T10:03:00Z"


def phase_of(api, namespace, name, kind=k.TRAINING_JOB):
    return (cr(api, kind, namespace, name).get("status") or {}).get("phase")


def cond(obj, type_):
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None
    )


def wait_phase(api, namespace, name, phase, kind=k.TRAINING_JOB, timeout=30):
    return wait_for(
        f"{kind.kind} {name} phase {phase}",
        lambda: phase_of(api, namespace, name, kind) == phase,
        timeout=timeout,
    )


def applied_fields(obj, manager):
    """The fields ``manager`` owns through server-side apply (managedFields' fieldsV1)."""
    entries = [
        m
        for m in obj["metadata"].get("managedFields") or []
        if m["manager"] == manager and m["operation"] == "Apply"
    ]
    assert len(entries) == 1, obj["metadata"].get("managedFields")
    return entries[0]["fieldsV1"]


def version_arg(dep):
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index("--version") + 1] if "--version" in args else None


def done_message(version, **metrics):
    return json.dumps(
        {
            "kerasop": "done",
            "modelName": "mnist",
            "modelVersion": version,
            "modelPath": f"/models/mnist/{version}",
            "metrics": metrics or {"accuracy": 0.9},
            "epochsRun": 3,
        }
    )


def trainer_succeeds(api, job, pod, message):
    """The trainer exits 0 with ``message`` as its termination message; the Job completes."""
    set_pod_state(
        api,
        pod,
        "Succeeded",
        {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "message": message,
                "finishedAt": T1,
            }
        },
    )
    complete_job(api, job, T1)


def finish_successfully(api, job, version):
    """What the Job controller and kubelet do when the trainer exits 0 with its `done` event."""
    pod = start_trainer_pod(api, job, suffix=f"v{version}")
    set_pod_state(api, pod, "Running", {"running": {"startedAt": T0}})
    set_job_status(api, job, {"active": 1, "ready": 1, "startTime": T0})
    trainer_succeeds(api, job, pod, done_message(version))


# ============================================================================================


def test_training_job_children_and_idempotence(cluster, api, operator, namespace):
    text = job_yaml("mnist", namespace)
    apply_yaml(cluster, text)
    body = wait_for(
        "status",
        lambda: (
            (cr(api, k.TRAINING_JOB, namespace, "mnist").get("status") or {}).get("phase")
            and cr(api, k.TRAINING_JOB, namespace, "mnist")
        ),
    )
    uid = body["metadata"]["uid"]

    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "mnist"))
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "KerasTrainingJob",
        "mnist",
        uid,
        True,
    )
    assert job["metadata"]["labels"]["kerasop.io/training-job"] == "mnist"
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kerasop-operator"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == RUNTIME_IMAGE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KERASOP_JOB_ID"] == uid
    assert json.loads(env["KERASOP_SPEC"])["spec"]["training"]["epochs"] == 3
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3, 4, 5, 6]
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000

    pvc = api.get(k.PVC, namespace, "mnist-models")
    assert pvc is not None and "ownerReferences" not in pvc["metadata"], (
        "retained claim must not be owned"
    )
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    sa = api.get(k.SERVICE_ACCOUNT, namespace, "kerasop-trainer")
    assert sa is not None and sa["automountServiceAccountToken"] is False

    body = cr(api, k.TRAINING_JOB, namespace, "mnist")
    st = body["status"]
    assert st["phase"] == "Pending"
    assert st["observedGeneration"] == body["metadata"]["generation"] == 1
    assert cond(body, "Created")["status"] == "True"
    assert st["progress"] == "0/3"
    assert "kopf" not in st and not any(key.startswith("job-") for key in st), (
        "no handler results in status"
    )
    wait_for(
        "Created event",
        lambda: (
            "Created"
            in [e["reason"] for e in events_for(api, namespace, "mnist", "KerasTrainingJob")]
        ),
    )

    # Re-applying the same YAML is a no-op, and so is a re-reconcile (a label change).
    job_rv = trainer_job(api, namespace, "mnist")["metadata"]["resourceVersion"]
    with no_child_writes(operator, api, namespace):
        assert "unchanged" in apply_yaml(cluster, text)
        cluster.kubectl("-n", namespace, "label", "kerastrainingjob", "mnist", "team=vision")
        wait_for(
            "the label change handled",
            lambda: (
                handled(api, k.TRAINING_JOB, namespace, "mnist")["metadata"]["labels"]["team"]
                == "vision"
            ),
        )
    assert trainer_job(api, namespace, "mnist")["metadata"]["resourceVersion"] == job_rv
    body = cr(api, k.TRAINING_JOB, namespace, "mnist")
    assert body["metadata"]["generation"] == 1, "the operator never writes the spec"
    assert len(api.list(k.JOB, namespace)) == 1


def test_training_job_runs_and_succeeds(cluster, api, operator, namespace):
    apply_yaml(cluster, job_yaml("mnist", namespace))
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "mnist"))
    pod = start_trainer_pod(api, job)
    set_pod_state(api, pod, "Running", {"running": {"startedAt": T0}})
    set_job_status(api, job, {"active": 1, "ready": 1, "startTime": T0})
    wait_phase(api, namespace, "mnist", "Running")
    body = cr(api, k.TRAINING_JOB, namespace, "mnist")
    assert body["status"]["startTime"] == T0
    assert cond(body, "Running")["status"] == "True"
    assert body["status"]["workers"] == {"desired": 1, "active": 1, "succeeded": 0, "failed": 0}

    trainer_succeeds(api, job, pod, done_message(1, loss=0.2, accuracy=0.91))
    wait_phase(api, namespace, "mnist", "Succeeded")
    st = cr(api, k.TRAINING_JOB, namespace, "mnist")["status"]
    assert (st["modelName"], st["modelVersion"], st["modelPath"]) == ("mnist", 1, "mnist/1")
    assert st["finalMetrics"] == {"loss": 0.2, "accuracy": 0.91}
    assert st["completionTime"] == T1 and st["progress"] == "3/3"
    assert st["modelClaimName"] == "mnist-models"
    reasons = wait_for(
        "phase events",
        lambda: (
            (r := [e["reason"] for e in events_for(api, namespace, "mnist", "KerasTrainingJob")])
            and {"Created", "Running", "Succeeded"} <= set(r)
            and r
        ),
    )
    assert reasons.count("Succeeded") == 1
    # the progress timer's finalizer is gone once the job is finished; kopf's bookkeeping
    # lives in kerasop.io/ annotations only, never in status
    body = wait_for(
        "finalizer removed",
        lambda: (
            not (b := cr(api, k.TRAINING_JOB, namespace, "mnist"))["metadata"].get("finalizers")
            and b
        ),
    )
    assert all(
        a.startswith("kerasop.io/") or a.startswith("kubectl.kubernetes.io/")
        for a in body["metadata"].get("annotations") or {}
    )
    allowed = {f.alias or n for n, f in KerasTrainingJobStatus.model_fields.items()}
    assert set(body["status"]) <= allowed


def test_unschedulable_trainer_pod_reported_from_its_own_event(cluster, api, operator, namespace):
    apply_yaml(cluster, job_yaml("gpu", namespace))
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "gpu"))
    pod = start_trainer_pod(api, job)
    before = operator.metric_sum("kerasop_reconcile_total", trigger="pod-stuck")
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    api.merge_patch(
        k.POD,
        namespace,
        pod["metadata"]["name"],
        {
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                    }
                ],
            }
        },
        subresource="status",
    )
    body = wait_for(
        "Unschedulable in the job's status",
        lambda: (
            cond(b := cr(api, k.TRAINING_JOB, namespace, "gpu"), "Running").get("reason")
            == "Unschedulable"
            and b
        ),
    )
    assert body["status"]["phase"] == "Pending"
    assert cond(body, "Running")["message"] == message
    # the pod's own event refreshed the status (not only the progress timer)
    assert operator.metric_sum("kerasop_reconcile_total", trigger="pod-stuck") > before


def test_training_job_permanent_failure(cluster, api, operator, namespace):
    apply_yaml(cluster, job_yaml("bad", namespace))
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "bad"))
    pod = start_trainer_pod(api, job)
    failed = json.dumps(
        {
            "kerasop": "failed",
            "reason": "BadData",
            "message": "train.csv: no column 'label'",
            "exitCode": 3,
        }
    )
    set_pod_state(
        api,
        pod,
        "Failed",
        {"terminated": {"exitCode": 3, "reason": "Error", "message": failed, "finishedAt": T1}},
    )
    set_job_status(
        api,
        job,
        {
            "active": 0,
            "failed": 1,
            "startTime": T0,
            "conditions": [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "reason": "PodFailurePolicy",
                    "message": "exit code 3",
                    "lastTransitionTime": T1,
                    "lastProbeTime": T1,
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "PodFailurePolicy",
                    "message": "exit code 3",
                    "lastTransitionTime": T1,
                    "lastProbeTime": T1,
                },
            ],
        },
    )
    wait_phase(api, namespace, "bad", "Failed")
    body = cr(api, k.TRAINING_JOB, namespace, "bad")
    assert body["status"]["failure"] == {
        "reason": "BadData",
        "exitCode": 3,
        "message": "train.csv: no column 'label'",
    }
    assert cond(body, "Failed")["reason"] == "BadData"
    wait_for(
        "Failed event",
        lambda: any(
            e["reason"] == "Failed" and e["type"] == "Warning"
            for e in events_for(api, namespace, "bad", "KerasTrainingJob")
        ),
    )

    # a failed job is never restarted by the operator, even when its Job disappears
    def job_deleted_reconciles():
        return operator.metric_sum(
            "kerasop_reconcile_total", kind="KerasTrainingJob", trigger="job-deleted"
        )

    before = job_deleted_reconciles()
    api.delete(k.JOB, namespace, "bad-trainer")
    wait_for(
        "reconcile after Job deletion finished",
        lambda: job_deleted_reconciles() > before and reconciles_settled(operator),
    )
    stays(
        lambda: (
            trainer_job(api, namespace, "bad") is None
            and phase_of(api, namespace, "bad") == "Failed"
        ),
        what="no new trainer Job, still Failed",
    )


def test_invalid_spec_is_reported_not_retried(cluster, api, operator, namespace):
    # valid for the CRD schema, but no image anywhere? The operator has a default image;
    # instead use a pod template override the API server rejects.
    text = job_yaml(
        "broken",
        namespace,
        scheduling={"podTemplate": {"spec": {"containers": [{"name": "sidecar"}]}}},
    )
    apply_yaml(cluster, text)
    body = wait_for(
        "ApplyFailed condition",
        lambda: (
            (c := cond(cr(api, k.TRAINING_JOB, namespace, "broken"), "Created"))
            and c["reason"] == "ApplyFailed"
            and cr(api, k.TRAINING_JOB, namespace, "broken")
        ),
    )
    assert "image" in cond(body, "Created")["message"]
    assert trainer_job(api, namespace, "broken") is None

    def warnings():
        return sum(
            e.get("count") or 1
            for e in events_for(api, namespace, "broken", "KerasTrainingJob")
            if e["reason"] == "ApplyFailed"
        )

    def creates():
        return operator.metric_sum(
            "kerasop_reconcile_total", kind="KerasTrainingJob", trigger="create"
        )

    # kopf records the creation as handled (failed for good) instead of retrying it
    wait_for(
        "the creation handled, no retry pending",
        lambda: handled(api, k.TRAINING_JOB, namespace, "broken") and reconciles_settled(operator),
    )
    assert warnings() == 1
    attempts = creates()
    stays(
        lambda: (
            warnings() == 1
            and creates() == attempts
            and cond(cr(api, k.TRAINING_JOB, namespace, "broken"), "Created")["reason"]
            == "ApplyFailed"
        ),
        what="one Warning, no retry, the failure still reported",
    )
    assert trainer_job(api, namespace, "broken") is None
    reasons = [e["reason"] for e in events_for(api, namespace, "broken", "KerasTrainingJob")]
    assert "Created" not in reasons, reasons
    # fixing the spec is what makes the operator try again
    apply_yaml(cluster, job_yaml("broken", namespace))
    wait_for("trainer Job after the fix", lambda: trainer_job(api, namespace, "broken"))
    wait_for(
        "Created condition after the fix",
        lambda: (
            cond(cr(api, k.TRAINING_JOB, namespace, "broken"), "Created")["reason"] == "JobCreated"
        ),
    )
    wait_for(
        "Created event after the fix",
        lambda: (
            "Created"
            in [e["reason"] for e in events_for(api, namespace, "broken", "KerasTrainingJob")]
        ),
    )


def test_multi_worker_job(cluster, api, operator, namespace):
    apply_yaml(
        cluster,
        job_yaml(
            "dist",
            namespace,
            workers=2,
            output={"storage": {"size": "2Gi", "accessMode": "ReadWriteMany", "retain": False}},
        ),
    )
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "dist"))
    uid = cr(api, k.TRAINING_JOB, namespace, "dist")["metadata"]["uid"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert job["spec"]["template"]["spec"]["subdomain"] == "dist-workers"
    svc = wait_for("workers Service", lambda: api.get(k.SERVICE, namespace, "dist-workers"))
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == uid
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KERASOP_COORDINATOR"] == f"dist-trainer-0.dist-workers.{namespace}.svc:12345"
    assert env["KERAS_BACKEND"] == "jax"
    pvc = api.get(k.PVC, namespace, "dist-models")
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == uid, "retain: false -> owned by the job"
    # worker pods as the Job controller names them; worker 0 reports
    p0 = start_trainer_pod(api, job, index=0)
    p1 = start_trainer_pod(api, job, index=1)
    for p in (p0, p1):
        set_pod_state(api, p, "Running", {"running": {}})
    set_job_status(api, job, {"active": 2, "ready": 2, "startTime": T0})
    wait_phase(api, namespace, "dist", "Running")
    assert cr(api, k.TRAINING_JOB, namespace, "dist")["status"]["workers"]["active"] == 2


def test_parallel_search_is_a_chief_and_tuner_workers(cluster, api, operator, namespace):
    """spec.tuning with parallelism 2: one Indexed Job of 2 pods in keras-tuner's
    distributed mode, the chief reachable through the workers Service (docs/tuning.md)."""
    space = {"training.learningRate": {"logUniform": [0.0001, 0.1]}}
    apply_yaml(
        cluster,
        job_yaml("search", namespace, tuning={"space": space, "maxTrials": 4, "parallelism": 2}),
    )
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "search"))
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    svc = wait_for("workers Service", lambda: api.get(k.SERVICE, namespace, "search-workers"))
    assert [p["port"] for p in svc["spec"]["ports"]] == [8000]
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KERASTUNER_ORACLE_IP"] == f"search-trainer-0.search-workers.{namespace}.svc"
    assert json.loads(env["KERASOP_SPEC"])["spec"]["tuning"]["parallelism"] == 2


def test_suspend_and_resume(cluster, api, operator, namespace):
    apply_yaml(cluster, job_yaml("pause", namespace))
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "pause"))
    assert job["spec"]["suspend"] is False
    apply_yaml(cluster, job_yaml("pause", namespace, suspend=True))
    wait_for(
        "Job suspended",
        lambda: trainer_job(api, namespace, "pause")["spec"]["suspend"] is True,
    )
    wait_phase(api, namespace, "pause", "Suspended")
    body = cr(api, k.TRAINING_JOB, namespace, "pause")
    assert cond(body, "Suspended")["status"] == "True"
    # while suspended (and never started), resource changes replace the Job
    old_uid = trainer_job(api, namespace, "pause")["metadata"]["uid"]
    apply_yaml(cluster, job_yaml("pause", namespace, suspend=True, resources={"memory": "2Gi"}))
    new = wait_for(
        "Job recreated",
        lambda: (
            (j := trainer_job(api, namespace, "pause")) and j["metadata"]["uid"] != old_uid and j
        ),
    )
    assert (
        new["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"
    )
    apply_yaml(cluster, job_yaml("pause", namespace, suspend=False, resources={"memory": "2Gi"}))
    wait_for(
        "Job resumed", lambda: trainer_job(api, namespace, "pause")["spec"]["suspend"] is False
    )
    wait_phase(api, namespace, "pause", "Pending")
    assert len(api.list(k.JOB, namespace)) == 1


def test_service_follows_job_versions(cluster, api, operator, namespace):
    apply_yaml(
        cluster, service_yaml("mnist", namespace, model={"trainingJob": "mnist"}, replicas=2)
    )
    wait_for(
        "TrainingJobNotFound",
        lambda: (
            (c := cond(cr(api, k.MODEL_SERVICE, namespace, "mnist"), "Ready"))
            and c["reason"] == "TrainingJobNotFound"
        ),
    )
    apply_yaml(cluster, job_yaml("mnist", namespace))
    wait_for(
        "WaitingForModel",
        lambda: (
            (c := cond(cr(api, k.MODEL_SERVICE, namespace, "mnist"), "Ready"))
            and c["reason"] == "WaitingForModel"
        ),
    )
    svc_body = cr(api, k.MODEL_SERVICE, namespace, "mnist")
    assert svc_body["status"]["phase"] == "Pending"
    assert svc_body["status"]["url"] == f"http://mnist.{namespace}.svc.cluster.local"
    assert api.get(k.DEPLOYMENT, namespace, "mnist-server") is None
    service = api.get(k.SERVICE, namespace, "mnist")
    assert (
        service["spec"]["ports"][0]["port"] == 80
        and service["spec"]["ports"][0]["targetPort"] == "http"
    )
    assert service["metadata"]["ownerReferences"][0]["uid"] == svc_body["metadata"]["uid"]

    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "mnist"))
    finish_successfully(api, job, 1)
    dep = wait_for("Deployment", lambda: api.get(k.DEPLOYMENT, namespace, "mnist-server"))
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--version") + 1] == "1"
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "mnist-models",
        "readOnly": True,
    }
    assert dep["metadata"]["ownerReferences"][0]["uid"] == svc_body["metadata"]["uid"]
    pdb = wait_for("PDB", lambda: api.get(k.PDB, namespace, "mnist"))
    assert pdb["spec"]["minAvailable"] == 1
    assert api.get(k.HPA, namespace, "mnist") is None

    # play the Deployment controller: rollout of version 1 complete
    def roll_out(dep):
        api.merge_patch(
            k.DEPLOYMENT,
            namespace,
            "mnist-server",
            {
                "status": {
                    "observedGeneration": dep["metadata"]["generation"],
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "readyReplicas": 2,
                    "availableReplicas": 2,
                }
            },
            subresource="status",
        )

    roll_out(dep)
    wait_for(
        "servingVersion 1",
        lambda: cr(api, k.MODEL_SERVICE, namespace, "mnist")["status"].get("servingVersion") == 1,
    )
    st = cr(api, k.MODEL_SERVICE, namespace, "mnist")["status"]
    assert (st["phase"], st["ready"]) == ("Ready", "2/2")

    # retrain: delete the job (and, as the garbage collector would, its Job and pods), recreate it
    cluster.kubectl("-n", namespace, "delete", "kerastrainingjob", "mnist", "--wait=false")
    wait_for("job deleted", lambda: api.get(k.TRAINING_JOB, namespace, "mnist") is None)
    api.delete(k.JOB, namespace, "mnist-trainer")
    for p in api.list(k.POD, namespace):
        api.delete(k.POD, namespace, p["metadata"]["name"])
    wait_for(
        "ModelAvailable False",
        lambda: (
            (c := cond(cr(api, k.MODEL_SERVICE, namespace, "mnist"), "ModelAvailable"))
            and c["reason"] == "TrainingJobNotFound"
        ),
    )
    assert (
        api.get(k.DEPLOYMENT, namespace, "mnist-server")["metadata"]["generation"]
        == dep["metadata"]["generation"]
    ), "the server keeps serving while the job is gone"

    apply_yaml(cluster, job_yaml("mnist", namespace))
    job = wait_for("new trainer Job", lambda: trainer_job(api, namespace, "mnist"))
    finish_successfully(api, job, 2)
    dep2 = wait_for(
        "Deployment rolled to version 2",
        lambda: (
            (d := api.get(k.DEPLOYMENT, namespace, "mnist-server")) and version_arg(d) == "2" and d
        ),
    )
    assert dep2["spec"]["template"]["metadata"]["annotations"]["kerasop.io/model-version"] == "2"
    assert len(api.list(k.DEPLOYMENT, namespace)) == 1
    st = cr(api, k.MODEL_SERVICE, namespace, "mnist")["status"]
    assert st["servingVersion"] == 1, "old version served until the rollout completes"
    roll_out(dep2)
    wait_for(
        "servingVersion 2",
        lambda: cr(api, k.MODEL_SERVICE, namespace, "mnist")["status"].get("servingVersion") == 2,
    )
    wait_for(
        "Serving event",
        lambda: any(
            e["reason"] == "Serving" and "version 2" in e.get("message", "")
            for e in events_for(api, namespace, "mnist", "KerasModelService")
        ),
    )


def test_service_pinned_with_autoscaling(cluster, api, operator, namespace):
    apply_yaml(
        cluster,
        service_yaml(
            "pinned",
            namespace,
            model={"name": "digits", "claimName": "store", "version": 4},
            autoscaling={
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetCpuUtilization": 60,
                "targetInFlightRequests": 4,
            },
        ),
    )
    dep = wait_for("Deployment", lambda: api.get(k.DEPLOYMENT, namespace, "pinned-server"))
    hpa = wait_for("HPA", lambda: api.get(k.HPA, namespace, "pinned"))
    assert (
        hpa["spec"]["scaleTargetRef"]["name"] == "pinned-server" and hpa["spec"]["maxReplicas"] == 3
    )
    # both targets, as the API server validated and stored them
    cpu, in_flight = hpa["spec"]["metrics"]
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert in_flight["pods"] == {
        "metric": {"name": "kerasop_server_requests_in_flight"},
        "target": {"type": "AverageValue", "averageValue": "4"},
    }
    assert api.get(k.PDB, namespace, "pinned") is None
    # The HPA owns replicas: the operator's apply leaves them out (the API server defaults
    # an omitted count to 1, so the value alone cannot tell)...
    applied = applied_fields(dep, "kerasop-operator")["f:spec"]
    assert "f:template" in applied and "f:replicas" not in applied
    # ... and a count set by someone else (the HPA scaling up) survives a reconcile.
    cluster.kubectl("-n", namespace, "scale", "deployment/pinned-server", "--replicas=3")
    cluster.kubectl("-n", namespace, "label", "kerasmodelservice", "pinned", "team=vision")
    wait_for(
        "the label change handled",
        lambda: (
            handled(api, k.MODEL_SERVICE, namespace, "pinned")["metadata"]["labels"]["team"]
            == "vision"
            and reconciles_settled(operator)
        ),
    )
    stays(
        lambda: api.get(k.DEPLOYMENT, namespace, "pinned-server")["spec"]["replicas"] == 3,
        what="the HPA's replica count",
    )
    # turning autoscaling off removes the HPA
    apply_yaml(
        cluster,
        service_yaml(
            "pinned",
            namespace,
            model={"name": "digits", "claimName": "store", "version": 4},
            replicas=2,
        ),
    )
    wait_for("HPA removed", lambda: api.get(k.HPA, namespace, "pinned") is None)
    wait_for("PDB", lambda: api.get(k.PDB, namespace, "pinned"))
    # drift: someone edits the Deployment; the operator puts it back
    api.merge_patch(k.DEPLOYMENT, namespace, "pinned-server", {"spec": {"replicas": 5}})
    wait_for(
        "drift corrected",
        lambda: api.get(k.DEPLOYMENT, namespace, "pinned-server")["spec"]["replicas"] == 2,
    )


def test_operator_restart_converges_without_duplicates(cluster, api, operator, namespace):
    apply_yaml(cluster, job_yaml("mnist", namespace))
    apply_yaml(cluster, service_yaml("mnist", namespace, model={"trainingJob": "mnist"}))
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "mnist"))
    pod = start_trainer_pod(api, job)
    set_pod_state(api, pod, "Running", {"running": {}})
    set_job_status(api, job, {"active": 1, "ready": 1, "startTime": T0})
    wait_phase(api, namespace, "mnist", "Running")

    operator.stop()
    # while the operator is down, training finishes
    trainer_succeeds(api, job, pod, done_message(1))
    job_rv = api.get(k.JOB, namespace, "mnist-trainer")["metadata"]["resourceVersion"]
    operator.start()

    wait_phase(api, namespace, "mnist", "Succeeded")
    dep = wait_for(
        "Deployment after restart", lambda: api.get(k.DEPLOYMENT, namespace, "mnist-server")
    )
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--version") + 1] == "1"
    assert api.get(k.JOB, namespace, "mnist-trainer")["metadata"]["resourceVersion"] == job_rv
    assert len(api.list(k.JOB, namespace)) == 1
    assert len(api.list(k.DEPLOYMENT, namespace)) == 1
    assert len(list(api.list(k.SERVICE, namespace))) == 1

    # a second restart with nothing changed writes no child at all: every resource in the
    # cluster is resumed (a fresh process: its counters start at zero)
    resources = len(api.list(k.TRAINING_JOB)) + len(api.list(k.MODEL_SERVICE))
    versions = children_versions(api, namespace)
    operator.restart()
    wait_for(
        f"{resources} resume handlers finished",
        lambda: (
            operator.metric_sum("kerasop_reconcile_total", trigger="resume") >= resources
            and reconciles_settled(operator)
        ),
    )
    stays(
        lambda: (
            operator.metric_sum("kerasop_child_writes_total") == 0
            and children_versions(api, namespace) == versions
        ),
        what="no child writes after the restart",
    )


def test_watch_namespaces_restricts_the_operator(cluster, api, operator, namespace):
    other = f"{namespace}-other"
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    operator.stop()
    try:
        operator.start(KERASOP_WATCH_NAMESPACES=namespace)
        apply_yaml(cluster, job_yaml("seen", namespace))
        apply_yaml(cluster, job_yaml("ignored", other))
        wait_for("Job in the watched namespace", lambda: trainer_job(api, namespace, "seen"))
        assert trainer_job(api, other, "ignored") is None
        assert "status" not in cr(api, k.TRAINING_JOB, other, "ignored")
    finally:
        operator.stop()
        operator.start()
    # back to all namespaces: the ignored job is picked up on start
    wait_for("Job once all namespaces are watched", lambda: trainer_job(api, other, "ignored"))
