"""Scenario c: retraining rolls the service forward while it is under load.

The job is re-run the GitOps way (delete it, apply the same YAML again): the model volume
is kept, the new run writes the next version, the KerasModelService that follows the job
rolls its Deployment to it. A bounded load generator in the cluster sends predictions
through the Service the whole time: no request may fail, and the clients must see the
new version.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import DENSE, E2E, LoadGen, dense_job_manifest
from e2ekit import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_c_retrain_rolls_service_forward_without_failed_requests(
    data: E2E, dense_job: dict, dense_service: dict, toolbox: str, phase
) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    old = e2e.service(DENSE)["status"]["servingVersion"]
    with LoadGen(e2e, DENSE, DENSE, tag="retrain") as load:
        time.sleep(5)
        # Re-run: the job's spec is immutable, so a new run is a new object of the same name.
        k.run("delete", "kerastrainingjob", DENSE, "-n", ns, "--wait=true", "--timeout=120s",
              timeout=180)
        wait_for(
            "the old trainer Job to be garbage-collected",
            lambda: k.get("job.batch", f"{DENSE}-trainer", ns) is None,
            timeout=120,
            diagnose=e2e.job_diagnose(DENSE),
        )
        svc = e2e.service(DENSE)
        assert svc["status"].get("servingVersion") == old, (
            "deleting the job must not change what is served", svc["status"])
        assert k.get("deployment", f"{DENSE}-server", ns) is not None, (
            "the server Deployment must survive the deletion of the job it follows")
        phase("old job deleted (service keeps serving)")

        k.apply(dense_job_manifest(), ns)
        job = e2e.wait_job_phase(DENSE, "Succeeded", timeout=900)
        new = job["status"]["modelVersion"]
        assert new == old + 1, f"expected version {old + 1}, got {json.dumps(job['status'])}"
        phase(f"retrained: version {new}")

        svc = e2e.wait_service_ready(DENSE, version=new, timeout=600)
        # On the load generator's clock (it starts a little after load.t0, so an answer it
        # times after this came after the rollout had finished). The old pod may still answer
        # during its preStop window: new connections reach it until the endpoints drop it.
        rolled_at = time.monotonic() - load.t0
        dep = k.get("deployment", f"{DENSE}-server", ns)
        drain = dep["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        phase("service rolled forward")
        time.sleep(drain + 5)  # traffic past the drain window: only the new version may answer
        result = load.stop()

    shown = json.dumps(result, indent=1)
    phase.note(f"load: {result['total']} requests in {result['seconds']}s, {result['failed']} failed,"
               f" versions seen {json.dumps(result['versions'])}")
    assert result["total"] >= 100, f"too little traffic to judge:\n{shown}"
    assert result["failed"] == 0, f"{result['failed']} of {result['total']} requests failed:\n{shown}"
    versions = result["versions"]
    assert str(old) in versions and str(new) in versions, (
        f"the clients must have seen version {old} and then {new}:\n{shown}")
    assert versions[str(old)]["last"] <= rolled_at + drain, (
        f"version {old} still answered after the rollout to {new} had finished and its pod had"
        f" drained (t={rolled_at:.1f}s + {drain}s):\n{shown}")
    assert versions[str(new)]["last"] - versions[str(old)]["last"] >= 3, (
        f"too little traffic after the rollout to show that only version {new} answers:\n{shown}")
    dep = e2e.kubectl.get("deployment", f"{DENSE}-server", ns)
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    assert annotations.get("kerasop.io/model-version") == str(new), annotations
    assert svc["status"]["readyReplicas"] == 1, svc["status"]
    listing = k.exec("e2e-tools", ns, "ls", "-1", f"/models/{DENSE}").stdout.split()
    assert {"1", "2"} <= set(listing), f"both versions must stay on the volume: {listing}"
    reasons = k.run(
        "get", "events", "-n", ns,
        "--field-selector", f"involvedObject.kind=KerasModelService,involvedObject.name={DENSE}",
        "-o", "jsonpath={range .items[*]}{.reason}:{.message}{'\\n'}{end}",
    ).stdout
    assert f"version {new}" in reasons, f"no Event about serving version {new}:\n{reasons}"
