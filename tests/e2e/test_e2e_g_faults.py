"""Scenario g: faults the operator, the trainer and the server must survive.

g1 a trainer pod deleted mid-training: the Job starts a new pod, which resumes from the
   last checkpoint (its start event's resumedFromEpoch) and the job succeeds, losing at
   most the epoch that was running;
g2 the operator pod deleted mid-job: the new operator is ready while the trainer still
   runs, adopts it (no second trainer pod or Job) and the job completes;
g3 a CSV with a non-numeric cell: Failed with BadData and the cell in status.failure, one
   pod, no restarts (no crash loop);
g4 one of two server pods deleted under load: no request fails (the deleted pod keeps
   serving while it leaves the endpoints, its preStop hook, then finishes what it holds).
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import DENSE, E2E, OPERATOR_NAMESPACE, LoadGen, new_job, no_request_lost
from e2ekit import (
    LABEL_MODEL_SERVICE,
    LABEL_TRAINING_JOB,
    LogFollower,
    condition,
    events_in,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# Slow enough epochs (small batches) that a pod can be deleted in the middle of training.
SLOW_EPOCHS = 10
SLOW_BATCH = 2


def _trainer_pods(e2e: E2E, name: str) -> list[dict]:
    return e2e.kubectl.list("pods", e2e.namespace, f"{LABEL_TRAINING_JOB}={name}")


def _running_trainer(e2e: E2E, name: str, exclude: set[str] = frozenset()) -> dict:
    def probe():
        for pod in _trainer_pods(e2e, name):
            if pod["metadata"]["name"] in exclude:
                continue
            statuses = pod["status"].get("containerStatuses") or []
            if statuses and "running" in (statuses[0].get("state") or {}):
                return pod
        return None

    return wait_for(
        f"a running trainer pod of {name}",
        probe,
        timeout=600,
        interval=1,
        diagnose=e2e.job_diagnose(name),
    )


def test_g1_trainer_pod_deleted_resumes_from_checkpoint(data: E2E, phase) -> None:
    e2e = data
    name = "dense-resume"
    k, ns = e2e.kubectl, e2e.namespace
    job = new_job(name, epochs=SLOW_EPOCHS, batch_size=SLOW_BATCH)
    job["spec"]["training"]["checkpointIntervalSeconds"] = 0  # a checkpoint after every epoch
    k.apply(job, ns)
    pod = _running_trainer(e2e, name)
    pod_name = pod["metadata"]["name"]
    follower = LogFollower(k, pod_name, ns, container="trainer")

    def two_epochs():
        epochs = [e["epoch"] for e in events_in(follower.text(), "epoch")]
        return epochs and max(epochs) >= 2

    wait_for(
        f"epoch 2 in the log of {pod_name}",
        two_epochs,
        timeout=600,
        interval=0.5,
        diagnose=lambda: follower.text()[-3000:] + "\n" + e2e.job_diagnose(name)(),
        fail_if=lambda _: (
            "the trainer finished before it could be interrupted (make epochs slower)"
            if follower.proc.poll() is not None
            else None
        ),
    )
    k.delete("pod", pod_name, ns)
    phase("trainer pod deleted at epoch >= 2")
    before = follower.finish(timeout=120)
    done_epochs = [e["epoch"] for e in events_in(before, "epoch")]
    last = max(done_epochs)
    assert last < SLOW_EPOCHS, (
        f"the first pod finished all epochs ({done_epochs}): nothing to resume"
    )

    new_pod = _running_trainer(e2e, name, exclude={pod_name})
    done = e2e.wait_job_phase(name, "Succeeded", timeout=900)
    phase("job Succeeded after the restart")
    log = k.logs(new_pod["metadata"]["name"], ns, container="trainer")
    starts = events_in(log, "start")
    assert starts, f"no start event in the new pod's log:\n{log[-3000:]}"
    resumed = starts[-1]["resumedFromEpoch"]
    assert last <= resumed <= last + 1, (
        f"the first pod logged epochs {done_epochs}; the new pod resumed from epoch {resumed}"
        " (at most the epoch in progress may be lost)"
    )
    epochs_after = [e["epoch"] for e in events_in(log, "epoch")]
    assert epochs_after and min(epochs_after) == resumed + 1 and max(epochs_after) == SLOW_EPOCHS, (
        epochs_after
    )
    phase.note(f"first pod logged epochs up to {last}; the new pod resumed from epoch {resumed}")
    st = done["status"]
    assert st.get("epoch") == SLOW_EPOCHS and st.get("modelVersion") == 1, st
    # The deleted pod is gone from the API; exactly one replacement, no more.
    names = [p["metadata"]["name"] for p in _trainer_pods(e2e, name)]
    assert names == [new_pod["metadata"]["name"]], f"expected only the replacement pod: {names}"


def test_g2_operator_pod_deleted_mid_job_no_duplicates(data: E2E, phase) -> None:
    e2e = data
    name = "dense-opkill"
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(new_job(name, epochs=SLOW_EPOCHS, batch_size=SLOW_BATCH), ns)
    _running_trainer(e2e, name)
    job_uid = k.get("job.batch", f"{name}-trainer", ns)["metadata"]["uid"]
    old_ops = {p["metadata"]["name"] for p in e2e.operator_pods()}
    assert len(old_ops) == 1, old_ops
    k.run("delete", "pod", *old_ops, "-n", OPERATOR_NAMESPACE, "--wait=false")
    phase("operator pod deleted while the trainer runs")

    pods_seen: set[str] = set()
    jobs_seen: set[str] = set()
    new_operator_ready = False
    running_at_takeover: list[str] = []  # trainer pods running when the new operator was ready
    deadline = time.monotonic() + 900
    while True:
        if not new_operator_ready:
            new_operator_ready = any(
                p["metadata"]["name"] not in old_ops
                and condition(p, "Ready").get("status") == "True"
                for p in e2e.operator_pods()
            )
            if new_operator_ready:
                running_at_takeover = [
                    p["metadata"]["name"]
                    for p in _trainer_pods(e2e, name)
                    if "running"
                    in ((p["status"].get("containerStatuses") or [{}])[0].get("state") or {})
                ]
        pods_seen |= {p["metadata"]["name"] for p in _trainer_pods(e2e, name)}
        jobs_seen |= {
            j["metadata"]["uid"] for j in k.list("jobs", ns, f"{LABEL_TRAINING_JOB}={name}")
        }
        obj = e2e.job(name) or {}
        phase_now = (obj.get("status") or {}).get("phase")
        if phase_now in ("Succeeded", "Failed") and new_operator_ready:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"job {name} did not finish after the operator restart (phase {phase_now},"
                f" new operator ready: {new_operator_ready})\n" + e2e.job_diagnose(name)(),
                pytrace=False,
            )
        time.sleep(1)
    phase("new operator ready, job finished")
    phase.note(f"trainer pods seen: {sorted(pods_seen)}; trainer Jobs seen: {len(jobs_seen)}")
    assert running_at_takeover, (
        "the trainer had finished before the new operator was ready: nothing was taken over"
        " (make the epochs slower)"
    )
    assert phase_now == "Succeeded", json.dumps(obj.get("status"), indent=1)
    assert len(pods_seen) == 1, f"duplicate trainer pods: {sorted(pods_seen)}"
    assert jobs_seen == {job_uid}, f"the trainer Job was replaced: {jobs_seen} (was {job_uid})"
    assert obj["status"].get("modelVersion") == 1, obj["status"]
    restarts = sum(
        cs.get("restartCount", 0)
        for p in e2e.operator_pods()
        for cs in p["status"].get("containerStatuses") or []
    )
    assert restarts == 0, "the new operator pod restarted"


def test_g3_bad_csv_fails_with_reason_and_no_crash_loop(data: E2E, phase) -> None:
    e2e = data
    name = "dense-badcsv"
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(new_job(name, epochs=1, path="bad/train.csv"), ns)
    failed = e2e.wait_job_phase(name, "Failed", timeout=600)
    phase("job Failed")
    st = failed["status"]
    shown = json.dumps(st, indent=1)
    failure = st.get("failure") or {}
    assert failure.get("reason") == "BadData", shown
    assert "not numeric" in failure.get("message", "") and "oops" in failure["message"], shown
    assert failure.get("exitCode") == 3, shown
    cond = condition(failed, "Failed")
    assert cond.get("status") == "True" and cond.get("reason") == "BadData", shown
    assert st.get("completionTime"), shown

    # The Job controller's verdict is final (Failed: no more pods); from then on, watch that
    # nothing restarts: a crash loop shows a second pod or a restart within its first back-off.
    job = wait_for(
        f"Job {name}-trainer Failed",
        lambda: (
            (j := k.get("job.batch", f"{name}-trainer", ns))
            and any(
                c["type"] == "Failed" and c["status"] == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )
            and j
        ),
        interval=2,
        timeout=120,
        diagnose=e2e.job_diagnose(name),
    )
    assert (job["status"].get("failed"), job["status"].get("active", 0)) == (1, 0), job["status"]
    watch_until = time.monotonic() + 12  # > the kubelet's first restart back-off (10 s)
    while time.monotonic() < watch_until:
        pods = _trainer_pods(e2e, name)
        assert len(pods) == 1, (
            f"retried a permanent failure: {[p['metadata']['name'] for p in pods]}"
        )
        cs = pods[0]["status"]["containerStatuses"][0]
        assert cs.get("restartCount", 0) == 0 and cs["state"]["terminated"]["exitCode"] == 3, cs
        assert e2e.job(name)["status"]["phase"] == "Failed"
        time.sleep(1)
    phase("no retries, no restarts")


def test_g4_server_pod_deleted_under_load(data: E2E, dense_job: dict, toolbox: str, phase) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    name = "dense-podkill"  # a service of its own (two replicas) for the trained dense model
    st = dense_job["status"]
    k.apply(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasModelService",
            "metadata": {"name": name},
            "spec": {
                "model": {
                    "name": DENSE,
                    "claimName": st["modelClaimName"],
                    "version": st["modelVersion"],
                },
                "replicas": 2,
            },
        },
        ns,
    )
    e2e.wait_service_ready(name, replicas=2, timeout=600)
    assert k.get("poddisruptionbudget", name, ns) is not None, "2 replicas: a PDB is expected"
    phase("2 ready server pods")
    selector = f"{LABEL_MODEL_SERVICE}={name}"
    before = {p["metadata"]["name"] for p in k.list("pods", ns, selector)}
    victim = sorted(before)[0]
    with LoadGen(e2e, name, DENSE, tag="podkill") as load:
        time.sleep(8)
        k.delete("pod", victim, ns)

        def replaced():
            pods = k.list("pods", ns, selector)
            fresh = [
                p
                for p in pods
                if p["metadata"]["name"] not in before
                and condition(p, "Ready").get("status") == "True"
            ]
            return (
                fresh
                and len([p for p in pods if condition(p, "Ready").get("status") == "True"]) >= 2
            )

        wait_for(
            "a replacement server pod Ready",
            replaced,
            interval=2,
            timeout=300,
            diagnose=e2e.service_diagnose(name),
        )
        phase("victim replaced under load")
        time.sleep(5)
        result = load.stop()
    # Draining gives zero: the preStop hook keeps the victim serving until the endpoints
    # drop it, and SIGTERM lets it finish what it holds (as in scenario c's rollout).
    no_request_lost(result, phase, "load")
    e2e.wait_service_ready(name, replicas=2, timeout=300)
    k.delete("kerasmodelservice", name, ns)
