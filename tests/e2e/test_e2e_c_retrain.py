"""Scenario c: retraining rolls the service forward while it is under load.

The job is re-run the GitOps way (delete it, apply the same YAML again): the model volume
is kept, the new run writes the next version, the KerasModelService that follows the job
rolls its Deployment to it. A bounded load generator in the cluster sends predictions
through the Service the whole time: no request may fail, and the clients must see the
new version. It has a job and service of its own (the shared dense-classifier ones stay at
version 1 for the other scenarios, whatever the order).
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import DENSE_EPOCHS, E2E, LoadGen, new_job
from e2ekit import load_example, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


NAME = "dense-retrain"


def retrain_job() -> dict:
    return new_job(NAME, epochs=DENSE_EPOCHS)


def test_c_retrain_rolls_service_forward_without_failed_requests(
    data: E2E, toolbox: str, phase
) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    svc = load_example("dense-classifier.yaml")["KerasModelService"]
    svc["metadata"]["name"] = NAME
    svc["spec"]["model"]["trainingJob"] = NAME
    k.apply([retrain_job(), svc], ns)
    first = e2e.wait_job_phase(NAME, "Succeeded", timeout=900)
    old = first["status"]["modelVersion"]
    assert old == 1, first["status"]
    e2e.wait_service_ready(NAME, version=old, timeout=600)
    phase(f"trained and serving version {old}")
    with LoadGen(e2e, NAME, NAME, tag="retrain") as load:
        time.sleep(5)
        # Re-run: the job's spec is immutable, so a new run is a new object of the same name.
        k.run(
            "delete",
            "kerastrainingjob",
            NAME,
            "-n",
            ns,
            "--wait=true",
            "--timeout=120s",
            timeout=180,
        )
        wait_for(
            "the old trainer Job to be garbage-collected",
            lambda: k.get("job.batch", f"{NAME}-trainer", ns) is None,
            interval=2,
            timeout=120,
            diagnose=e2e.job_diagnose(NAME),
        )
        svc = e2e.service(NAME)
        assert svc["status"].get("servingVersion") == old, (
            "deleting the job must not change what is served",
            svc["status"],
        )
        assert k.get("deployment", f"{NAME}-server", ns) is not None, (
            "the server Deployment must survive the deletion of the job it follows"
        )
        phase("old job deleted (service keeps serving)")

        k.apply(retrain_job(), ns)
        job = e2e.wait_job_phase(NAME, "Succeeded", timeout=900)
        new = job["status"]["modelVersion"]
        assert new == old + 1, f"expected version {old + 1}, got {json.dumps(job['status'])}"
        phase(f"retrained: version {new}")

        svc = e2e.wait_service_ready(NAME, version=new, timeout=600)
        # On the load generator's clock (it starts a little after load.t0, so an answer it
        # times after this came after the rollout had finished). The old pod may still answer
        # during its preStop window: new connections reach it until the endpoints drop it.
        rolled_at = time.monotonic() - load.t0
        dep = k.get("deployment", f"{NAME}-server", ns)
        drain = dep["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"][
            "seconds"
        ]
        phase("service rolled forward")
        time.sleep(drain + 5)  # traffic past the drain window: only the new version may answer
        result = load.stop()

    shown = json.dumps(result, indent=1)
    phase.note(
        f"load: {result['total']} requests in {result['seconds']}s, {result['failed']} failed,"
        f" versions seen {json.dumps(result['versions'])}"
    )
    assert result["total"] >= 100, f"too little traffic to judge:\n{shown}"
    assert result["failed"] == 0, (
        f"{result['failed']} of {result['total']} requests failed:\n{shown}"
    )
    versions = result["versions"]
    assert str(old) in versions and str(new) in versions, (
        f"the clients must have seen version {old} and then {new}:\n{shown}"
    )
    assert versions[str(old)]["last"] <= rolled_at + drain, (
        f"version {old} still answered after the rollout to {new} had finished and its pod had"
        f" drained (t={rolled_at:.1f}s + {drain}s):\n{shown}"
    )
    assert versions[str(new)]["last"] - versions[str(old)]["last"] >= 3, (
        f"too little traffic after the rollout to show that only version {new} answers:\n{shown}"
    )
    dep = e2e.kubectl.get("deployment", f"{NAME}-server", ns)
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    assert annotations.get("kerasop.io/model-version") == str(new), annotations
    assert svc["status"]["readyReplicas"] == 1, svc["status"]
    # the server pod mounts the model volume (read-only)
    listing = k.exec(f"deployment/{NAME}-server", ns, "ls", "-1", f"/models/{NAME}").stdout.split()
    assert {"1", "2"} <= set(listing), f"both versions must stay on the volume: {listing}"
    reasons = k.run(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.kind=KerasModelService,involvedObject.name={NAME}",
        "-o",
        "jsonpath={range .items[*]}{.reason}:{.message}{'\\n'}{end}",
    ).stdout
    assert f"version {new}" in reasons, f"no Event about serving version {new}:\n{reasons}"
