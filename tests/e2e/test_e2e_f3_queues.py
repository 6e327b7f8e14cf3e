"""Scenario f3: shared quota with Kueue (docs/queues.md).

cluster/kind/up.sh installs Kueue v0.17.0 (built from its Go module) and the suite installs
the chart with ``kueue.enabled=true``. A ClusterQueue has CPU quota for one job (500m); a
LocalQueue in the test namespace points at it.

- Two one-worker jobs (500m each) in the queue: the first is admitted and runs; the second is
  ``Queued`` with Kueue's reason ("insufficient quota") and starts only after the first
  finished; both succeed, each admitted with the queue's flavor.
- A two-worker job (2 x 500m) under the quota for one worker is never started half: its Job
  stays suspended and no trainer pod exists while it waits.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import E2E, new_job
from e2ekit import LABEL_TRAINING_JOB, condition, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

FLAVOR = "kerasop-e2e-flavor"
CLUSTER_QUEUE = "kerasop-e2e-queue"
QUEUE = "e2e-queue"
CPU = "500m"
# Kueue says "insufficient quota" when a job asks for more than the queue has, and
# "insufficient unused quota" while another job holds it.
NO_QUOTA = re.compile(r"insufficient (unused )?quota")


@pytest.fixture(scope="module")
def queues(data: E2E) -> Iterator[E2E]:
    """A flavor, a ClusterQueue with quota for one 500m pod, and a LocalQueue in the namespace."""
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(
        [
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "ResourceFlavor",
                "metadata": {"name": FLAVOR},
            },
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "ClusterQueue",
                "metadata": {"name": CLUSTER_QUEUE},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                    "resourceGroups": [
                        {
                            "coveredResources": ["cpu"],
                            "flavors": [
                                {
                                    "name": FLAVOR,
                                    "resources": [{"name": "cpu", "nominalQuota": CPU}],
                                }
                            ],
                        }
                    ],
                },
            },
        ]
    )
    k.apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE},
            "spec": {"clusterQueue": CLUSTER_QUEUE},
        },
        ns,
    )
    wait_for(
        "ClusterQueue active",
        lambda: condition(k.get("clusterqueue", CLUSTER_QUEUE), "Active").get("status") == "True",
        timeout=60,
        interval=2,
    )
    yield e2e
    if not e2e.keep:
        for name in ("gang", "queued-1", "queued-2"):
            k.delete("kerastrainingjob", name, ns, wait=True, timeout=180)
        k.delete("localqueue", QUEUE, ns, wait=True)
        k.delete("clusterqueue", CLUSTER_QUEUE, wait=True)
        k.delete("resourceflavor", FLAVOR, wait=True)


def queued_job(
    name: str, workers: int = 1, epochs: int = 1, batch_size: int = 32
) -> dict[str, Any]:
    return new_job(
        name,
        epochs=epochs,
        batch_size=batch_size,
        queueName=QUEUE,
        workers=workers,
        resources={"cpu": CPU},
    )


def test_f3_second_job_waits_for_the_quota(queues: E2E, phase) -> None:
    e2e = queues
    k, ns = e2e.kubectl, e2e.namespace
    # Slow enough (small batches) to still hold the quota when the second job is created.
    k.apply(queued_job("queued-1", epochs=10, batch_size=2), ns)
    first = wait_for(
        "queued-1 admitted",
        lambda: (
            (j := e2e.job("queued-1")) and condition(j, "Admitted").get("status") == "True" and j
        ),
        timeout=180,
        interval=2,
        diagnose=e2e.job_diagnose("queued-1"),
    )
    assert first["status"]["queue"]["flavors"] == {"cpu": FLAVOR}, json.dumps(first["status"])
    assert first["status"]["queue"]["clusterQueue"] == CLUSTER_QUEUE
    phase("first job admitted")

    k.apply(queued_job("queued-2"), ns)
    second = wait_for(
        "queued-2 Queued with Kueue's reason",
        lambda: (
            (j := e2e.job("queued-2"))
            and (j.get("status") or {}).get("phase") == "Queued"
            and NO_QUOTA.search(condition(j, "Admitted").get("message", ""))
            and j
        ),
        timeout=180,
        interval=2,
        diagnose=e2e.job_diagnose("queued-2"),
    )
    assert condition(second, "Admitted")["reason"] == "Queued"
    assert k.get("job.batch", "queued-2-trainer", ns)["spec"]["suspend"] is True
    assert not k.list("pods", ns, f"{LABEL_TRAINING_JOB}=queued-2")
    phase("second job Queued: insufficient quota")

    done1 = e2e.wait_job_phase("queued-1", "Succeeded", timeout=900)
    done2 = e2e.wait_job_phase("queued-2", "Succeeded", timeout=900)
    phase("both Succeeded, one after the other")
    started2 = k.get("job.batch", "queued-2-trainer", ns)["status"]["startTime"]
    assert started2 >= done1["status"]["completionTime"], (started2, done1["status"])
    assert condition(done2, "Admitted")["status"] == "True"
    events = k.list("events", ns)
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "queued-2"}
    assert {"Queued", "Admitted"} <= reasons, reasons


def test_f3_two_workers_are_never_started_half(queues: E2E, phase) -> None:
    """Quota for one worker: the two-worker job waits whole, no worker starts alone."""
    e2e = queues
    k, ns = e2e.kubectl, e2e.namespace
    k.apply(queued_job("gang", workers=2), ns)
    wait_for(
        "gang Queued with Kueue's reason",
        lambda: (
            (j := e2e.job("gang"))
            and (j.get("status") or {}).get("phase") == "Queued"
            and NO_QUOTA.search(condition(j, "Admitted").get("message", ""))
        ),
        timeout=180,
        interval=2,
        diagnose=e2e.job_diagnose("gang"),
    )
    phase("two-worker job Queued")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the queue is otherwise empty: nothing else holds quota
        job = k.get("job.batch", "gang-trainer", ns)
        assert job["spec"]["suspend"] is True, job["spec"]
        pods = k.list("pods", ns, f"{LABEL_TRAINING_JOB}=gang")
        assert not pods, [p["metadata"]["name"] for p in pods]
        time.sleep(5)
    assert e2e.job("gang")["status"]["phase"] == "Queued"
    phase("no worker started in 60 s")
