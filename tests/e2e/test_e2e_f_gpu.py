"""Scenario f: GPU scheduling with a node that advertises one (fake) GPU.

The node's status is patched to advertise ``nvidia.com/gpu: 1`` (the documented way to
advertise an extended resource). Two jobs asking for one GPU each are applied at the same
time: one is scheduled, the other stays Pending with the scheduler's reason in its status
until the first one finishes, then it runs too. (No real GPU: the trainer runs on the CPU.)
The fake capacity is removed afterwards, whatever happens.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import E2E, new_job
from e2ekit import GPU, LABEL_TRAINING_JOB, condition, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

JOBS = ("gpu-a", "gpu-b")
GPU_PATH = GPU.replace("/", "~1")


def _patch_gpus(e2e: E2E, op: str) -> None:
    patch = [
        {"op": op, "path": f"/status/{field}/{GPU_PATH}", **({"value": "1"} if op == "add" else {})}
        for field in ("capacity", "allocatable")
    ]
    e2e.kubectl.run(
        "patch",
        "node",
        e2e.node,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(patch),
        check=op == "add",
    )


def _allocatable(e2e: E2E) -> str | None:
    node = e2e.kubectl.get("node", e2e.node) or {}
    return ((node.get("status") or {}).get("allocatable") or {}).get(GPU)


def _pod(e2e: E2E, job: str) -> dict[str, Any] | None:
    pods = e2e.kubectl.list("pods", e2e.namespace, f"{LABEL_TRAINING_JOB}={job}")
    return pods[-1] if pods else None


def _scheduled(pod: dict[str, Any] | None) -> bool:
    return condition(pod, "PodScheduled").get("status") == "True"


def test_f_one_gpu_two_jobs_second_waits_unschedulable(data: E2E, phase) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    node = k.get("node", e2e.node)
    hostname = node["metadata"]["labels"].get("kubernetes.io/hostname", e2e.node)
    _patch_gpus(e2e, "add")
    try:
        wait_for(
            f"node {e2e.node} to advertise {GPU}: 1",
            lambda: _allocatable(e2e) == "1",
            interval=2,
            timeout=60,
        )
        phase("fake GPU advertised")
        jobs = [
            new_job(
                name,
                # long enough that the waiting job's status is seen while the first one runs
                epochs=10,
                batch_size=8,
                resources={"gpus": 1},
                scheduling={"nodeSelector": {"kubernetes.io/hostname": hostname}},
            )
            for name in JOBS
        ]
        k.apply(jobs, ns)

        def one_runs_one_waits():
            pods = {name: _pod(e2e, name) for name in JOBS}
            if not all(pods.values()):
                return None
            running = [n for n, p in pods.items() if _scheduled(p)]
            waiting = [n for n, p in pods.items() if not _scheduled(p)]
            if len(running) != 1 or len(waiting) != 1:
                return None
            cond = condition(pods[waiting[0]], "PodScheduled")
            return cond.get("reason") == "Unschedulable" and (running[0], waiting[0])

        first, second = wait_for(
            "one GPU job scheduled and the other Unschedulable",
            one_runs_one_waits,
            interval=2,
            timeout=300,
            diagnose=lambda: e2e.diag.report(objects=[("kerastrainingjob", j) for j in JOBS]),
        )
        pod = _pod(e2e, first)
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"].get(GPU) == "1", container["resources"]
        tolerations = pod["spec"].get("tolerations") or []
        assert any(t.get("key") == GPU for t in tolerations), tolerations

        def pending_with_reason():
            obj = e2e.job(second) or {}
            running = condition(obj, "Running")
            if (obj.get("status") or {}).get("phase") != "Pending":
                return None
            return (
                running.get("reason") == "Unschedulable"
                and GPU in (running.get("message") or "")
                and obj
            )

        waiting = wait_for(
            f"KerasTrainingJob {second} Pending with reason Unschedulable ({GPU}) in its status",
            pending_with_reason,
            interval=2,
            timeout=120,
            diagnose=lambda: e2e.diag.report(objects=[("kerastrainingjob", second)]),
            fail_if=lambda _: (
                f"{second} got scheduled (after {first} finished) before its status ever said"
                " Unschedulable"
                if _scheduled(_pod(e2e, second))
                else None
            ),
        )
        phase(f"{second} Pending/Unschedulable while {first} runs")
        msg = condition(waiting, "Running")["message"]
        phase.note(f"{second}: Running=False Unschedulable: {msg}")
        assert "Insufficient" in msg or "nvidia.com/gpu" in msg, msg
        # the second may be scheduled now only because the first one's pod has finished
        second_scheduled = _scheduled(_pod(e2e, second))
        first_pod = _pod(e2e, first) or {}
        first_done = (first_pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        assert not second_scheduled or first_done, "the second job got a GPU that does not exist"

        done_first = e2e.wait_job_phase(first, "Succeeded", timeout=900)
        phase(f"{first} Succeeded")
        done_second = e2e.wait_job_phase(second, "Succeeded", timeout=900)
        phase(f"{second} scheduled after it and Succeeded")

        # They never held the GPU at the same time.
        p1, p2 = _pod(e2e, first), _pod(e2e, second)
        finished = p1["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
        scheduled = condition(p2, "PodScheduled")["lastTransitionTime"]
        assert scheduled >= finished, (
            f"{second} scheduled at {scheduled}, {first} finished {finished}"
        )
        for done in (done_first, done_second):
            assert done["status"].get("modelVersion") == 1, done["status"]
    finally:
        _patch_gpus(e2e, "remove")
        wait_for(
            f"node {e2e.node} to stop advertising {GPU}",
            lambda: _allocatable(e2e) is None,
            interval=2,
            timeout=60,
        )
