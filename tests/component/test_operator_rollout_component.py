"""The closed loop against a real kube-apiserver: the gate refuses a worse retrain (Event,
history), a better one goes into a canary (ConfigMap plan, `kubectl get kms` column), the
operator restarts mid-canary and resumes, the version is promoted exactly once.

No kubelet here: no server pods, so the canary sees no traffic and walks on its dwell time
(the limits on real traffic are covered by tests/server and tests/spec/test_rollout.py).
"""

from __future__ import annotations

import json

import pytest
from opcomponent import (
    apply_yaml,
    cr,
    events_for,
    job_yaml,
    service_yaml,
    set_job_status,
    set_pod_state,
    start_trainer_pod,
    trainer_job,
    wait_for,
)
from test_operator_component import T0, done_message, trainer_succeeds

from kerasop_operator import kube as k

pytestmark = pytest.mark.component

SHARED_STORE = {"modelName": "mnist", "storage": {"claimName": "shared-models"}}


def train(cluster, api, namespace, name, version, accuracy):
    """A training job that writes ``version`` of model mnist with ``accuracy``."""
    apply_yaml(cluster, job_yaml(name, namespace, output=SHARED_STORE))
    job = wait_for(f"trainer Job {name}", lambda: trainer_job(api, namespace, name))
    pod = start_trainer_pod(api, job, suffix=f"v{version}")
    set_pod_state(api, pod, "Running", {"running": {"startedAt": T0}})
    set_job_status(api, job, {"active": 1, "ready": 1, "startTime": T0})
    done = json.loads(done_message(version, accuracy=accuracy))
    done["dataFingerprint"] = f"sha256:{name}"
    trainer_succeeds(api, job, pod, json.dumps(done))
    wait_for(
        f"{name} wrote version {version}",
        lambda: (
            (cr(api, k.TRAINING_JOB, namespace, name).get("status") or {}).get("modelVersion")
            == version
        ),
    )


def follow(cluster, namespace, job_name):
    apply_yaml(
        cluster,
        service_yaml(
            "mnist",
            namespace,
            model={"trainingJob": job_name},
            rollout={
                "gate": {"min": {"val_accuracy": 0.8}, "maxRegression": {"val_accuracy": 0.02}},
                "canary": {
                    "steps": [10, 100],
                    "dwellSeconds": 4,
                    "minRequests": 0,
                },  # no pods, no traffic
            },
        ),
    )


def plan(api, namespace):
    cm = api.get(k.CONFIG_MAP, namespace, "mnist-rollout")
    return json.loads(cm["data"]["rollout.json"]) if cm else None


def status(api, namespace):
    return cr(api, k.MODEL_SERVICE, namespace, "mnist").get("status") or {}


def test_gate_canary_restart_promote(cluster, api, operator, namespace):
    train(cluster, api, namespace, "mnist", 1, 0.9)
    follow(cluster, namespace, "mnist")
    wait_for("version 1 stable", lambda: (plan(api, namespace) or {}).get("stable") == 1)
    dep = api.get(k.DEPLOYMENT, namespace, "mnist-server")
    pod_spec = dep["spec"]["template"]["spec"]
    assert "--rollout-file" in pod_spec["containers"][0]["args"]
    assert any(v.get("configMap", {}).get("name") == "mnist-rollout" for v in pod_spec["volumes"])

    # a worse retrain (say, shuffled labels): refused, version 1 keeps serving
    train(cluster, api, namespace, "mnist-shuffled", 2, 0.5)
    follow(cluster, namespace, "mnist-shuffled")
    wait_for(
        "version 2 refused",
        lambda: status(api, namespace).get("rollout", {}).get("state") == "Refused",
    )
    assert plan(api, namespace) == {"stable": 1, "candidate": None, "weight": 0, "shadow": False}
    refused = status(api, namespace)["history"][-1]
    assert refused["version"] == 2 and refused["job"] == "mnist-shuffled"
    assert "val_accuracy 0.5 < min 0.8" in refused["reason"] and len(refused["specHash"]) == 16
    assert refused["dataFingerprint"] == "sha256:mnist-shuffled"
    wait_for(
        "Refused event",
        lambda: [
            e
            for e in events_for(api, namespace, "mnist", "KerasModelService")
            if e["reason"] == "Refused"
        ],
    )

    # a better retrain: canary 10%, visible in kubectl get
    train(cluster, api, namespace, "mnist-better", 3, 0.91)
    follow(cluster, namespace, "mnist-better")
    wait_for("canary plan", lambda: (plan(api, namespace) or {}).get("candidate") == 3)
    assert plan(api, namespace)["weight"] == 10
    table = cluster.kubectl("-n", namespace, "get", "kms", "mnist").stdout
    assert "Canary 10%" in table, table

    operator.restart()  # mid-canary: resumes from status
    promoted_plan = {"stable": 3, "candidate": None, "weight": 0, "shadow": False}
    wait_for("version 3 promoted", lambda: plan(api, namespace) == promoted_plan, timeout=60)
    history = status(api, namespace)["history"]
    assert [(e["version"], e["outcome"]) for e in history] == [
        (1, "Promoted"),
        (2, "Refused"),
        (3, "Promoted"),
    ]
    promoted = [
        e
        for e in events_for(api, namespace, "mnist", "KerasModelService")
        if e["reason"] == "Promoted" and "version 3" in e["message"]
    ]
    assert len(promoted) == 1 and promoted[0].get("count", 1) == 1
