"""KerasModelService builders: model resolution, Deployment/Service/HPA/PDB, status."""

from __future__ import annotations

import pytest
from opfactories import LATER, NOW, deployment, model_service, training_job

from kerasop.spec import SpecError
from kerasop.status import KerasModelServiceStatus
from kerasop_operator import serving
from kerasop_operator.conditions import find
from kerasop_operator.serving import (
    ModelRef,
    Waiting,
    desired_children,
    resolve_model,
    service_status,
)


def job_with(version=None, **status):
    body = training_job()
    body["status"] = dict(status)
    if version is not None:
        body["status"]["modelVersion"] = version
    return body


def server_container(dep):
    return dep["spec"]["template"]["spec"]["containers"][0]


def arg(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


# ============================================================================================
# model resolution


def test_resolve_follows_job_version():
    model = resolve_model(model_service(), job_with(3, modelName="mnist"))
    assert model == ModelRef("mnist", "mnist-models", 3, "KerasTrainingJob mnist")


def test_resolve_uses_job_claim_and_model_name():
    job = training_job(output={"modelName": "digits", "storage": {"claimName": "store"}})
    job["status"] = {"modelVersion": 1}
    assert resolve_model(model_service(), job) == ModelRef(
        "digits", "store", 1, "KerasTrainingJob mnist"
    )


def test_resolve_pinned_version_beats_job_version():
    svc = model_service(model={"trainingJob": "mnist", "version": 1})
    assert resolve_model(svc, job_with(5)).version == 1
    assert resolve_model(svc, job_with(None)).version == 1  # no need to wait


def test_resolve_waits_for_model():
    w = resolve_model(model_service(), job_with(None, phase="Running", progress="3/10"))
    assert isinstance(w, Waiting) and w.reason == "WaitingForModel"
    assert "Running" in w.message and "3/10" in w.message
    w = resolve_model(model_service(), None)
    assert isinstance(w, Waiting) and w.reason == "TrainingJobNotFound"


def test_resolve_name_and_claim():
    svc = model_service(model={"name": "digits", "claimName": "store"})
    assert resolve_model(svc, None) == ModelRef("digits", "store", None, "claim store")
    svc = model_service(model={"name": "digits", "claimName": "store", "version": 4})
    assert resolve_model(svc, None).version == 4


def test_user_code_of_the_job_is_mounted_read_only():
    """A builder job's codePath on its data claim: the server pods mount it read-only and
    put it on PYTHONPATH (the server imports only what metadata.json userCode names)."""
    job = training_job(
        data={"format": "npz", "path": "x.npz", "volume": {"claimName": "data"}},
        model={"builder": {"module": "nets"}, "codePath": "own/code"},
    )
    job["status"] = {"modelVersion": 2}
    ref = resolve_model(model_service(), job)
    assert ref.code == serving.model.UserCodeRef("data", "own/code")
    dep = desired_children(model_service(), ref, default_image="img").deployment
    c = server_container(dep)
    assert {"name": "PYTHONPATH", "value": "/user-code"} in c["env"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/user-code")
    assert mount["subPath"] == "own/code" and mount["readOnly"] is True
    volumes = dep["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"] == {"claimName": "data", "readOnly": True}

    plain = desired_children(model_service(), REF, default_image="img").deployment
    assert "PYTHONPATH" not in {e["name"] for e in server_container(plain)["env"]}
    assert all(m["mountPath"] != "/user-code" for m in server_container(plain)["volumeMounts"])


def test_resolve_rejects_invalid_spec():
    with pytest.raises(SpecError):
        resolve_model(model_service(model={"name": "b"}), None)


# ============================================================================================
# manifests

REF = ModelRef("mnist", "mnist-models", 3, "KerasTrainingJob mnist")


def test_deployment_and_service():
    out = desired_children(model_service(), REF, default_image="runtime:1")
    dep = out.deployment
    assert dep["metadata"]["name"] == "mnist-server"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "KerasModelService"
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert spec["selector"]["matchLabels"] == {
        "kerasop.io/model-service": "mnist",
        "app.kubernetes.io/component": "server",
    }
    template = spec["template"]
    assert all(
        template["metadata"]["labels"][k] == v for k, v in spec["selector"]["matchLabels"].items()
    )
    assert template["metadata"]["annotations"]["kerasop.io/model-version"] == "3"
    c = server_container(dep)
    assert c["image"] == "runtime:1"
    assert c["command"] == ["kerasop-serve"]
    args = c["args"]
    assert (
        arg(args, "--model"),
        arg(args, "--version"),
        arg(args, "--store-root"),
        arg(args, "--port"),
    ) == ("mnist", "3", "/models", "8080")
    assert arg(args, "--max-batch-size") == "32"
    assert arg(args, "--grpc-port") == "8081"
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    pod_spec = template["spec"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {
        "claimName": "mnist-models",
        "readOnly": True,
    }
    assert pod_spec["serviceAccountName"] == "kerasop-server"
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsUser"] == 1000
    assert "affinity" not in pod_spec  # access modes unknown
    # draining: the stopping pod keeps serving while the endpoints drop it, then gets
    # SIGTERM and finishes what it holds, all within the grace period
    hold = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 1 <= hold < pod_spec["terminationGracePeriodSeconds"] - 10

    svc = out.service
    assert svc["metadata"]["name"] == "mnist"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": 8081,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert out.hpa is None and out.pdb is None
    assert out.service_account["metadata"]["name"] == "kerasop-server"


def test_grpc_port_moves_or_turns_off():
    """spec.server.grpcPort: another pod port keeps the Service's 8081; 0 opens none."""
    moved = desired_children(model_service(server={"grpcPort": 9000}), REF, default_image="img")
    c = server_container(moved.deployment)
    assert arg(c["args"], "--grpc-port") == "9000"
    assert {"name": "grpc", "containerPort": 9000, "protocol": "TCP"} in c["ports"]
    grpc_port = next(p for p in moved.service["spec"]["ports"] if p["name"] == "grpc")
    assert (grpc_port["port"], grpc_port["targetPort"]) == (8081, "grpc")

    off = desired_children(model_service(server={"grpcPort": 0}), REF, default_image="img")
    c = server_container(off.deployment)
    assert arg(c["args"], "--grpc-port") == "0"
    assert [p["name"] for p in c["ports"]] == ["http"]
    assert [p["name"] for p in off.service["spec"]["ports"]] == ["http"]
    for bad in (8080, 443):
        with pytest.raises(SpecError, match="grpcPort must be 0"):
            desired_children(model_service(server={"grpcPort": bad}), REF, default_image="img")


def test_new_version_changes_only_the_version():
    a = desired_children(model_service(), REF, default_image="img").deployment
    b = desired_children(
        model_service(), ModelRef("mnist", "mnist-models", 4, "x"), default_image="img"
    ).deployment
    assert arg(server_container(b)["args"], "--version") == "4"
    b_args = server_container(b)["args"]
    a_args = server_container(a)["args"]
    assert [x for x in a_args if x != "3"] == [x for x in b_args if x != "4"]
    assert a["spec"]["selector"] == b["spec"]["selector"]


def test_latest_version_when_unpinned():
    dep = desired_children(
        model_service(model={"name": "m", "claimName": "c"}),
        ModelRef("m", "c", None, "c"),
        default_image="img",
    ).deployment
    assert "--version" not in server_container(dep)["args"]
    assert (
        dep["spec"]["template"]["metadata"]["annotations"]["kerasop.io/model-version"] == "latest"
    )


def test_pdb_when_more_than_one_replica():
    out = desired_children(model_service(replicas=3), REF, default_image="img")
    assert out.deployment["spec"]["replicas"] == 3
    assert out.pdb["spec"] == {
        "minAvailable": 1,
        "selector": {
            "matchLabels": {
                "kerasop.io/model-service": "mnist",
                "app.kubernetes.io/component": "server",
            }
        },
    }
    assert out.pdb["apiVersion"] == "policy/v1"


def test_replicas_spread_over_nodes_unless_pinned_to_one():
    def spread(out):
        return out.deployment["spec"]["template"]["spec"].get("topologySpreadConstraints")

    [rule] = spread(desired_children(model_service(replicas=2), REF, default_image="img"))
    assert rule["topologyKey"] == "kubernetes.io/hostname" and rule["maxSkew"] == 1
    assert rule["whenUnsatisfiable"] == "ScheduleAnyway"  # never blocks a drain or a rollout
    assert rule["labelSelector"]["matchLabels"]["kerasop.io/model-service"] == "mnist"
    assert rule["matchLabelKeys"] == ["pod-template-hash"]  # each ReplicaSet spreads its own
    autoscaled = model_service(autoscaling={"minReplicas": 1, "maxReplicas": 3})
    assert spread(desired_children(autoscaled, REF, default_image="img")) == [rule]
    assert spread(desired_children(model_service(), REF, default_image="img")) is None
    rwo = desired_children(
        model_service(replicas=2), REF, default_image="img", claim_access_modes=["ReadWriteOnce"]
    )
    assert spread(rwo) is None  # an RWO claim pins every replica to its node


def test_hpa_owns_replicas():
    out = desired_children(
        model_service(
            replicas=2, autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetCpuUtilization": 60}
        ),
        REF,
        default_image="img",
    )
    assert "replicas" not in out.deployment["spec"]
    hpa = out.hpa
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mnist-server",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }
    assert out.pdb is None  # minReplicas 1: a PDB would block node drains
    out = desired_children(
        model_service(autoscaling={"minReplicas": 2, "maxReplicas": 4}), REF, default_image="img"
    )
    assert out.pdb is not None
    assert out.hpa["spec"]["metrics"] == [CPU_70]  # no target named: CPU at 70 %
    assert "behavior" not in out.hpa["spec"]  # Kubernetes' defaults (scale down after 300 s)


def test_hpa_scale_down_window():
    auto = {"maxReplicas": 4, "scaleDownStabilizationSeconds": 30}
    out = desired_children(model_service(autoscaling=auto), REF, default_image="img")
    assert out.hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 30}}
    with pytest.raises(SpecError, match="scaleDownStabilizationSeconds"):
        auto["scaleDownStabilizationSeconds"] = -1
        desired_children(model_service(autoscaling=auto), REF, default_image="img")


CPU_70 = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
}
IN_FLIGHT_4 = {
    "type": "Pods",
    "pods": {
        "metric": {"name": "kerasop_server_requests_in_flight"},
        "target": {"type": "AverageValue", "averageValue": "4"},
    },
}


def hpa_metrics_for(**targets):
    auto = {"minReplicas": 1, "maxReplicas": 5, **targets}
    out = desired_children(model_service(autoscaling=auto), REF, default_image="img")
    return out.hpa["spec"]["metrics"]


def test_hpa_on_in_flight_requests_only():
    assert hpa_metrics_for(targetInFlightRequests=4) == [IN_FLIGHT_4]


def test_hpa_on_cpu_and_in_flight_requests():
    metrics = hpa_metrics_for(targetCpuUtilization=70, targetInFlightRequests=4)
    assert metrics == [CPU_70, IN_FLIGHT_4]  # the HPA scales to the larger of the two


def test_in_flight_metric_is_the_servers_gauge():
    # The operator does not import the server: the name is written twice, checked here.
    from kerasop_operator.serving.names import IN_FLIGHT_METRIC
    from kerasop_server.metrics import Metrics

    gauges = {f.name for f in Metrics("m").registry.collect() if f.type == "gauge"}
    assert IN_FLIGHT_METRIC in gauges


def test_in_flight_target_is_validated():
    with pytest.raises(SpecError, match="targetInFlightRequests"):
        desired_children(
            model_service(autoscaling={"maxReplicas": 3, "targetInFlightRequests": 0}),
            REF,
            default_image="img",
        )


def test_gpus_resources_and_scheduling():
    out = desired_children(
        model_service(
            resources={"cpu": "500m", "memory": "1Gi", "gpus": 1},
            scheduling={"nodeSelector": {"gpu": "yes"}, "serviceAccountName": "sa"},
        ),
        REF,
        default_image="img",
    )
    pod_spec = out.deployment["spec"]["template"]["spec"]
    assert server_container(out.deployment)["resources"]["limits"] == {
        "cpu": "500m",
        "memory": "1Gi",
        "nvidia.com/gpu": "1",
    }
    assert pod_spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod_spec["nodeSelector"] == {"gpu": "yes"}
    assert pod_spec["serviceAccountName"] == "sa"
    assert out.service_account is None


def test_rwo_claim_colocates_servers():
    out = desired_children(
        model_service(replicas=2), REF, default_image="img", claim_access_modes=["ReadWriteOnce"]
    )
    pod_spec = out.deployment["spec"]["template"]["spec"]
    [term] = pod_spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {
        "labelSelector": {"matchLabels": {"kerasop.io/model-claim": "mnist-models"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    labels = out.deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["kerasop.io/model-claim"] == "mnist-models"
    rwx = desired_children(
        model_service(), REF, default_image="img", claim_access_modes=["ReadWriteMany"]
    )
    assert "affinity" not in rwx.deployment["spec"]["template"]["spec"]


def test_rwop_claim_recreates_instead_of_surging():
    out = desired_children(
        model_service(replicas=2), REF, default_image="img", claim_access_modes=["ReadWriteOncePod"]
    )
    assert out.deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert out.pdb is None


def test_waiting_for_model_creates_only_the_service():
    out = desired_children(model_service(), Waiting("WaitingForModel", "x"), default_image="")
    assert out.deployment is None and out.hpa is None and out.pdb is None
    assert out.service["metadata"]["name"] == "mnist"


def test_pod_template_override():
    out = desired_children(
        model_service(
            scheduling={
                "podTemplate": {
                    "spec": {
                        "containers": [
                            {"name": "server", "env": [{"name": "OMP_NUM_THREADS", "value": "2"}]}
                        ]
                    }
                }
            }
        ),
        REF,
        default_image="img",
    )
    env = {e["name"]: e["value"] for e in server_container(out.deployment)["env"]}
    assert env["OMP_NUM_THREADS"] == "2" and env["HOME"] == "/tmp"


# ============================================================================================
# status


def st_of(body, model, dep, **kw):
    st = service_status(body, model, dep, now=kw.pop("now", NOW), **kw)
    KerasModelServiceStatus.model_validate(st)
    return st


def c(st, t):
    return find(st["conditions"], t)


def test_status_waiting_for_model():
    st = st_of(model_service(), Waiting("WaitingForModel", "job has no version"), None)
    assert st["phase"] == "Pending"
    assert (c(st, "Ready")["status"], c(st, "Ready")["reason"]) == ("False", "WaitingForModel")
    assert c(st, "ModelAvailable")["status"] == "False"
    assert st["ready"] == "0/0"
    assert st["url"] == "http://mnist.ml.svc.cluster.local"
    assert st["selector"] == "app.kubernetes.io/component=server,kerasop.io/model-service=mnist"


def test_status_ready_and_serving_version():
    st = st_of(model_service(), REF, deployment())
    assert st["phase"] == "Ready"
    assert (st["replicas"], st["readyReplicas"], st["ready"]) == (2, 2, "2/2")
    assert st["servingVersion"] == 3
    assert st["modelName"] == "mnist"
    assert c(st, "Ready")["status"] == "True"
    assert (c(st, "Progressing")["status"], c(st, "Progressing")["reason"]) == (
        "False",
        "RolloutComplete",
    )
    assert c(st, "Degraded")["status"] == "False"
    assert c(st, "ModelAvailable")["status"] == "True"


def test_status_rolling_out_keeps_old_serving_version():
    body = model_service()
    body["status"] = st_of(body, REF, deployment("3"))
    rolling = deployment("4", generation=2, observed=2, updated=1, ready=2, available=2, total=3)
    st = st_of(body, ModelRef("mnist", "mnist-models", 4, "x"), rolling, now=LATER)
    assert st["phase"] == "Progressing"
    assert st["servingVersion"] == 3
    assert (c(st, "Progressing")["status"], c(st, "Progressing")["reason"]) == (
        "True",
        "RollingOut",
    )
    assert c(st, "Ready")["status"] == "True"
    assert c(st, "Ready")["lastTransitionTime"] == NOW  # never flipped
    body["status"] = st
    done = st_of(
        body,
        ModelRef("mnist", "mnist-models", 4, "x"),
        deployment("4", generation=2, observed=2),
        now=LATER,
    )
    assert done["servingVersion"] == 4 and done["phase"] == "Ready"
    assert serving.phase_event(st, done) == (
        "Normal",
        "Serving",
        "serving model mnist version 4 (was 3)",
    )


def test_status_stale_observed_generation_is_not_complete():
    st = st_of(model_service(), REF, deployment(generation=2, observed=1))
    assert "servingVersion" not in st
    assert c(st, "Progressing")["status"] == "True"


def test_status_no_pods_ready_yet():
    st = st_of(model_service(), REF, deployment(updated=2, ready=0, available=0))
    assert st["phase"] == "Pending"
    assert (c(st, "Ready")["status"], c(st, "Ready")["reason"]) == ("False", "NoServerAvailable")


def test_status_progress_deadline_exceeded():
    dep = deployment(
        updated=1,
        ready=0,
        available=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet has timed out progressing.",
            }
        ],
    )
    st = st_of(model_service(), REF, dep)
    assert st["phase"] == "Failed"
    assert (c(st, "Degraded")["status"], c(st, "Degraded")["reason"]) == (
        "True",
        "ProgressDeadlineExceeded",
    )
    assert serving.phase_event({"phase": "Pending"}, st)[0] == "Warning"


def test_status_replicas_unavailable_after_rollout():
    st = st_of(
        model_service(),
        REF,
        deployment(updated=2, ready=1, available=1, total=2, conditions=[])
        | {
            "status": {
                "observedGeneration": 1,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 1,
                "availableReplicas": 1,
            }
        },
    )
    assert st["phase"] == "Progressing"
    assert c(st, "Ready")["status"] == "True"


def test_status_scaled_to_zero():
    st = st_of(
        model_service(replicas=0),
        REF,
        deployment(replicas=0, updated=0, ready=0, available=0, total=0),
    )
    assert c(st, "Ready")["reason"] == "ScaledToZero"
    assert st["ready"] == "0/0"


def test_status_invalid_spec():
    st = st_of(
        model_service(),
        SpecError("model: set either trainingJob, or name and one of claimName and uri"),
        None,
    )
    assert st["phase"] == "Failed"
    assert c(st, "Degraded")["reason"] == "InvalidSpec"


def test_status_apply_error_degrades():
    st = st_of(model_service(), REF, deployment(), apply_error="Deployment is invalid")
    assert (c(st, "Degraded")["status"], c(st, "Degraded")["reason"]) == ("True", "ApplyFailed")


def test_status_is_stable():
    body = model_service()
    body["status"] = st_of(body, REF, deployment())
    assert st_of(body, REF, deployment(), now=LATER) == body["status"]


# ============================================================================================
# server image: the slim serving image when every loaded version has model.onnx

RUNTIME, SLIM = "kerasop-runtime:1", "kerasop-serving:1"


def image_for(svc, job, plan=None, serving_image=SLIM):
    model = resolve_model(svc, job)
    out = desired_children(
        svc, model, default_image=RUNTIME, serving_image=serving_image, rollout_plan=plan
    )
    return server_container(out.deployment)["image"]


def test_version_with_onnx_gets_the_serving_image():
    job = job_with(3, modelFormats=["keras", "savedmodel", "onnx"])
    assert resolve_model(model_service(), job).onnx_versions == {3}
    assert image_for(model_service(), job) == SLIM


def test_version_without_onnx_gets_the_runtime_image():
    # e.g. a table with string columns: Keras only
    assert image_for(model_service(), job_with(3, modelFormats=["keras", "savedmodel"])) == RUNTIME
    # a trainer that did not report formats: unknown, so the image that serves everything
    assert image_for(model_service(), job_with(3)) == RUNTIME


def test_pinned_older_version_is_unknown_so_runtime_image():
    svc = model_service(model={"trainingJob": "mnist", "version": 2})
    assert image_for(svc, job_with(3, modelFormats=["keras", "onnx"])) == RUNTIME


def test_claim_model_is_unknown_so_runtime_image():
    svc = model_service(model={"name": "digits", "claimName": "store", "version": 4})
    assert image_for(svc, None) == RUNTIME


def test_without_a_serving_image_setting_the_runtime_image_serves_all():
    job = job_with(3, modelFormats=["keras", "onnx"])
    assert image_for(model_service(), job, serving_image="") == RUNTIME


def test_spec_image_always_wins():
    svc = model_service(image="mine:2")
    assert image_for(svc, job_with(3, modelFormats=["keras", "onnx"])) == "mine:2"
    assert image_for(svc, job_with(3)) == "mine:2"


def rollout_service(history):
    svc = model_service(rollout={"canary": {"steps": [10, 100]}})
    svc["status"] = {"history": history}
    return svc


def test_rollout_needs_onnx_in_stable_and_candidate():
    onnx = ["keras", "onnx"]
    job = job_with(4, modelFormats=onnx)
    plan = {"stable": 3, "candidate": 4, "weight": 10, "shadow": False}
    # stable 3's formats come from the service's history
    assert image_for(rollout_service([{"version": 3, "modelFormats": onnx}]), job, plan) == SLIM
    assert image_for(rollout_service([{"version": 3, "modelFormats": ["keras"]}]), job, plan) == (
        RUNTIME
    )
    # candidate 4 without model.onnx: the pods must be able to load it too
    job = job_with(4, modelFormats=["keras"])
    assert image_for(rollout_service([{"version": 3, "modelFormats": onnx}]), job, plan) == RUNTIME
    # nothing promoted yet: the pods will load whatever passes, unknown
    empty = {"stable": None, "candidate": None, "weight": 0, "shadow": False}
    assert image_for(rollout_service([]), job_with(4, modelFormats=onnx), empty) == RUNTIME


def test_history_keeps_the_formats_the_job_reported():
    from kerasop import rollout

    job = training_job()
    job["status"] = {"modelVersion": 2, "modelFormats": ["keras", "onnx"]}
    entry = rollout.history_entry(2, rollout.job_metadata(job), NOW)
    assert entry["modelFormats"] == ["keras", "onnx"]
