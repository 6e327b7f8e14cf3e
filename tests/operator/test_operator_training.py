"""KerasTrainingJob builders: spec -> Job/PVC/Service manifests, observed -> status."""

from __future__ import annotations

import json

import pytest
from opfactories import LATER, NOW, event_line, k8s_job, pod, terminated, training_job

from kerasop.spec import SpecError
from kerasop.status import KerasTrainingJobStatus
from kerasop_operator import training
from kerasop_operator.conditions import find
from kerasop_operator.training import ObservedTraining, desired_children, training_status


def env_of(job: dict) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def container_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


# ============================================================================================
# manifests


def test_script_job_runs_the_trainer_entry_point_with_the_same_environment():
    """spec.script: the user's image; kerasop-train wraps the script, so the command, the
    environment (workers included) and the volumes are the built-in trainer's."""
    script = {"script": {"command": ["python", "/app/train.py"]}, "image": "me/trainer:1"}
    builtin = desired_children(training_job(workers=2), default_image="runtime:1").job
    body = training_job(workers=2, **script)
    del body["spec"]["model"]
    job = desired_children(body, default_image="runtime:1").job
    c = container_of(job)
    assert c["image"] == "me/trainer:1" and c["command"] == ["kerasop-train"]
    env, builtin_env = env_of(job), env_of(builtin)
    assert set(env) == set(builtin_env)
    for name in (
        "KERASOP_NUM_WORKERS",
        "KERASOP_COORDINATOR",
        "KERASOP_WORKER_INDEX",
        "KERASOP_JOB_ID",
        "KERASOP_DATA_ROOT",
        "KERASOP_STORE_ROOT",
        "KERAS_BACKEND",
    ):
        assert env[name] == builtin_env[name], name
    assert json.loads(env["KERASOP_SPEC"])["spec"]["script"]["command"] == [
        "python",
        "/app/train.py",
    ]
    assert c["volumeMounts"] == container_of(builtin)["volumeMounts"]


def test_single_worker_job():
    body = training_job(backoffLimit=2)
    children = desired_children(body, default_image="registry.local/kerasop-runtime:1")
    job = children.job
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "mnist-trainer"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"]["kerasop.io/training-job"] == "mnist"
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kerasop-operator"
    assert "app.kubernetes.io/instance" not in job["metadata"]["labels"]
    [owner] = job["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasTrainingJob",
        "name": "mnist",
        "uid": "uid-mnist",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["completions"] == spec["parallelism"] == 1
    assert "completionMode" not in spec
    assert spec["suspend"] is False
    assert "activeDeadlineSeconds" not in spec and "ttlSecondsAfterFinished" not in spec
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2, 3, 4, 5, 6]},
    }
    assert rules[1]["action"] == "Ignore"

    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["serviceAccountName"] == "kerasop-trainer"
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsUser"] == 1000
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "subdomain" not in pod_spec

    c = container_of(job)
    assert c["name"] == "trainer"
    assert c["image"] == "registry.local/kerasop-runtime:1"
    assert c["command"] == ["kerasop-train"]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "resources" not in c and "ports" not in c

    env = env_of(job)
    assert env["KERASOP_JOB_ID"] == "uid-mnist"
    assert env["KERASOP_DATA_ROOT"] == "/data"
    assert env["KERASOP_STORE_ROOT"] == "/models"
    assert env["KERAS_BACKEND"] == "tensorflow"
    assert "KERASOP_NUM_WORKERS" not in env
    doc = json.loads(env["KERASOP_SPEC"])
    assert doc["kind"] == "KerasTrainingJob"
    assert doc["metadata"] == {"name": "mnist", "namespace": "ml", "uid": "uid-mnist"}
    assert doc["spec"] == {k: v for k, v in body["spec"].items() if k != "backoffLimit"}

    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models"
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert "data" not in mounts  # no data volume in the spec
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "mnist-models"}

    assert children.workers_service is None
    assert children.service_account["metadata"]["name"] == "kerasop-trainer"
    assert children.service_account["automountServiceAccountToken"] is False
    assert "ownerReferences" not in children.service_account["metadata"]


def test_default_storage_is_a_retained_pvc():
    children = desired_children(training_job(), default_image="img")
    pvc = children.pvc
    assert pvc["metadata"]["name"] == "mnist-models"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    assert "ownerReferences" not in pvc["metadata"], "retained PVC must not be owned by the job"
    assert children.claim_name == "mnist-models"


def test_created_pvc_owned_when_not_retained():
    body = training_job(
        output={
            "storage": {
                "size": "5Gi",
                "storageClassName": "fast",
                "accessMode": "ReadWriteMany",
                "retain": False,
            }
        }
    )
    children = desired_children(body, default_image="img")
    pvc = children.pvc
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-mnist"
    # RWX: no need to co-locate pods
    assert "affinity" not in children.job["spec"]["template"]["spec"]


def test_existing_claim_and_data_volume():
    body = training_job(
        data={"format": "csv", "path": "train.csv", "volume": {"claimName": "datasets"}},
        output={"modelName": "digits", "storage": {"claimName": "store"}},
    )
    children = desired_children(body, default_image="img", claim_access_modes=["ReadWriteMany"])
    assert children.pvc is None
    assert children.claim_name == "store"
    pod_spec = children.job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "store"}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
    mounts = {m["name"]: m for m in container_of(children.job)["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}
    assert "affinity" not in pod_spec


def test_rwo_claim_colocates_pods_on_one_node():
    children = desired_children(training_job(), default_image="img")  # created RWO claim
    pod_spec = children.job["spec"]["template"]["spec"]
    [term] = pod_spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"kerasop.io/model-claim": "mnist-models"}
    assert (
        children.job["spec"]["template"]["metadata"]["labels"]["kerasop.io/model-claim"]
        == "mnist-models"
    )
    # an existing claim whose access mode is RWO gets the same treatment
    body = training_job(output={"storage": {"claimName": "store"}})
    children = desired_children(body, default_image="img", claim_access_modes=["ReadWriteOnce"])
    assert "podAffinity" in children.job["spec"]["template"]["spec"]["affinity"]
    # unknown access modes (claim not readable): no affinity rather than a wrong one
    children = desired_children(body, default_image="img", claim_access_modes=None)
    assert "affinity" not in children.job["spec"]["template"]["spec"]


def test_several_workers_indexed_job_and_headless_service():
    body = training_job(workers=3, training={"backend": "tensorflow"})
    children = desired_children(body, default_image="img")
    spec = children.job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    pod_spec = spec["template"]["spec"]
    assert pod_spec["subdomain"] == "mnist-workers"
    env = env_of(children.job)
    assert env["KERASOP_NUM_WORKERS"] == "3"
    assert env["KERASOP_COORDINATOR"] == "mnist-trainer-0.mnist-workers.ml.svc:12345"
    assert env["KERAS_BACKEND"] == "jax"
    assert json.loads(env["KERASOP_SPEC"])["spec"]["training"]["backend"] == "jax"
    assert body["spec"]["training"]["backend"] == "tensorflow", "the user's spec is never changed"
    assert container_of(children.job)["ports"] == [{"name": "coordinator", "containerPort": 12345}]

    svc = children.workers_service
    assert svc["metadata"]["name"] == "mnist-workers"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {
        "kerasop.io/training-job": "mnist",
        "app.kubernetes.io/component": "trainer",
    }
    # the selector matches the pod labels
    pod_labels = spec["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "KerasTrainingJob"


def test_gpus_and_resources():
    body = training_job(resources={"cpu": "2", "memory": "8Gi", "gpus": 2})
    children = desired_children(body, default_image="img")
    c = container_of(children.job)
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"},
    }
    tolerations = children.job["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_scheduling_knobs_and_service_account():
    body = training_job(
        scheduling={
            "nodeSelector": {"pool": "train"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "priorityClassName": "batch-low",
            "serviceAccountName": "my-sa",
        },
        resources={"gpus": 1},
    )
    children = desired_children(body, default_image="img")
    pod_spec = children.job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "train"}
    assert pod_spec["priorityClassName"] == "batch-low"
    assert pod_spec["serviceAccountName"] == "my-sa"
    assert pod_spec["automountServiceAccountToken"] is False
    assert len(pod_spec["tolerations"]) == 2  # the user's + the GPU one
    assert "nodeAffinity" in pod_spec["affinity"]
    assert "podAffinity" in pod_spec["affinity"]  # user's affinity kept, RWO term added
    assert children.service_account is None  # the user's own account is not created


def test_pod_template_override_merges_containers_by_name():
    body = training_job(
        resources={"cpu": "1"},
        scheduling={
            "podTemplate": {
                "metadata": {
                    "labels": {"team": "vision"},
                    "annotations": {"sidecar.istio.io/inject": "false"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "env": [
                                {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
                                {"name": "HOME", "value": "/scratch"},
                            ],
                            "resources": {"limits": {"cpu": "3"}},
                        },
                        {"name": "log-shipper", "image": "busybox"},
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
                    "hostNetwork": True,
                    "automountServiceAccountToken": None,  # null deletes
                },
            }
        },
    )
    job = desired_children(body, default_image="img").job
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "vision"
    assert template["metadata"]["labels"]["kerasop.io/training-job"] == "mnist"
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    assert list(containers) == ["trainer", "log-shipper"]
    trainer = containers["trainer"]
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert env["HOME"] == "/scratch"  # same name: overridden in place
    assert env["KERASOP_STORE_ROOT"] == "/models"  # generated ones kept
    assert trainer["resources"]["limits"]["cpu"] == "3"
    assert trainer["resources"]["requests"]["cpu"] == "1"
    assert trainer["command"] == ["kerasop-train"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"medium": "Memory"}
    assert "models" in volumes
    assert template["spec"]["hostNetwork"] is True
    assert "automountServiceAccountToken" not in template["spec"]


def test_override_without_spec_key_means_pod_spec():
    body = training_job(scheduling={"podTemplate": {"dnsPolicy": "None"}})
    job = desired_children(body, default_image="img").job
    assert job["spec"]["template"]["spec"]["dnsPolicy"] == "None"


def test_lifecycle_fields():
    body = training_job(suspend=True, activeDeadlineSeconds=3600, ttlSecondsAfterFinished=600)
    spec = desired_children(body, default_image="img").job["spec"]
    assert spec["suspend"] is True
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == 600


def test_image_from_spec_wins_and_is_required():
    body = training_job(image="me/trainer:2")
    assert container_of(desired_children(body, default_image="img").job)["image"] == "me/trainer:2"
    with pytest.raises(SpecError, match="image"):
        desired_children(training_job(), default_image="")


def test_invalid_spec_raises_spec_error():
    body = training_job()
    body["spec"]["model"] = {"layers": [{"type": "Dense"}]}  # units missing
    with pytest.raises(SpecError, match="units"):
        desired_children(body, default_image="img")


def test_names_are_deterministic_and_short():
    long_name = "a" * 60
    body = training_job(name=long_name, workers=2)
    a = desired_children(body, default_image="img")
    b = desired_children(body, default_image="img")
    assert a.job == b.job
    assert len(a.job["metadata"]["name"]) <= 60  # room for "-<index>" in pod hostnames
    assert a.job["metadata"]["name"].endswith("-trainer")
    assert len(a.workers_service["metadata"]["name"]) <= 63
    assert training.trainer_job_name("x" * 60) != training.trainer_job_name("x" * 59 + "y")
    assert len(a.job["metadata"]["labels"]["kerasop.io/training-job"]) <= 63


def test_template_hash_ignores_mutable_fields():
    base = desired_children(training_job(), default_image="img").job
    suspended = desired_children(
        training_job(suspend=True, backoffLimit=9), default_image="img"
    ).job
    bigger = desired_children(training_job(resources={"memory": "2Gi"}), default_image="img").job
    assert not training.template_drift(base, suspended)
    assert training.template_drift(base, bigger)


# ============================================================================================
# status


def status_of(body, **observed):
    st = training_status(body, ObservedTraining(**observed), now=NOW)
    KerasTrainingJobStatus.model_validate(st)  # the shape the CRD accepts
    return st


def cond(st, type_):
    return find(st["conditions"], type_)


def test_status_without_job_is_pending():
    st = status_of(training_job())
    assert st["phase"] == "Pending"
    assert st["observedGeneration"] == 1
    assert st["epochs"] == 5 and st["progress"] == "0/5"
    assert st["modelClaimName"] == "mnist-models"
    assert cond(st, "Created")["status"] == "False"
    assert [c["type"] for c in st["conditions"]] == [
        "Created",
        "Running",
        "Succeeded",
        "Failed",
        "Suspended",
    ]
    assert all(c["lastTransitionTime"] == NOW for c in st["conditions"])


def test_status_pending_reports_image_pull_problems():
    p = pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}})
    st = status_of(training_job(), job=k8s_job(active=1), pods=[p])
    assert st["phase"] == "Pending"
    running = cond(st, "Running")
    assert (running["status"], running["reason"], running["message"]) == (
        "False",
        "ImagePullBackOff",
        "no such image",
    )
    assert st["workers"] == {"desired": 1, "active": 1, "succeeded": 0, "failed": 0}


def test_status_pending_reports_unschedulable():
    p = pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes have nvidia.com/gpu",
            }
        ]
    )
    st = status_of(training_job(), job=k8s_job(active=1), pods=[p])
    assert cond(st, "Running")["reason"] == "Unschedulable"


def test_status_running_with_progress_from_log():
    lines = [
        "Epoch 1/10",
        event_line("start", epochs=10, resumedFromEpoch=0, workers=1),
        event_line("epoch", epoch=2, epochs=10, metrics={"loss": 0.5, "accuracy": 0.8}),
        "some keras noise {not json",
        event_line(
            "epoch", epoch=3, epochs=10, metrics={"loss": 0.4, "accuracy": 0.85, "bad": "x"}
        ),
    ]
    st = status_of(
        training_job(),
        job=k8s_job(active=1, ready=1, startTime="2026-11-26T09:59:00Z"),
        pods=[pod(phase="Running", state={"running": {}})],
        log_lines=lines,
    )
    assert st["phase"] == "Running"
    assert st["startTime"] == "2026-11-26T09:59:00Z"
    assert (st["epoch"], st["epochs"], st["progress"]) == (3, 10, "3/10")
    assert st["metrics"] == {"loss": 0.4, "accuracy": 0.85}
    running = cond(st, "Running")
    assert running["status"] == "True"
    assert "epoch 3/10" in running["message"]
    assert cond(st, "Created")["status"] == "True"


def test_status_keeps_progress_when_log_unavailable():
    body = training_job()
    body["status"] = {"phase": "Running", "epoch": 4, "epochs": 10, "metrics": {"loss": 0.3}}
    st = status_of(
        body, job=k8s_job(active=1, ready=1), pods=[pod(phase="Running")], log_lines=None
    )
    assert (st["epoch"], st["progress"], st["metrics"]) == (4, "4/10", {"loss": 0.3})


def test_status_succeeded_from_termination_message():
    done = event_line(
        "done",
        modelName="mnist",
        modelVersion=2,
        modelPath="/models/mnist/2",
        metrics={"loss": 0.1, "accuracy": 0.97},
        epochsRun=5,
        dataFingerprint="sha256:" + "ab" * 32,
        modelFormats=["keras", "savedmodel", "onnx"],
    )
    job = k8s_job(
        succeeded=1,
        completionTime=LATER,
        startTime=NOW,
        conditions=[
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True", "lastTransitionTime": LATER},
        ],
    )
    st = status_of(
        training_job(),
        job=job,
        pods=[pod(phase="Succeeded", state=terminated(0, done, "Completed"))],
    )
    assert st["phase"] == "Succeeded"
    assert st["modelName"] == "mnist" and st["modelVersion"] == 2
    assert st["modelPath"] == "mnist/2"
    assert st["finalMetrics"] == {"loss": 0.1, "accuracy": 0.97}
    assert st["dataFingerprint"] == "sha256:" + "ab" * 32
    assert st["modelFormats"] == ["keras", "savedmodel", "onnx"]  # picks the serving image
    assert st["epoch"] == 5 and st["progress"] == "5/5"
    assert st["completionTime"] == LATER
    assert "failure" not in st
    succeeded = cond(st, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("True", "ModelWritten")
    assert "version 2" in succeeded["message"]
    assert cond(st, "Running")["status"] == "False"


def test_status_succeeded_falls_back_to_log_done_event():
    job = k8s_job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    st = status_of(
        training_job(),
        job=job,
        pods=[pod(phase="Succeeded", state=terminated(0, "", "Completed"))],
        log_lines=[event_line("done", modelName="mnist", modelVersion=7, metrics={"loss": 1})],
    )
    assert st["modelVersion"] == 7 and st["modelPath"] == "mnist/7"


def test_status_failed_with_trainer_event():
    failed = event_line("failed", reason="BadData", message="column 'label' missing", exitCode=3)
    job = k8s_job(
        failed=1,
        conditions=[
            {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"},
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "Container trainer exited with 3",
                "lastTransitionTime": LATER,
            },
        ],
    )
    st = status_of(training_job(), job=job, pods=[pod(phase="Failed", state=terminated(3, failed))])
    assert st["phase"] == "Failed"
    assert st["failure"] == {
        "reason": "BadData",
        "exitCode": 3,
        "message": "column 'label' missing",
    }
    assert st["completionTime"] == LATER
    f = cond(st, "Failed")
    assert (f["status"], f["reason"], f["message"]) == ("True", "BadData", "column 'label' missing")


def test_status_failed_with_log_tail_fallback():
    log = "\n".join(f"line {i}" for i in range(50)) + "\nTraceback: boom"
    job = k8s_job(
        failed=4,
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ],
    )
    pods = [
        pod("p1", created="2026-11-26T10:00:00Z", phase="Failed", state=terminated(1, log)),
        pod("p2", created="2026-11-26T10:01:00Z", phase="Failed", state=terminated(1, log)),
    ]
    st = status_of(training_job(), job=job, pods=pods)
    failure = st["failure"]
    assert failure["reason"] == "TrainerError" and failure["exitCode"] == 1
    assert "backoff limit" in failure["message"]
    tail = failure["logTail"].splitlines()
    assert len(tail) == 20 and tail[-1] == "Traceback: boom"


def test_status_failed_log_lines_win_for_log_tail():
    job = k8s_job(
        conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    )
    st = status_of(
        training_job(),
        job=job,
        pods=[pod(state=terminated(2, event_line("failed", reason="InvalidSpec", message="m")))],
        log_lines=["a", "b"],
    )
    assert st["failure"]["reason"] == "InvalidSpec"
    assert st["failure"]["logTail"] == "a\nb"


def test_status_failed_oom_and_deadline():
    job = k8s_job(
        conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    )
    st = status_of(training_job(), job=job, pods=[pod(state=terminated(137, "", "OOMKilled"))])
    assert st["failure"]["reason"] == "OOMKilled"
    job = k8s_job(
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
        ]
    )
    st = status_of(training_job(), job=job, pods=[pod(state=terminated(143, "", "Error"))])
    assert st["failure"]["reason"] == "DeadlineExceeded"
    assert "deadline" in st["failure"]["message"]
    st = status_of(training_job(), job=job, pods=[])
    assert st["failure"]["reason"] == "DeadlineExceeded"


def test_status_suspended():
    body = training_job(suspend=True)
    st = status_of(
        body, job=k8s_job(suspend=True, conditions=[{"type": "Suspended", "status": "True"}])
    )
    assert st["phase"] == "Suspended"
    assert cond(st, "Suspended")["status"] == "True"
    assert cond(st, "Running")["reason"] == "Suspended"


def test_finished_job_keeps_its_result_after_job_cleanup():
    body = training_job(ttlSecondsAfterFinished=0)
    body["status"] = {
        "phase": "Succeeded",
        "modelVersion": 3,
        "modelName": "mnist",
        "completionTime": LATER,
    }
    st = status_of(body, job=None)
    assert st["phase"] == "Succeeded" and st["modelVersion"] == 3
    assert cond(st, "Created")["reason"] == "JobCleanedUp"


def test_pods_of_an_older_job_are_ignored():
    stale = pod("old", job_uid="previous-uid", phase="Failed", state=terminated(3, "x"))
    st = status_of(training_job(), job=k8s_job(active=1), pods=[stale])
    assert st["phase"] == "Pending"
    assert cond(st, "Running")["reason"] == "PodsPending"


def test_worker0_is_the_newest_index_0_pod():
    pods = [
        pod("w1", index="1", phase="Running", created="2026-11-26T10:03:00Z"),
        pod("w0-old", index="0", phase="Failed", created="2026-11-26T10:00:00Z"),
        pod("w0-new", index="0", phase="Running", created="2026-11-26T10:02:00Z"),
    ]
    assert training.worker0_pod(pods)["metadata"]["name"] == "w0-new"


def test_spec_error_status():
    st = status_of(training_job(), spec_error="model.layers.0: Dense needs units")
    assert st["phase"] == "Failed"
    assert st["failure"]["reason"] == "InvalidSpec"
    assert cond(st, "Failed")["status"] == "True"
    assert cond(st, "Created")["reason"] == "InvalidSpec"


def test_apply_error_shows_in_created_condition():
    st = status_of(training_job(), apply_error="Job.batch is invalid: spec.template...")
    created = cond(st, "Created")
    assert (created["status"], created["reason"]) == ("False", "ApplyFailed")


def test_condition_time_changes_only_on_flip():
    body = training_job()
    first = training_status(body, ObservedTraining(job=k8s_job(active=1), pods=[pod()]), now=NOW)
    body["status"] = first
    # same status, new message -> time kept
    second = training_status(
        body,
        ObservedTraining(
            job=k8s_job(active=1), pods=[pod(state={"waiting": {"reason": "ErrImagePull"}})]
        ),
        now=LATER,
    )
    assert cond(second, "Running")["reason"] == "ErrImagePull"
    assert cond(second, "Running")["lastTransitionTime"] == NOW
    body["status"] = second
    # flip to running -> new time for Running only
    third = training_status(
        body,
        ObservedTraining(job=k8s_job(active=1, ready=1), pods=[pod(phase="Running")]),
        now=LATER,
    )
    assert cond(third, "Running")["status"] == "True"
    assert cond(third, "Running")["lastTransitionTime"] == LATER
    assert cond(third, "Failed")["lastTransitionTime"] == NOW
    # identical observation -> identical status (no write needed)
    body["status"] = third
    again = training_status(
        body,
        ObservedTraining(job=k8s_job(active=1, ready=1), pods=[pod(phase="Running")]),
        now="2030-01-01T00:00:00Z",
    )
    assert again == third


def test_phase_events():
    assert training.phase_event({}, {"phase": "Pending"})[1] == "Created"
    # a Job the API server refused: no "Created" until an attempt creates it
    refused = {"phase": "Pending", "conditions": [{"type": "Created", "status": "False"}]}
    created = {"phase": "Pending", "conditions": [{"type": "Created", "status": "True"}]}
    assert training.phase_event({}, refused) is None
    assert training.phase_event(refused, created)[1] == "Created"
    assert training.phase_event(created, created) is None
    assert training.phase_event({"phase": "Pending"}, {"phase": "Running"}) == (
        "Normal",
        "Running",
        "training started",
    )
    assert training.phase_event({"phase": "Suspended"}, {"phase": "Running"})[1] == "Resumed"
    kind, reason, message = training.phase_event(
        {"phase": "Running"},
        {
            "phase": "Succeeded",
            "modelName": "m",
            "modelVersion": 4,
            "finalMetrics": {"accuracy": 0.9},
        },
    )
    assert (
        (kind, reason) == ("Normal", "Succeeded")
        and "version 4" in message
        and "accuracy=0.9" in message
    )
    kind, reason, message = training.phase_event(
        {"phase": "Running"}, {"phase": "Failed", "failure": {"reason": "BadData", "message": "x"}}
    )
    assert (kind, reason, message) == ("Warning", "Failed", "BadData: x")
    assert training.phase_event({"phase": "Running"}, {"phase": "Running"}) is None


def test_a_job_first_seen_running_still_gets_its_created_event():
    """On a loaded operator the pods may run before the first status is written: the job
    still says once that its Job was created, then what happened."""
    created = {"type": "Created", "status": "True"}
    reasons = [
        e[1] for e in training.phase_events({}, {"phase": "Running", "conditions": [created]})
    ]
    assert reasons == ["Created", "Running"]
    done = {"phase": "Succeeded", "modelVersion": 1, "conditions": [created]}
    assert [e[1] for e in training.phase_events(None, done)] == ["Created", "Succeeded"]
    assert [e[1] for e in training.phase_events({"phase": "Pending"}, done)] == ["Succeeded"]
    assert [e[1] for e in training.phase_events({}, {"phase": "Pending"})] == ["Created"]
    refused = {"phase": "Failed", "conditions": [{"type": "Created", "status": "False"}]}
    assert [e[1] for e in training.phase_events({}, refused)] == ["Failed"]  # no Job, no Created
    assert training.phase_events({"phase": "Running"}, {"phase": "Running"}) == []


def test_progress_from_log_ignores_garbage():
    assert training.progress_from_log(None) == {}
    assert training.progress_from_log(["", "{", "[1,2]", '{"other": 1}']) == {}
    out = training.progress_from_log(
        [event_line("epoch", epoch=1, epochs=2, metrics={"loss": float("nan")})]
    )
    assert out == {"epoch": 1, "epochs": 2}
