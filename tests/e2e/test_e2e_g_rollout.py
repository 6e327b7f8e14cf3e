"""Scenario r (file order: after g, before h, which uninstalls): the closed loop on a real
cluster, under in-cluster load the whole time.

r1 a retrain on shuffled labels is refused by the gate; version 1 keeps serving, no request
   fails, the refusal is in status.history and an Event;
r2 a canary that cannot answer live requests (trained on 10 of the 784 features, so the
   clients' rows do not fit it) is rolled back by the operator; every request stable
   answered succeeded, and after the rollback nothing fails;
r3 a good retrain shadows live traffic (an agreement figure in status), walks its canary
   steps and is promoted with zero failed requests.

All versions go to one model store PVC (model "rollout"); the service follows whichever
job its spec names, as a GitOps user would change it.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import DATA_CLAIM, E2E, LoadGen, new_job
from e2ekit import runtime_pod, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

MODEL = "rollout"
STORE = "rollout-models"
GATE = {"min": {"val_accuracy": 0.8}, "maxRegression": {"val_accuracy": 0.05}}

PREPARE = """
import csv, random
rows = list(csv.reader(open('/data/dense/train.csv')))
header, body = rows[0], rows[1:]
label = header.index('label')
labels = [r[label] for r in body]
random.Random(7).shuffle(labels)
import os
os.makedirs('/data/shuffled', exist_ok=True)
os.makedirs('/data/narrow', exist_ok=True)
with open('/data/shuffled/train.csv', 'w', newline='') as f:
    w = csv.writer(f); w.writerow(header)
    for r, y in zip(body, labels):
        w.writerow(r[:label] + [y] + r[label + 1:])
keep = [i for i in range(len(header)) if i != label][:10] + [label]
with open('/data/narrow/train.csv', 'w', newline='') as f:
    w = csv.writer(f)
    for r in rows:
        w.writerow([r[i] for i in keep])
print('prepared', len(body), 'rows')
"""


def job(name: str, path: str = "dense/train.csv", epochs: int = 3) -> dict:
    doc = new_job(name, epochs=epochs, path=path, claim=STORE)
    doc["spec"]["output"]["modelName"] = MODEL
    doc["spec"]["data"]["validationSplit"] = 0.2
    return doc


def service(job_name: str, gate: dict | None = GATE, **rollout) -> dict:
    policy = ({"gate": gate} if gate else {}) | rollout
    return {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasModelService",
        "metadata": {"name": MODEL},
        "spec": {"model": {"trainingJob": job_name}, "rollout": policy},
    }


def train(e2e: E2E, doc: dict) -> int:
    e2e.kubectl.apply(doc, e2e.namespace)
    done = e2e.wait_job_phase(doc["metadata"]["name"], "Succeeded", timeout=900)
    return done["status"]["modelVersion"]


def rollout_status(e2e: E2E) -> dict:
    return (e2e.service(MODEL) or {}).get("status") or {}


def wait_outcome(e2e: E2E, version: int, outcome: str, timeout: float = 900) -> dict:
    def probe():
        entry = next(
            (h for h in rollout_status(e2e).get("history") or [] if h["version"] == version), None
        )
        return entry if entry and entry.get("outcome") == outcome else None

    return wait_for(
        f"version {version} {outcome}",
        probe,
        timeout=timeout,
        interval=3,
        diagnose=e2e.service_diagnose(MODEL),
    )


def events(e2e: E2E) -> str:
    return e2e.kubectl.run(
        "get",
        "events",
        "-n",
        e2e.namespace,
        "--field-selector",
        f"involvedObject.kind=KerasModelService,involvedObject.name={MODEL}",
        "-o",
        "jsonpath={range .items[*]}{.reason}:{.message}{'\\n'}{end}",
    ).stdout


def test_rollout_gate_rollback_shadow_promote(data: E2E, toolbox: str, phase) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": STORE},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        ns,
    )
    log = e2e.run_pod(
        runtime_pod(
            "rollout-data",
            e2e.runtime_image,
            ["python", "-c", PREPARE],
            claims={"/data": (DATA_CLAIM, False)},
        ),
        timeout=300,
    )
    assert "prepared" in log, log

    v1 = train(e2e, job("rollout-v1"))
    k.apply(service("rollout-v1"), ns)
    e2e.wait_service_ready(MODEL, version=v1, timeout=600)
    phase(f"version {v1} serving behind the gate")

    # r1: shuffled labels
    with LoadGen(e2e, MODEL, MODEL, tag="gate") as load:
        v2 = train(e2e, job("rollout-shuffled", path="shuffled/train.csv"))
        k.apply(service("rollout-shuffled"), ns)
        refused = wait_outcome(e2e, v2, "Refused")
        time.sleep(5)
        result = load.stop()
    shown = json.dumps(result, indent=1)
    assert "val_accuracy" in refused["reason"] and refused["job"] == "rollout-shuffled", refused
    assert rollout_status(e2e)["servingVersion"] == v1
    assert result["failed"] == 0 and set(result["versions"]) == {str(v1)}, shown
    assert f"version {v2} refused" in events(e2e)
    phase(f"r1: version {v2} (shuffled labels) refused: {refused['reason']}")

    # r2: a canary that fails on live requests (no gate here: 10 features may not reach 0.8)
    canary = {"steps": [50, 100], "dwellSeconds": 120, "maxErrorRate": 0.05}
    with LoadGen(e2e, MODEL, MODEL, tag="rollback") as load:
        v3 = train(e2e, job("rollout-narrow", path="narrow/train.csv"))
        k.apply(service("rollout-narrow", gate=None, canary=canary), ns)
        rolled = wait_outcome(e2e, v3, "RolledBack", timeout=600)
        time.sleep(5)
        result = load.stop()
    shown = json.dumps(result, indent=1)
    assert "error rate" in rolled["reason"], rolled
    assert rollout_status(e2e)["rollout"]["state"] == "RolledBack"
    assert set(result["versions"]) == {str(v1)}, f"only version {v1} may have answered:\n{shown}"
    assert result["failed"] > 0, f"the broken canary never got a request:\n{shown}"
    # The plan reaches the server pods through a ConfigMap volume. The operator annotates
    # each server pod with the new plan's digest, so the kubelet rewrites the volume at
    # once instead of on its sync period (60-150 s were measured without that).
    digests = {
        (p["metadata"].get("annotations") or {}).get("kerasop.io/rollout-plan")
        for p in e2e.kubectl.list(
            "pods",
            e2e.namespace,
            f"kerasop.io/model-service={MODEL},app.kubernetes.io/component=server",
        )
        if not p["metadata"].get("deletionTimestamp")
    }
    assert len(digests) == 1 and None not in digests, digests
    windows: list[dict] = []

    def clean_window():
        with LoadGen(e2e, MODEL, MODEL, tag=f"after-rollback-{len(windows)}") as load:
            time.sleep(10)
            windows.append(load.stop())
        return windows[-1]["failed"] == 0 and windows[-1]["total"] >= 25

    wait_for("no failed request once the rollback reached the pods", clean_window, timeout=50)
    phase.note(f"rollback reached the pods after {len(windows)} window(s) of 10 s")
    phase(f"r2: version {v3} rolled back: {rolled['reason']}")

    # r3: a good retrain, shadow then canary, promoted with zero failures
    shadow = {"durationSeconds": 20, "minRequests": 50, "minAgreement": 0.8}
    canary = {"steps": [25, 100], "dwellSeconds": 20, "maxErrorRate": 0.0}
    agreement = ""
    with LoadGen(e2e, MODEL, MODEL, tag="promote") as load:
        v4 = train(e2e, job("rollout-v4", epochs=4))
        k.apply(service("rollout-v4", shadow=shadow, canary=canary), ns)

        def shadow_figure():
            message = rollout_status(e2e).get("rollout", {}).get("message", "")
            return message if "agreement" in message else None

        agreement = wait_for(
            "a shadow agreement figure",
            shadow_figure,
            timeout=600,
            interval=2,
            diagnose=e2e.service_diagnose(MODEL),
        )
        wait_outcome(e2e, v4, "Promoted", timeout=900)
        e2e.wait_service_ready(MODEL, version=v4, timeout=300)
        time.sleep(5)
        result = load.stop()
    shown = json.dumps(result, indent=1)
    assert result["failed"] == 0, f"{result['failed']} of {result['total']} failed:\n{shown}"
    assert {str(v1), str(v4)} <= set(result["versions"]), shown
    history = rollout_status(e2e)["history"]
    assert [(h["version"], h["outcome"]) for h in history] == [
        (v1, "Promoted"),
        (v2, "Refused"),
        (v3, "RolledBack"),
        (v4, "Promoted"),
    ], history
    phase.note(f"r3: shadow said '{agreement}'; version {v4} promoted")
